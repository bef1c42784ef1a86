// Launcher for every entry point: `node src/run.mjs <file.ts> [args...]`.
// Plain JavaScript on purpose: an older Node cannot even load a .ts file, so the version check must
// happen here, before any TypeScript is imported, and say clearly what to do.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);
if (!(major >= REQUIRED_MAJOR)) {
  process.stderr.write(
    `user-sms-dispatcher needs Node.js ${REQUIRED_MAJOR} or newer; this is ${process.version} (${process.execPath}).\n` +
      'Run it through npm (npm start, npm test): `npm ci` installs Node 24 into node_modules/.bin.\n',
  );
  process.exit(1);
}

const entry = process.argv[2];
if (!entry) {
  process.stderr.write('usage: node src/run.mjs <entry.ts> [args...]\n');
  process.exit(2);
}
// The entry sees its own arguments from argv[2] on, as if it had been started directly.
process.argv.splice(1, 2, resolve(entry));
await import(pathToFileURL(resolve(entry)).href);
