// Every file in test/configs/broken must fail with the errors its
// `# expect: LINE:COL: SUBSTRING` lines name; every file in test/configs/valid
// must load.

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
      const expected = [...text.matchAll(/^# expect: (\d+:\d+): (.+)$/gm)];

      const result = loadConfigFile(file);
      assert.equal(result.ok, false, 'the config was accepted');
      if (result.ok) return;
      const output = result.errors.map(formatDiagnostic);
      for (const [line, position, substring] of expected) {
        const found = output.some((error) => error.startsWith(`${file}:${position}: `) && error.includes(substring));
        assert.ok(found, `missing "${line}" in:\n${output.join('\n')}`);
      }
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
