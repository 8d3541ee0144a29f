// `uplinkd explain` on the golden configs and facts (test/golden/): each stage
// of the decision, and the kernel's jhash, checked against values the kernel
// computed (README "uplinkd explain"). The lab test (test/lab/explain.test.ts)
// checks the answers against the far end.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { explain, FlowError, formatExplanation, type Flow } from '../../src/plan/explain.js';
import { jhash, nftJhash } from '../../src/plan/jhash.js';
import { HASH_SEED } from '../../src/plan/nft.js';
import { plan } from '../../src/plan/plan.js';
import type { Health, KernelFacts } from '../../src/plan/state.js';

const dir = new URL('../golden/', import.meta.url);
const readFacts = (name: string) => JSON.parse(readFileSync(new URL(name, dir), 'utf8')) as KernelFacts;
const MAIN_ROUTES = ['198.18.0.0/24', '198.51.100.0/28', '198.51.100.16/28', '198.51.100.32/28', '10.8.0.0/16'];

function explainWith(configName: string, flow: Partial<Flow> & { src: string; dst: string },
  opts: { down?: string[]; sticky?: Record<string, string[]>; dual?: boolean; weights?: Record<string, number>; cgroups?: string[] } = {}) {
  const file = `${configName}.yaml`;
  const result = parseConfig(readFileSync(new URL(file, dir), 'utf8'), file);
  assert.ok(result.ok);
  const facts = readFacts(opts.dual ? 'facts-dual-stack.json' : 'facts.json');
  if (opts.cgroups) facts.cgroups = opts.cgroups.map((path, i) => ({ path, nftPath: path, id: 1000 + i }));
  const health = Object.fromEntries((opts.down ?? []).map((n) => [n, 'down' as Health]));
  const state = plan({ config: result.config, facts, health, health6: health, weights: opts.weights });
  return explain({ config: result.config, state, facts, mainRoutes: MAIN_ROUTES, sticky: opts.sticky }, { proto: 'tcp', ...flow });
}

test('jhash: the values the kernel computed for `jhash ip saddr . ip daddr mod 65536 seed 0x75706c6b` (IPv4, 8 bytes; IPv6, 32 bytes)', () => {
  // Read back from conntrack marks set by that expression in a namespace (Linux 6.18, 2026-12-02).
  const kernel: [number[], number][] = [
    [[127, 1, 3, 1, 127, 0, 0, 2], 41226],
    [[127, 200, 3, 200, 127, 0, 0, 201], 49149],
    [[127, 77, 3, 77, 127, 0, 0, 78], 53032],
    [[...v6('2001:db8:ee::2'), ...v6('2001:db8:ee::1')], 36481],
    [[...v6('2001:db8:ee::3'), ...v6('2001:db8:ee::1')], 40517],
  ];
  for (const [key, bucket] of kernel) assert.equal(nftJhash(new Uint8Array(key), 65536, HASH_SEED), bucket, key.join('.'));
  // lookup3's own check value: hashlittle("", 0) = 0xdeadbeef.
  assert.equal(jhash(new Uint8Array(0), 0), 0xdeadbeef);
});

