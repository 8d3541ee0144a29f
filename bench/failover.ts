// npm run bench:failover — how fast uplinkd fails over and back, and whether
// it raises false alarms under load. A program, not a test: it measures,
// prints a report with the raw numbers, saves them in
// bench/results/failover.json and writes the figures into README.md between
// <!-- bench:failover:start --> and <!-- bench:failover:end -->
// (bench/failover-report.ts renders both).
//
// In a lab of its own (always removed, also on Ctrl-C), with `uplinkd run` in
// the router on the default probe settings (the lab's config: targets
// 192.0.2.10 and 2001:db8:ffff::10, each family checked on its own):
//  1. failover for `link` and `upstream` faults on isp1, and `upstream6`
//     (upstream for IPv6 only), TRIALS each, interleaved: a new connection
//     from the LAN every 10 ms (IPv4, or IPv6 for upstream6), the fault at a
//     random moment, failover = fault until every new connection succeeds;
//     then the heal, failback = heal until new connections use isp1 again
//     (its IPv6 address for upstream6, whose trials also record that isp1's
//     IPv4 stayed up);
//  2. false failovers: 60 s of iperf3 (-P 4, both directions) bound to isp2's
//     address, through its 10 mbit tbf, counting `down` events meanwhile;
//  3. the same failover trials (link and upstream) for a multihomed host
//     (lab up --host): the stream is the host's own unbound connections.
// Run as root, from the checkout (the script builds first; the daemon runs
// from dist/ through bin/uplinkd). For a quick look: BENCH_TRIALS=2
// BENCH_SATURATION_S=10; BENCH_DAEMON_LOG=FILE keeps uplinkd's debug log.
// BENCH_FAILOVER_SETUPS=router (or host) runs one setup (1+2, or 3) and keeps
// the other's last results, each dated: the whole takes about 13 minutes.

import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseConfig } from '../src/config/load.js';
import type { Check } from '../src/config/types.js';
import { labDown, labExec, labFail, labHeal, labUp, type LabState } from '../src/lab/lab.js';
import { startDaemon, uplinkdInRouter, type LabDaemon } from '../src/lab/lab-daemon.js';
import { failbackMs, failoverMs, monotonicMs, startStream } from '../src/lab/measure.js';
import type { Status, StatusEvent } from '../src/api/status.js';
import type { Family } from '../src/plan/state.js';
import {
  fmt, IPV4_MODES, ipv4Kept, ipv4KeptText, MODE_FAMILY, modesOf, PERCENTILES, readmeSection, SETUPS, summarize, summaryLine,
  type FailoverData, type Mode, type Saturation, type Setup, type SetupResult, type Trial,
} from './failover-report.js';
import {
  loadResult, machine, saveResult, say, waitForFamilies, writeReadmeSection, type Machine, type PartResult,
} from './lib.js';

/**
 * Trials per fault mode and setup. 30, so that p95 (nearest rank) is the
 * 29th of 30 and not the maximum, which it is below 20. Overridable for a
 * quick look (the report states the count used).
 */
const TRIALS = Number(process.env.BENCH_TRIALS ?? 30);
const STREAM_EVERY_MS = 10;
const STREAM_TIMEOUT_MS = 1000;
const SATURATION_S = Number(process.env.BENCH_SATURATION_S ?? 60);
/** How long to keep the stream going once a new state is reached: longer than the timeout, so a late failure is seen. */
const HOLD_MS = STREAM_TIMEOUT_MS + 300;
const STATE_WITHIN_MS = 10_000;
const RUN_SETUPS = (process.env.BENCH_FAILOVER_SETUPS ?? SETUPS.join(',')).split(',').map((s) => s.trim()) as Setup[];

// ------------------------------------------------------------ the measurements

