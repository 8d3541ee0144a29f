// `uplinkd schema` (src/config/json-schema.ts): the JSON Schema an editor checks
// the YAML with. It must accept every config the loader accepts (a schema that
// flags a valid config is worse than none), and reject most of the broken
// corpus; the broken configs only the loader's own checks catch are listed by
// name, so a change either way shows here.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { parseDocument } from 'yaml';
import { configJsonSchema } from '../../src/config/json-schema.js';
import { formatDiagnostic, parseConfig } from '../../src/config/load.js';
import { labConfig, labUpConfig } from '../../src/lab/lab-config.js';
import type { LabState, LabUplink } from '../../src/lab/lab.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const configs = join(root, 'test/configs');
const yamlFiles = (dir: string) => readdirSync(join(configs, dir)).filter((name) => name.endsWith('.yaml')).sort();

const schema = configJsonSchema();
const validate = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true }).compile(schema);

/** The schema's verdict on YAML text; undefined when the text is not YAML at all (the editor's YAML parser says so). */
function schemaErrors(text: string): string[] | undefined {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) return undefined;
  return validate(doc.toJS()) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
}

function assertSchemaAccepts(name: string, text: string): void {
  const loaded = parseConfig(text, name);
  assert.ok(loaded.ok, `${name} does not load: ${loaded.ok ? '' : loaded.errors.map(formatDiagnostic).join('\n')}`);
  assert.deepEqual(schemaErrors(text), [], `the schema rejects ${name}, which the loader accepts`);
}

// Only the loader's semantic checks (load.ts, the parse functions' value checks) catch these:
// the schema checks shapes, keys, enums, integer ranges, units and name patterns, not what values mean together.
const ONLY_THE_LOADER_CATCHES = [
  'dport-with-proto-any.yaml', // a port needs proto tcp or udp: two keys together
  'dport-with-proto-icmp.yaml',
  'duplicate-interface.yaml', // two uplinks on one interface
  'duplicate-rule-name.yaml',
  'gateway6-multicast.yaml', // an address of the right shape but the wrong kind
  'host-bits-set.yaml',
  'http-check-without-targets.yaml', // what targets must be depends on method
  'http-target-not-url.yaml',
  'ipv6-rule-destination.yaml', // an IPv6 rule for uplinks without IPv6
  'ipv6-target-malformed.yaml',
  'ipv6-target-without-ipv6.yaml',
  'lan-is-uplink.yaml',
  'mark-mask-not-contiguous.yaml', // bit patterns
  'mark-mask-too-narrow.yaml', // the mask against the number of uplinks
  'nat6-prefix-length-mismatch.yaml',
  'nat6-prefix-without-prefixes.yaml', // bare `prefix` is one of the modes' words
  'no-uplinks.yaml',
  'port-range-reversed.yaml',
  'quorum-over-one-family.yaml',
  'quorum-over-targets.yaml',
  'rule-families-never-meet.yaml',
  'table-base-reserved.yaml', // the kernel's own tables within the range
  'unknown-group.yaml', // the machine's group and passwd files
  'unknown-user.yaml',
  'via-mixing-main.yaml',
  'via-unknown-uplink.yaml', // names that must match other keys
];
/** Not YAML: the editor's YAML parser flags them before any schema. */
const NOT_YAML = ['duplicate-key.yaml', 'yaml-syntax.yaml'];

