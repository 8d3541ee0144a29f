// balance: least-loaded in the lab: 20/10/10 mbit uplinks shaped by tbf.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { labDown, labExec, labUp, type LabState } from '../../src/lab/lab.js';
import {
  connections, daemonStatus, labConfig, mustUplinkd, startDaemon, uniqueLabName, writeConfig, type RunningDaemon,
} from './harness.js';

const capacities = ['20mbit', '10mbit', '10mbit'];
const MARK_OF = { 0x100: 'isp1', 0x200: 'isp2', 0x300: 'isp3' } as Record<number, string>;

let lab: LabState;
let daemon: RunningDaemon | undefined;
let config: string;

before(async () => {
  lab = await labUp({ name: uniqueLabName('ll'), uplinks: 3, capacities });
  // One iperf3 server per download: a server runs one test at a time.
  for (const port of [5202, 5203, 5204]) {
    const r = await labExec(lab.name, 'inet', ['iperf3', '-s', '-D', '-p', String(port), '-B', lab.server]);
    assert.equal(r.code, 0, r.stderr);
  }
  config = writeConfig(lab, 'll.yaml', labConfig(lab, {
    uplink: (_, k) => `    capacity: { up: ${capacities[k - 1]}, down: ${capacities[k - 1]} }\n    check: { targets: [192.0.2.10] }\n`,
    top: `balance: least-loaded\napi: { socket: ${lab.stateDir}/uplinkd.sock, http: "off" }\n`,
  }));
});
after(() => labDown(lab.name));
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await mustUplinkd(lab, 'flush');
});

/** The uplink a connection from the LAN with this client port was given, by its conntrack mark. */
async function uplinkOfClientPort(port: number): Promise<string | undefined> {
  const out = (await labExec(lab.name, 'router', ['conntrack', '-L', '-p', 'tcp', '--sport', String(port)])).stdout;
  const mark = /mark=(\d+)/.exec(out)?.[1];
  return mark === undefined ? undefined : MARK_OF[Number(mark) & 0xff00];
}

function download(serverPort: number, clientPort: number, seconds: number) {
  return labExec(lab.name, 'lan', ['iperf3', '-c', lab.server, '-p', String(serverPort), '-R', '-t', String(seconds), '--cport', String(clientPort)]);
}

test('three long downloads started 1.5 s apart land on three different uplinks', async () => {
  daemon = await startDaemon(lab, config);
  const ports = [41001, 41002, 41003];
  const running = [];
  const landed: (string | undefined)[] = [];
  for (let i = 0; i < 3; i++) {
    running.push(download(5202 + i, ports[i], 8 - 1.5 * i));
    await new Promise((r) => setTimeout(r, 1500));
    landed.push(await uplinkOfClientPort(ports[i]));
  }
  const results = await Promise.all(running);
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  assert.equal(new Set(landed).size, 3, `downloads landed on ${landed.join(', ')}`);
});

test('connections that start together are dealt by share, before any of them has a rate', async () => {
  daemon = await startDaemon(lab, config);
  // Idle, the shares are the capacities, 20:10:10, once the loop has run.
  const idleShares = [0.506, 0.247, 0.247]; // 45, 22 and 22 of the 89 slots
  for (let tries = 0; ; tries++) {
    const shares = (await daemonStatus(lab, config)).uplinks.map((u) => u.share);
    if (JSON.stringify(shares) === JSON.stringify(idleShares)) break;
    assert.ok(tries < 50, `idle shares ${shares.join('/')}, want ${idleShares.join('/')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // Twelve at once, where a random draw would often leave an uplink with
  // none or pile six on it.
  const r = await connections(lab, 'lan', 12, ['--concurrency', '12']);
  assert.equal(r.ok, 12);
  const got = lab.uplinks.map((u) => r.seen[u.address] ?? 0);
  const want = [6, 3, 3];
  got.forEach((n, i) => assert.ok(Math.abs(n - want[i]) <= 1, `12 connections at once went ${got.join('/')}, want ${want.join('/')} give or take one`));
});

test('short connections under a steady load follow the spare capacity', async () => {
  daemon = await startDaemon(lab, config);
  // A steady download fills one uplink; give the loop two seconds to see it.
  const steady = download(5202, 41010, 7);
  await new Promise((r) => setTimeout(r, 2500));
  const loaded = await uplinkOfClientPort(41010);
  assert.ok(loaded, 'the steady download has an uplink');
  const status = await daemonStatus(lab, config);
  const r = await connections(lab, 'lan', 32, ['--concurrency', '4']);
  assert.equal(r.ok, 32);
  const addressOf = Object.fromEntries(lab.uplinks.map((u) => [u.name, u.address]));
  const onLoaded = r.seen[addressOf[loaded!]] ?? 0;
  assert.ok(onLoaded <= 2, `${onLoaded}/32 short connections went to the full uplink ${loaded}; shares ${JSON.stringify(status.uplinks.map((u) => [u.name, u.share]))}`);
  // The others share by spare capacity: both get a fair part.
  for (const u of lab.uplinks.filter((x) => x.name !== loaded)) {
    assert.ok((r.seen[u.address] ?? 0) >= 6, `${u.name} got ${r.seen[u.address] ?? 0}/32: ${JSON.stringify(r.seen)}`);
  }
  assert.equal((await steady).code, 0);
});

test('steady load does not churn the balance map', async () => {
  daemon = await startDaemon(lab, config, { logLevel: 'debug' });
  const steady = download(5202, 41020, 8);
  await new Promise((r) => setTimeout(r, 2500));
  const rewrites = () => (daemon!.logs().match(/"event":"steer"/g) ?? []).length;
  const before = rewrites();
  await new Promise((r) => setTimeout(r, 4000));
  const during = rewrites() - before;
  assert.ok(during <= 2, `the map was rewritten ${during} times in 4 s of steady load`);
  assert.equal((await steady).code, 0);
});
