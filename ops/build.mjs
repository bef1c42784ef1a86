// Compiles the service to JavaScript in dist/ (`npm run build`; ops/send_user_sms.sh and the Docker
// image run it too). Production processes then run dist/ and never load Node's TypeScript type
// stripper, which stays resident in every process that does (about 30 MB each). Tests and
// `npm run dev` run the sources directly. Plain JavaScript, like src/run.mjs: it runs before
// anything is compiled.
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

// From scratch: a file gone from the sources (a migration, say) must not live on in dist/.
rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
// Files the code reads next to itself.
copyFileSync(join(root, 'src/line/enterprise-line.lua'), join(dist, 'src/line/enterprise-line.lua'));
