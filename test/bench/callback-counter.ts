import { createServer } from 'node:http';

// The delivery phase's callback receiver, in a process of its own (`node src/run.mjs
// test/bench/callback-counter.ts`, port in RECEIVER_PORT): it stands for the callers' CRMs, which are
// elsewhere in a deployment, so it must not share the load generator's event loop, where every
// callback would delay the timing of the sends being measured. It takes every request with 204; what
// was delivered is counted from the service's own rows.

const port = Number(process.env.RECEIVER_PORT);
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(204).end());
});
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
