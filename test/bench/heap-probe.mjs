// Preloaded into the benchmark's service processes (NODE_OPTIONS="--expose-gc --import …"), never
// into a deployment. RSS says little about retained memory: V8 lets its young generation and old
// space grow far past the live data before collecting. On SIGUSR2 this runs a full collection and
// prints the live heap, so the benchmark can compare what a process really keeps (idle, after load,
// 10 s vs 60 s, before and after 10,000 enterprises). Plain JavaScript: a TypeScript file here would
// load Node's type stripper into the measured processes, which run compiled code (about 30 MB each).
process.on('SIGUSR2', () => {
  const gc = /** @type {(() => void) | undefined} */ (globalThis.gc);
  gc?.();
  const memory = process.memoryUsage();
  process.stderr.write(`bench-heap ${JSON.stringify({ collected: gc !== undefined, heapUsed: memory.heapUsed, rss: memory.rss })}\n`);
});
