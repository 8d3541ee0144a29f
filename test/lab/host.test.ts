// Host mode: a single multihomed machine (lab up --host, a config with no
// `lan`) balances, pins and fails over its own connections. Every check is
// the source address the far end saw.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { labClient, labDown, labExec, labFail, labUp, type LabState } from '../../src/lab/lab.js';
import { HOST_SOURCE } from '../../src/lab/topology.js';
import { connections, daemonStatus, mustUplinkd, resetLab, shareOf, shareTolerance, timeUntilAllSucceed, uniqueLabName, waitFor, whoamiUrl } from './harness.js';

let lab: LabState;
let daemon: LabDaemon | undefined;
let isp1: string;
let isp2: string;
let isp3: string;

/** A "VPN": a link uplinkd knows nothing of, with a route in main to one internet address. */
const VPN = { routerAddress: '198.18.2.1', inetAddress: '198.18.2.2', destination: '192.0.2.210' };
/** A static route in main through isp3's gateway. */
const STATIC_DESTINATION = '192.0.2.200';

before(async () => {
  lab = await labUp({ name: uniqueLabName('host'), uplinks: 3, host: true });
  [isp1, isp2, isp3] = lab.uplinks.map((u) => u.address);
  const must = async (node: string, argv: string[]) => {
    const r = await labExec(lab.name, node, argv);
    assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
  };
  await must('router', ['ip', 'link', 'add', 'vpn0', 'type', 'veth', 'peer', 'name', 'vpn-peer', 'netns', lab.ns.inet]);
  await must('router', ['ip', 'address', 'add', `${VPN.routerAddress}/30`, 'dev', 'vpn0']);
  await must('router', ['ip', 'link', 'set', 'vpn0', 'up']);
  await must('inet', ['ip', 'address', 'add', `${VPN.inetAddress}/30`, 'dev', 'vpn-peer']);
  await must('inet', ['ip', 'link', 'set', 'vpn-peer', 'up']);
  await must('router', ['ip', 'route', 'add', `${VPN.destination}/32`, 'via', VPN.inetAddress, 'dev', 'vpn0']);
  await must('router', ['ip', 'route', 'add', `${STATIC_DESTINATION}/32`, 'via', lab.uplinks[2].gateway, 'dev', 'wan3']);
});

after(async () => {
  await daemon?.stop();
  if (lab) await labDown(lab.name);
});

afterEach(async () => {
  lab = await resetLab(lab, daemon);
  daemon = undefined;
});

function config(name: string, opts: { uplink?: (name: string, k: number) => string; top?: string } = {}): string {
  return writeLabConfig(lab, name, labConfig(lab, { uplink: opts.uplink, top: opts.top, api: { http: 'off' } }));
}

// Both families beyond the ISP: an uplink is down once both are (the lab is dual-stack).
const targets = (name: string) => `    check: { targets: [${lab.server}, ${lab.server6}] }\n`;

test('weighted 2:1:1: the host\'s own unbound connections are spread by weight, each share within ±5 points', async () => {
  daemon = await startDaemon(lab, config('weighted.yaml', { uplink: (name, k) => `    weight: ${k === 1 ? 2 : 1}\n${targets(name)}` }));
  const n = 2400;
  const r = await connections(lab, 'router', n);
  assert.equal(r.ok, n, JSON.stringify(r.errors));
  // Unbound: every one of them left with the neutral source, then was NATed.
  assert.deepEqual(Object.keys(r.bySource), [HOST_SOURCE]);
  for (const [address, p] of [[isp1, 0.5], [isp2, 0.25], [isp3, 0.25]] as const) {
    const tolerance = shareTolerance(p, n);
    assert.ok(tolerance <= 0.05, `the bound (${tolerance}) is at least as strict as ±5 points`);
    const share = shareOf(r, address);
    assert.ok(Math.abs(share - p) <= tolerance, `${address}: share ${share.toFixed(3)}, expected ${p} ± ${tolerance.toFixed(3)} (${JSON.stringify(r.seen)})`);
  }
});

