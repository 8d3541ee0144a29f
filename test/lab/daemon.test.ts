// `uplinkd run` in the lab: failover per fault mode, failback, no false
// alarm under saturation, all down, survival of other uplinks' transfers,
// renumbering, reloads, crash and restart, hooks and status, and pins'
// fallbacks and tiers as the daemon moves them.

import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, waitForStates, type LabDaemon } from '../../src/lab/lab-daemon.js';
import {
  isAlive, labClient, labCounters, labDown, labExec, labFail, labHeal, labRenumber, labUp, loadLab, type LabFault, type LabState,
} from '../../src/lab/lab.js';
import { failoverMs, monotonicMs, startStream } from '../../src/lab/measure.js';
import type { Status, StatusEvent } from '../../src/api/status.js';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { assertPromtoolAccepts } from '../promtool.js';
import { assertShares, connections, daemonStatus, mustUplinkd, uniqueLabName, waitFor, whoamiUrl } from './harness.js';

let lab: LabState;
let isp1: string;
let isp2: string;
let daemon: LabDaemon | undefined;

// Targets of both families, beyond the ISP: the lab is dual-stack, and an uplink is
// down only once both families are (`lab fail` breaks both unless given --family).
const check = '    check: { targets: [192.0.2.10, 2001:db8:ffff::10], max_loss: 20% }\n';

before(async () => {
  lab = await labUp({ name: uniqueLabName('dmn'), uplinks: 2, capacities: ['20mbit', '10mbit'] });
  [isp1, isp2] = lab.uplinks.map((u) => u.address);
});
after(() => labDown(lab.name));
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  for (const u of lab.uplinks) await labHeal(lab.name, u.name);
  lab = loadLab(lab.name);
  [isp1, isp2] = lab.uplinks.map((u) => u.address);
  await mustUplinkd(lab, 'flush');
});

function config(extra = '', name = 'run.yaml', uplinkExtra: (k: number) => string = () => ''): string {
  return writeLabConfig(lab, name, labConfig(lab, {
    uplink: (_, k) => check + uplinkExtra(k), top: `api: { socket: ${lab.stateDir}/uplinkd.sock, http: "off" }\n${extra}`,
  }));
}

async function stateOf(path: string, uplink: string): Promise<string> {
  return (await daemonStatus(lab, path)).uplinks.find((u) => u.name === uplink)!.state;
}

interface Failover {
  /** The README's failover time ("Failover"): fault until every new connection succeeds through `live`; undefined if never. */
  ms?: number;
  /** The daemon's `down` event for the uplink. */
  down?: StatusEvent;
  /** Fault until that event, by the daemon's clock (ms resolution). */
  detectMs?: number;
}

/**
 * Faults `uplink` the way `npm run bench:failover` does: a new connection from
 * the LAN every 10 ms (1 s timeout) around the fault, failover = the start of
 * the first connection after which every one succeeded through `live`.
 */
async function failoverAfter(l: LabState, d: LabDaemon, uplink: string, mode: LabFault, live: string): Promise<Failover> {
  const stream = startStream({ ns: l.ns.lan, url: whoamiUrl(l), everyMs: 10, timeoutMs: 1000, durationMs: 30_000 });
  try {
    await stream.started;
    const faultWall = Date.now();
    const faultAt = monotonicMs();
    await labFail(l.name, uplink, mode);
    const status = await waitForStates(d, { [uplink]: 'down' }, 10_000);
    // Longer than a connection's timeout, so one that fails late is seen.
    await sleep(1300);
    const samples = await stream.stop();
    const down = status?.events.find((e) => e.uplink === uplink && e.event === 'down');
    return {
      ms: failoverMs(samples, faultAt, Infinity, (s) => s.ok && s.seen === live),
      down, detectMs: down && Date.parse(down.at) - faultWall,
    };
  } finally {
    await stream.stop().catch(() => {});
  }
}

/**
 * Failover bounds the README's "Failover" figures support: carrier loss takes
 * tens of ms there (p95 55 ms), an upstream fault about 650-700 ms, so these
 * leave about five and two times that for a busy 2-core machine. Carrier loss
 * must be seen from the kernel's link event: probes alone wait for three
 * rounds to time out, about 600 ms (the down reason tells the two apart
 * too). Loss has no benchmark figure: at 60% each way a probe's round trip is
 * lost 84% of the time, so three lost rounds in a row come about as fast as
 * under `upstream`, or a few rounds later.
 */
