// npm run bench:failover — how fast uplinkd fails over and back, and whether
// it raises false alarms under load. A program, not a test: it measures,
// prints a report with the raw numbers, and writes the figures into README.md
// between <!-- bench:failover:start --> and <!-- bench:failover:end -->.
//
// In a lab of its own (always removed, also on Ctrl-C), with `uplinkd run` in
// the router on the default probe settings (targets 192.0.2.10):
//  1. failover for `link` and `upstream` faults on isp1, TRIALS each,
//     interleaved: a new connection from the LAN every 10 ms, the fault at a
//     random moment, failover = fault until every new connection succeeds;
//     then the heal, failback = heal until new connections use isp1 again;
//  2. false failovers: 60 s of iperf3 (-P 4, both directions) bound to isp2's
//     address, through its 10 mbit tbf, counting `down` events meanwhile;
//  3. the same failover trials for a multihomed host (lab up --host): the
//     stream is the host's own unbound connections.
// Run as root, from the checkout (the script builds first; the daemon runs
// from dist/ through bin/uplinkd). For a quick look: BENCH_TRIALS=2
// BENCH_SATURATION_S=10; BENCH_DAEMON_LOG=FILE keeps uplinkd's debug log.

import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseConfig } from '../src/config/load.js';
import type { Check } from '../src/config/types.js';
import { labDown, labExec, labFail, labHeal, labUp, type LabState } from '../src/lab/lab.js';
import { startLabDaemon, uplinkdInRouter, waitForStates, type LabDaemon } from '../src/lab/lab-daemon.js';
import { failbackMs, failoverMs, monotonicMs, percentile, startStream } from '../src/lab/measure.js';
import type { StatusEvent } from '../src/api/status.js';
import { say, writeReadmeSection } from './lib.js';

/** Overridable for a quick look (the README section states the counts used). */
const TRIALS = Number(process.env.BENCH_TRIALS ?? 12);
const MODES = ['link', 'upstream'] as const;
type Mode = (typeof MODES)[number];
const STREAM_EVERY_MS = 10;
const STREAM_TIMEOUT_MS = 1000;
const SATURATION_S = Number(process.env.BENCH_SATURATION_S ?? 60);
/** How long to keep the stream going once a new state is reached: longer than the timeout, so a late failure is seen. */
const HOLD_MS = STREAM_TIMEOUT_MS + 300;
const STATE_WITHIN_MS = 10_000;


/** Whose connections: the LAN's through the router, or a multihomed host's own. */
type Setup = 'router' | 'host';

interface Trial {
  setup: Setup;
  mode: Mode;
  /** How long the stream ran before the fault (random). */
  offsetMs: number;
  failoverMs?: number;
  /** Fault until uplinkd's `down` event (its own clock, ms resolution). */
  detectMs?: number;
  /** Connections started after the fault, and how many of them failed. */
  opened: number;
  failed: number;
  failbackMs?: number;
  /** Heal until uplinkd's `up` event. */
  rejoinMs?: number;
  /** Connections started after the heal that failed (there should be none). */
  failedAfterHeal: number;
}

interface Saturation {
  downEvents: StatusEvent[];
  maxLatencyMs: number;
  maxLoss: number;
  /** iperf3's own figures, Mbit/s: LAN side to internet, and back. */
  upMbps?: number;
  downMbps?: number;
  iperfError?: string;
}

// ------------------------------------------------------------ the measurements

async function runTrial(lab: LabState, daemon: LabDaemon, mode: Mode, signal: AbortSignal): Promise<Trial> {
  const isp1 = lab.uplinks[0];
  const setup: Setup = lab.host ? 'host' : 'router';
  const stream = startStream({
    ns: lab.host ? lab.ns.router : lab.ns.lan, url: `http://${lab.server}:${lab.whoamiPort}/`,
    everyMs: STREAM_EVERY_MS, timeoutMs: STREAM_TIMEOUT_MS, durationMs: 60_000,
  });
  try {
    await stream.started;
    // A random moment, so the fault falls anywhere within the probe interval.
    const offsetMs = 200 + Math.random() * 500;
    await sleep(offsetMs, undefined, { signal });

    const faultWall = Date.now();
    const faultAt = monotonicMs();
    await labFail(lab.name, 'isp1', mode);
    const down = await waitForStates(daemon, { isp1: 'down' }, STATE_WITHIN_MS, signal);
    if (!down) throw new Error(`${mode}: isp1 not taken down within ${STATE_WITHIN_MS} ms`);
    await sleep(HOLD_MS, undefined, { signal });

    const healWall = Date.now();
    const healAt = monotonicMs();
    await labHeal(lab.name, 'isp1');
    const up = await waitForStates(daemon, { isp1: 'up' }, STATE_WITHIN_MS, signal);
    if (!up) throw new Error(`${mode}: isp1 not back up within ${STATE_WITHIN_MS} ms after the heal`);
    const deadline = Date.now() + 5000;
    while (!stream.samples.some((s) => s.start >= healAt && s.seen === isp1.address) && Date.now() < deadline) {
      await sleep(20, undefined, { signal });
    }
    await sleep(HOLD_MS, undefined, { signal });
    const samples = await stream.stop();

    const outage = samples.filter((s) => s.start >= faultAt && s.start < healAt);
    return {
      setup,
      mode,
      offsetMs,
      failoverMs: failoverMs(samples, faultAt, healAt),
      detectMs: eventDelay(down.events, 'down', faultWall),
      opened: outage.length,
      failed: outage.filter((s) => !s.ok).length,
      failbackMs: failbackMs(samples, healAt, isp1.address),
      rejoinMs: eventDelay(up.events, 'up', healWall),
      failedAfterHeal: samples.filter((s) => s.start >= healAt && !s.ok).length,
    };
  } finally {
    await stream.stop().catch(() => {});
  }
}