test('a socket bound to an uplink address keeps that uplink; local routes (static, VPN) are left alone', async () => {
  daemon = await startDaemon(lab, config('bound.yaml', { uplink: (name) => targets(name) }));
  for (const address of [isp1, isp2, isp3]) {
    const r = await connections(lab, 'router', 60, ['--sources', address]);
    assert.deepEqual(r.seen, { [address]: 60 }, `bound to ${address}`);
  }
  // The main table's routes win, with the source they pick: no mark, no NAT.
  const statik = await labClient(lab.name, 'router', ['http', '--url', `http://${STATIC_DESTINATION}:${lab.whoamiPort}/`, '--count', '60', '--concurrency', '16']);
  assert.deepEqual(statik.seen, { [isp3]: 60 }, 'a static route in main through isp3');
  const vpn = await labClient(lab.name, 'router', ['http', '--url', `http://${VPN.destination}:${lab.whoamiPort}/`, '--count', '60', '--concurrency', '16']);
  assert.deepEqual(vpn.seen, { [VPN.routerAddress]: 60 }, 'a route in main over a link uplinkd does not know');
  // Spread by the balancing all the same, to everywhere else.
  const rest = await connections(lab, 'router', 300);
  assert.equal(Object.keys(rest.seen).length, 3, JSON.stringify(rest.seen));
});

test('pins by destination and by protocol and port hold for the host\'s own connections; the rest is balanced', async () => {
  const rules = `rules:
  - name: to-twenty
    dst: 192.0.2.20
    via: isp3
  - name: voice
    proto: udp
    dport: ${lab.whoamiPort}
    via: isp2
`;
  daemon = await startDaemon(lab, config('pins.yaml', { uplink: (name) => targets(name), top: rules }));
  const pinned = await labClient(lab.name, 'router', ['http', '--url', `http://192.0.2.20:${lab.whoamiPort}/`, '--count', '100', '--concurrency', '16']);
  assert.deepEqual(pinned.seen, { [isp3]: 100 });
  const udp = await labClient(lab.name, 'router', ['udp', '--host', lab.server, '--port', String(lab.whoamiPort), '--count', '100']);
  assert.deepEqual(udp.seen, { [isp2]: 100 });
  const rest = await connections(lab, 'router', 300);
  assert.equal(Object.keys(rest.seen).length, 3, JSON.stringify(rest.seen));
});

test('hash: each destination keeps one uplink, and destinations spread over all of them', async () => {
  daemon = await startDaemon(lab, config('hash.yaml', { uplink: (name) => targets(name), top: 'balance: hash\n' }));
  const used = new Set<string>();
  for (let d = 100; d < 124; d++) {
    const r = await labClient(lab.name, 'router', ['http', '--url', `http://192.0.2.${d}:${lab.whoamiPort}/`, '--count', '8', '--concurrency', '8']);
    assert.equal(Object.keys(r.seen).length, 1, `192.0.2.${d}: ${JSON.stringify(r.seen)}`);
    used.add(Object.keys(r.seen)[0]);
  }
  // 24 destinations all on one or two of 3 equal uplinks: 3 × (2/3)^24 ≈ 2e-4.
  assert.equal(used.size, 3, [...used].join(' '));
});

test('least-loaded: new connections are dealt in turn by share', async () => {
  daemon = await startDaemon(lab, config('least.yaml', { uplink: (name) => `    capacity: {up: 10mbit, down: 10mbit}\n${targets(name)}`, top: 'balance: least-loaded\n' }));
  // One at a time, so the rotation deals them in order: 89 slots, equal shares.
  const r = await labClient(lab.name, 'router', ['http', '--url', whoamiUrl(lab), '--count', '89', '--concurrency', '1']);
  for (const address of [isp1, isp2, isp3]) {
    const got = r.seen[address] ?? 0;
    assert.ok(Math.abs(got - 89 / 3) <= 2, `${address}: ${got} of 89 (${JSON.stringify(r.seen)})`);
  }
});