const FAILOVER = {
  link: { withinMs: 300, reason: /^carrier lost on wan1$/ },
  upstream: { withinMs: 1500, reason: /^\d+\/\d+ rounds bad: / },
  'loss:60%': { withinMs: 2500, reason: /^\d+\/\d+ rounds bad: / },
} as const;

for (const mode of ['upstream', 'link', 'loss:60%'] as const) {
  test(`failover on ${mode} fault within ${FAILOVER[mode].withinMs} ms: new connections move to the live uplink, and come back after healing`, async () => {
    const path = config();
    daemon = await startDaemon(lab, path);
    const failover = await failoverAfter(lab, daemon, 'isp1', mode, isp2);
    console.log(`# ${mode}: failover ${failover.ms} ms, down event ${failover.detectMs} ms after the fault (${failover.down?.reason})`);
    assert.ok(failover.down, `isp1 not down within 10 s; status: ${JSON.stringify((await daemonStatus(lab, path)).uplinks)}`);
    assert.match(failover.down.reason, FAILOVER[mode].reason);
    assert.ok(failover.ms !== undefined && failover.ms <= FAILOVER[mode].withinMs,
      `failover took ${failover.ms} ms, more than ${FAILOVER[mode].withinMs} ms`);
    assert.equal(await stateOf(path, 'isp1'), 'down');
    const after = await connections(lab, 'lan', 100);
    assert.deepEqual(after.seen, { [isp2]: 100 });
    const healedAt = Date.now();
    await labHeal(lab.name, 'isp1');
    assert.ok(await waitFor(async () => (await stateOf(path, 'isp1')) === 'up', 8000), 'isp1 back up');
    const failback = Date.now() - healedAt;
    const back = await connections(lab, 'lan', 200);
    assertShares(back, { [isp1]: 0.5, [isp2]: 0.5 }, { what: 'after healing', unlike: [{ [isp2]: 1 }] });
    console.log(`# ${mode}: failback (to state up) ${failback} ms`);
  });
}

test('no false down while an uplink is saturated by bulk traffic through its 10 mbit link', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  // Downloads and uploads over isp2 (10 mbit) at once, in both families, each bound to
  // isp2's address so it stays on it. A second iperf3 server (one test, then it exits)
  // takes the IPv6 one. With IPv4 bulk alone, isp2's idle IPv6 has been seen to go down
  // (once in three runs on 2026-12-02): README "Limitations".
  const port6 = lab.iperfPort + 1;
  assert.equal((await labExec(lab.name, 'inet', ['iperf3', '-s', '-1', '-D', '-p', String(port6)])).code, 0);
  await waitFor(async () => (await labExec(lab.name, 'inet', ['ss', '-Htln', `sport = :${port6}`])).stdout.trim() !== '', 2000, 50);
  const down = labExec(lab.name, 'router', ['iperf3', '-c', lab.server, '-p', String(lab.iperfPort), '-B', isp2, '--bidir', '-t', '12', '-P', '1']);
  const down6 = labExec(lab.name, 'router', ['iperf3', '-6', '-c', lab.server6, '-p', String(port6), '-B', lab.uplinks[1].address6!, '--bidir', '-t', '12', '-P', '1']);
  const status = await daemonStatus(lab, path);
  const downs = () => status.events.filter((e) => e.event === 'down');
  for (const r of [await down, await down6]) assert.equal(r.code, 0, r.stderr);
  const after: Status = await daemonStatus(lab, path);
  assert.deepEqual(after.events.filter((e) => e.event === 'down'), downs(), 'no uplink went down');
  assert.ok(after.uplinks.every((u) => u.state === 'up'));
  const isp2Status = after.uplinks.find((u) => u.name === 'isp2')!;
  assert.ok(isp2Status.loss <= 0.2, `isp2 loss ${isp2Status.loss}`);
});

