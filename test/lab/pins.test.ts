// Every kind of pinning rule, checked by the address the far end saw.
//
// Three uplinks weighted 3:1:1, so default balancing (0.6/0.2/0.2) differs
// from every pin: a pin that is ignored, or that matches more than it should,
// shows as a share that cannot come out of the pin, and a `via` list that
// leaves out isp3 or ignores weights shows too.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { labClient, labDown, labExec, labUp, labWhoami, type LabState } from '../../src/lab/lab.js';
import { assertShares, connections, mustUplinkd, pastePlan, uniqueLabName } from './harness.js';

let lab: LabState;
let isp1: string;
let isp2: string;
let isp3: string;
let config: string;
/** What default balancing deals by weight, and what it deals with isp2 down. */
let balanced: Record<string, number>;
let balancedWithoutIsp2: Record<string, number>;

/** A second whoami port, for connections that differ from a port pin in the port alone. */
const OTHER_PORT = 8081;
/**
 * A port of web-from-lan where 192.0.2.60 also answers UDP (a whoami bound to
 * that address: the one on 0.0.0.0 answers UDP from 192.0.2.10 only), for
 * connections that differ from it in the protocol alone.
 */
const UDP_TOO_PORT = 8090;

// 198.18.0.100-103 are pinned to isp2, except .100 which an earlier rule
// sends to isp1 (first match wins); .104-.107 may use isp1 or isp2, by weight.
const rules = `rules:
  - name: first-wins
    src: 198.18.0.100
    via: isp1
  - name: by-source
    src: 198.18.0.100/30
    via: isp2
  - name: by-destination
    dst: 192.0.2.20
    via: isp2
  - name: voice
    proto: udp
    dport: 8080
    via: isp2
  - name: web-from-lan
    proto: tcp
    dport: [8080, ${UDP_TOO_PORT}]
    iif: lan0
    dst: 192.0.2.60/30
    via: isp3
  - name: bypass
    dst: 192.0.2.30
    via: main
  - name: strict
    dst: 192.0.2.40
    via: isp2
    fallback: block
  - name: lenient
    dst: 192.0.2.50
    via: isp2
  - name: either
    src: 198.18.0.104/30
    via: [isp1, isp2]
`;

before(async () => {
  lab = await labUp({ name: uniqueLabName('pin'), uplinks: 3 });
  [isp1, isp2, isp3] = lab.uplinks.map((u) => u.address);
  balanced = { [isp1]: 0.6, [isp2]: 0.2, [isp3]: 0.2 };
  balancedWithoutIsp2 = { [isp1]: 0.75, [isp3]: 0.25 };
  await labWhoami(lab.name, 'inet', OTHER_PORT);
  await labWhoami(lab.name, 'inet', UDP_TOO_PORT, '192.0.2.60');
  config = writeLabConfig(lab, 'pins.yaml', labConfig(lab, { uplink: (_, k) => `    weight: ${k === 1 ? 3 : 1}\n`, top: rules }));
  await mustUplinkd(lab, 'apply', '-c', config);
});
after(() => labDown(lab.name));

const to = (host: string, port = lab.whoamiPort) => ['--url', `http://${host}:${port}/`];

test('source pin, and the first matching rule wins', async () => {
  const pinned = await connections(lab, 'lan', 60, ['--sources', '198.18.0.101,198.18.0.102,198.18.0.103']);
  assert.deepEqual(pinned.seen, { [isp2]: 60 });
  const first = await connections(lab, 'lan', 30, ['--sources', '198.18.0.100']);
  assert.deepEqual(first.seen, { [isp1]: 30 });
});

test('destination pin', async () => {
  assert.deepEqual((await connections(lab, 'lan', 40, to('192.0.2.20'))).seen, { [isp2]: 40 });
});

test('protocol and port pin: UDP to port 8080 takes isp2 while TCP to the same port is balanced', async () => {
  const udp = await labClient(lab.name, 'lan', ['udp', '--host', lab.server, '--port', String(lab.whoamiPort), '--count', '40', '--timeout-ms', '1000']);
  assert.deepEqual(udp.seen, { [isp2]: 40 });
  const tcp = await connections(lab, 'lan', 400);
  assert.equal(tcp.ok, 400);
  assertShares(tcp, balanced, { what: 'TCP to port 8080', unlike: [{ [isp2]: 1 }] });
});