test('host failover: with isp1 failed beyond its gateway, new connections use the others within a second; tiers take over', async () => {
  const path = config('failover.yaml', { uplink: (name, k) => `    tier: ${k === 3 ? 2 : 1}\n${targets(name)}` });
  daemon = await startDaemon(lab, path);
  const before = await connections(lab, 'router', 200);
  assert.deepEqual(Object.keys(before.seen).sort(), [isp1, isp2].sort(), 'tier 2 idle while tier 1 is up');
  const faultAt = Date.now();
  await labFail(lab.name, 'isp1', 'upstream');
  const failover = await timeUntilAllSucceed(lab, faultAt, { node: 'router', expectVia: [isp2], withinMs: 8000 });
  assert.ok(failover !== undefined, 'no failover within 8 s');
  // Detection: 3 rounds of 100 ms and a 400 ms timeout; then one nft transaction.
  assert.ok(failover < 1000, `host failover took ${failover} ms`);
  const after = await connections(lab, 'router', 100);
  assert.deepEqual(after.seen, { [isp2]: 100 });

  await labFail(lab.name, 'isp2', 'upstream');
  assert.ok(await waitFor(async () => (await daemonStatus(lab, path)).uplinks.find((u) => u.name === 'isp2')?.state === 'down', 5000));
  const tier2 = await connections(lab, 'router', 100);
  assert.deepEqual(tier2.seen, { [isp3]: 100 }, 'tier 2 takes over once every tier-1 uplink is down');
});

test('flush leaves the host as it was: no address on lo, no rule, route or table of uplinkd', async () => {
  const read = async () => {
    const out = async (argv: string[]) => (await labExec(lab.name, 'router', argv)).stdout;
    // Router advertisements (uplink 2) count their lifetimes down; what they gave must stay, not the seconds left.
    const lifetimes = (text: string) => text.replace(/(valid_lft|preferred_lft|expires) \d+sec/g, '$1 Nsec');
    return [lifetimes(await out(['ip', 'address', 'show'])), await out(['ip', 'rule', 'show']), lifetimes(await out(['ip', 'route', 'show', 'table', 'all'])), await out(['nft', 'list', 'ruleset'])];
  };
  const untouched = await read();
  daemon = await startDaemon(lab, config('flush.yaml', { uplink: (name) => targets(name) }));
  const running = await read();
  assert.match(running[0], new RegExp(`inet ${HOST_SOURCE.replaceAll('.', '\\.')}/32 scope host lo:uplinkd`));
  await daemon.stop();
  daemon = undefined;
  await mustUplinkd(lab, 'flush');
  assert.deepEqual(await read(), untouched);
});

test('self-healing: the neutral source deleted from lo (and with it every route that names it) is back within a second', async () => {
  daemon = await startDaemon(lab, config('heal.yaml', { uplink: (name) => targets(name) }));
  const deletedAt = Date.now();
  const r = await labExec(lab.name, 'router', ['ip', 'address', 'del', `${HOST_SOURCE}/32`, 'dev', 'lo']);
  assert.equal(r.code, 0, r.stderr);
  const back = await waitFor(async () => {
    const routes = (await labExec(lab.name, 'router', ['ip', 'route', 'show', 'table', '201'])).stdout;
    return routes.includes(`src ${HOST_SOURCE}`);
  }, 3000, 20);
  const tookMs = Date.now() - deletedAt;
  assert.ok(back, 'the address and the routes that use it were not restored');
  assert.ok(tookMs < 1000, `restored after ${tookMs} ms`);
  const rest = await connections(lab, 'router', 300);
  assert.equal(rest.ok, 300, JSON.stringify(rest.errors));
  assert.equal(Object.keys(rest.seen).length, 3, JSON.stringify(rest.seen));
  const status = await daemonStatus(lab, `${lab.stateDir}/heal.yaml`);
  assert.ok(status.self_healing.restores >= 1, JSON.stringify(status.self_healing));
});