test('all down: new connections are refused at once; recovery when one heals', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  await labFail(lab.name, 'isp1', 'upstream');
  await labFail(lab.name, 'isp2', 'upstream');
  assert.ok(await waitFor(async () => (await daemonStatus(lab, path)).uplinks.every((u) => u.state === 'down'), 5000));
  const refused = await connections(lab, 'lan', 5, ['--concurrency', '1']);
  assert.equal(refused.ok, 0);
  assert.ok(refused.elapsedMs < 1000, `5 attempts took ${refused.elapsedMs} ms: ${JSON.stringify(refused.errors)}`);
  await labHeal(lab.name, 'isp2');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp2')) === 'up', 5000));
  assert.deepEqual((await connections(lab, 'lan', 20)).seen, { [isp2]: 20 });
});

test('isp1 going down: its transfer gets a reset within a second, a long transfer on isp2 keeps flowing on the same entries', async () => {
  // Each transfer is pinned by its LAN source, so both sides are exercised on every run.
  const [viaIsp1, viaIsp2] = lab.lanSources;
  const path = config(`rules:\n  - {src: ${viaIsp1}/32, via: isp1}\n  - {src: ${viaIsp2}/32, via: isp2}\n`);
  // The transfer through isp1 gets a server of its own: cut off mid-test, a server stays busy.
  const doomedPort = lab.iperfPort + 1;
  assert.equal((await labExec(lab.name, 'inet', ['iperf3', '-s', '-D', '-1', '-p', String(doomedPort), '-B', lab.server])).code, 0);
  daemon = await startDaemon(lab, path);
  const iperf = (source: string, port: number, seconds: number) =>
    labExec(lab.name, 'lan', ['iperf3', '-c', lab.server, '-p', String(port), '-B', source, '-t', String(seconds), '-J', '--connect-timeout', '2000'], { timeoutMs: 40_000 });
  const survivor = iperf(viaIsp2, lab.iperfPort, 6);
  let doomedEndedAt = 0;
  // Long enough that only a reset ends it early: an unanswered transfer would hang for its 30 s.
  const doomed = iperf(viaIsp1, doomedPort, 30).then((r) => ((doomedEndedAt = Date.now()), r));
  // An uplink's TCP conntrack entries, by the kernel's id of each entry: an
  // entry deleted and made again by the connection's next packet has a new id.
  const tcpOf = async (mark: number) => {
    const out = (await labExec(lab.name, 'router', ['conntrack', '-L', '-p', 'tcp', '-m', `0x${mark.toString(16)}/0xff00`, '-o', 'id'])).stdout;
    return out.split('\n').filter((line) => line.startsWith('tcp'));
  };
  const idOf = (entry: string) => / id=(\d+)/.exec(entry)?.[1];
  assert.ok(await waitFor(async () => (await tcpOf(0x100)).length > 0 && (await tcpOf(0x200)).length > 0, 3000), 'both transfers run, one per uplink');
  await sleep(1000);
  const isp2Before = await tcpOf(0x200);
  await labFail(lab.name, 'isp1', 'upstream');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp1')) === 'down', 5000));
  // The transfer is IPv4: timed from isp1's IPv4 going down (its IPv6 may follow a little later).
  const downAt = Date.parse((await daemonStatus(lab, path)).events.find((e) => e.uplink === 'isp1' && e.event === 'down' && e.family !== 'ipv6')!.at);
  // conntrack.flush_on_down: the client learns at once that its connection is dead.
  const ended = await doomed;
  // iperf3 -J reports the error in its JSON (and exits 0).
  assert.match(String(JSON.parse(ended.stdout).error), /reset by peer/i, 'the transfer through isp1 is ended by a reset');
  const resetMs = doomedEndedAt - downAt;
  console.log(`# isp1's client got its reset ${resetMs} ms after isp1 went down`);
  assert.ok(resetMs < 1000, `reset ${resetMs} ms after isp1 went down (within 1 s)`);
  // isp2's are the same entries as before, not ones made again after a wider flush.
  const isp2After = (await tcpOf(0x200)).map(idOf);
  for (const entry of isp2Before) {
    assert.ok(isp2After.includes(idOf(entry)), `isp2's conntrack entry is gone or made again: ${entry}\nnow: ${(await tcpOf(0x200)).join('\n')}`);
  }
  const r = await survivor;
  assert.equal(r.code, 0, `the transfer on isp2 must survive: ${r.stderr}`);
  const bytes = JSON.parse(r.stdout).intervals.map((i: { sum: { bytes: number } }) => i.sum.bytes);
  assert.ok(bytes.length >= 6 && bytes.every((b: number) => b > 0), `kept flowing every second: ${bytes}`);
});