test('protocol, port, destination and input interface together: all four must match', async () => {
  for (const [host, port] of [['192.0.2.60', lab.whoamiPort], ['192.0.2.63', lab.whoamiPort], ['192.0.2.60', UDP_TOO_PORT]] as const) {
    assert.deepEqual((await connections(lab, 'lan', 30, to(host, port))).seen, { [isp3]: 30 }, `TCP from lan0 to ${host}:${port}`);
  }
  // Each field alone differing: the rule must not match, so default balancing
  // decides. Were the field ignored, every one would take isp3.
  const pinned = { [isp3]: 1 };
  const udp = await labClient(lab.name, 'lan', ['udp', '--host', '192.0.2.60', '--port', String(UDP_TOO_PORT), '--count', '200', '--timeout-ms', '1000']);
  assertShares(udp, balanced, { what: 'UDP instead of TCP', unlike: [pinned] });
  const otherPort = await connections(lab, 'lan', 200, to('192.0.2.60', OTHER_PORT));
  assertShares(otherPort, balanced, { what: `port ${OTHER_PORT} instead of 8080`, unlike: [pinned] });
  for (const host of ['192.0.2.59', '192.0.2.64']) {
    const outside = await connections(lab, 'lan', 200, to(host));
    assertShares(outside, balanced, { what: `${host}, just outside 192.0.2.60/30`, unlike: [pinned] });
  }
  // The router's own connections arrive on no interface.
  const own = await connections(lab, 'router', 200, to('192.0.2.60'));
  assertShares(own, balanced, { what: "the router's own connection, not from lan0", unlike: [pinned] });
});

test("via main: the main table decides, whichever uplink its default route names", async () => {
  // The main table's default is isp1 (metric 101), as the lab's DHCP-style routes leave it.
  assert.deepEqual((await connections(lab, 'lan', 40, to('192.0.2.30'))).seen, { [isp1]: 40 });
  // A preferred default route via isp3 in main: the pin follows it, balancing does not.
  const wan3 = lab.uplinks[2];
  const route = ['default', 'via', wan3.gateway, 'dev', wan3.routerIf, 'metric', '50'];
  const added = await labExec(lab.name, 'router', ['ip', 'route', 'add', ...route]);
  assert.equal(added.code, 0, added.stderr);
  try {
    assert.deepEqual((await connections(lab, 'lan', 40, to('192.0.2.30'))).seen, { [isp3]: 40 });
    const other = await connections(lab, 'lan', 200);
    assertShares(other, balanced, { what: 'unpinned connections while main prefers isp3', unlike: [{ [isp3]: 1 }] });
  } finally {
    await labExec(lab.name, 'router', ['ip', 'route', 'del', ...route]);
  }
});

test('via a list: shared by weight among the uplinks listed, never the one left out', async () => {
  const r = await connections(lab, 'lan', 800, ['--sources', '198.18.0.104,198.18.0.105,198.18.0.106,198.18.0.107']);
  assert.equal(r.ok, 800);
  // isp1 3 : isp2 1. Wrong: default balancing (isp3 too), an even split, only the first listed.
  assertShares(r, { [isp1]: 0.75, [isp2]: 0.25 }, { unlike: [balanced, { [isp1]: 0.5, [isp2]: 0.5 }, { [isp1]: 1 }] });
});

test('with the pinned uplink down (plan --down pasted): fallback block refuses at once, fallback any balances', async () => {
  await pastePlan(lab, config, ['isp2']);
  try {
    const strict = await connections(lab, 'lan', 5, [...to('192.0.2.40'), '--concurrency', '1']);
    assert.equal(strict.ok, 0);
    assert.ok(strict.elapsedMs < 1000, `refused in ${strict.elapsedMs} ms: ${JSON.stringify(strict.errors)}`);
    const lenient = await connections(lab, 'lan', 200, to('192.0.2.50'));
    assertShares(lenient, balancedWithoutIsp2, { what: 'fallback any', unlike: [{ [isp1]: 1 }] });
    const bySource = await connections(lab, 'lan', 200, ['--sources', '198.18.0.101']);
    assertShares(bySource, balancedWithoutIsp2, { what: 'source pinned to isp2', unlike: [{ [isp1]: 1 }] });
  } finally {
    await pastePlan(lab, config, []);
  }
});
