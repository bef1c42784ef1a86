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
    ['WORKER_BACKGROUND', 'maybe'],
    ['BACKGROUND_NICE', '20'],
    ['BACKGROUND_NICE', '-5'],
  ])('refuses %s=%s with a message naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(name);
  });

  it('runs one worker process per CPU by default, and WORKER_PROCESSES overrides it', () => {
    expect(loadConfig({}).worker.processes).toBe(Math.max(1, availableParallelism()));
    expect(loadConfig({ WORKER_PROCESSES: '3' }).worker.processes).toBe(3);
    expect(loadConfig({ WORKER_PROCESSES: '0' }).worker.processes).toBe(0);
  });

  it('has each worker do the background work too unless WORKER_BACKGROUND is false, and runs the background process at nice 10 unless BACKGROUND_NICE says otherwise', () => {
    expect(loadConfig({}).worker.background).toBe(true);
    expect(loadConfig({ WORKER_BACKGROUND: 'false' }).worker.background).toBe(false);
    expect(loadConfig({ WORKER_BACKGROUND: 'off' }).worker.background).toBe(false);
    expect(loadConfig({}).backgroundNice).toBe(10);
    expect(loadConfig({ BACKGROUND_NICE: '0' }).backgroundNice).toBe(0);
    expect(loadConfig({ BACKGROUND_NICE: '19' }).backgroundNice).toBe(19);
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ PORT: '' }).port).toBe(8014);
  });

  it('drops a trailing slash from the WebSMS base URL so paths join cleanly', () => {
    expect(loadConfig({ WEBSMS_BASE_URL: 'http://127.0.0.1:9/api/' }).websms.baseUrl).toBe('http://127.0.0.1:9/api');
  });
});