test('a renumbered uplink keeps working for new connections', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  const renumbered = await labRenumber(lab.name, 'isp1');
  const renumberedAt = Date.now();
  // Followed in SNAT within 1 s (SPEC): the far end sees the new address.
  const followed = await waitFor(async () => {
    const r = await labClient(lab.name, 'lan', ['http', '--url', `http://${lab.server}:${lab.whoamiPort}/`, '--count', '20', '--concurrency', '20', '--timeout-ms', '300']);
    return r.ok === 20 && (r.seen[renumbered.address] ?? 0) > 0;
  }, 1000, 10);
  console.log(`# renumber followed in ${Date.now() - renumberedAt} ms`);
  assert.ok(followed, 'new connections use the new address within 1 s');
  assert.equal((await daemonStatus(lab, path)).uplinks[0].address, renumbered.address);
  const r = await connections(lab, 'lan', 200);
  assert.equal(r.ok, 200, JSON.stringify(r.errors));
  assert.deepEqual(Object.keys(r.seen).sort(), [renumbered.address, isp2].sort(), 'SNAT follows the new address');
  const status = await daemonStatus(lab, path);
  assert.ok(status.events.some((e) => e.event === 'address' && e.uplink === 'isp1'));
  assert.deepEqual(status.events.filter((e) => e.event === 'down'), [], 'a renew is not an outage');
  assert.equal(status.uplinks[0].state, 'up');
});

test('a bad config on SIGHUP changes nothing; a good one is taken', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  const before = (await labExec(lab.name, 'router', ['nft', 'list', 'ruleset'])).stdout;
  const good = readFileSync(path, 'utf8');
  writeFileSync(path, good.replace('interface: wan2', 'interface: wan2\n    wieght: 3'));
  daemon.signal('SIGHUP');
  assert.ok(await waitFor(async () => daemon!.logs().includes('reload rejected'), 3000), daemon.logs());
  assert.match(daemon.logs(), /run\.yaml:\d+:\d+: unknown key \\"wieght\\"/);
  assert.equal((await labExec(lab.name, 'router', ['nft', 'list', 'ruleset'])).stdout, before);
  assert.equal((await connections(lab, 'lan', 20)).ok, 20);
  writeFileSync(path, good.replace('interface: wan2', 'interface: wan2\n    weight: 3'));
  daemon.signal('SIGHUP');
  assert.ok(await waitFor(async () => (await daemonStatus(lab, path)).uplinks[1].weight === 3, 3000));
  const r = await connections(lab, 'lan', 1600);
  // Wrong: the old weights kept, or the weight given to the other uplink.
  assertShares(r, { [isp1]: 0.25, [isp2]: 0.75 }, { what: 'isp2 weight 3', unlike: [{ [isp1]: 0.5, [isp2]: 0.5 }, { [isp1]: 0.75, [isp2]: 0.25 }] });
  assert.ok((await daemonStatus(lab, path)).events.some((e) => e.event === 'reload'));
});

test('kill -9 during a download, then restart: the download completes', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  const download = labExec(lab.name, 'lan', ['iperf3', '-c', lab.server, '-p', String(lab.iperfPort), '-R', '-t', '5', '-J']);
  await new Promise((r) => setTimeout(r, 1000));
  daemon.signal('SIGKILL');
  await daemon.exited;
  await new Promise((r) => setTimeout(r, 500));
  daemon = await startDaemon(lab, path);
  const r = await download;
  assert.equal(r.code, 0, r.stderr);
  const bytes = JSON.parse(r.stdout).intervals.map((i: { sum: { bytes: number } }) => i.sum.bytes);
  assert.ok(bytes.length >= 5 && bytes.every((b: number) => b > 0), `bytes per second: ${bytes}`);
});

