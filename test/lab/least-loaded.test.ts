// balance: least-loaded in the lab: 20/10/10 mbit uplinks shaped by tbf.
//
// The config gives each uplink 90% of its link's rate as its capacity, as an
// operator would after measuring: one TCP download then fills its uplink
// (at 95% of the link it is past 100% of the capacity, well over the 90% at
// which an uplink counts as full), so whether the loop sees it full does not
// hang on a few percent of throughput.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { labDown, labExec, labUp, type LabState } from '../../src/lab/lab.js';
import { connections, daemonStatus, mustUplinkd, uniqueLabName, waitFor } from './harness.js';

const capacities = ['20mbit', '10mbit', '10mbit'];
const configured = ['18mbit', '9mbit', '9mbit'];
const MARK_OF = { 0x100: 'isp1', 0x200: 'isp2', 0x300: 'isp3' } as Record<number, string>;

let lab: LabState;
let daemon: LabDaemon | undefined;
let config: string;

before(async () => {
  lab = await labUp({ name: uniqueLabName('ll'), uplinks: 3, capacities });
  // One iperf3 server per download: a server runs one test at a time.
  for (const port of [5202, 5203, 5204]) {
    const r = await labExec(lab.name, 'inet', ['iperf3', '-s', '-D', '-p', String(port), '-B', lab.server]);
    assert.equal(r.code, 0, r.stderr);
  }
  config = writeLabConfig(lab, 'll.yaml', labConfig(lab, {
    // IPv4 downloads steered by IPv4 rates: the uplinks' IPv6 is left out (gateway6: off), so
    // its probers add no load to the 2-core machine while the loop is timed.
    uplink: (_, k) => `    capacity: { up: ${configured[k - 1]}, down: ${configured[k - 1]} }\n    gateway6: off\n    check: { targets: [192.0.2.10] }\n`,
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

/** The shares of new connections the daemon has installed, by uplink. */
async function sharesNow(): Promise<Record<string, number>> {
  return Object.fromEntries((await daemonStatus(lab, config)).uplinks.map((u) => [u.name, u.share]));
}

/** Idle, the shares are the capacities, 2:1:1, once the loop has run. */
async function waitForIdleShares(): Promise<void> {
  const idleShares = [0.506, 0.247, 0.247]; // 45, 22 and 22 of the 89 slots
  for (let tries = 0; ; tries++) {
    const shares = Object.values(await sharesNow());
    if (JSON.stringify(shares) === JSON.stringify(idleShares)) break;
    assert.ok(tries < 50, `idle shares ${shares.join('/')}, want ${idleShares.join('/')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('three long downloads started one after another land on three different uplinks: the loop steers new connections off each full one', async () => {
  daemon = await startDaemon(lab, config);
  await waitForIdleShares();
  const ports = [41001, 41002, 41003];
  const running: ReturnType<typeof download>[] = [];
  try {
    const landed: string[] = [];
    for (let i = 0; i < 3; i++) {
      const before = await sharesNow();
      running.push(download(5202 + i, ports[i], 14 - 3 * i));
      let uplink: string | undefined;
      assert.ok(await waitFor(async () => (uplink = await uplinkOfClientPort(ports[i])) !== undefined, 3000), `download ${i + 1} has an uplink`);
      landed.push(uplink!);
      // Dealt by the shares installed when it started: never onto an uplink the loop had found full.
      assert.ok(before[uplink!] > 0, `download ${i + 1} landed on ${uplink}, whose share was 0: ${JSON.stringify(before)}`);
      if (i === 2) break; // all three full: the shares fall back to the capacities
      // The loop sees the download fill its uplink and gives that uplink no new connections.
      assert.ok(await waitFor(async () => (await sharesNow())[uplink!] === 0, 4000),
        `download ${i + 1} fills ${uplink}, but its share stays ${JSON.stringify(await sharesNow())}`);
    }
    assert.equal(new Set(landed).size, 3, `downloads landed on ${landed.join(', ')}`);
    for (const r of await Promise.all(running)) assert.equal(r.code, 0, r.stderr);
  } finally {
    await Promise.allSettled(running); // the next test uses the same iperf3 servers
  }
});

test('connections that start together are dealt by share, before any of them has a rate', async () => {
  daemon = await startDaemon(lab, config);
  await waitForIdleShares();
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