async function runTrial(lab: LabState, daemon: LabDaemon, mode: Mode, signal: AbortSignal): Promise<Trial> {
  const isp1 = lab.uplinks[0];
  const setup: Setup = lab.host ? 'host' : 'router';
  const family = MODE_FAMILY[mode];
  const six = family === 'ipv6';
  // The address the far end sees of a connection by isp1 (the lab's config NATs both families to the uplink's address).
  const viaIsp1 = six ? isp1.address6! : isp1.address;
  const before = await daemon.status();
  // link and upstream hit both families: the trial waits for both, so the next starts from a whole uplink.
  const dualStack = before?.uplinks.find((u) => u.name === 'isp1')?.families !== undefined;
  if (six && !dualStack) throw new Error(`${mode}: isp1 carries no IPv6 in this lab (no families in its status)`);
  const families: Family[] = six ? ['ipv6'] : dualStack ? ['ipv4', 'ipv6'] : ['ipv4'];
  const eventsBefore = new Set(before?.events.map((e) => JSON.stringify(e)));
  const stream = startStream({
    ns: lab.host ? lab.ns.router : lab.ns.lan, url: six ? `http://[${lab.server6}]:${lab.whoamiPort}/` : `http://${lab.server}:${lab.whoamiPort}/`,
    everyMs: STREAM_EVERY_MS, timeoutMs: STREAM_TIMEOUT_MS, durationMs: 60_000,
  });
  // upstream6: every status read during the trial should show isp1, and its IPv4, up.
  let ipv4StayedUp = true;
  const seen = (status: Status) => {
    const u = status.uplinks.find((x) => x.name === 'isp1');
    if (u?.state !== 'up' || u.families?.ipv4.state !== 'up') ipv4StayedUp = false;
  };
  try {
    await stream.started;
    // A random moment, so the fault falls anywhere within the probe interval.
    const offsetMs = 200 + Math.random() * 500;
    await sleep(offsetMs, undefined, { signal });

    const faultWall = Date.now();
    const faultAt = monotonicMs();
    if (six) await labFail(lab.name, 'isp1', 'upstream', 'ipv6');
    else await labFail(lab.name, 'isp1', mode);
    const down = await waitForFamilies(daemon, ['isp1'], families, 'down', STATE_WITHIN_MS, signal, seen);
    if (!down) throw new Error(`${mode}: isp1 (${families.join(', ')}) not taken down within ${STATE_WITHIN_MS} ms`);
    await sleep(HOLD_MS, undefined, { signal });

    const healWall = Date.now();
    const healAt = monotonicMs();
    await labHeal(lab.name, 'isp1');
    const up = await waitForFamilies(daemon, ['isp1'], families, 'up', STATE_WITHIN_MS, signal, seen);
    if (!up) throw new Error(`${mode}: isp1 (${families.join(', ')}) not back up within ${STATE_WITHIN_MS} ms after the heal`);
    const deadline = Date.now() + 5000;
    while (!stream.samples.some((s) => s.start >= healAt && s.seen === viaIsp1) && Date.now() < deadline) {
      await sleep(20, undefined, { signal });
    }
    await sleep(HOLD_MS, undefined, { signal });
    const samples = await stream.stop();
    const after = await daemon.status();
    if (after) seen(after);
    const events = (after?.events ?? []).filter((e) => !eventsBefore.has(JSON.stringify(e)));

    const outage = samples.filter((s) => s.start >= faultAt && s.start < healAt);
    return {
      setup,
      mode,
      offsetMs,
      failoverMs: failoverMs(samples, faultAt, healAt),
      detectMs: eventDelay(events, 'down', family, faultWall),
      opened: outage.length,
      failed: outage.filter((s) => !s.ok).length,
      failbackMs: failbackMs(samples, healAt, viaIsp1),
      rejoinMs: eventDelay(events, 'up', family, healWall),
      failedAfterHeal: samples.filter((s) => s.start >= healAt && !s.ok).length,
      ...(six ? { ipv4DownEvents: events.filter((e) => e.uplink === 'isp1' && e.event === 'down' && e.family !== 'ipv6').length, ipv4StayedUp } : {}),
    };
  } finally {
    await stream.stop().catch(() => {});
  }
}

