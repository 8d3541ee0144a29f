// `mptcp: subflow` on a multihomed host (lab up --host, 20 + 10 mbit): the
// MPTCP endpoints follow health, addresses and tiers; one MPTCP download
// from an MPTCP server in the internet uses both uplinks, counted by the
// host's own interface counters; it survives an uplink failing beyond its
// gateway, every byte intact; and `flush` removes uplinkd's endpoints only.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { labDown, labExec, labFail, labHeal, labRenumber, labUp, type LabState } from '../../src/lab/lab.js';
import { startDaemon, waitForStates, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { labMeasuredDownload, labMptcpDownload, labMptcpServer } from '../../src/lab/mptcp.js';
import { mustUplinkd, resetLab, uniqueLabName, waitFor } from './harness.js';

const CAPACITY_BPS = { isp1: 20e6, isp2: 10e6 };
const SUM_BPS = CAPACITY_BPS.isp1 + CAPACITY_BPS.isp2;

let lab: LabState;
let daemon: LabDaemon | undefined;

before(async () => {
  lab = await labUp({ name: uniqueLabName('up9m'), uplinks: 2, capacities: ['20mbit', '10mbit'], host: true });
  await labMptcpServer(lab.name);
});

after(async () => {
  await daemon?.stop();
  if (lab) await labDown(lab.name);
});

afterEach(async () => {
  lab = await resetLab(lab, daemon);
  daemon = undefined;
});

/** A host-mode config (no `lan`): probes to the server, `mptcp` as given, isp2 in `isp2Tier`. */
function config(name: string, opts: { mptcp?: 'off' | 'subflow'; isp2Tier?: number } = {}): string {
  const yaml = labConfig(lab, {
    uplink: (uplink) => `    check: { targets: [${lab.server}, ${lab.server6}] }\n${uplink === 'isp2' && opts.isp2Tier ? `    tier: ${opts.isp2Tier}\n` : ''}`,
    api: { http: 'off' }, top: `mptcp: ${opts.mptcp ?? 'subflow'}\n`,
  });
  assert.doesNotMatch(yaml, /^lan:/m, 'host mode');
  return writeLabConfig(lab, name, yaml);
}

/** `ip mptcp endpoint show` in the host, one line each, sorted by id. */
async function endpoints(): Promise<string[]> {
  const r = await labExec(lab.name, 'router', ['ip', 'mptcp', 'endpoint', 'show']);
  assert.equal(r.code, 0, r.stderr);
  return byId(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
}

const byId = (lines: string[]) => [...lines].sort((a, b) => Number(/ id (\d+)/.exec(a)?.[1]) - Number(/ id (\d+)/.exec(b)?.[1]));

const ours = (address: string, id: number, iface: string, backup = false) => `${address} id ${id} subflow ${backup ? 'backup ' : ''}dev ${iface}`;

async function endpointsBecome(want: string[], withinMs: number): Promise<void> {
  const ok = await waitFor(async () => JSON.stringify(await endpoints()) === JSON.stringify(byId(want)), withinMs);
  assert.ok(ok, `endpoints ${JSON.stringify(await endpoints())}, wanted ${JSON.stringify(byId(want))}`);
}

async function waitState(uplink: string, state: 'up' | 'down'): Promise<void> {
  assert.ok(await waitForStates(daemon!, { [uplink]: state }, 8000), `${uplink} ${state} within 8 s: ${JSON.stringify((await daemon!.status())?.uplinks)}`);
}

test('endpoints: exactly the up uplinks\' addresses, following health, renumbering, tiers and deletion; flush removes only ours', async () => {
  const path = config('endpoints.yaml');
  daemon = await startDaemon(lab, path);
  const [u1, u2] = lab.uplinks;
  await endpointsBecome([ours(u1.address, 255, 'wan1'), ours(u2.address, 254, 'wan2')], 2000);
  const limits = (await labExec(lab.name, 'router', ['ip', 'mptcp', 'limits', 'show'])).stdout;
  assert.match(limits, /add_addr_accepted 2 subflows 2/);

  await labFail(lab.name, 'isp1', 'upstream');
  await waitState('isp1', 'down');
  await endpointsBecome([ours(u2.address, 254, 'wan2')], 2000);
  await labHeal(lab.name, 'isp1');
  await waitState('isp1', 'up');
  await endpointsBecome([ours(u1.address, 255, 'wan1'), ours(u2.address, 254, 'wan2')], 2000);

  const moved = await labRenumber(lab.name, 'isp2');
  assert.notEqual(moved.address, u2.address);
  await endpointsBecome([ours(u1.address, 255, 'wan1'), ours(moved.address, 254, 'wan2')], 3000);

  // Someone deletes ours: the periodic drift check (every 5 s) puts it back.
  await labExec(lab.name, 'router', ['ip', 'mptcp', 'endpoint', 'delete', 'id', '255']);
  await endpointsBecome([ours(u1.address, 255, 'wan1'), ours(moved.address, 254, 'wan2')], 8000);

  // isp2 to tier 2: its endpoint becomes a backup one.
  config('endpoints.yaml', { isp2Tier: 2 });
  daemon.signal('SIGHUP');
  await endpointsBecome([ours(u1.address, 255, 'wan1'), ours(moved.address, 254, 'wan2', true)], 4000);

  // Foreign endpoints: one with an id of its own, one the kernel numbers (past
  // 255, where uplinkd's ids start, it wraps to 1).
  await labExec(lab.name, 'router', ['ip', 'mptcp', 'endpoint', 'add', '203.0.113.200', 'id', '7', 'signal']);
  await labExec(lab.name, 'router', ['ip', 'mptcp', 'endpoint', 'add', '203.0.113.201', 'subflow']);
  const foreign = ['203.0.113.201 id 1 subflow', '203.0.113.200 id 7 signal'];
  await new Promise((r) => setTimeout(r, 6000)); // past a periodic drift check
  assert.deepEqual(await endpoints(), byId([...foreign, ours(u1.address, 255, 'wan1'), ours(moved.address, 254, 'wan2', true)]),
    'the daemon left the foreign endpoints alone');

  await daemon.stop();
  daemon = undefined;
  assert.equal((await endpoints()).length, 4, 'stopping leaves the kernel state in place');
  await mustUplinkd(lab, 'flush');
  assert.deepEqual(await endpoints(), foreign);
  await labExec(lab.name, 'router', ['ip', 'mptcp', 'endpoint', 'flush']);
});

/** 20 + 10 mbit = 3.75 MB/s: 56 MB last about 15 s at full rate, past a 3 s skip and an 8 s window. */
const AGGREGATE_BYTES = 56_000_000;
const SKIP_S = 3;
const WINDOW_S = 8;

test('one MPTCP download uses both uplinks: at least 0.85 of 20 + 10 mbit by the interface counters; plain TCP over the best uplink for context', async () => {
  daemon = await startDaemon(lab, config('aggregate.yaml'));
  await endpointsBecome([ours(lab.uplinks[0].address, 255, 'wan1'), ours(lab.uplinks[1].address, 254, 'wan2')], 2000);
  const interfaces = ['wan1', 'wan2'];
  const mptcp = await labMeasuredDownload(lab.name, 'router', { bytes: AGGREGATE_BYTES, interfaces, skipS: SKIP_S, windowS: WINDOW_S });
  // Bound to isp1's address: split access keeps it on isp1, the best single uplink.
  const tcp = await labMeasuredDownload(lab.name, 'router', {
    bytes: Math.round(AGGREGATE_BYTES * (2 / 3)), tcp: true, bind: lab.uplinks[0].address, interfaces, skipS: SKIP_S, windowS: WINDOW_S,
  });
  const fmt = (bps: number) => `${(bps / 1e6).toFixed(2)} mbit/s`;
  const ratio = mptcp.totalBps / SUM_BPS;
  console.log(`# MPTCP: wan1 ${fmt(mptcp.rxBps.wan1)} + wan2 ${fmt(mptcp.rxBps.wan2)} = ${fmt(mptcp.totalBps)}, ${ratio.toFixed(3)} of 30 mbit; ` +
    `goodput ${fmt((mptcp.download.bytes * 8) / mptcp.download.seconds)} over ${mptcp.download.seconds} s, subflows ${mptcp.download.subflows_max}`);
  console.log(`# TCP via isp1: ${fmt(tcp.totalBps)}, ${(tcp.totalBps / SUM_BPS).toFixed(3)} of 30 mbit, ${(tcp.totalBps / CAPACITY_BPS.isp1).toFixed(3)} of isp1's 20; ` +
    `goodput ${fmt((tcp.download.bytes * 8) / tcp.download.seconds)}`);
  assert.ok(mptcp.download.mptcp, 'the connection stayed MPTCP (no fallback to TCP)');
  assert.ok(mptcp.download.sha256_ok && mptcp.download.bytes === AGGREGATE_BYTES, JSON.stringify(mptcp.download));
  assert.ok(ratio >= 0.85, `MPTCP reached ${ratio.toFixed(3)} of the sum of the capacities (wan1 ${fmt(mptcp.rxBps.wan1)}, wan2 ${fmt(mptcp.rxBps.wan2)})`);
  assert.ok(tcp.download.sha256_ok, JSON.stringify(tcp.download));
});

test('an MPTCP download survives isp1 failing beyond its gateway midway, and its bytes check out', async () => {
  daemon = await startDaemon(lab, config('failover.yaml'));
  await endpointsBecome([ours(lab.uplinks[0].address, 255, 'wan1'), ours(lab.uplinks[1].address, 254, 'wan2')], 2000);
  const bytes = 40_000_000; // about 11 s on both, 32 on isp2 alone
  const download = labMptcpDownload(lab.name, 'router', { bytes, stallTimeoutS: 30 });
  await new Promise((r) => setTimeout(r, 4000));
  await labFail(lab.name, 'isp1', 'upstream');
  await waitState('isp1', 'down');
  const result = await download;
  console.log(`# failover download: ${JSON.stringify(result)}`);
  assert.equal(result.error, undefined);
  assert.equal(result.bytes, bytes);
  assert.ok(result.sha256_ok, 'every byte as the server sent it');
  assert.ok(result.mptcp, 'it stayed MPTCP');
  await endpointsBecome([ours(lab.uplinks[1].address, 254, 'wan2')], 1000);
});