test('SIGTERM stops tracking and leaves the kernel state in place', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  const before = (await labExec(lab.name, 'router', ['nft', 'list', 'ruleset'])).stdout;
  assert.equal(await daemon.stop(), 0);
  assert.equal((await labExec(lab.name, 'router', ['nft', 'list', 'ruleset'])).stdout, before);
  assert.equal((await connections(lab, 'lan', 20)).ok, 20, 'still forwarding');
  // Processes in the router's network namespace (pgrep would see every lab's).
  const pids = (await labExec(lab.name, 'router', ['ip', 'netns', 'pids', lab.ns.router])).stdout.split('\n').filter(Boolean);
  const probers = pids.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'fping';
    } catch {
      return false;
    }
  });
  assert.deepEqual(probers, [], 'no prober left running');
});

test('hooks run with the event in their environment; one that hangs is killed after 10 s, and says so in the log', async () => {
  const out = join(lab.stateDir, 'hook.log');
  const hook = join(lab.stateDir, 'hook.sh');
  writeFileSync(hook, `#!/bin/sh\necho "$UPLINKD_EVENT|$UPLINKD_UPLINK|$UPLINKD_FAMILY|$UPLINKD_INTERFACE|$UPLINKD_ADDRESS|$UPLINKD_REASON" >> ${out}\n`);
  chmodSync(hook, 0o755);
  // The hanging hook notes its pid and event, then becomes the sleep (exec: the same process).
  const slow = join(lab.stateDir, 'slow.sh');
  const slowPids = join(lab.stateDir, 'slow.pids');
  writeFileSync(slow, `#!/bin/sh\necho "$$ $UPLINKD_EVENT $UPLINKD_UPLINK $UPLINKD_FAMILY" >> ${slowPids}\nexec sleep 30\n`);
  chmodSync(slow, 0o755);
  writeFileSync(out, '');
  writeFileSync(slowPids, '');
  const path = config(`hooks: [${slow}, ${hook}]\n`);
  daemon = await startDaemon(lab, path);
  await labFail(lab.name, 'isp1', 'upstream');
  // One event per family (the lab is dual-stack), each with that family's address.
  const downLine = (family: string) => readFileSync(out, 'utf8').split('\n').find((l) => l.startsWith(`down|isp1|${family}|`));
  assert.ok(await waitFor(async () => downLine('ipv4') !== undefined && downLine('ipv6') !== undefined, 5000), readFileSync(out, 'utf8'));
  for (const [family, ownAddress] of [['ipv4', isp1], ['ipv6', lab.uplinks[0].address6!]]) {
    const [event, uplink, , iface, address, reason] = downLine(family)!.split('|');
    assert.deepEqual([event, uplink, iface, address], ['down', 'isp1', 'wan1', ownAddress]);
    assert.match(reason, /rounds bad/);
  }
  const hungPid = async () => readFileSync(slowPids, 'utf8').split('\n').find((l) => l.endsWith(' down isp1 ipv4'))?.split(' ')[0];
  assert.ok(await waitFor(async () => (await hungPid()) !== undefined, 2000), `the hanging hook ran for the down event: ${readFileSync(slowPids, 'utf8')}`);
  const pid = (await hungPid())!;
  const hungAt = Date.now();
  // A hook that hangs does not stall tracking: failback still happens.
  await labHeal(lab.name, 'isp1');
  assert.ok(await waitFor(async () => readFileSync(out, 'utf8').includes('up|isp1'), 5000));
  assert.ok(isAlive(pid), 'the hanging hook is still running before its 10 s are up');
  // Killed at 10 s: gone soon after, and logged with the hook and the event it ran for.
  assert.ok(await waitFor(async () => !isAlive(pid), 13_000 - (Date.now() - hungAt), 100), `hook pid ${pid} still running ${Date.now() - hungAt} ms after it started`);
  const goneAfterMs = Date.now() - hungAt;
  assert.ok(goneAfterMs >= 9000, `killed ${goneAfterMs} ms after it started, before its 10 s`);
  const killed = daemon.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { hook?: string; event?: string; family?: string; msg?: string })
    .filter((entry) => entry.hook === slow && entry.event === 'down' && entry.family === 'ipv4');
  assert.deepEqual(killed.map((entry) => entry.msg), [`hook ${slow} ran past 10 s; killed`], daemon.logs());
});

