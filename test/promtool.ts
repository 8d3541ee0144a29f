// `promtool check metrics`, Prometheus's own linter for the text format
// (naming conventions, base units, _total on counters, help texts): run on
// /metrics as the unit test's registry prints it and as a lab daemon serves it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { locateTool, TOOLS_HOME } from '../src/lab/tools.js';

/** Where scripts/setup.sh unpacks promtool (src/lab/tools.ts); else PATH. Without it the check fails: an unlinted registry is not a passed lint. */
export const PROMTOOL_HOME = join(TOOLS_HOME, 'promtool');

/** Asserts that promtool finds nothing to complain about in `text` (Prometheus text format). */
export function assertPromtoolAccepts(text: string): void {
  const promtool = locateTool('promtool');
  assert.ok(promtool, `promtool is neither at ${PROMTOOL_HOME} nor on PATH: run scripts/setup.sh`);
  const lint = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(lint.status, 0, `promtool check metrics:\n${lint.stdout}${lint.stderr}\n--- input:\n${text}`);
  assert.equal(`${lint.stdout}${lint.stderr}`.trim(), '', `promtool found problems\n--- input:\n${text}`);
}