describe('uplinkd schema', () => {
  it('prints the JSON Schema with $schema, a title and described top-level keys, and exits 0', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli.ts'), 'schema'], { cwd: root, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const printed = JSON.parse(run.stdout);
    assert.equal(printed.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.match(printed.title, /uplinkd/);
    assert.deepEqual(printed, schema);
    for (const [key, property] of Object.entries(printed.properties as Record<string, { description?: string }>)) {
      assert.ok(property.description, `top-level key ${key} has no description`);
    }
  });

  it('describes the YAML as written: durations, rates, percentages and shorthands', () => {
    const accepts = (text: string) => assert.deepEqual(schemaErrors(text), [], text);
    const rejects = (text: string) => assert.notDeepEqual(schemaErrors(text), [], text);
    const withUplink = (uplink: string) => `uplinks:\n  isp1: {interface: wan1, ${uplink}}\n`;
    accepts(withUplink('check: {interval: 1s, timeout: 250ms, max_loss: 20%}, capacity: {down: 10mbit, up: 1Gbit}'));
    accepts(withUplink('check: false'));
    accepts(`lan: lan0\nhooks: /usr/local/bin/hook\n${withUplink('nat6: {prefix: {lan: "fd00::/64", uplink: "2001:db8::/64"}}')}` +
      'rules:\n  - {dport: 5060-5061, proto: udp, via: isp1}\n  - {dst: 192.0.2.0/24, via: [isp1]}\n');
    rejects(withUplink('check: {interval: 1000}'));
    rejects(withUplink('check: {interval: 1x}'));
    rejects(withUplink('capacity: {down: 10mb}'));
    rejects(withUplink('check: {max_loss: 0.2}'));
    rejects(withUplink('weight: 0'));
    rejects(withUplink('gatway: auto'));
    rejects('uplinks:\n  ISP1: {interface: wan1}\n');
    rejects('balanse: hash\n');
  });

  it('accepts every valid config in test/configs/valid', () => {
    const files = yamlFiles('valid');
    assert.ok(files.length >= 5);
    for (const name of files) assertSchemaAccepts(name, readFileSync(join(configs, 'valid', name), 'utf8'));
  });

  it('accepts the packaged config', () => {
    assertSchemaAccepts('packaging/uplinkd.yaml', readFileSync(join(root, 'packaging/uplinkd.yaml'), 'utf8'));
  });

  it("accepts the README's examples that the loader accepts", () => {
    const blocks = [...readFileSync(join(root, 'README.md'), 'utf8').matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
    const loadable = blocks.filter((text) => parseConfig(text, 'README').ok);
    assert.ok(loadable.length >= 1, `${loadable.length} of ${blocks.length} README yaml blocks load`);
    for (const [i, text] of loadable.entries()) assertSchemaAccepts(`README yaml block ${i + 1}`, text);
  });

  it('accepts the configs the lab writes', () => {
    const uplink = (k: number, extra: Partial<LabUplink>): LabUplink =>
      ({ name: `isp${k}`, routerIf: `wan${k}`, address: `100.64.${k}.2`, prefixLen: 30, gateway: `100.64.${k}.1`, ispNs: `x-isp${k}`, ...extra }) as LabUplink;
    const lab = {
      name: 'sm-schema', stateDir: '/run/uplinkd-lab/sm-schema', lanIf: 'lan0', server: '203.0.113.10', server6: '2001:db8:f::10',
      configPath: '/run/uplinkd-lab/sm-schema/uplinkd.yaml',
      uplinks: [uplink(1, { address6: '2001:db8:1::2', capacity: '20mbit' }), uplink(2, { address6: '2001:db8:2::2' }), uplink(3, { pointToPoint: true })],
    } as LabState;
    assertSchemaAccepts('labUpConfig', labUpConfig(lab));
    assertSchemaAccepts('labConfig with rules and api', labConfig(lab, {
      balance: 'least-loaded', uplinks: [{ k: 1, nat6: 'prefix', gateway6: '2001:db8:1::1' }, { k: 2, weight: 3, capacity: '5mbit' }],
      rules: '  - {name: voip, proto: udp, dport: 5060, via: isp2}', api: { http: '127.0.0.1:19271' }, checkTargets: ['203.0.113.10'],
    }));
    assertSchemaAccepts('labConfig on a multihomed host', labConfig({ ...lab, host: true }, { api: { http: 'off' } }));
  });

  it('rejects the broken corpus but for the configs only the loader catches', () => {
    const files = yamlFiles('broken');
    const passing: string[] = [];
    const notYaml: string[] = [];
    for (const name of files) {
      const errors = schemaErrors(readFileSync(join(configs, 'broken', name), 'utf8'));
      if (errors === undefined) notYaml.push(name);
      else if (errors.length === 0) passing.push(name);
    }
    assert.deepEqual(notYaml, NOT_YAML);
    assert.deepEqual(passing, ONLY_THE_LOADER_CATCHES);
    const rejected = files.length - passing.length - notYaml.length;
    assert.ok(rejected > passing.length, `the schema rejects only ${rejected} of ${files.length} broken configs`);
  });
});