test('status --json matches the schema; status exits 3 when no daemon runs', async () => {
  const path = config();
  assert.equal((await labExec(lab.name, 'router', [join(process.cwd(), 'bin/uplinkd'), 'status', '-c', path])).code, 3);
  daemon = await startDaemon(lab, path);
  const s = await daemonStatus(lab, path);
  assert.deepEqual(Object.keys(s).sort(), ['events', 'self_healing', 'uplinks']);
  assert.deepEqual(s.self_healing, { restores: 0, by_cause: {}, last: null, backoff_ms: 0 });
  // The lab is dual-stack, so each uplink has both families (README "IPv6").
  const keys = ['name', 'interface', 'state', 'since', 'address', 'holds_address', 'gateway', 'tier', 'weight', 'share', 'latency_ms', 'loss', 'rx_bps', 'tx_bps', 'connections', 'families'];
  for (const u of s.uplinks) {
    assert.deepEqual(Object.keys(u), keys);
    assert.deepEqual(Object.keys(u.families!), ['ipv4', 'ipv6']);
    for (const f of Object.values(u.families!)) assert.deepEqual(Object.keys(f), ['state', 'since', 'address', 'gateway', 'latency_ms', 'loss']);
    assert.equal(u.families!.ipv4.address, u.address);
    assert.match(u.families!.ipv6.address ?? '', /^2001:db8:[12]::2$/);
    assert.ok(['up', 'down', 'pending'].includes(u.state));
    assert.ok(!Number.isNaN(Date.parse(u.since)));
    for (const k of ['tier', 'weight', 'share', 'loss', 'rx_bps', 'tx_bps', 'connections'] as const) assert.equal(typeof u[k], 'number', k);
    assert.equal(typeof u.latency_ms, 'number');
  }
  assert.deepEqual(s.uplinks.map((u) => [u.name, u.interface, u.address, u.share]), [['isp1', 'wan1', isp1, 0.5], ['isp2', 'wan2', isp2, 0.5]]);
  for (const e of s.events) assert.deepEqual(Object.keys(e), e.event === 'reload' ? ['at', 'uplink', 'event', 'reason'] : ['at', 'uplink', 'event', 'reason', 'family']);
  const table = (await mustUplinkd(lab, 'status', '-c', path)).split('\n');
  assert.match(table[0], /^UPLINK\s+IFACE\s+STATE/);
  const mode = (await labExec(lab.name, 'router', ['stat', '-c', '%a', join(lab.stateDir, 'uplinkd.sock')])).stdout.trim();
  assert.equal(mode, '600');
});

test('probes of an uplink leave through it while it is down', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  await labFail(lab.name, 'isp1', 'upstream');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp1')) === 'down', 5000));
  const before = { isp1: await labCounters(lab.name, 'isp1'), isp2: await labCounters(lab.name, 'isp2') };
  await new Promise((r) => setTimeout(r, 1000));
  const later = { isp1: await labCounters(lab.name, 'isp1'), isp2: await labCounters(lab.name, 'isp2') };
  assert.ok(later.isp1.upstream - before.isp1.upstream >= 5, `isp1's ISP saw ${later.isp1.upstream - before.isp1.upstream} probe packets in 1 s`);
  assert.ok(later.isp1.upstream6 - before.isp1.upstream6 >= 5, `isp1's ISP saw ${later.isp1.upstream6 - before.isp1.upstream6} IPv6 probe packets in 1 s`);
  assert.equal(later.isp2.spoofed - before.isp2.spoofed, 0, 'nothing with a foreign source reached isp2');
  assert.equal(later.isp2.spoofed6 - before.isp2.spoofed6, 0, 'nothing with a foreign IPv6 source reached isp2');
});