function v6(text: string): number[] {
  const [head, tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  return [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
}

test('balance: weighted shares, the tier in use, and hash names one bucket and uplink', () => {
  const weighted = explainWith('weighted-tiers', { src: '198.18.0.50', dst: '192.0.2.10' });
  assert.equal(weighted.stage, 'balance');
  assert.equal(weighted.uplink, undefined);
  assert.ok(weighted.candidates!.length >= 2);
  assert.ok(Math.abs(weighted.candidates!.reduce((s, c) => s + c.share, 0) - 1) < 0.01);
  assert.equal(weighted.tier, 1);
  const hashed = explainWith('hash', { src: '198.18.0.50', dst: '192.0.2.10' });
  assert.equal(hashed.buckets, 65536);
  assert.equal(hashed.bucket, nftJhash(new Uint8Array([198, 18, 0, 50, 192, 0, 2, 10]), 65536, HASH_SEED));
  // isp1 (weight 2) owns buckets 0-43690.
  assert.equal(hashed.uplink, hashed.bucket! <= 43690 ? 'isp1' : 'isp2');
});

test('tiers: with tier 1 down, tier 2 carries; with all down, blocked', () => {
  const all = explainWith('weighted-tiers', { src: '198.18.0.50', dst: '192.0.2.10' });
  assert.deepEqual([all.tier, all.up, all.standby], [1, ['fibre-a', 'fibre-b'], ['lte']]);
  const fallback = explainWith('weighted-tiers', { src: '198.18.0.50', dst: '192.0.2.10' }, { down: ['fibre-a', 'fibre-b'] });
  assert.deepEqual([fallback.tier, fallback.uplink, fallback.down], [2, 'lte', ['fibre-a', 'fibre-b']]);
  const none = explainWith('weighted-tiers', { src: '198.18.0.50', dst: '192.0.2.10' }, { down: ['fibre-a', 'fibre-b', 'lte'] });
  assert.equal(none.decision, 'blocked');
  assert.equal(none.tier, null);
});

test('pins: first match wins, each stage by its fields; main; fallback block and any', () => {
  const voip = explainWith('pins', { src: '198.18.0.17', dst: '192.0.2.200', proto: 'udp', dport: 5060 });
  assert.deepEqual([voip.stage, voip.rule, voip.uplink], ['pin', 'voip', 'isp1']);
  // The same source on another port is not voip.
  assert.notEqual(explainWith('pins', { src: '198.18.0.17', dst: '192.0.2.200', proto: 'udp', dport: 53 }).rule, 'voip');
  const office = explainWith('pins', { src: '198.18.0.40', dst: '192.0.2.200' });
  assert.equal(office.rule, 'office', 'office comes before shadowed-office');
  assert.deepEqual(office.candidates!.map((c) => c.uplink), ['isp1', 'isp2']);
  const streaming = explainWith('pins', { src: '198.18.0.5', dst: '192.0.2.1' }, { down: ['isp3'] });
  assert.deepEqual([streaming.rule, streaming.decision], ['streaming', 'blocked']);
  const vpn = explainWith('pins', { src: '198.18.0.5', dst: '203.0.113.7' });
  assert.deepEqual([vpn.rule, vpn.decision], ['vpn-peers', 'main']);
  const ssh = explainWith('pins', { src: '198.18.0.5', dst: '198.51.100.200', dport: 22 });
  assert.deepEqual([ssh.rule, ssh.uplink], ['ssh-out', 'isp2']);
  // office with both its uplinks down: fallback any, so balanced over what is left.
  const fallback = explainWith('pins', { src: '198.18.0.40', dst: '192.0.2.200' }, { down: ['isp1', 'isp2'] });
  assert.deepEqual([fallback.stage, fallback.uplink], ['balance', 'isp3']);
});

test('before any uplink: local addresses, main table routes, and split access for a bound socket', () => {
  assert.equal(explainWith('pins', { src: '198.18.0.5', dst: '198.18.0.1' }).decision, 'local');
  const lan = explainWith('pins', { src: '198.18.0.5', dst: '10.8.1.1' });
  assert.deepEqual([lan.decision, lan.stage], ['main', 'local-route']);
  const bound = explainWith('two-uplinks', { src: '198.51.100.18', dst: '192.0.2.10' });
  assert.deepEqual([bound.path, bound.stage, bound.uplink], ['own', 'bound-address', 'isp2']);
});

test('sticky: a live entry for the source decides; without live entries, it says they are unknown', () => {
  const stuck = explainWith('sticky', { src: '198.18.0.9', dst: '192.0.2.10' }, { sticky: { sticky_isp1: [], sticky_isp2: ['198.18.0.9'] } });
  assert.deepEqual([stuck.stage, stuck.uplink], ['sticky', 'isp2']);
  const unknown = explainWith('sticky', { src: '198.18.0.9', dst: '192.0.2.10' });
  assert.equal(unknown.stage, 'balance');
  assert.ok(unknown.reasons.some((r) => r.includes('known only to a running daemon')));
});

test('IPv6: balanced over the uplinks with IPv6 NAT, routed prefixes keep their uplink, link-local stays on its link', () => {
  const balanced = explainWith('dual-stack', { src: 'fd00:0:0:1::5', dst: '2001:db8:ffff::10' }, { dual: true });
  assert.equal(balanced.family, 'ipv6');
  assert.equal(balanced.stage, 'balance');
  assert.ok(!balanced.candidates!.some((c) => c.uplink === 'isp4'), 'nat6: none is not balanced');
  const routed = explainWith('dual-stack', { src: '2001:db8:400:1::5', dst: '2001:db8:ffff::10' }, { dual: true });
  assert.deepEqual([routed.stage, routed.uplink], ['routed-prefix', 'isp4']);
  const linkLocal = explainWith('dual-stack', { src: 'fe80::5', dst: 'ff02::1' }, { dual: true });
  assert.deepEqual([linkLocal.decision, linkLocal.stage], ['main', 'link-local']);
  const noIpv6 = explainWith('two-uplinks', { src: '2001:db8:ff00::5', dst: '2001:db8:ffff::10' });
  assert.deepEqual([noIpv6.decision, noIpv6.stage], ['main', 'no-ipv6']);
});

test('user: a process rule matches the machine\'s own connection, and a forwarded one cannot name a user', () => {
  const own = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10', uid: 0, gid: 0 });
  assert.deepEqual([own.path, own.rule, own.uplink], ['own', 'backup', 'isp2']);
  const sshOnly = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10', uid: 4243, dport: 22 });
  assert.deepEqual([sshOnly.rule, sshOnly.uplink], ['backup-ssh', 'isp3']);
  assert.throws(() => explainWith('process-pins', { src: '198.18.0.5', dst: '192.0.2.10', uid: 0 }),
    (err: unknown) => err instanceof FlowError && /forwarded connection has no local process/.test(err.message), 'a usage error (exit 2)');
});

test('least-loaded: the shares are the ones the steering planned with, not the configured weights; a zero weight drops the uplink', () => {
  const configured = explainWith('least-loaded', { src: '198.18.0.5', dst: '192.0.2.10' });
  assert.deepEqual(configured.candidates!.map((c) => c.uplink), ['isp1', 'isp2', 'isp3']);
  assert.ok(configured.candidates![0].share > 0.5, 'weights 4:2:1 before any steering');
  const steered = explainWith('least-loaded', { src: '198.18.0.5', dst: '192.0.2.10' }, { weights: { isp1: 0, isp2: 1, isp3: 1 } });
  assert.deepEqual(steered.candidates!.map((c) => c.uplink), ['isp2', 'isp3']);
  for (const c of steered.candidates!) assert.ok(Math.abs(c.share - 0.5) < 0.01, `${c.uplink} ${c.share}: an even split, to the slot`);
  assert.ok(steered.reasons.at(-1)!.includes('dealt in turn'), steered.reasons.at(-1));
  // The steering weights are the default balancing's: a pin keeps its own uplinks.
  const office = explainWith('least-loaded', { src: '198.18.0.40', dst: '192.0.2.10' }, { weights: { isp1: 0, isp2: 1, isp3: 1 } });
  assert.deepEqual([office.rule, office.candidates!.map((c) => c.uplink)], ['office', ['isp1', 'isp2']]);
});

test('IPv6 pins: by source and port, by destination, via main, a user on the machine\'s own connection; isp3 has no IPv6', () => {
  const dual = { dual: true };
  const voip = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::12', dst: '2001:db8:ffff::10', proto: 'udp', dport: 5060 }, dual);
  assert.deepEqual([voip.family, voip.rule, voip.uplink], ['ipv6', 'v6-voip', 'isp1']);
  const mixed = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::20', dst: '2001:db8:5::1' }, dual);
  assert.equal(mixed.rule, 'mixed');
  assert.ok(mixed.uplink === 'isp1' || mixed.uplink === 'isp2', 'hash names one of the rule\'s uplinks');
  assert.equal(mixed.buckets, 65536);
  const blocked = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::20', dst: '2001:db8:5::1' }, { ...dual, down: ['isp1', 'isp2'] });
  assert.deepEqual([blocked.rule, blocked.decision], ['mixed', 'blocked']);
  const vpn = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::20', dst: '2001:db8:77::1' }, dual);
  assert.deepEqual([vpn.rule, vpn.decision], ['v6-vpn', 'main']);
  const balanced = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::20', dst: '2001:db8:ffff::10' }, dual);
  assert.equal(balanced.stage, 'balance');
  assert.ok(!balanced.up.includes('isp3') && !balanced.down.includes('isp3'), `isp3 carries no IPv6: ${JSON.stringify(balanced)}`);
  const ping = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::20', dst: '2001:db8:ffff::10', proto: 'icmp' }, dual);
  assert.deepEqual([ping.rule, ping.uplink], ['ping', 'isp2']);
  // user 0, the machine's own connection from its LAN address: pinned; the same from a LAN host is not.
  const own = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::1', dst: '2001:db8:99::5', uid: 0, gid: 0 }, dual);
  assert.deepEqual([own.path, own.rule, own.uplink], ['own', 'backup-user', 'isp2']);
  const forwarded = explainWith('dual-stack-pins', { src: 'fd00:0:0:1::20', dst: '2001:db8:99::5' }, dual);
  assert.deepEqual([forwarded.path, forwarded.rule, forwarded.stage], ['forwarded', undefined, 'balance']);
  // Split access in IPv6: a socket bound to isp2's address.
  const bound = explainWith('dual-stack-pins', { src: '2001:db8:200::2', dst: '2001:db8:ffff::10' }, dual);
  assert.deepEqual([bound.stage, bound.uplink], ['bound-address', 'isp2']);
});

test('the text: the verdict first, then each reason, then where the answer came from', () => {
  const flow: Flow = { src: '198.18.0.17', dst: '192.0.2.200', proto: 'udp', dport: 5060 };
  const text = formatExplanation(flow, explainWith('pins', flow), 'the running daemon');
  const lines = text.trimEnd().split('\n');
  assert.equal(lines[0], '198.18.0.17 -> 192.0.2.200 udp/5060: isp1');
  assert.ok(lines.some((l) => l.includes('pinning rule "voip" matches')), text);
  assert.equal(lines.at(-1), '  (answered from the running daemon)');
});

test('cgroup: a process in a rule\'s cgroup, or below it, matches once that cgroup exists; without --user or --cgroup the process rules are said to be unmatched', () => {
  const cgroups = ['system.slice/restic.service', 'user.slice', 'system.slice/apt-daily.service'];
  const restic = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10', uid: 4000, gid: 4000, cgroup: 'system.slice/restic.service' }, { cgroups });
  assert.deepEqual([restic.rule, restic.uplink], ['restic', 'isp2']);
  const below = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10', uid: 4000, gid: 4000, cgroup: 'user.slice/user-1000.slice/session-2.scope' }, { cgroups });
  assert.deepEqual([below.rule, below.uplink], ['updates', 'isp3']);
  // A prefix of the name is not a parent cgroup.
  const sibling = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10', uid: 4000, gid: 4000, cgroup: 'system.slice/restic.service2' }, { cgroups });
  assert.notEqual(sibling.rule, 'restic');
  // The cgroup does not exist now: no element, no match.
  const absent = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10', uid: 4000, gid: 4000, cgroup: 'system.slice/restic.service' });
  assert.notEqual(absent.rule, 'restic');
  const unknown = explainWith('process-pins', { src: '198.18.0.1', dst: '192.0.2.10' }, { cgroups });
  assert.ok(unknown.reasons.some((r) => r.includes('rules by user or group or cgroup were not matched: give --user and --cgroup')), unknown.reasons.join('\n'));
  assert.throws(() => explainWith('process-pins', { src: '198.18.0.5', dst: '192.0.2.10', cgroup: 'user.slice' }), /--cgroup names a process/);
});
