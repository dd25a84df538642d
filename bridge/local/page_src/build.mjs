// Builds bridge/local/page/page.js from src/ with esbuild (`make page`).
// The banner records a digest of the sources and the lock file; a unit test recomputes it, so a
// committed bundle that no longer matches its sources fails `make test`.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
const inputs = [
  ...readdirSync(join(here, 'src'))
    .filter((name) => name.endsWith('.js'))
    .sort()
    .map((name) => join('src', name)),
  'package-lock.json',
];
const digest = createHash('sha256');
for (const name of inputs) {
  digest.update(name + '\0');
  digest.update(readFileSync(join(here, name)));
  digest.update('\0');
}
const lock = JSON.parse(readFileSync(join(here, 'package-lock.json'), 'utf8'));
const version = lock.packages['node_modules/livekit-client'].version;

await build({
  entryPoints: [join(here, 'src/main.js')],
  outfile: join(here, '../page/page.js'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  legalComments: 'none',
  banner: {
    js: `// Built by bridge/local/page_src/build.mjs from its src/ (livekit-client ${version}); do not edit.\n// sources-sha256: ${digest.digest('hex')}`,
  },
  logLevel: 'warning',
});
