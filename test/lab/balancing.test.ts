// Balancing, tiers, sticky, SNAT and split access against the real kernel:
// every assertion is what the server at the far end saw.

import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { labClient, labDown, labExec, labUp, labWhoami, type LabState } from '../../src/lab/lab.js';
import { assertShares, binomialRange, connections, mustUplinkd, pastePlan, uniqueLabName } from './harness.js';

let lab: LabState;
let isp1: string;
let isp2: string;

before(async () => {
  lab = await labUp({ name: uniqueLabName('bal'), uplinks: 2 });
  [isp1, isp2] = lab.uplinks.map((u) => u.address);
});
after(() => labDown(lab.name));
beforeEach(() => mustUplinkd(lab, 'flush'));

async function apply(yaml: string): Promise<string> {
  const path = writeLabConfig(lab, 'test.yaml', yaml);
  await mustUplinkd(lab, 'apply', '-c', path);
  return path;
}

test('weights 3:1 give 75/25 over 5000 new LAN connections, each NATed to its uplink address', async () => {
  await apply(labConfig(lab, { uplink: (_, k) => `    weight: ${k === 1 ? 3 : 1}\n` }));
  const n = 5000;
  const r = await connections(lab, 'lan', n);
  assert.equal(r.ok, n, JSON.stringify(r.errors));
  assert.deepEqual(Object.keys(r.seen).sort(), [isp1, isp2].sort(), 'the far end sees only the uplinks\' own addresses');
  // isp1 3750 ± 150: 5000 connections, so that 4:1 (or 2:1) fails 999 times in 1000.
  const [lo, hi] = binomialRange(n, 0.75);
  console.log(`# weights 3:1 over ${n} connections: isp1 ${r.seen[isp1]}, isp2 ${r.seen[isp2]} (isp1 allowed ${lo}..${hi})`);
  assertShares(r, { [isp1]: 0.75, [isp2]: 0.25 }, {
    unlike: [{ [isp1]: 2 / 3, [isp2]: 1 / 3 }, { [isp1]: 0.8, [isp2]: 0.2 }, { [isp1]: 0.5, [isp2]: 0.5 }],
  });
});

test('hash: one client and server pair always takes the same uplink, many pairs spread', async () => {
  await apply(labConfig(lab, { top: 'balance: hash\n' }));
  const one = await connections(lab, 'lan', 50);
  assert.equal(Object.keys(one.seen).length, 1, JSON.stringify(one.seen));
  // One connection from each of 64 sources: each pair's hash is as good as a coin toss.
  const many = await connections(lab, 'lan', 64, ['--sources', lab.lanSources.join(',')]);
  assertShares(many, { [isp1]: 0.5, [isp2]: 0.5 }, { what: '64 pairs', unlike: [{ [isp1]: 1 }, { [isp2]: 1 }] });
});

test('tier 2 is unused while tier 1 is up, and takes over when the plan with tier 1 down is installed', async () => {
  const config = await apply(labConfig(lab, { uplink: (_, k) => (k === 2 ? '    tier: 2\n' : '') }));
  const up = await connections(lab, 'lan', 100);
  assert.deepEqual(up.seen, { [isp1]: 100 });
  await pastePlan(lab, config, ['isp1']);
  const down = await connections(lab, 'lan', 100);
  assert.deepEqual(down.seen, { [isp2]: 100 });
});

test('all uplinks down: new connections fail at once instead of hanging', async () => {
  const config = await apply(labConfig(lab));
  await pastePlan(lab, config, ['isp1', 'isp2']);
  const fromLan = await connections(lab, 'lan', 5, ['--concurrency', '1']);
  assert.equal(fromLan.ok, 0);
  assert.ok(fromLan.elapsedMs < 1000, `5 LAN attempts took ${fromLan.elapsedMs} ms`);
  assert.ok(!fromLan.errors.ETIMEDOUT, JSON.stringify(fromLan.errors));
  const fromRouter = await connections(lab, 'router', 5, ['--concurrency', '1']);
  assert.equal(fromRouter.ok, 0);
  assert.ok(fromRouter.elapsedMs < 1000, `5 router attempts took ${fromRouter.elapsedMs} ms`);
  await pastePlan(lab, config, []);
  assert.equal((await connections(lab, 'lan', 20)).ok, 20, 'recovers when the uplinks are back');
});

test('sticky: one source keeps its uplink across 50 connections, many sources spread', async () => {
  await apply(labConfig(lab, { top: 'sticky: 10m\n' }));
  const one = await connections(lab, 'lan', 50, ['--concurrency', '1']);
  assert.equal(one.ok, 50);
  assert.equal(Object.keys(one.seen).length, 1, JSON.stringify(one.seen));
  const many = await connections(lab, 'lan', 64, ['--sources', lab.lanSources.join(',')]);
  assertShares(many, { [isp1]: 0.5, [isp2]: 0.5 }, { what: '64 sources', unlike: [{ [isp1]: 1 }, { [isp2]: 1 }] });
  // And each of those sources stays where it first went.
  const again = await connections(lab, 'lan', 64, ['--sources', lab.lanSources.join(',')]);
  for (const [source, seen] of Object.entries(again.bySource)) {
    assert.deepEqual(Object.keys(seen), Object.keys(many.bySource[source]), `source ${source} moved`);
  }
});

test("the router's own connections are balanced; bound to an uplink address they use that uplink", async () => {
  await apply(labConfig(lab));
  const unbound = await connections(lab, 'router', 200);
  assertShares(unbound, { [isp1]: 0.5, [isp2]: 0.5 }, { what: "the router's unbound connections", unlike: [{ [isp1]: 1 }, { [isp2]: 1 }] });
  for (const address of [isp1, isp2]) {
    const bound = await connections(lab, 'router', 50, ['--sources', address]);
    assert.deepEqual(bound.seen, { [address]: 50 });
  }
});

test('split access: a service on the router answers through each uplink, a forwarded connection through the uplink it came in on', async () => {
  const routerPort = 8081;
  await labWhoami(lab.name, 'router', routerPort);
  await labWhoami(lab.name, 'lan', 8082);
  // The operator's own port forward on uplink 2, in a table of its own.
  const forward = `table ip portfwd {\n chain pre { type nat hook prerouting priority dstnat; iifname "wan2" tcp dport 9000 dnat to ${lab.lanHost}:8082; }\n}\n`;
  const r = await labExec(lab.name, 'router', ['nft', '-f', '-'], { input: forward });
  assert.equal(r.code, 0, r.stderr);
  try {
    const reach = (host: string, port: number) =>
      labClient(lab.name, 'inet', ['http', '--url', `http://${host}:${port}/`, '--count', '10', '--timeout-ms', '1000']);
    // Without uplinkd the main table answers by isp1, whose ISP drops isp2's source address.
    assert.equal((await reach(isp2, routerPort)).ok, 0, 'the lab must make asymmetric replies fail');
    await apply(labConfig(lab));
    for (const address of [isp1, isp2]) assert.equal((await reach(address, routerPort)).ok, 10, `router service via ${address}`);
    const forwarded = await reach(isp2, 9000);
    assert.equal(forwarded.ok, 10, `forwarded via isp2: ${JSON.stringify(forwarded.errors)}`);
  } finally {
    await labExec(lab.name, 'router', ['nft', 'delete', 'table', 'ip', 'portfwd']);
  }
});
