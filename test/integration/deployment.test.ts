import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, type TestEnv } from '../support/context.ts';
import { freePort } from '../support/service-processes.ts';
import { findTool, skipWithoutTool } from '../support/tools.ts';
import { writeNginxConfig } from '../support/nginx.ts';

// The deployment files in ops/ and docker-compose.yml, checked with the real tools (nginx,
// systemd-analyze, logrotate, docker compose or docker-compose). In CI (`CI` set) every tool must be
// there (.ci/run installs what the machine lacks): a missing one is a failing test, never a quiet
// skip. Elsewhere a group whose tool is absent is skipped, and the run says which tool is missing.
// nginx is run for real in front of a test API.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
/** The drain limit the service sets itself (src/main.ts): the WebSMS call budget + 15 s. */
const DRAIN_LIMIT_S = loadConfig({}).websms.timeoutMs / 1_000 + 15;

const nginx = findTool('nginx');
const systemdAnalyze = findTool('systemd-analyze');
const logrotate = findTool('logrotate');
/**
 * What validates docker-compose.yml: `docker compose` (v2) where the Docker client has it, else a
 * `docker-compose` binary (Debian's package is v1, which .ci/run installs: it needs no engine).
 */
const compose = (() => {
  const docker = findTool('docker');
  if (docker && spawnSync(docker, ['compose', 'version'], { stdio: 'ignore', timeout: 10_000 }).status === 0) {
    return { command: docker, args: ['compose'], v1: false };
  }
  const standalone = findTool('docker-compose');
  if (!standalone) return undefined;
  const version = spawnSync(standalone, ['version', '--short'], { encoding: 'utf8', timeout: 10_000 }).stdout?.trim() ?? '';
  return { command: standalone, args: [], v1: version.startsWith('1.') };
})();

const skipNginx = skipWithoutTool('nginx', nginx, 'nginx-light', 'ops/nginx');
const skipSystemd = skipWithoutTool('systemd-analyze', systemdAnalyze, 'systemd', 'ops/systemd');
const skipLogrotate = skipWithoutTool('logrotate', logrotate, 'logrotate', 'ops/logrotate');
const skipCompose = skipWithoutTool('docker compose (or docker-compose)', compose, 'docker-compose', 'docker-compose.yml');

