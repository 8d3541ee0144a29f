// The lab itself, on the real kernel (run as root):
//   node --import tsx --test test/lab/lab.test.ts
// No uplinkd runs here: this checks the network the other lab tests stand on.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  isAlive, labClient, labCounters, labDown, labExec, labFail, labHeal, labRenumber, labUp, labWhoami, loadLab, type LabState,
} from '../../src/lab/lab.js';
import { namespacesOf, processesWithEnv } from './harness.js';

const name = `t${process.pid % 100000}`;
let lab: LabState;

before(async () => {
  lab = await labUp({ name, uplinks: 2, capacities: ['20mbit', '10mbit'] });
});

after(async () => {
  await labDown(name);
  await labDown(`${name}-h`);
});

/** fping from a node; resolves true when every probe was answered. */
async function pings(node: string, ...args: string[]): Promise<boolean> {
  const { code } = await labExec(name, node, ['fping', '-q', '-t', '300', '-c', '3', '-p', '20', ...args]);
  return code === 0;
}

async function routerLink(ifname: string): Promise<string> {
  return (await labExec(name, 'router', ['ip', '-br', 'link', 'show', ifname])).stdout;
}

test('lab up builds every node with its addresses and a config', async () => {
  assert.deepEqual((await namespacesOf(name)).sort(), [lab.ns.inet, ...lab.ns.isps, lab.ns.lan, lab.ns.router].sort());
  assert.deepEqual(
    lab.uplinks.map((u) => [u.name, u.routerIf, u.address, u.gateway]),
    [['isp1', 'wan1', '198.51.100.2', '198.51.100.1'], ['isp2', 'wan2', '198.51.100.18', '198.51.100.17']],
  );
  const routes = (await labExec(name, 'router', ['ip', 'route', 'show', 'default'])).stdout;
  assert.match(routes, /default via 198\.51\.100\.1 dev wan1 metric 101/);
  assert.match(routes, /default via 198\.51\.100\.17 dev wan2 metric 102/);
  assert.deepEqual(loadLab(name), lab);
  assert.match(readFileSync(lab.configPath, 'utf8'), /interface: wan2/);
});

test('the LAN host reaches the router', async () => {
  assert.ok(await pings('lan', lab.lanAddress));
});

test('whoami sees the address a connection left the router from', async () => {
  const wan1 = lab.uplinks[0].address;
  const r = await labClient(name, 'router', ['http', '--count', '20', '--sources', wan1]);
  assert.equal(r.ok, 20, JSON.stringify(r.errors));
  assert.deepEqual(r.seen, { [wan1]: 20 });
  assert.deepEqual(r.bySource, { [wan1]: { [wan1]: 20 } });
  const udp = await labClient(name, 'router', ['udp', '--count', '10', '--sources', wan1]);
  assert.deepEqual(udp.seen, { [wan1]: 10 });
});

test('a whoami runs on the router too, reachable from the internet', async () => {
  const pid = await labWhoami(name, 'router', 8081);
  assert.ok(loadLab(name).pids.includes(pid));
  const wan1 = lab.uplinks[0].address;
  const r = await labClient(name, 'inet', ['http', '--url', `http://${wan1}:8081/`, '--count', '5']);
  assert.deepEqual(r.seen, { [lab.server]: 5 });
  const udp = await labClient(name, 'inet', ['udp', '--host', wan1, '--port', '8081', '--count', '5']);
  assert.deepEqual(udp.seen, { [lab.server]: 5 });
  // Bound to one address, it answers UDP from that address whatever the route back.
  await labWhoami(name, 'router', 8082, wan1);
  const bound = await labClient(name, 'inet', ['udp', '--host', wan1, '--port', '8082', '--count', '5']);
  assert.deepEqual(bound.seen, { [lab.server]: 5 });
});

test('an ISP drops what leaks out unNATed, and counts it', async () => {
  const before = (await labCounters(name, 'isp1')).spoofed;
  // No uplinkd, so no NAT: the LAN host's own address goes out wan1 (the lowest metric) as is.
  assert.equal(await pings('lan', lab.server), false);
  assert.ok((await labCounters(name, 'isp1')).spoofed >= before + 3);
});

test('capacity is a tbf on both directions of the uplink', async () => {
  const qdisc = (await labExec(name, 'isp2', ['tc', 'qdisc', 'show', 'dev', 'eth0'])).stdout;
  assert.match(qdisc, /tbf .*rate 10Mbit/);
  const r = await labExec(name, 'router', ['iperf3', '-c', lab.server, '-B', lab.uplinks[0].address, '-t', '1', '-J']);
  assert.equal(r.code, 0, r.stdout);
  const mbps = JSON.parse(r.stdout).end.sum_received.bits_per_second / 1e6;
  assert.ok(mbps > 14 && mbps < 21, `${mbps} Mbit/s through a 20mbit uplink`);
});

