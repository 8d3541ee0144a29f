// check, plan, apply and flush as an operator uses them: idempotent applies,
// established transfers that survive them, foreign state left byte for byte,
// no residue after flush, and broken configs that change nothing.

import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, test } from 'node:test';
import { cgroup2MountPoint, nftCgroupPath } from '../../src/kernel/cgroups.js';
import { runCommand } from '../../src/kernel/runner.js';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { labDown, labExec, labUp, type LabState } from '../../src/lab/lab.js';
import { kernelSnapshot, mustUplinkd, uniqueLabName, uplinkd } from './harness.js';

let lab: LabState;
let config: string;

before(async () => {
  lab = await labUp({ name: uniqueLabName('life'), uplinks: 2 });
  config = writeLabConfig(lab, 'two.yaml', labConfig(lab, { top: 'sticky: 5m\nrules:\n  - { name: pin, dst: 192.0.2.20, via: isp2 }\n' }));
});
after(() => labDown(lab.name));
beforeEach(() => mustUplinkd(lab, 'flush'));

test('a second apply changes nothing: nft ruleset, rules and routes identical', async () => {
  const applied = await mustUplinkd(lab, 'apply', '-c', config);
  // Every change echoed as the command that made it, as wg-quick does.
  assert.match(applied, /^\[#\] nft -f -$/m);
  assert.match(applied, /^\[#\] ip -4 rule add priority 10000 lookup main suppress_prefixlength 0$/m);
  assert.match(applied, /^\[#\] ip -4 route replace default via \S+ dev wan1 src 198\.18\.0\.1 table 201$/m);
  const first = await kernelSnapshot(lab);
  assert.equal(await mustUplinkd(lab, 'apply', '-c', config), '', 'a second apply has nothing to say');
  assert.deepEqual(await kernelSnapshot(lab), first);
});

test('plan changes nothing and prints the same text twice', async () => {
  const before = await kernelSnapshot(lab);
  const a = await mustUplinkd(lab, 'plan', '-c', config);
  const b = await mustUplinkd(lab, 'plan', '-c', config);
  assert.equal(a, b);
  assert.deepEqual(await kernelSnapshot(lab), before);
});

test('a long transfer survives a re-apply and an apply of changed weights', async () => {
  await mustUplinkd(lab, 'apply', '-c', config);
  const transfer = labExec(lab.name, 'lan', ['iperf3', '-c', lab.server, '-p', String(lab.iperfPort), '-t', '5', '-J']);
  await new Promise((r) => setTimeout(r, 1500));
  await mustUplinkd(lab, 'apply', '-c', config);
  const reweighted = writeLabConfig(lab, 'reweighted.yaml', labConfig(lab, { uplink: (_, k) => `    weight: ${k === 1 ? 1 : 5}\n` }));
  assert.match(await mustUplinkd(lab, 'apply', '-c', reweighted), /^\[#\] nft -f -$/m);
  const r = await transfer;
  assert.equal(r.code, 0, r.stdout.slice(-500) + r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.error, undefined);
  const perSecond = report.intervals.map((i: { sum: { bytes: number } }) => i.sum.bytes);
  assert.ok(perSecond.length >= 5 && perSecond.every((bytes: number) => bytes > 0), `bytes per second: ${perSecond}`);
});

test('foreign nft table, ip rule and routing tables stay byte-identical through apply and flush', async () => {
  const foreign = 'table inet operator {\n chain input { type filter hook input priority 0; policy accept; tcp dport 22 counter accept; }\n}\n';
  assert.equal((await labExec(lab.name, 'router', ['nft', '-f', '-'], { input: foreign })).code, 0);
  const add = async (...args: string[]) => assert.equal((await labExec(lab.name, 'router', ['ip', ...args])).code, 0, args.join(' '));
  await add('rule', 'add', 'priority', '500', 'from', '198.18.0.200', 'lookup', '100');
  await add('route', 'add', '192.0.2.0/24', 'via', '198.51.100.1', 'table', '100');
  // A table inside uplinkd's numeric range but not uplinkd's: no catch-all signature.
  await add('route', 'add', '192.0.2.128/25', 'via', '198.51.100.17', 'table', '250');
  const read = async () => ({
    table: (await labExec(lab.name, 'router', ['nft', 'list', 'table', 'inet', 'operator'])).stdout,
    rules: (await labExec(lab.name, 'router', ['ip', 'rule', 'show', 'priority', '500'])).stdout,
    t100: (await labExec(lab.name, 'router', ['ip', 'route', 'show', 'table', '100'])).stdout,
    t250: (await labExec(lab.name, 'router', ['ip', 'route', 'show', 'table', '250'])).stdout,
  });
  try {
    const before = await read();
    await mustUplinkd(lab, 'apply', '-c', config);
    assert.deepEqual(await read(), before, 'after apply');
    await mustUplinkd(lab, 'flush');
    assert.deepEqual(await read(), before, 'after flush');
  } finally {
    await labExec(lab.name, 'router', ['nft', 'delete', 'table', 'inet', 'operator']);
    await labExec(lab.name, 'router', ['ip', 'rule', 'del', 'priority', '500']);
    await labExec(lab.name, 'router', ['ip', 'route', 'flush', 'table', '100']);
    await labExec(lab.name, 'router', ['ip', 'route', 'flush', 'table', '250']);
  }
});

test('a foreign IPv6 rule and table stay byte-identical through a dual-stack apply and flush; uplinkd\'s IPv6 rules and routes come and go', async () => {
  // The lab's own IPv6 (README "The lab"), with the ISPs' gateways named in the config.
  const router = (...argv: string[]) => labExec(lab.name, 'router', argv);
  const must = async (...argv: string[]) => assert.equal((await router(...argv)).code, 0, argv.join(' '));
  try {
    await must('ip', '-6', 'rule', 'add', 'priority', '20000', 'from', '2001:db8:ee::/48', 'lookup', '77');
    await must('ip', '-6', 'route', 'add', '2001:db8:ee::/48', 'via', '2001:db8:ff00::99', 'dev', lab.lanIf, 'table', '77');
    const dual = writeLabConfig(lab, 'dual.yaml', labConfig(lab, { uplink: (_, k) => `    gateway6: 2001:db8:${k}::1\n` }));
    const read = async () => ({
      rule: (await router('ip', '-6', 'rule', 'show', 'priority', '20000')).stdout,
      t77: (await router('ip', '-6', 'route', 'show', 'table', '77')).stdout,
    });
    const rules6 = async () => (await router('ip', '-6', 'rule', 'show')).stdout;
    const owned6 = async () => (await router('ip', '-6', 'route', 'show', 'table', 'all')).stdout.split('\n').filter((l) => / table 20\d /.test(l));
    const before = await read();
    assert.match(before.rule, /^20000:\tfrom 2001:db8:ee::\/48 lookup 77$/m);
    assert.match(before.t77, /^2001:db8:ee::\/48 via 2001:db8:ff00::99 dev /m);
    const rulesBefore = await rules6();

    const applied = await mustUplinkd(lab, 'apply', '-c', dual);
    assert.match(applied, /^\[#\] ip -6 rule add priority 10301 fwmark 0x00000100\/0x0000ff00 lookup 201$/m);
    assert.deepEqual(await read(), before, 'after apply');
    const rules = await rules6();
    for (const line of [
      '10000:\tfrom all lookup main suppress_prefixlength 0', '10101:\tfrom 2001:db8:1::2 lookup 201', '10102:\tfrom 2001:db8:2::2 lookup 202',
      '10302:\tfrom all fwmark 0x200/0xff00 lookup 202', '10590:\tfrom all iif lo ipproto ipv6-icmp lookup main', '10600:\tfrom all iif lo lookup 201',
    ]) assert.ok(rules.split('\n').some((l) => l.trimEnd() === line), `${line} in:\n${rules}`);
    const routes = (await owned6()).join('\n');
    assert.match(routes, /^2001:db8:1::\/64 dev wan1 table 201 .*src 2001:db8:1::2/m);
    // The router's unbound sockets' source (rule 10600) is the LAN address, on another interface.
    assert.match(routes, /^default via 2001:db8:2::1 dev wan2 table 202 .*src 2001:db8:ff00::1 /m);
    assert.match(routes, /^unreachable default dev lo table 201 .*metric 4278198272 /m);
    const get = (await router('ip', '-6', 'route', 'get', '2001:db8:ffff::10', 'ipproto', 'tcp')).stdout;
    assert.match(get, / table 201 src 2001:db8:ff00::1 /, get);
    assert.equal(await mustUplinkd(lab, 'apply', '-c', dual), '', 'a second dual-stack apply has nothing to say');

    await mustUplinkd(lab, 'flush');
    assert.deepEqual(await read(), before, 'after flush');
    assert.equal(await rules6(), rulesBefore, 'flush leaves the IPv6 rules as they were before apply');
    assert.deepEqual(await owned6(), [], 'no IPv6 route left in uplinkd\'s tables');
  } finally {
    await router('ip', '-6', 'rule', 'del', 'priority', '20000');
    await router('ip', '-6', 'route', 'flush', 'table', '77');
  }
});

test('flush leaves no residue: ruleset, rules and routes as before apply', async () => {
  const clean = await kernelSnapshot(lab);
  await mustUplinkd(lab, 'apply', '-c', config);
  assert.notDeepEqual(await kernelSnapshot(lab), clean);
  await mustUplinkd(lab, 'flush');
  assert.deepEqual(await kernelSnapshot(lab), clean);
  assert.equal((await mustUplinkd(lab, 'flush')).trim(), 'nothing to flush');
});

const brokenDir = fileURLToPath(new URL('../configs/broken/', import.meta.url));
const broken = readdirSync(brokenDir).filter((f) => f.endsWith('.yaml')).sort();

test(`${broken.length} broken configs: each rejected with exit 1 and line:col errors, the kernel unchanged`, async () => {
  assert.ok(broken.length >= 20);
  await mustUplinkd(lab, 'apply', '-c', config);
  const applied = await kernelSnapshot(lab);
  for (const file of broken) {
    const path = join(brokenDir, file);
    for (const command of ['check', 'apply']) {
      const r = await uplinkd(lab, command, '-c', path);
      assert.equal(r.code, 1, `${command} ${file}: exit ${r.code}\n${r.stderr}`);
      const errors = r.stderr.split('\n').filter((l) => l.startsWith(`${path}:`) && !l.includes(': warning: '));
      assert.ok(errors.length > 0 && errors.every((l) => /^[^:]+:\d+:\d+: /.test(l) || /^[^:]+: \d+ errors?, nothing changed$/.test(l)),
        `${command} ${file}:\n${r.stderr}`);
      assert.ok(errors.some((l) => /^[^:]+:\d+:\d+: /.test(l)), `${file}: no line:col error`);
    }
  }
  assert.deepEqual(await kernelSnapshot(lab), applied);
});

test('every golden plan is nft input this kernel accepts', async () => {
  const golden = fileURLToPath(new URL('../golden/', import.meta.url));
  // nft resolves a cgroup path when it reads the rule, so the cgroups a plan
  // names must exist: they are made under a directory of this test's own in
  // the cgroup2 hierarchy (never the machine's system.slice), and the plan's
  // paths moved there. `nsenter --net` keeps the host's /sys, where the
  // hierarchy is mounted (`ip netns exec` mounts a fresh one).
  const mount = cgroup2MountPoint(readFileSync('/proc/self/mountinfo', 'utf8'));
  const scratch = `uplinkd-life-${process.pid}`;
  const made: string[] = [];
  try {
    for (const file of readdirSync(golden).filter((f) => f.endsWith('.plan'))) {
      const text = readFileSync(join(golden, file), 'utf8');
      let nft = /^nft -f - <<'EOF'\n([\s\S]*?)^EOF$/m.exec(text)?.[1];
      assert.ok(nft, `${file} has an nft transaction`);
      const cgroups = [...nft.matchAll(/^\s*"([^"]+)" comment "cgroup id \d+"/gm)].map((m) => m[1]);
      if (cgroups.length > 0) {
        assert.ok(mount, `${file} names cgroups, and this machine mounts no cgroup v2 hierarchy`);
        const prefix = nftCgroupPath(mount, '');
        for (const path of cgroups) {
          const below = relative(prefix, path);
          const dir = join(mount, scratch, below);
          mkdirSync(dir, { recursive: true });
          made.push(dir);
          nft = nft.replaceAll(`"${path}"`, `"${nftCgroupPath(mount, join(scratch, below))}"`);
        }
      }
      const argv = cgroups.length > 0 ? ['nsenter', `--net=/run/netns/${lab.ns.router}`, 'nft', '--check', '-f', '-'] : undefined;
      const r = argv ? await runCommand(argv, { input: nft }) : await labExec(lab.name, 'router', ['nft', '--check', '-f', '-'], { input: nft });
      assert.equal(r.code, 0, `${file}: ${r.stderr}`);
    }
  } finally {
    // Deepest first: a cgroup directory goes only once it has no children.
    const dirs = new Set<string>();
    for (const dir of made) for (let d = dir; d.startsWith(join(mount ?? '/nonexistent', scratch)); d = dirname(d)) dirs.add(d);
    for (const dir of [...dirs].sort((a, b) => b.length - a.length)) rmdirSync(dir);
  }
});

test('usage errors exit 2', async () => {
  assert.equal((await uplinkd(lab, 'plan', '-c', config, '--down', 'nosuch')).code, 2);
  assert.equal((await uplinkd(lab, 'frobnicate')).code, 2);
  assert.equal((await uplinkd(lab, 'plan', '--bogus')).code, 2);
});