test('a point-to-point uplink (gateway: none, peer-addressed) balances, tracks and fails over', async () => {
  const p2p = await labUp({ name: uniqueLabName('p2p'), uplinks: 2, pointToPoint: [2] });
  try {
    const [a, b] = p2p.uplinks.map((u) => u.address);
    const path = writeLabConfig(p2p, 'p2p.yaml', labConfig(p2p, {
      uplink: (_, k) => (k === 2 ? '    gateway: none\n    check: { interval: 100ms }\n' : check),
      top: `api: { socket: ${p2p.stateDir}/uplinkd.sock, http: "off" }\n`,
    }));
    const plan = await mustUplinkd(p2p, 'plan', '-c', path);
    assert.match(plan, /ip route replace default dev wan2 src 198\.18\.0\.1 table 202/);
    daemon = await startDaemon(p2p, path);
    const r = await connections(p2p, 'lan', 200);
    assertShares(r, { [a]: 0.5, [b]: 0.5 }, { unlike: [{ [a]: 1 }, { [b]: 1 }] });
    // Its default probe target is the peer; carrier loss takes it down at once,
    // from the link event and not after three bad probe rounds (see FAILOVER).
    const failover = await failoverAfter(p2p, daemon, 'isp2', 'link', a);
    console.log(`# point-to-point link: failover ${failover.ms} ms, down event ${failover.detectMs} ms after the fault (${failover.down?.reason})`);
    assert.match(failover.down?.reason ?? 'no down event', /^carrier lost on wan2$/);
    assert.ok(failover.ms !== undefined && failover.ms <= FAILOVER.link.withinMs, `failover took ${failover.ms} ms, more than ${FAILOVER.link.withinMs} ms`);
    assert.deepEqual((await connections(p2p, 'lan', 50)).seen, { [a]: 50 });
    await labHeal(p2p.name, 'isp2');
    assert.ok(await waitFor(async () => (await daemonStatus(p2p, path)).uplinks[1].state === 'up', 5000));
  } finally {
    await daemon?.stop();
    daemon = undefined;
    await labDown(p2p.name);
  }
});

test('HTTP: /api/status, /metrics in Prometheus format, read-only, on loopback', async () => {
  const path = writeLabConfig(lab, 'http.yaml', labConfig(lab, {
    uplink: () => check, top: `api: { socket: ${lab.stateDir}/uplinkd.sock, http: 127.0.0.1:9271 }\n`,
  }));
  daemon = await startDaemon(lab, path);
  await connections(lab, 'lan', 20);
  const get = async (url: string, ...extra: string[]) =>
    (await labExec(lab.name, 'router', ['curl', '-s', '-w', '\n%{http_code}', ...extra, url])).stdout;
  const api = (await get('http://127.0.0.1:9271/api/status')).split('\n');
  assert.equal(api.pop(), '200');
  const status = JSON.parse(api.join('\n')) as Status;
  assert.deepEqual(status.uplinks.map((u) => u.state), ['up', 'up']);
  const metrics = await get('http://127.0.0.1:9271/metrics');
  for (const line of [
    'uplinkd_uplink_up{uplink="isp1",interface="wan1",family="ipv4"} 1',
    'uplinkd_uplink_up{uplink="isp1",interface="wan1",family="ipv6"} 1',
    'uplinkd_uplink_share_ratio{uplink="isp2",interface="wan2"} 0.5',
  ]) assert.ok(metrics.includes(line), `missing ${line}\n${metrics}`);
  for (const name of ['uplinkd_probe_latency_seconds', 'uplinkd_probe_loss_ratio', 'uplinkd_uplink_receive_bytes_total',
    'uplinkd_uplink_transmit_bytes_total', 'uplinkd_uplink_connections', 'uplinkd_uplink_transitions_total']) {
    assert.match(metrics, new RegExp(`^# TYPE ${name} `, 'm'));
  }
  // The interface's kernel counters (sampled once a second, so within a second of the start): traffic has moved them.
  const counted = Date.now() + 3000;
  let scraped = metrics;
  while (!scraped.includes('uplinkd_uplink_receive_bytes_total{') && Date.now() < counted) {
    await new Promise((r) => setTimeout(r, 200));
    scraped = await get('http://127.0.0.1:9271/metrics');
  }
  for (const direction of ['receive', 'transmit']) {
    const sent = new RegExp(`^uplinkd_uplink_${direction}_bytes_total\\{uplink="isp1",interface="wan1"\\} (\\d+)$`, 'm').exec(scraped);
    assert.ok(sent && Number(sent[1]) > 0, `no ${direction} bytes for isp1\n${scraped}`);
  }
  assert.match(metrics, /^uplinkd_uplink_transitions_total\{uplink="isp1",interface="wan1",family="ipv4",to="up"\} 1$/m);
  assert.ok((await get('http://127.0.0.1:9271/', '-X', 'POST')).endsWith('405'), 'read-only');
  // Only on loopback: the router's LAN address does not answer.
  const r = await labExec(lab.name, 'lan', ['curl', '-s', '-m', '1', 'http://198.18.0.1:9271/api/status']);
  assert.notEqual(r.code, 0);
  // What a real daemon serves, every series filled, passes Prometheus's own linter.
  const served = scraped.split('\n');
  assert.equal(served.pop(), '200');
  assertPromtoolAccepts(served.join('\n'));
  assert.match(scraped, /^uplinkd_events_total\{uplink="isp1",event="up"\} [1-9]/m);
});

