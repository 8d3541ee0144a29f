// `uplinkd doctor` in a lab router: a clean router with its config has
// nothing to report, before and after uplinkd installed its state, and each
// hazard put live into the router is found, alone, with exit 1.
//
// Doctor runs with --root pointing at an empty folder whose proc/ is the real
// /proc: the routes, rules, sysctls and tools are the router's, while the
// config-file checks (networkd, /etc/nftables.conf, sysctl.d) see no files,
// since this machine's own /etc is not the router's. Those checks have their
// own tests on fake roots (test/unit/doctor.test.ts).

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { labDown, labExec, labUp, type LabState } from '../../src/lab/lab.js';
import { UPLINKD_BIN } from '../../src/lab/lab-daemon.js';
import { mustUplinkd, uniqueLabName, uplinkd } from './harness.js';

let lab: LabState;
let root: string;
const scratch: string[] = [];

before(async () => {
  lab = await labUp({ name: uniqueLabName('doc'), uplinks: 2 });
  root = mkdtempSync(join(tmpdir(), 'uplinkd-doctor-root-'));
  scratch.push(root);
  symlinkSync('/proc', join(root, 'proc'));
});
after(async () => {
  await labDown(lab.name);
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});
// Every test leaves the router as labUp built it.
afterEach(() => mustUplinkd(lab, 'flush'));

interface Doctor { code: number; ids: string[]; stdout: string; stderr: string }

function parse(r: { code: number; stdout: string; stderr: string }): Doctor {
  const ids = r.stdout.split('\n').map((l) => /^([\w-]+): .*; fix: /.exec(l)?.[1]).filter((id): id is string => !!id);
  return { code: r.code, ids, stdout: r.stdout, stderr: r.stderr };
}

async function doctor(): Promise<Doctor> {
  return parse(await uplinkd(lab, 'doctor', '-c', lab.configPath, '--root', root));
}

async function inRouter(...argv: string[]): Promise<void> {
  const r = await labExec(lab.name, 'router', argv);
  assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
}

test('a clean lab router with its config: exit 0, before and after uplinkd installs its state', async () => {
  const clean = await doctor();
  assert.equal(clean.code, 0, clean.stdout + clean.stderr);
  assert.equal(clean.stdout, 'no problems found\n');
  await mustUplinkd(lab, 'apply', '-c', lab.configPath);
  const applied = await doctor();
  assert.equal(applied.code, 0, applied.stdout + applied.stderr);
  assert.equal(applied.stdout, 'no problems found\n');
});

test('strict rp_filter on wan1 after uplinkd installed its state: found, for wan1 only', async () => {
  await mustUplinkd(lab, 'apply', '-c', lab.configPath);
  try {
    // The lab router's conf/all is 2 (loose): the kernel takes the larger, so wan1's 1 alone changes nothing.
    await inRouter('sysctl', '-qw', 'net.ipv4.conf.wan1.rp_filter=1');
    const moot = await doctor();
    assert.equal(moot.code, 0, moot.stdout);
    await inRouter('sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0');
    const d = await doctor();
    assert.equal(d.code, 1, d.stdout);
    assert.deepEqual(d.ids, ['rp-filter']);
    assert.match(d.stdout, /^rp-filter: wan1 \(uplink isp1\) has strict rp_filter .*; fix: sysctl -w net\.ipv4\.conf\.wan1\.rp_filter=2/m);
    assert.equal(d.stderr.trim(), '1 problem found');
  } finally {
    await inRouter('sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=2', 'net.ipv4.conf.wan1.rp_filter=2');
  }
});

test('a VPN client\'s 0.0.0.0/1 and a default route on its interface: both found', async () => {
  await inRouter('ip', 'link', 'add', 'vpn0', 'type', 'veth', 'peer', 'name', 'vpn0peer');
  try {
    await inRouter('ip', 'link', 'set', 'vpn0', 'up');
    await inRouter('ip', 'route', 'add', '0.0.0.0/1', 'dev', 'vpn0');
    const wide = await doctor();
    assert.equal(wide.code, 1, wide.stdout);
    assert.deepEqual(wide.ids, ['shadowing-route']);
    assert.match(wide.stdout, /the main table has 0\.0\.0\.0\/1 dev vpn0: /);
    await inRouter('ip', 'route', 'del', '0.0.0.0/1', 'dev', 'vpn0');
    await inRouter('ip', 'route', 'add', 'default', 'dev', 'vpn0', 'metric', '50');
    const foreign = await doctor();
    assert.equal(foreign.code, 1, foreign.stdout);
    assert.deepEqual(foreign.ids, ['foreign-default']);
    assert.match(foreign.stdout, /default route on vpn0, which is neither an uplink nor the LAN/);
  } finally {
    // Deleting the link takes its routes with it.
    await inRouter('ip', 'link', 'del', 'vpn0');
  }
});

test('a foreign rule at priority 100 into a table with a default route: found, with uplinkd state installed too', async () => {
  await mustUplinkd(lab, 'apply', '-c', lab.configPath);
  const [isp1] = lab.uplinks;
  await inRouter('ip', 'route', 'add', 'default', 'via', isp1.gateway, 'dev', isp1.routerIf, 'table', '100');
  await inRouter('ip', 'rule', 'add', 'priority', '100', 'lookup', '100');
  try {
    const d = await doctor();
    assert.equal(d.code, 1, d.stdout);
    assert.deepEqual(d.ids, ['shadowing-rule']);
    assert.match(d.stdout, new RegExp(`^shadowing-rule: ip rule priority 100 from all lookup 100 comes before uplinkd's rules \\(from priority 10000\\) and table 100 has a default route \\(default via ${isp1.gateway.replaceAll('.', '\\.')} dev wan1\\)`, 'm'));
  } finally {
    await inRouter('ip', 'rule', 'del', 'priority', '100');
    await inRouter('ip', 'route', 'flush', 'table', '100');
  }
});

test('a PATH without fping: found, with the package to install', async () => {
  // Every program of this PATH but fping, so node, ip, nft and conntrack still run.
  const bin = mkdtempSync(join(tmpdir(), 'uplinkd-doctor-path-'));
  scratch.push(bin);
  const linked = new Set<string>();
  for (const dir of (process.env.PATH ?? '').split(':').filter(Boolean)) {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names.filter((n) => n !== 'fping' && !linked.has(n))) {
      symlinkSync(join(dir, name), join(bin, name));
      linked.add(name);
    }
  }
  const d = parse(await labExec(lab.name, 'router', ['env', `PATH=${bin}`, UPLINKD_BIN, 'doctor', '-c', lab.configPath, '--root', root]));
  assert.equal(d.code, 1, d.stdout + d.stderr);
  assert.deepEqual(d.ids, ['missing-tool']);
  assert.match(d.stdout, /^missing-tool: fping is not on PATH \(.*\): its icmp checks probe with it; fix: apt-get install fping$/m);
});