/**
 * ms from `since` (wall clock) to isp1's first event of this kind and family
 * among the trial's events (newest first). An IPv4 event of a dual-stack
 * uplink says ipv4; one of an IPv4-only uplink says no family.
 */
function eventDelay(events: StatusEvent[], kind: 'up' | 'down', family: Family, since: number): number | undefined {
  const mine = events.filter((e) => e.uplink === 'isp1' && e.event === kind && (e.family ?? 'ipv4') === family);
  const first = mine[mine.length - 1];
  return first ? Date.parse(first.at) - since : undefined;
}

async function runSaturation(lab: LabState, daemon: LabDaemon, signal: AbortSignal): Promise<Saturation> {
  const isp2 = lab.uplinks[1];
  const before = new Set((await daemon.status())?.events.map((e) => JSON.stringify(e)));
  // From the router, bound to isp2's address: split access keeps all of it on isp2.
  const iperf = labExec(lab.name, 'router', [
    'iperf3', '-c', lab.server, '-p', String(lab.iperfPort), '-B', isp2.address, '--bidir', '-P', '4', '-t', String(SATURATION_S), '-J',
  ], { timeoutMs: (SATURATION_S + 30) * 1000 });
  let finished = false;
  iperf.then(() => (finished = true), () => (finished = true));
  const result: Saturation = { seconds: SATURATION_S, downEvents: [], maxLatencyMs: 0, maxLoss: 0 };
  while (!finished) {
    signal.throwIfAborted();
    const status = await daemon.status();
    const u = status?.uplinks.find((x) => x.name === isp2.name);
    if (u) {
      result.maxLatencyMs = Math.max(result.maxLatencyMs, u.latency_ms ?? 0);
      result.maxLoss = Math.max(result.maxLoss, u.loss);
    }
    await sleep(250);
  }
  const after = (await daemon.status())?.events ?? [];
  result.downEvents = after.filter((e) => e.event === 'down' && !before.has(JSON.stringify(e)));
  const r = await iperf;
  try {
    const end = JSON.parse(r.stdout).end;
    result.upMbps = end.sum_received.bits_per_second / 1e6;
    result.downMbps = end.sum_received_bidir_reverse.bits_per_second / 1e6;
  } catch {
    result.iperfError = `iperf3 exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 200)}`;
  }
  return result;
}

// ------------------------------------------------------------ the report

function describeCheck(check: Check): string {
  return `${check.method} to ${check.targets.join(', ')} every ${check.intervalMs} ms, timeout ${check.timeoutMs} ms, ` +
    `down after ${check.downAfter} bad rounds, up after ${check.upAfter} good rounds`;
}