test('upstream fail: the gateway still answers, nothing beyond it does', async () => {
  await labFail(name, 'isp1', 'upstream');
  try {
    assert.equal(loadLab(name).uplinks[0].fault, 'upstream');
    assert.equal(await pings('router', '-I', 'wan1', lab.server), false);
    assert.ok(await pings('router', '-I', 'wan1', lab.uplinks[0].gateway));
    assert.ok((await labCounters(name, 'isp1')).upstream >= 3);
    assert.ok(await pings('router', '-I', 'wan2', lab.server), 'the other uplink is untouched');
  } finally {
    await labHeal(name, 'isp1');
  }
  assert.equal(loadLab(name).uplinks[0].fault, undefined);
  assert.ok(await pings('router', '-I', 'wan1', lab.server));
});

test('link fail: the router sees NO-CARRIER on the wan', async () => {
  await labFail(name, 'isp2', 'link');
  try {
    assert.match(await routerLink('wan2'), /NO-CARRIER/);
  } finally {
    await labHeal(name, 'isp2');
  }
  assert.match(await routerLink('wan2'), /LOWER_UP/);
  assert.ok(await pings('router', '-I', 'wan2', lab.server));
});

test('loss fail drops that share of packets each way', async () => {
  await labFail(name, 'isp1', 'loss:100%');
  try {
    assert.equal(await pings('router', '-I', 'wan1', lab.server), false);
    assert.ok((await labCounters(name, 'isp1')).loss >= 3);
    await labFail(name, 'isp1', 'loss:50%'); // replaces the fault
    const r = await labExec(name, 'router', ['fping', '-q', '-I', 'wan1', '-t', '50', '-c', '200', '-p', '2', '-i', '1', lab.server]);
    const lost = Number(/\/(\d+)%/.exec(r.stderr)?.[1]);
    // Half of the requests, then half of the answers: 75% of round trips.
    assert.ok(lost > 60 && lost < 90, r.stderr);
  } finally {
    await labHeal(name, 'isp1');
  }
  assert.ok(await pings('router', '-I', 'wan1', lab.server));
});

test('renumber moves an uplink to its other /28 and back, like a DHCP renew', async () => {
  const moved = await labRenumber(name, 'isp2');
  assert.deepEqual([moved.address, moved.gateway], ['198.51.100.146', '198.51.100.145']);
  assert.equal(loadLab(name).uplinks[1].address, '198.51.100.146');
  const addresses = (await labExec(name, 'router', ['ip', '-br', 'address', 'show', 'wan2'])).stdout;
  assert.match(addresses, /198\.51\.100\.146\/28/);
  assert.doesNotMatch(addresses, /198\.51\.100\.18\//);
  const routes = (await labExec(name, 'router', ['ip', 'route', 'show', 'default'])).stdout;
  assert.match(routes, /default via 198\.51\.100\.145 dev wan2 metric 102/);
  assert.doesNotMatch(routes, /198\.51\.100\.17/);
  assert.ok(await pings('router', '-I', 'wan2', lab.server), 'the ISP accepts the new address');

  const back = await labRenumber(name, 'isp2');
  assert.equal(back.address, '198.51.100.18');
  assert.ok(await pings('router', '-I', 'wan2', lab.server));
});

test('lab up refuses a name that is taken; loadLab names what is missing', async () => {
  await assert.rejects(labUp({ name }), /already exists.*down/);
  assert.throws(() => loadLab('nosuchlab'), /no lab 'nosuchlab'/);
  assert.ok(await pings('lan', lab.lanAddress), 'the refused up left the lab alone');
});

test('a lab up that fails leaves nothing behind', async () => {
  const broken = `${name}-h`;
  await assert.rejects(labUp({ name: broken, capacities: ['fast'] }), /capacity 'fast'/);
  assert.deepEqual(await namespacesOf(broken), []);

  // Fail at the very end, with every namespace built and whoami running: an iperf3 that dies at once.
  const fakeBin = mkdtempSync(join(tmpdir(), 'lab-fake-'));
  writeFileSync(join(fakeBin, 'iperf3'), '#!/bin/sh\necho "no iperf3 today" >&2\nexit 1\n', { mode: 0o755 });
  const path = process.env.PATH;
  process.env.PATH = `${fakeBin}:${path}`;
  // Its servers inherit this, so they can be found after their namespace is gone.
  process.env.LAB_TEST_MARK = broken;
  try {
    await assert.rejects(labUp({ name: broken, uplinks: 3 }), /iperf3 exited before listening: no iperf3 today/);
  } finally {
    process.env.PATH = path;
    delete process.env.LAB_TEST_MARK;
    rmSync(fakeBin, { recursive: true });
  }
  assert.deepEqual(await namespacesOf(broken), []);
  assert.equal(existsSync(`/run/uplinkd-lab/${broken}`), false);
  assert.equal(processesWithEnv(`LAB_TEST_MARK=${broken}`), 0, 'its whoami was stopped');
});

test('lab down removes everything, and again is no error', async () => {
  const { pids } = loadLab(name);
  await labDown(name);
  assert.deepEqual(await namespacesOf(name), []);
  assert.equal(existsSync(lab.stateDir), false);
  assert.deepEqual(pids.filter(isAlive), [], 'its servers were stopped');
  await labDown(name);
  assert.throws(() => loadLab(name), /no lab/);
});
