import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually } from './context.ts';
import { freePort } from './service-processes.ts';

// The shipped nginx snippets (ops/nginx/) in a minimal nginx.conf of their own, run for real in front
// of a test API: the http part in `http {}`, the location part in a `server {}`, as the README says.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A tool's path (PATH, then the sbin directories a non-root PATH lacks), or undefined. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

export interface RunningNginx {
  port: number;
  /** `http://127.0.0.1:<port>/api/user-sms<path>` */
  url(path: string): string;
  /** what nginx wrote to the snippet's access log */
  accessLog(): string;
  stop(): Promise<void>;
}

/** Writes the configuration for an upstream on `upstreamPort`; returns the directory and nginx.conf. */
export function writeNginxConfig(dir: string, listenPort: number, upstreamPort: number): string {
  const http = join(dir, 'user-sms-http.conf');
  const location = join(dir, 'user-sms.conf');
  writeFileSync(http, readFileSync(join(ROOT, 'ops/nginx/user-sms-http.conf'), 'utf8'));
  writeFileSync(
    location,
    readFileSync(join(ROOT, 'ops/nginx/user-sms.conf'), 'utf8')
      .replaceAll('127.0.0.1:8014', `127.0.0.1:${upstreamPort}`)
      .replaceAll('/var/log/nginx/access.log', join(dir, 'access.log')),
  );
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    [
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events {}',
      'http {',
      `    include ${http};`,
      `    access_log ${join(dir, 'other-access.log')};`,
      '    server {',
      `        listen 127.0.0.1:${listenPort};`,
      `        include ${location};`,
      '    }',
      '}',
      '',
    ].join('\n'),
  );
  return conf;
}

/** nginx in front of the service at `upstreamPort`, answering once it proxies `GET /`. */
export async function startNginx(nginx: string, upstreamPort: number): Promise<RunningNginx> {
  const dir = mkdtempSync(join(tmpdir(), 'user-sms-nginx-'));
  const port = await freePort();
  const conf = writeNginxConfig(dir, port, upstreamPort);
  const server: ChildProcess = spawn(nginx, ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf, '-g', 'daemon off;'], { stdio: 'ignore' });
  const url = (path: string) => `http://127.0.0.1:${port}/api/user-sms${path}`;
  await eventually(async () => {
    const response = await fetch(url('/')).catch(() => undefined);
    return response?.status === 200 ? true : undefined;
  }, 20_000);
  return {
    port,
    url,
    accessLog: () => (existsSync(join(dir, 'access.log')) ? readFileSync(join(dir, 'access.log'), 'utf8') : ''),
    async stop() {
      if (server.exitCode === null) {
        const exited = new Promise((resolve) => server.once('exit', resolve));
        server.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
