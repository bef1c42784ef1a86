// `npm run sandbox`: the WebSMS sandbox as its own process, for `npm run dev` and the benchmark.
// It reads its few SANDBOX_* variables itself: it is a development tool, not part of the service's
// configuration.
import { startSandbox, type SandboxAccount } from './sandbox.ts';

function fail(message: string): never {
  process.stderr.write(`websms sandbox: ${message}\n`);
  process.exit(2);
}

function readNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) fail(`${name} must be a non-negative integer, got "${raw}"`);
  return value;
}

/** `user key;user2 key2`: accounts separated by ';', user and key by whitespace. */
function readAccounts(raw: string | undefined): SandboxAccount[] {
  if (raw === undefined) return [];
  return raw
    .split(';')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry, index) => {
      const [user, apiKey, ...rest] = entry.split(/\s+/);
      // The entry itself is not echoed: it holds a key.
      if (user === undefined || apiKey === undefined || rest.length > 0) fail(`SANDBOX_ACCOUNTS entry ${index + 1} is not "user key"`);
      return { user, apiKey };
    });
}

const port = readNumber('SANDBOX_PORT', 8099);
if (port > 65535) fail(`SANDBOX_PORT must be at most 65535, got ${port}`);
const sandbox = await startSandbox({
  port,
  host: process.env.SANDBOX_HOST || '127.0.0.1',
  latencyMs: readNumber('SANDBOX_LATENCY_MS', 0),
  accounts: readAccounts(process.env.SANDBOX_ACCOUNTS),
  // Long enough to watch a message go queued → accepted by operator → delivered in `npm run dev`.
  deliveryMs: readNumber('SANDBOX_DELIVERY_MS', 20_000),
});
process.stdout.write(`WebSMS sandbox listening at ${sandbox.url}\n`);

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    sandbox.close().catch((error: unknown) => fail(`close failed: ${String(error)}`));
  });
}