function printReport(m: Machine, probes: string, trials: Trial[], sat: Saturation | undefined, kernelUpdateMs: number[]): void {
  say();
  say('== uplinkd failover benchmark ==');
  say(`machine: ${m.nproc} CPUs (nproc), ${m.model}, Linux ${m.kernel} (uname -r), ${m.date.slice(0, 16).replace('T', ' ')} UTC`);
  say(`probes:  ${probes} (the config loader's defaults, targets set to 192.0.2.10 and 2001:db8:ffff::10, each family judged on its own)`);
  say(`method:  from the LAN host (router setup), or the multihomed host itself (host setup), a new TCP connection (HTTP GET to the whoami server, which reports the`);
  say(`         source address it saw) every ${STREAM_EVERY_MS} ms regardless of outstanding ones, ${STREAM_TIMEOUT_MS} ms timeout.`);
  say(`         failover = fault -> start of the first connection after which every new connection succeeded;`);
  say(`         failback = heal -> start of the first connection the far end saw from isp1's address.`);
  say(`         link, upstream: both families fail, IPv4 connections to ${'http://192.0.2.10:8080/'}; upstream6: isp1 fails beyond the gateway`);
  say(`         for IPv6 only, IPv6 connections to http://[2001:db8:ffff::10]:8080/, failback by isp1's IPv6 address, states and`);
  say(`         events of isp1's IPv6 (status families.ipv6); IPv4 kept = no IPv4 down event of isp1, isp1 and its IPv4 up in every read.`);
  say(`         All times on CLOCK_MONOTONIC, shared by every process; fault and heal stamped just before the lab`);
  say(`         command that causes them. detect/rejoin = fault/heal -> uplinkd's down/up event (wall clock, ms).`);
  say(`         ${TRIALS} trials per fault mode and setup (${RUN_SETUPS.map((s) => `${s}: ${modesOf(s).join(', ')}`).join('; ')}), interleaved,`);
  say('         fault on isp1 at a random 200-700 ms into the stream.');
  say(`         ${PERCENTILES}`);
  say();
  say('trial  setup   mode       offset  failover  detect  failed/opened  failback  rejoin  failed-after-heal  ipv4-kept');
  trials.forEach((t, i) => say(
    `${String(i + 1).padStart(5)}  ${t.setup.padEnd(6)}  ${t.mode.padEnd(9)}  ${fmt(t.offsetMs).padStart(6)}  ${fmt(t.failoverMs).padStart(8)}  ` +
    `${fmt(t.detectMs).padStart(6)}  ${`${t.failed}/${t.opened}`.padStart(13)}  ${fmt(t.failbackMs).padStart(8)}  ` +
    `${fmt(t.rejoinMs).padStart(6)}  ${String(t.failedAfterHeal).padStart(17)}  ${ipv4KeptText(t)}`,
  ));
  say();
  const router = trials.filter((t) => t.setup === 'router');
  const of = (list: Trial[], mode: Mode, pick: (t: Trial) => number | undefined) => summarize(list.filter((t) => t.mode === mode).map(pick));
  if (router.length) {
    const modes = modesOf('router');
    for (const mode of modes) say(summaryLine(`failover, ${mode}`, of(router, mode, (t) => t.failoverMs)));
    for (const mode of modes) say(summaryLine(`detect, ${mode}`, of(router, mode, (t) => t.detectMs)));
    for (const mode of modes) say(summaryLine(`failback, ${mode}`, of(router, mode, (t) => t.failbackMs)));
    for (const mode of modes) say(summaryLine(`rejoin, ${mode}`, of(router, mode, (t) => t.rejoinMs)));
    say(summaryLine('failback, IPv4 modes', summarize(router.filter((t) => MODE_FAMILY[t.mode] === 'ipv4').map((t) => t.failbackMs))));
    const kept = ipv4Kept(router);
    if (kept.of) say(`IPv4 during upstream6: isp1's IPv4 stayed up in ${kept.kept} of ${kept.of} trials`);
  }
  const host = trials.filter((t) => t.setup === 'host');
  if (host.length) {
    for (const mode of IPV4_MODES) say(summaryLine(`host failover, ${mode}`, of(host, mode, (t) => t.failoverMs)));
    say(summaryLine('host failback, all', summarize(host.map((t) => t.failbackMs))));
  }
  if (kernelUpdateMs.length) say(summaryLine('kernel update', summarize(kernelUpdateMs)) + '  (daemon log: transition -> kernel updated)');
  if (sat) {
    say();
    say(`saturation: ${sat.seconds} s of iperf3 -P 4 --bidir bound to isp2's address, through its 10 mbit tbf`);
    say(`  throughput: ${sat.iperfError ?? `${sat.upMbps?.toFixed(1)} Mbit/s up, ${sat.downMbps?.toFixed(1)} Mbit/s down`}`);
    say(`  false failovers (down events): ${sat.downEvents.length}${sat.downEvents.map((e) => `\n    ${e.at} ${e.uplink} ${e.reason}`).join('')}`);
    say(`  isp2 probes: max latency ${sat.maxLatencyMs.toFixed(1)} ms, max loss ${(sat.maxLoss * 100).toFixed(0)}% (over the last window of probes)`);
  }
}

