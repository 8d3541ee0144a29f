// Every kind of pinning rule, checked by the address the far end saw.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { labClient, labDown, labUp, type LabState } from '../../src/lab/lab.js';
import { connections, labConfig, mustUplinkd, pastePlan, shareOf, uniqueLabName, writeConfig } from './harness.js';

let lab: LabState;
let isp1: string;
let isp2: string;
let config: string;

// 198.18.0.100-103 are pinned to isp2, except .100 which an earlier rule
// sends to isp1 (first match wins); .104-.107 may use either uplink.
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
    dport: 8080
    iif: lan0
    dst: 192.0.2.60/30
    via: isp1
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
  lab = await labUp({ name: uniqueLabName('pin'), uplinks: 2 });
  [isp1, isp2] = lab.uplinks.map((u) => u.address);
  config = writeConfig(lab, 'pins.yaml', labConfig(lab, { top: rules }));
  await mustUplinkd(lab, 'apply', '-c', config);
});
after(() => labDown(lab.name));

const to = (host: string) => ['--url', `http://${host}:${lab.whoamiPort}/`];

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
  const tcp = await connections(lab, 'lan', 100);
  assert.ok(shareOf(tcp, isp1) > 0.3 && shareOf(tcp, isp1) < 0.7, JSON.stringify(tcp.seen));
});

test('protocol, port, destination and input interface together', async () => {
  for (const host of ['192.0.2.60', '192.0.2.63']) {
    assert.deepEqual((await connections(lab, 'lan', 30, to(host))).seen, { [isp1]: 30 });
  }
});

test('via main: the main table decides (its default route is isp1)', async () => {
  assert.deepEqual((await connections(lab, 'lan', 40, to('192.0.2.30'))).seen, { [isp1]: 40 });
});

test('via a list: shared among the uplinks listed', async () => {
  const r = await connections(lab, 'lan', 80, ['--sources', '198.18.0.104,198.18.0.105,198.18.0.106,198.18.0.107']);
  assert.equal(r.ok, 80);
  assert.ok(shareOf(r, isp1) > 0.25 && shareOf(r, isp1) < 0.75, JSON.stringify(r.seen));
});

test('with the pinned uplink down: fallback block refuses at once, fallback any balances', async () => {
  await pastePlan(lab, config, ['isp2']);
  try {
    const strict = await connections(lab, 'lan', 5, [...to('192.0.2.40'), '--concurrency', '1']);
    assert.equal(strict.ok, 0);
    assert.ok(strict.elapsedMs < 1000, `refused in ${strict.elapsedMs} ms: ${JSON.stringify(strict.errors)}`);
    assert.deepEqual((await connections(lab, 'lan', 20, to('192.0.2.50'))).seen, { [isp1]: 20 });
    assert.deepEqual((await connections(lab, 'lan', 20, ['--sources', '198.18.0.101'])).seen, { [isp1]: 20 });
  } finally {
    await pastePlan(lab, config, []);
  }
});
