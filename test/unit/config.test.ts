import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';

describe('loadConfig', () => {
  it('uses the documented defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8014,
      host: '127.0.0.1',
      databaseUrl: 'postgresql://postgres@127.0.0.1:5432/postgres',
      redisUrl: 'redis://127.0.0.1:6379',
      websms: { baseUrl: 'https://cabinet.websms.by/api', defaultSender: 'Vochi-CRM', timeoutMs: 30_000 },
      rateLimit: { perWindow: 3, windowMs: 60_000 },
    });
    expect(config.sendWaitMs).toBeLessThan(30_000);
    expect(Object.isFrozen(config)).toBe(true);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['DATABASE_URL', 'mysql://x'],
    ['REDIS_URL', 'not a url'],
    ['WEBSMS_TIMEOUT_MS', '-5'],
    ['RATE_LIMIT_PER_WINDOW', '0'],
    ['SEND_WAIT_MS', '31000'],
    ['LOG_LEVEL', 'loud'],
    ['WEBSMS_DEFAULT_SENDER', 'TwelveCharsX'],
  ])('refuses %s=%s with a message naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(name);
  });

  it('runs one worker process per CPU by default, and WORKER_PROCESSES overrides it', () => {
    expect(loadConfig({}).worker.processes).toBe(Math.max(1, availableParallelism()));
    expect(loadConfig({ WORKER_PROCESSES: '3' }).worker.processes).toBe(3);
    expect(loadConfig({ WORKER_PROCESSES: '0' }).worker.processes).toBe(0);
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ PORT: '' }).port).toBe(8014);
  });

  it('drops a trailing slash from the WebSMS base URL so paths join cleanly', () => {
    expect(loadConfig({ WEBSMS_BASE_URL: 'http://127.0.0.1:9/api/' }).websms.baseUrl).toBe('http://127.0.0.1:9/api');
  });
});
