import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// Machines here have Node 20 as the system node; the project runs on the Node 24 that npm installs.
function systemNode(): { path: string; major: number } | undefined {
  for (const path of ['/usr/bin/node', '/usr/local/bin/node']) {
    try {
      const version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
      return { path, major: Number(version.slice(1).split('.')[0]) };
    } catch {
      // not there
    }
  }
  return undefined;
}

const old = systemNode();

describe('Node version guard', () => {
  it('the test run itself is on Node 24 or newer', () => {
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(24);
  });

  it.skipIf(!old || old.major >= 24)('refuses an older Node with a clear message before loading any TypeScript', () => {
    const result = spawnSync(old!.path, ['src/run.mjs', 'src/main.ts', 'api'], { encoding: 'utf8', timeout: 10_000 });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('needs Node.js 24 or newer');
    expect(result.stderr).toContain(`v${old!.major}.`);
  });
});