/** KEY=value lines of an env file; with `commented`, also the `# KEY=value` examples. */
function envEntries(text: string, commented: boolean): Array<[string, string]> {
  const pattern = commented ? /^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/ : /^([A-Z][A-Z0-9_]*)=(.*)$/;
  return text
    .split('\n')
    .map((line) => pattern.exec(line.trim()))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => [match[1]!, match[2]!.replace(/^(['"])(.*)\1$/, '$2')]);
}

describe('ops/user-sms.env.example', () => {
  it('is a valid configuration as shipped, and every documented default is a valid value for a known setting', () => {
    const example = read('ops/user-sms.env.example');
    expect(() => loadConfig(Object.fromEntries(envEntries(example, false)))).not.toThrow();
    const all = envEntries(example, true).filter(([, value]) => !value.includes('<'));
    const configSource = read('src/config.ts');
    for (const [key] of all) {
      expect(key.startsWith('USER_SMS_') || key === 'NODE_BIN' || configSource.includes(`  ${key}:`), key).toBe(true);
    }
    const serviceSettings = all.filter(([key]) => !key.startsWith('USER_SMS_') && key !== 'NODE_BIN');
    expect(() => loadConfig({ ...Object.fromEntries(serviceSettings), ADMIN_PASSWORD: 'long-enough-1' })).not.toThrow();
  });
});

describe('stop timeouts', () => {
  it('give the service longer than its own drain limit everywhere: systemd, docker compose, the script', () => {
    for (const unit of ['ops/systemd/user-sms-api.service', 'ops/systemd/sms-worker@.service', 'ops/systemd/user-sms-background.service']) {
      const text = read(unit);
      expect(Number(/^TimeoutStopSec=(\d+)$/m.exec(text)?.[1]), unit).toBeGreaterThan(DRAIN_LIMIT_S);
      expect(text).toMatch(/^KillSignal=SIGTERM$/m);
      expect(text).toMatch(/^Restart=on-failure$/m);
    }
    expect(Number(/stop_grace_period: (\d+)s/.exec(read('docker-compose.yml'))?.[1])).toBeGreaterThan(DRAIN_LIMIT_S);
    expect(Number(/USER_SMS_STOP_TIMEOUT:-(\d+)/.exec(read('ops/send_user_sms.sh'))?.[1])).toBeGreaterThan(DRAIN_LIMIT_S);
  });
});

describe('CPU priority', () => {
  it('gives the background unit a lower CPU weight than the API and the workers: under systemd, units share CPU by weight before any nice value counts', () => {
    const weight = (unit: string) => Number(/^CPUWeight=(\d+)$/m.exec(read(unit))?.[1] ?? 100);
    expect(weight('ops/systemd/user-sms-background.service')).toBeLessThan(100);
    expect(weight('ops/systemd/user-sms-api.service')).toBe(100);
    expect(weight('ops/systemd/sms-worker@.service')).toBe(100);
  });
});

describe('docker-compose.yml', () => {
  it('has a fixed project name, PostgreSQL, Redis (noeviction, AOF), the API, scalable workers and a sandbox profile', async ({ skip }) => {
    let parse: ((text: string, options: { merge: boolean }) => unknown) | undefined;
    try {
      ({ parse } = (await import('yaml')) as { parse: typeof parse });
    } catch (error) {
      // `npm ci` always brings it (vitest's vite depends on it): in CI its absence is an error.
      if (process.env.CI) throw error;
      skip('the `yaml` package is not installed');
    }
    type Service = {
      image?: string;
      build?: { dockerfile: string };
      command?: string[];
      entrypoint?: string[];
      profiles?: string[];
      deploy?: { replicas: string | number };
      healthcheck?: Record<string, unknown>;
      environment?: Record<string, unknown>;
      depends_on?: Record<string, { condition: string }>;
      cpu_shares?: number;
    };
    const file = parse!(read('docker-compose.yml'), { merge: true }) as { name?: string; services: Record<string, Service> };
    // The project's containers, network and volumes keep their names whatever the checkout's directory.
    expect(file.name).toBe('user-sms');
    const { postgres, redis, api, worker, background, sandbox } = file.services;
    expect(postgres?.image).toMatch(/^postgres:/);
    expect(redis?.command?.join(' ')).toMatch(/--maxmemory-policy noeviction/);
    expect(redis?.command?.join(' ')).toMatch(/--appendonly yes/);
    for (const service of [api, worker, background]) {
      expect(service?.build?.dockerfile).toBe('ops/Dockerfile');
      expect(service?.depends_on?.postgres?.condition).toBe('service_healthy');
      expect(service?.depends_on?.redis?.condition).toBe('service_healthy');
      expect(service?.environment?.REDIS_URL).toBe('redis://redis:6379');
    }
    expect(api?.command).toEqual(['api']);
    expect(worker?.command).toEqual(['worker']);
    expect(String(worker?.deploy?.replicas)).toMatch(/\d/);
    expect(worker?.healthcheck?.disable).toBe(true);
    // The workers only send; the background work is the background service's, alone.
    expect(worker?.environment?.WORKER_BACKGROUND).toBe('false');
    expect(background?.command).toEqual(['background']);
    expect(background?.healthcheck?.disable).toBe(true);
    // Containers share CPU by weight before any nice value counts: the background's is below the default 1024.
    expect(background?.cpu_shares).toBeLessThan(1024);
    expect([api?.cpu_shares, worker?.cpu_shares]).toEqual([undefined, undefined]);
    expect(sandbox?.profiles).toEqual(['sandbox']);
    expect(sandbox?.entrypoint).toEqual(['npm', 'run', 'sandbox']);
    // Redis under Sentinel (--profile sentinel): a replica of `redis` and three sentinels watching it.
    const sentinelProfile = ['redis-replica', 'sentinel-1', 'sentinel-2', 'sentinel-3'];
    for (const name of sentinelProfile) expect(file.services[name]?.profiles, name).toEqual(['sentinel']);
    expect(file.services['redis-replica']?.command?.join(' ')).toMatch(/--replicaof redis 6379/);
    for (const name of sentinelProfile.slice(1)) expect(file.services[name]?.command?.join(' '), name).toMatch(/sentinel monitor sms redis 6379 2[\s\S]*--sentinel/);
    for (const service of [api, worker, background]) expect(Object.keys(service?.environment ?? {})).toEqual(expect.arrayContaining(['REDIS_SENTINELS', 'REDIS_SENTINEL_MASTER', 'REDIS_CLUSTER_NODES']));
    for (const name of Object.keys(file.services)) if (name !== 'sandbox' && !sentinelProfile.includes(name)) expect(file.services[name]!.profiles, name).toBeUndefined();
  });

  /**
   * `config --quiet` on `text` as the compose file of this checkout, sandbox and sentinel profiles included: it
   * validates the schema, the variables, the merged anchors and the references between services.
   */
  function composeConfig(text: string): { status: number | null; stderr: string } {
    const dir = mkdtempSync(join(tmpdir(), 'user-sms-compose-'));
    try {
      // v1 predates the top-level `name` and rejects it; the test above checks that line.
      writeFileSync(join(dir, 'docker-compose.yml'), compose!.v1 ? text.replace(/^name: .*\n/m, '') : text);
      const args = [...compose!.args, '-f', join(dir, 'docker-compose.yml'), '--project-directory', ROOT, '--profile', 'sandbox', '--profile', 'sentinel', 'config', '--quiet'];
      return spawnSync(compose!.command, args, { encoding: 'utf8', timeout: 30_000, env: { ...process.env, POSTGRES_PASSWORD: 'x' } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it.skipIf(skipCompose)('is accepted by `docker compose config`', () => {
    const result = composeConfig(read('docker-compose.yml'));
    expect(result.status, result.stderr).toBe(0);
  });

  it.skipIf(skipCompose)('is rejected by `docker compose config` when broken: an unknown setting, a wrong type, an undefined service, a malformed variable', () => {
    const original = read('docker-compose.yml');
    const broken: Array<[string, string, RegExp]> = [
      ['restart misspelt in postgres', original.replace(/^( {4})restart: unless-stopped$/m, '$1restat: unless-stopped'), /services\.postgres\b.*restat/],
      ["the API's ports a string, not a list", original.replace(/^( {4}ports:)\n {6}- ("127\.0\.0\.1:\$\{PORT:-8014\}:8014")$/m, '$1 $2'), /services\.api\.ports/],
      ['a dependency on an undefined service', original.replace(/^( {4})redis:(\n {6}condition: service_healthy)$/m, '$1rediss:$2'), /rediss/],
      ['an unclosed variable', original.replace('${WORKER_REPLICAS:-2}', '${WORKER_REPLICAS:-2'), /interpolat/i],
    ];
    for (const [what, text, error] of broken) {
      expect(text, what).not.toBe(original);
      const result = composeConfig(text);
      expect(result.status, what).not.toBe(0);
      expect(result.stderr, what).toMatch(error);
    }
  });
});

describe('ops/Dockerfile', () => {
  it('is multi-stage on Node 24, installs production dependencies only, runs the compiled service, copies what the tools load, and checks /health', () => {
    const dockerfile = read('ops/Dockerfile');
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24[-\w.]*$/m);
    expect(dockerfile.match(/^FROM \$\{NODE_IMAGE\} AS \w+$/gm)?.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n?.*\/health/m);
    expect(dockerfile).toMatch(/^USER node$/m);
    // Everything the runtime stage copies exists, and covers what src/run.mjs needs at run time.
    const copied = [...dockerfile.matchAll(/^COPY --chown=\S+ (\S+) \.\/?\S*$/gm)].map((m) => m[1]!);
    for (const path of copied) expect(existsSync(join(ROOT, path)), path).toBe(true);
    expect(copied).toEqual(expect.arrayContaining(['src', 'workers', 'migrations', 'package.json']));
    // The service itself runs compiled: dist/ from the build stage, which builds it as npm run build does.
    expect(dockerfile).toMatch(/^FROM \$\{NODE_IMAGE\} AS build$/m);
    expect(dockerfile).toMatch(/^RUN node ops\/build\.mjs$/m);
    expect(dockerfile).toMatch(/^COPY --from=build --chown=\S+ \/app\/dist \.\/dist$/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \[.*"dist\/src\/run\.mjs", "dist\/src\/main\.js"\]$/m);
    for (const path of ['tsconfig.json', 'tsconfig.build.json', 'ops/build.mjs']) expect(existsSync(join(ROOT, path)), path).toBe(true);
    const ignore = read('.dockerignore').split('\n');
    for (const entry of ['node_modules', '.env', '.git']) expect(ignore).toContain(entry);
  });
});

describe.skipIf(skipSystemd)('ops/systemd units', () => {
  it('pass `systemd-analyze verify` (paths pointed at this checkout)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'user-sms-units-'));
    try {
      for (const unit of ['user-sms-api.service', 'sms-worker@.service', 'user-sms-background.service']) {
        writeFileSync(join(dir, unit), read(`ops/systemd/${unit}`).replaceAll('/opt/user-sms/node_modules/.bin/node', process.execPath).replaceAll('/opt/user-sms', ROOT));
      }
      // A template is verified through an instance.
      writeFileSync(join(dir, 'sms-worker@1.service'), readFileSync(join(dir, 'sms-worker@.service')));
      const units = ['user-sms-api.service', 'sms-worker@1.service', 'user-sms-background.service'].map((unit) => join(dir, unit));
      const result = spawnSync(systemdAnalyze!, ['verify', '--man=no', ...units], { encoding: 'utf8', timeout: 30_000 });
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).not.toMatch(/Unknown|ignoring|not executable/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(skipLogrotate)('ops/logrotate/user-sms', () => {
  it('rotates the log of a running process with copytruncate: nothing lost before, writing goes on at the start of the new file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'user-sms-logrotate-'));
    const log = join(dir, 'send_user_sms.log');
    const conf = join(dir, 'user-sms.conf');
    // The snippet, on a file of ours, rotated as ourselves.
    writeFileSync(conf, read('ops/logrotate/user-sms').replace(/^\/opt\/user-sms\/send_user_sms.log .*\{$/m, `${log} {`).replace(/^\s*su .*$/m, ''));
    let writer: ChildProcess | undefined;
    try {
      const check = spawnSync(logrotate!, ['-d', '-s', join(dir, 'state'), conf], { encoding: 'utf8' });
      expect(check.status, check.stderr).toBe(0);

      // A writer like the service under the script: one descriptor, opened for appending, kept open.
      const fd = openSync(log, 'a');
      for (let i = 0; i < 100; i += 1) writeSync(fd, `before rotation ${i}\n`);
      writer = spawn(process.execPath, ['-e', 'let i = 0; setInterval(() => process.stdout.write(`after rotation ${i++}\\n`), 5);'], { stdio: ['ignore', fd, 'inherit'] });
      closeSync(fd);
      const rotate = spawnSync(logrotate!, ['-f', '-s', join(dir, 'state'), conf], { encoding: 'utf8' });
      expect(rotate.status, rotate.stderr).toBe(0);
      await eventually(() => Promise.resolve(readFileSync(log, 'utf8').includes('after rotation') ? true : undefined));

      const rotated = readdirSync(dir).filter((name) => name.startsWith('send_user_sms.log-'));
      expect(rotated).toHaveLength(1);
      const old = readFileSync(join(dir, rotated[0]!), 'utf8');
      for (let i = 0; i < 100; i += 1) expect(old).toContain(`before rotation ${i}\n`);
      const current = readFileSync(log, 'utf8');
      expect(current).toMatch(/^after rotation \d+\n/);
      expect(current).not.toContain('\0');
      expect(current).not.toContain('before rotation 0\n');
    } finally {
      writer?.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(skipNginx)('ops/nginx snippets', () => {
  let env: TestEnv;
  let dir: string;
  let nginxPort: number;
  let server: ChildProcess | undefined;
  const ADMIN = { user: 'ops', password: 'nginx-test-pass' };

  /** A minimal nginx.conf with both snippets included where they belong, proxying to `upstreamPort`. */
  const writeConfig = (upstreamPort: number) => writeNginxConfig(dir, nginxPort, upstreamPort);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'user-sms-nginx-'));
    nginxPort = await freePort();
    env = await createTestEnv({ ADMIN_USER: ADMIN.user, ADMIN_PASSWORD: ADMIN.password, RATE_LIMIT_PER_WINDOW: '1000' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  });
  afterAll(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((resolve) => server!.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
    await env?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('pass `nginx -t` included in a minimal configuration (zone in http, location in server)', () => {
    const conf = writeConfig(8014);
    const result = spawnSync(nginx!, ['-t', '-p', dir, '-e', join(dir, 'error.log'), '-c', conf], { encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/syntax is ok/);
  });

  describe('in front of a running service', () => {
    let direct: string;
    const viaNginx = (path: string) => `http://127.0.0.1:${nginxPort}/api/user-sms${path}`;

    beforeAll(async () => {
      const { api } = await env.startService({ workers: 1 });
      direct = api!.url;
      const conf = writeConfig(Number(new URL(direct).port));
      server = spawn(nginx!, ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf, '-g', 'daemon off;'], { stdio: 'ignore' });
      await eventually(async () => {
        const response = await fetch(viaNginx('/')).catch(() => undefined);
        return response?.status === 200 ? true : undefined;
      }, 20_000);
    });

    it('proxies /api/user-sms/ to the service with the prefix removed', async () => {
      const response = await fetch(viaNginx('/'));
      expect(((await response.json()) as { service: string }).service).toBe('User SMS Sending Service');
      expect((await fetch(viaNginx('/health'))).status).toBe(200);
    });

    it("records the client's address from X-Real-IP, and a client cannot forge it with X-Forwarded-For", async () => {
      // From 127.0.0.2: a client address other than nginx's own (127.0.0.1).
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const body = JSON.stringify({ enterprise_number: '0367', phone: '+375296254070', text: 'through nginx' });
        const req = request(
          viaNginx('/send'),
          { method: 'POST', localAddress: '127.0.0.2', headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.9', 'x-real-ip': '203.0.113.9' } },
          (res) => {
            let text = '';
            res.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
      expect(answer.status, answer.body).toBe(200);
      const id = (JSON.parse(answer.body) as { id: number }).id;
      const row = await env.db.selectFrom('user_sms_send').select('request_ip').where('id', '=', String(id)).executeTakeFirstOrThrow();
      expect(row.request_ip).toBe('127.0.0.2');
    });

    it('does not publish the dashboard, /metrics, reports or the balance, whatever the spelling, even with valid credentials', async () => {
      const credentials = { authorization: `Basic ${Buffer.from(`${ADMIN.user}:${ADMIN.password}`).toString('base64')}` };
      expect((await fetch(`${direct}/admin/queues`, { headers: credentials })).status).toBe(200);
      const notFound = await (await fetch(viaNginx('/no-such-path'))).text();
      for (const path of ['/admin/queues', '/admin/queues/api/queues', '/ADMIN/queues', '/metrics', '/Metrics', '//metrics', '/metrics/', '/reports', '/reports/recent', '/enterprises/0367/balance']) {
        const response = await fetch(viaNginx(path), { headers: credentials });
        expect(response.status, path).toBe(404);
        // nginx's own answer: the request never reached the service.
        expect(await response.text(), path).toBe(notFound);
      }
      expect(notFound).not.toMatch(/user_sms_|bull/i);
    });

    it('answers 429 to a client flooding past the burst, and lets the first 100 requests through', async () => {
      const statuses: number[] = [];
      for (let batch = 0; batch < 6; batch += 1) {
        statuses.push(...(await Promise.all(Array.from({ length: 50 }, () => fetch(viaNginx('/')).then((r) => r.arrayBuffer().then(() => r.status))))));
      }
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(100);
      expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
      expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
    });
  });
});
