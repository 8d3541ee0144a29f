// Every file in test/configs/broken must fail with exactly the errors its
// `# expect: LINE:COL: MESSAGE` lines name: the same messages, in the same
// order (sorted by position, as `uplinkd check` prints them), and no other.
// An extra error is a failure too: a config meant to show one mistake that
// also trips another check hides whether the first one is still caught.
// Every file in test/configs/valid must load.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatDiagnostic, loadConfigFile } from '../../src/config/load.js';

const configs = fileURLToPath(new URL('../configs/', import.meta.url));
const yamlFiles = (dir: string) => readdirSync(join(configs, dir)).filter((name) => name.endsWith('.yaml')).sort();

describe('broken configs', () => {
  const files = yamlFiles('broken');

  it('has a corpus of at least 24', () => {
    assert.ok(files.length >= 24, `only ${files.length} broken configs`);
  });

  for (const name of files) {
    it(name, () => {
      const file = join(configs, 'broken', name);
      const text = readFileSync(file, 'utf8');
      assert.match(text.split('\n')[0], /^# expect: /, 'the first line must be an `# expect:` comment');
      const expected = [...text.matchAll(/^# expect: (\d+:\d+: .+)$/gm)].map((m) => m[1]);

      const result = loadConfigFile(file);
      assert.equal(result.ok, false, 'the config was accepted');
      if (result.ok) return;
      const output = result.errors.map(formatDiagnostic);
      for (const error of output) assert.ok(error.startsWith(`${file}:`), `not located in the file: ${error}`);
      // `LINE:COL: message`, as the file declares it.
      assert.deepEqual(output.map((error) => error.slice(file.length + 1)), expected);
    });
  }
});

describe('valid configs', () => {
  const files = yamlFiles('valid');

  it('has at least 3', () => {
    assert.ok(files.length >= 3);
  });

  for (const name of files) {
    it(name, () => {
      const result = loadConfigFile(join(configs, 'valid', name));
      assert.ok(result.ok, result.ok ? '' : result.errors.map(formatDiagnostic).join('\n'));
    });
  }
});
