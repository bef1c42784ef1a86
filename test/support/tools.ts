import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { it } from 'vitest';

// External tools some tests run for real (promtool). In CI (`CI` set) a missing tool is a failing
// test, never a quiet skip: .ci/run installs it. Elsewhere the tests that need it are skipped and the
// run says which tool and Debian package are missing. Used by the monitoring tests (promtool) and the
// deployment tests (nginx, systemd-analyze, logrotate, docker compose).

/** A tool's path (PATH, then the sbin directories a non-root PATH lacks), or undefined. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

/**
 * true: skip the group (`found` is what the lookup found: a path, a command, nothing). In CI it adds a
 * failing test that names the tool and the Debian package .ci/run installs for it.
 */
export function skipWithoutTool(tool: string, found: unknown, debianPackage: string, group: string): boolean {
  if (found) return false;
  const missing = `${tool} is not installed (Debian package ${debianPackage}): the ${group} tests need it`;
  if (process.env.CI) {
    it(`has ${tool}, which the ${group} tests need`, () => {
      throw new Error(`${missing}; .ci/run installs it when missing, so check its install step`);
    });
  } else {
    console.warn(`skipped: ${missing}`);
  }
  return true;
}