/** "kernel updated" debug lines of the daemon: how long each transition's kernel change took. */
function kernelUpdateTimes(logs: string): number[] {
  const times: number[] = [];
  for (const line of logs.split('\n')) {
    try {
      const entry = JSON.parse(line) as { msg?: string; ms?: number };
      if (entry.msg === 'kernel updated' && typeof entry.ms === 'number') times.push(entry.ms);
    } catch {
      // not a JSON line
    }
  }
  return times;
}

/**
 * bench/results/failover.json: this run's setups, and the last results of a
 * setup not run this time (each setup carries its own date).
 */
function saveSetups(m: Machine, durationS: number, fresh: Partial<Record<Setup, SetupResult>>): FailoverData {
  const before = loadResult<Partial<FailoverData>>('failover')?.data.setups ?? {};
  const data: FailoverData = { setups: {} };
  for (const setup of SETUPS) {
    const s = fresh[setup] ?? before[setup];
    if (s) data.setups[setup] = s;
  }
  const result: PartResult<FailoverData> = { part: 'failover', machine: m, durationS, data };
  saveResult(result);
  return data;
}

// ------------------------------------------------------------ main

async function main(): Promise<number> {
  const name = `bf${process.pid % 100000}`;
  const interrupt = new AbortController();
  const onSignal = () => {
    say('\ninterrupted: removing the lab');
    interrupt.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const stopIfInterrupted = () => interrupt.signal.throwIfAborted();

  const unknown = RUN_SETUPS.filter((s) => !(SETUPS as readonly string[]).includes(s));
  if (unknown.length || RUN_SETUPS.length === 0) {
    say(`BENCH_FAILOVER_SETUPS: ${unknown.join(', ') || '(empty)'}; choose from ${SETUPS.join(', ')}`);
    return 2;
  }
  const m = machine();
  const started = Date.now();
  const trialCount = RUN_SETUPS.reduce((n, setup) => n + TRIALS * modesOf(setup).length, 0);
  const minutes = Math.ceil((trialCount * 5.5 + (RUN_SETUPS.includes('router') ? SATURATION_S : 0) + 40) / 60);
  say(`bench:failover: lab ${name}, ${RUN_SETUPS.join(' and ')} setup, ${TRIALS} trials per fault mode` +
    `${RUN_SETUPS.includes('router') ? `, then ${SATURATION_S} s of saturation` : ''} (about ${minutes} minutes)`);
  let lab: LabState | undefined;
  let daemon: LabDaemon | undefined;
  let routerLogs = '';
  const fresh: Partial<Record<Setup, SetupResult>> = {};
  const trials: Trial[] = [];
  let sat: Saturation | undefined;
  let probes = '';
  try {
    /** TRIALS per fault mode, interleaved, on a lab just brought up and its daemon. */
    const runTrials = async (setup: Setup): Promise<Trial[]> => {
      const mine: Trial[] = [];
      const modes = modesOf(setup);
      for (let i = 0; i < TRIALS; i++) {
        for (const mode of modes) {
          stopIfInterrupted();
          const t = await runTrial(lab!, daemon!, mode, interrupt.signal);
          mine.push(t);
          trials.push(t);
          say(`  ${setup === 'host' ? 'host ' : ''}${String(mine.length).padStart(2)}/${TRIALS * modes.length} ${mode.padEnd(9)} failover ${fmt(t.failoverMs).padStart(5)} ms` +
            `  failback ${fmt(t.failbackMs).padStart(5)} ms  (${t.failed}/${t.opened} failed during the outage)` +
            `${t.mode === 'upstream6' ? `  IPv4 kept: ${ipv4KeptText(t)}` : ''}`);
          await sleep(300, undefined, { signal: interrupt.signal });
        }
      }
      return mine;
    };
    const setupResult = (setupMachine: Machine, setupStarted: number, mine: Trial[]): SetupResult => ({
      machine: setupMachine, durationS: (Date.now() - setupStarted) / 1000, trialsPerMode: TRIALS, probes,
      streamEveryMs: STREAM_EVERY_MS, streamTimeoutMs: STREAM_TIMEOUT_MS, trials: mine,
    });

    if (RUN_SETUPS.includes('router')) {
      const setupMachine = machine();
      const setupStarted = Date.now();
      lab = await labUp({ name, uplinks: 2, capacities: ['20mbit', '10mbit'] });
      const parsed = parseConfig(readFileSync(lab.configPath, 'utf8'), lab.configPath);
      if (!parsed.ok) throw new Error(`the lab's config is invalid: ${parsed.errors.map((e) => e.message).join('; ')}`);
      probes = describeCheck(parsed.config.uplinks[0].check!);
      say(`probes: ${probes}`);

      // debug: the daemon then logs how long each transition's kernel update took.
      daemon = await startDaemon(lab, lab.configPath, { logLevel: 'debug', upWithinMs: STATE_WITHIN_MS });
      // startDaemon waits for each uplink's top-level state, up with its first family; the IPv6 trials need IPv6 up on both.
      const names = lab.uplinks.map((u) => u.name);
      if (!(await waitForFamilies(daemon, names, ['ipv4', 'ipv6'], 'up', STATE_WITHIN_MS, interrupt.signal))) {
        throw new Error(`the uplinks' IPv4 and IPv6 not all up within ${STATE_WITHIN_MS} ms: ${JSON.stringify((await daemon.status())?.uplinks.map((u) => [u.name, u.families]))}`);
      }
      const mine = await runTrials('router');

      stopIfInterrupted();
      say(`saturating isp2 for ${SATURATION_S} s ...`);
      sat = await runSaturation(lab, daemon, interrupt.signal);
      stopIfInterrupted();
      routerLogs = daemon.logs();
      await daemon.stop();
      daemon = undefined;
      await uplinkdInRouter(lab, ['flush', '-c', lab.configPath]);
      await labDown(name);
      lab = undefined;
      fresh.router = { ...setupResult(setupMachine, setupStarted, mine), saturation: sat, kernelUpdateMs: kernelUpdateTimes(routerLogs) };
    }

    if (RUN_SETUPS.includes('host')) {
      say('the same trials on a multihomed host (lab up --host), its own connections ...');
      const setupMachine = machine();
      const setupStarted = Date.now();
      lab = await labUp({ name, uplinks: 2, capacities: ['20mbit', '10mbit'], host: true });
      if (!probes) {
        const parsed = parseConfig(readFileSync(lab.configPath, 'utf8'), lab.configPath);
        if (!parsed.ok) throw new Error(`the lab's config is invalid: ${parsed.errors.map((e) => e.message).join('; ')}`);
        probes = describeCheck(parsed.config.uplinks[0].check!);
      }
      daemon = await startDaemon(lab, lab.configPath, { logLevel: 'debug', upWithinMs: STATE_WITHIN_MS });
      fresh.host = setupResult(setupMachine, setupStarted, await runTrials('host'));
    }

    printReport(m, probes, trials, sat, kernelUpdateTimes(routerLogs));
    if (process.env.BENCH_DAEMON_LOG) {
      writeFileSync(process.env.BENCH_DAEMON_LOG, routerLogs);
      say(`uplinkd's debug log: ${process.env.BENCH_DAEMON_LOG}`);
    }
    const data = saveSetups(m, (Date.now() - started) / 1000, fresh);
    writeReadmeSection('failover', 'Failover', readmeSection(data));
    say('\nsaved bench/results/failover.json and wrote the figures into README.md (between <!-- bench:failover:start --> and <!-- bench:failover:end -->)');
    return 0;
  } catch (err) {
    if (interrupt.signal.aborted) return 130;
    say(`bench:failover failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    await daemon?.stop();
    if (lab) await uplinkdInRouter(lab, ['flush', '-c', lab.configPath]).catch(() => undefined);
    await labDown(name);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

process.exitCode = await main();
