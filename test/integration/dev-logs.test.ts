import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, eventually, type TestEnv } from '../support/context.ts';
import { spawnNode, spawnRole, type ServiceProcess } from '../support/service-processes.ts';

// `npm run dev` is read by a person at a terminal: pino's pretty printer, one readable line per
// event. The service proper writes one JSON object per line, for log collectors.

const isJson = (line: string) => {
  try {
    return typeof JSON.parse(line) === 'object';
  } catch {
    return false;
  }
};

describe('log format', () => {
  let env: TestEnv;
  const processes: ServiceProcess[] = [];

  beforeAll(async () => {
    env = await createTestEnv();
  });
  afterAll(async () => {
    for (const p of processes) await p.stop(5_000);
    await env?.cleanup();
  });

  const processEnv = () => ({
    DATABASE_URL: env.databaseUrl,
    REDIS_URL: env.config.redisUrl,
    QUEUE_PREFIX: env.config.queuePrefix,
    PORT: '0',
    SANDBOX_PORT: '0',
    LOG_LEVEL: 'info',
  });

  it('npm run dev prints human-readable lines, not JSON, with level and message', async () => {
    const dev = spawnNode(['src/run.mjs', 'src/dev.ts'], processEnv(), 'dev');
    processes.push(dev);
    const ready = await eventually(() => dev.output().find((line) => line.includes('dev service ready')), 30_000);
    expect(isJson(ready)).toBe(false);
    expect(ready).toMatch(/INFO/);
    const listening = dev.output().find((line) => line.includes('api listening'));
    expect(listening, 'the API start-up line').toBeDefined();
    // Time, level and message first; the fields follow on the same line.
    expect(listening).toMatch(/^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO: api listening \{.*"port":\d+/);
    expect(dev.output().filter(isJson)).toEqual([]);
    expect(await dev.stop(10_000)).toBe(0);
  });

  it('the service proper (npm run start:api) writes one JSON object per line', async () => {
    const api = spawnRole('api', processEnv());
    processes.push(api);
    const listening = await eventually(() => api.output().find((line) => line.includes('api listening')), 30_000);
    expect(JSON.parse(listening)).toMatchObject({ level: 30, msg: 'api listening', role: 'api' });
    expect(api.output().every(isJson)).toBe(true);
    await api.stop(10_000);
  });
});
