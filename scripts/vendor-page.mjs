// Part of `npm run build`: puts the status page (src/api/page/) and the chart
// library it draws with (uPlot, from node_modules) into dist/api/page/, where
// the daemon serves them from. No CDN: the page works on a router with no
// internet (README "Status page").
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'src/api/page');
const target = join(root, 'dist/api/page');
mkdirSync(join(target, 'vendor'), { recursive: true });
for (const file of readdirSync(source)) copyFileSync(join(source, file), join(target, file));
const uplot = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'));
for (const file of ['uPlot.iife.min.js', 'uPlot.min.css']) copyFileSync(join(uplot, file), join(target, 'vendor', file));