/** ms from `since` (wall clock) to isp1's most recent event of this kind. */
function eventDelay(events: StatusEvent[], kind: 'up' | 'down', since: number): number | undefined {
  const event = events.find((e) => e.uplink === 'isp1' && e.event === kind);
  return event ? Date.parse(event.at) - since : undefined;
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
  const result: Saturation = { downEvents: [], maxLatencyMs: 0, maxLoss: 0 };
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

interface Machine {
  cpus: number;
  model: string;
  kernel: string;
  date: string;
}

function machine(): Machine {
  return {
    cpus: os.availableParallelism(), // what nproc prints
    model: os.cpus()[0]?.model.trim() ?? 'unknown CPU',
    kernel: os.release(), // what uname -r prints
    date: new Date().toISOString().slice(0, 10),
  };
}

const fmt = (v: number | undefined) => (v === undefined ? '—' : `${Math.round(v)}`);

interface Summary {
  n: number;
  missing: number;
  p50: number;
  p95: number;
  min: number;
  max: number;
}

function summarize(values: (number | undefined)[]): Summary | undefined {
  const measured = values.filter((v): v is number => v !== undefined);
  if (measured.length === 0) return undefined;
  return {
    n: measured.length, missing: values.length - measured.length,
    p50: percentile(measured, 50), p95: percentile(measured, 95), min: Math.min(...measured), max: Math.max(...measured),
  };
}

function summaryLine(label: string, s: Summary | undefined): string {
  if (!s) return `${label.padEnd(22)} no measurement`;
  const missing = s.missing ? `  (${s.missing} trial(s) without a result)` : '';
  return `${label.padEnd(22)} n=${String(s.n).padEnd(3)} p50 ${fmt(s.p50).padStart(5)} ms  p95 ${fmt(s.p95).padStart(5)} ms  ` +
    `min ${fmt(s.min).padStart(5)} ms  max ${fmt(s.max).padStart(5)} ms${missing}`;
}

function describeCheck(check: Check): string {
  return `${check.method} to ${check.targets.join(', ')} every ${check.intervalMs} ms, timeout ${check.timeoutMs} ms, ` +
    `down after ${check.downAfter} bad rounds, up after ${check.upAfter} good rounds`;
}

function printReport(m: Machine, check: Check, trials: Trial[], sat: Saturation, kernelUpdateMs: number[]): void {
  say();
  say('== uplinkd failover benchmark ==');
  say(`machine: ${m.cpus} CPUs (nproc), ${m.model}, Linux ${m.kernel} (uname -r), ${m.date}`);
  say(`probes:  ${describeCheck(check)} (the config loader's defaults, targets set to 192.0.2.10)`);
  say(`method:  from the LAN host (router setup), or the multihomed host itself (host setup), a new TCP connection (HTTP GET to the whoami server, which reports the`);
  say(`         source address it saw) every ${STREAM_EVERY_MS} ms regardless of outstanding ones, ${STREAM_TIMEOUT_MS} ms timeout.`);
  say(`         failover = fault -> start of the first connection after which every new connection succeeded;`);
  say(`         failback = heal -> start of the first connection the far end saw from isp1's address.`);
  say(`         All times on CLOCK_MONOTONIC, shared by every process; fault and heal stamped just before the lab`);
  say(`         command that causes them. detect/rejoin = fault/heal -> uplinkd's down/up event (wall clock, ms).`);
  say(`         ${TRIALS} trials per fault mode, interleaved, fault on isp1 at a random 200-700 ms into the stream.`);
  say(`         Percentiles are nearest-rank (always a measured value).`);
  say();
  say('trial  setup   mode      offset  failover  detect  failed/opened  failback  rejoin  failed-after-heal');
  trials.forEach((t, i) => say(
    `${String(i + 1).padStart(5)}  ${t.setup.padEnd(6)}  ${t.mode.padEnd(8)}  ${fmt(t.offsetMs).padStart(6)}  ${fmt(t.failoverMs).padStart(8)}  ` +
    `${fmt(t.detectMs).padStart(6)}  ${`${t.failed}/${t.opened}`.padStart(13)}  ${fmt(t.failbackMs).padStart(8)}  ` +
    `${fmt(t.rejoinMs).padStart(6)}  ${String(t.failedAfterHeal).padStart(17)}`,
  ));
  say();
  const router = trials.filter((t) => t.setup === 'router');
  const of = (list: Trial[], mode: Mode, pick: (t: Trial) => number | undefined) => summarize(list.filter((t) => t.mode === mode).map(pick));
  for (const mode of MODES) say(summaryLine(`failover, ${mode}`, of(router, mode, (t) => t.failoverMs)));
  for (const mode of MODES) say(summaryLine(`detect, ${mode}`, of(router, mode, (t) => t.detectMs)));
  for (const mode of MODES) say(summaryLine(`failback, ${mode}`, of(router, mode, (t) => t.failbackMs)));
  for (const mode of MODES) say(summaryLine(`rejoin, ${mode}`, of(router, mode, (t) => t.rejoinMs)));
  say(summaryLine('failback, all', summarize(router.map((t) => t.failbackMs))));
  const host = trials.filter((t) => t.setup === 'host');
  for (const mode of MODES) say(summaryLine(`host failover, ${mode}`, of(host, mode, (t) => t.failoverMs)));
  say(summaryLine('host failback, all', summarize(host.map((t) => t.failbackMs))));
  if (kernelUpdateMs.length) say(summaryLine('kernel update', summarize(kernelUpdateMs)) + '  (daemon log: transition -> kernel updated)');
  say();
  say(`saturation: ${SATURATION_S} s of iperf3 -P 4 --bidir bound to isp2's address, through its 10 mbit tbf`);
  say(`  throughput: ${sat.iperfError ?? `${sat.upMbps?.toFixed(1)} Mbit/s up, ${sat.downMbps?.toFixed(1)} Mbit/s down`}`);
  say(`  false failovers (down events): ${sat.downEvents.length}${sat.downEvents.map((e) => `\n    ${e.at} ${e.uplink} ${e.reason}`).join('')}`);
  say(`  isp2 probes: max latency ${sat.maxLatencyMs.toFixed(1)} ms, max loss ${(sat.maxLoss * 100).toFixed(0)}% (over the last window of probes)`);
}

/** The README's section: the figures, the method in two sentences, the machine, and others' documented defaults. */
function readmeSection(m: Machine, check: Check, trials: Trial[], sat: Saturation): string {
  const row = (label: string, values: (number | undefined)[]) => {
    const s = summarize(values);
    return s ? `| ${label} | ${values.length} | ${fmt(s.p50)} ms | ${fmt(s.p95)} ms | ${fmt(s.max)} ms |` : `| ${label} | ${values.length} | — | — | — |`;
  };
  const byMode = (mode: Mode, setup: Setup = 'router') => trials.filter((t) => t.mode === mode && t.setup === setup).map((t) => t.failoverMs);
  return [
    `Measured by \`npm run bench:failover\` on ${m.date}: ${m.cpus} CPUs (${m.model}), Linux ${m.kernel}, in the lab,`,
    `with the default probe settings (${describeCheck(check)}).`,
    '',
    '| failover after a fault on isp1 | trials | p50 | p95 | max |',
    '| --- | --- | --- | --- | --- |',
    row('`link` (carrier lost)', byMode('link')),
    row('`upstream` (beyond the gateway)', byMode('upstream')),
    ...MODES.map((mode) => row(`failback after \`${mode}\` (heal → first connection via isp1)`, trials.filter((t) => t.mode === mode && t.setup === 'router').map((t) => t.failbackMs))),
    ...MODES.map((mode) => row(`host mode, its own connections: \`${mode}\``, byMode(mode, 'host'))),
    '',
    `False failovers: ${sat.downEvents.length} \`down\` events during ${SATURATION_S} s of iperf3 saturation (\`-P 4 --bidir\`) of the 10 mbit isp2` +
      ` (probe latency up to ${sat.maxLatencyMs.toFixed(0)} ms, loss up to ${(sat.maxLoss * 100).toFixed(0)}%).`,
    '',
    `Method: the LAN host (in host mode, the multihomed host itself) opens a new TCP connection to a server beyond the ISPs every ${STREAM_EVERY_MS} ms, whatever the earlier ones are doing,` +
      ` each stamped with its start on the monotonic clock shared with the process that injects the fault at a random moment.` +
      ` Failover is the time from the fault to the start of the first connection after which every new connection succeeded,` +
      ` failback the time from the heal to the first new connection the far end saw from isp1's address (percentiles nearest-rank).`,
    '',
    'For comparison, the documented default detection times of other tools (their defaults, not measured here):' +
      ' mwan3 about 60 s, pfSense (dpinger) about 14 s, FortiGate SD-WAN about 2.5 s.',
  ].join('\n');
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

  const m = machine();
  const minutes = Math.ceil((2 * TRIALS * MODES.length * 6 + SATURATION_S + 40) / 60);
  say(`bench:failover: lab ${name}, ${TRIALS} trials per fault mode, then ${SATURATION_S} s of saturation (about ${minutes} minutes)`);
  let lab: LabState | undefined;
  let daemon: LabDaemon | undefined;
  let routerLogs = '';
  try {
    lab = await labUp({ name, uplinks: 2, capacities: ['20mbit', '10mbit'] });
    const parsed = parseConfig(readFileSync(lab.configPath, 'utf8'), lab.configPath);
    if (!parsed.ok) throw new Error(`the lab's config is invalid: ${parsed.errors.map((e) => e.message).join('; ')}`);
    const check = parsed.config.uplinks[0].check!;
    say(`probes: ${describeCheck(check)}`);

    // debug: the daemon then logs how long each transition's kernel update took.
    daemon = await startLabDaemon(lab, lab.configPath, { env: { UPLINKD_LOG_LEVEL: 'debug' } });
    if (!(await waitForStates(daemon, { isp1: 'up', isp2: 'up' }, STATE_WITHIN_MS))) throw new Error('uplinks not up after start');

    const trials: Trial[] = [];
    for (let i = 0; i < TRIALS; i++) {
      for (const mode of MODES) {
        stopIfInterrupted();
        const t = await runTrial(lab, daemon, mode, interrupt.signal);
        trials.push(t);
        say(`  ${String(trials.length).padStart(2)}/${TRIALS * MODES.length} ${mode.padEnd(8)} failover ${fmt(t.failoverMs).padStart(5)} ms` +
          `  failback ${fmt(t.failbackMs).padStart(5)} ms  (${t.failed}/${t.opened} failed during the outage)`);
        await sleep(300, undefined, { signal: interrupt.signal });
      }
    }

    stopIfInterrupted();
    say(`saturating isp2 for ${SATURATION_S} s ...`);
    const sat = await runSaturation(lab, daemon, interrupt.signal);
    stopIfInterrupted();
    routerLogs = daemon.logs();
    await daemon.stop();
    daemon = undefined;
    await uplinkdInRouter(lab, ['flush', '-c', lab.configPath]);
    await labDown(name);
    lab = undefined;

    say('the same trials on a multihomed host (lab up --host), its own connections ...');
    lab = await labUp({ name, uplinks: 2, capacities: ['20mbit', '10mbit'], host: true });
    daemon = await startLabDaemon(lab, lab.configPath, { env: { UPLINKD_LOG_LEVEL: 'debug' } });
    if (!(await waitForStates(daemon, { isp1: 'up', isp2: 'up' }, STATE_WITHIN_MS))) throw new Error('host: uplinks not up after start');
    for (let i = 0; i < TRIALS; i++) {
      for (const mode of MODES) {
        stopIfInterrupted();
        const t = await runTrial(lab, daemon, mode, interrupt.signal);
        trials.push(t);
        say(`  host ${String(i * MODES.length + MODES.indexOf(mode) + 1).padStart(2)}/${TRIALS * MODES.length} ${mode.padEnd(8)} failover ${fmt(t.failoverMs).padStart(5)} ms` +
          `  failback ${fmt(t.failbackMs).padStart(5)} ms  (${t.failed}/${t.opened} failed during the outage)`);
        await sleep(300, undefined, { signal: interrupt.signal });
      }
    }

    printReport(m, check, trials, sat, kernelUpdateTimes(routerLogs));
    if (process.env.BENCH_DAEMON_LOG) {
      writeFileSync(process.env.BENCH_DAEMON_LOG, routerLogs);
      say(`uplinkd's debug log: ${process.env.BENCH_DAEMON_LOG}`);
    }
    writeReadmeSection('failover', 'Failover', readmeSection(m, check, trials, sat));
    say('\nwrote the figures into README.md (between <!-- bench:failover:start --> and <!-- bench:failover:end -->)');
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