test('a daemon restarted after a crash adopts the state and corrects what the old one left', async () => {
  const path = config();
  daemon = await startDaemon(lab, path);
  await labFail(lab.name, 'isp1', 'upstream');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp1')) === 'down', 5000));
  daemon.signal('SIGKILL');
  await daemon.exited;
  // isp1 heals while no daemon runs; the kernel still says "isp1 down".
  await labHeal(lab.name, 'isp1');
  assert.deepEqual((await connections(lab, 'lan', 20)).seen, { [isp2]: 20 });
  daemon = await startDaemon(lab, path);
  const r = await connections(lab, 'lan', 200);
  assertShares(r, { [isp1]: 0.5, [isp2]: 0.5 }, { what: 'isp1 is used again', unlike: [{ [isp2]: 1 }] });
});

test('pins with their uplink taken down by the daemon: fallback block refuses at once, fallback any balances; both come back', async () => {
  const path = config('rules:\n  - {name: strict, dst: 192.0.2.40, via: isp2, fallback: block}\n  - {name: lenient, dst: 192.0.2.50, via: isp2}\n');
  daemon = await startDaemon(lab, path);
  const to = (host: string) => ['--url', `http://${host}:${lab.whoamiPort}/`];
  const bothOnIsp2 = async (when: string) => {
    for (const host of ['192.0.2.40', '192.0.2.50']) assert.deepEqual((await connections(lab, 'lan', 40, to(host))).seen, { [isp2]: 40 }, `${host} ${when}`);
  };
  await bothOnIsp2('with isp2 up');
  await labFail(lab.name, 'isp2', 'upstream');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp2')) === 'down', 5000), 'isp2 down');
  const strict = await connections(lab, 'lan', 5, [...to('192.0.2.40'), '--concurrency', '1']);
  assert.equal(strict.ok, 0, `fallback block: ${JSON.stringify(strict.seen)}`);
  assert.ok(strict.elapsedMs < 1000 && !strict.errors.ETIMEDOUT, `refused in ${strict.elapsedMs} ms: ${JSON.stringify(strict.errors)}`);
  // Default balancing, with isp1 the only uplink up.
  assert.deepEqual((await connections(lab, 'lan', 40, to('192.0.2.50'))).seen, { [isp1]: 40 }, 'fallback any');
  await labHeal(lab.name, 'isp2');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp2')) === 'up', 5000), 'isp2 back up');
  await bothOnIsp2('after isp2 healed');
});

test('tier 2 is unused while tier 1 is up, takes over when the daemon takes tier 1 down, and hands back when it heals', async () => {
  const path = config('', 'tiers.yaml', (k) => (k === 2 ? '    tier: 2\n' : ''));
  daemon = await startDaemon(lab, path);
  assert.deepEqual((await connections(lab, 'lan', 100)).seen, { [isp1]: 100 }, 'tier 1 up');
  const failover = await failoverAfter(lab, daemon, 'isp1', 'upstream', isp2);
  console.log(`# tier takeover: failover ${failover.ms} ms`);
  assert.ok(failover.ms !== undefined && failover.ms <= FAILOVER.upstream.withinMs, `tier 2 took over after ${failover.ms} ms`);
  assert.deepEqual((await connections(lab, 'lan', 100)).seen, { [isp2]: 100 }, 'tier 1 down');
  await labHeal(lab.name, 'isp1');
  assert.ok(await waitFor(async () => (await stateOf(path, 'isp1')) === 'up', 5000), 'isp1 back up');
  assert.deepEqual((await connections(lab, 'lan', 100)).seen, { [isp1]: 100 }, 'tier 1 healed');
});
