// `uplinkd lab demo`: the guided tour, 10-20 seconds, on the lab's
// embedded default. It builds a lab with two uplinks, runs the real daemon in
// its router, shows how new connections spread over the uplinks, breaks one
// beyond its first hop, measures failover and failback by the fate of new
// connections (measure.ts), and always removes the lab again, also on Ctrl-C.
// `--host` tours a multihomed machine's own connections instead, and where
// the kernel has MPTCP, one download over both uplinks (mptcp.ts).
// `--pair` tours the router pair (pair.ts): the master balancing, downloads
// in flight while r1 loses power, and how long until r2 answers new connections.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigFile } from '../config/load.js';
import type { Check } from '../config/types.js';
import { labClient, labDown, labExec, labFail, labHeal, labUp, loadLab, type LabState } from './lab.js';
import { lastLines, startDaemon, uplinkdInRouter, waitForStates, type LabDaemon } from './lab-daemon.js';
import { failbackMs, failoverMs, monotonicMs, startStream, type RunningStream, type StreamSample } from './measure.js';
import { labMeasuredDownload, labMptcpServer } from './mptcp.js';
import { must } from './run.js';
import { labFailRouter, labUpPair, labWaitForVipHolder } from './pair.js';
import { labNamespacePattern, parseRate } from './topology.js';

export const DEMO_LAB = 'demo';

const CONNECTIONS = 400;
const STREAM_EVERY_MS = 10;
const STREAM_TIMEOUT_MS = 1000;
/** How long each uplink state change may take before the demo calls it a failure. */
const STATE_WITHIN_MS = 10_000;

const say = (line = '') => process.stdout.write(line + '\n');
const indent = (text: string) => text.trimEnd().split('\n').map((l) => (l.trim() ? `      ${l}` : '')).join('\n');

/** A demo that did not get to the end; the message says where and why. */
export class DemoError extends Error {}

/** Ctrl-C (or SIGTERM) stopped the demo; the lab has been removed. */
export class DemoInterrupted extends Error {
  constructor() {
    super('interrupted; the lab has been removed');
  }
}

/** Runs the tour; resolves when it went through, rejects with a DemoError otherwise. The lab is gone either way. */
export async function labDemo(name = DEMO_LAB, opts: { host?: boolean; pair?: boolean } = {}): Promise<void> {
  if (await labExists(name)) {
    throw new DemoError(
      `lab '${name}' already exists (an earlier demo still running, or one that was killed).\n` +
        `Remove it with \`uplinkd lab --name ${name} down\`, or run the demo under another name: \`uplinkd lab demo --name NAME\`.`,
    );
  }
  const interrupt = new AbortController();
  const onSignal = () => {
    if (!interrupt.signal.aborted) say('\ninterrupted: stopping and removing the lab, one moment');
    interrupt.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const tour = opts.pair ? new PairTour(name, interrupt.signal) : new Tour(name, interrupt.signal, opts.host ?? false);
  try {
    await tour.run();
  } catch (err) {
    if (interrupt.signal.aborted) throw new DemoInterrupted();
    throw new DemoError(`lab demo failed at "${tour.step}": ${err instanceof Error ? err.message : String(err)}${tour.daemonLogTail()}`);
  } finally {
    await tour.tearDown();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function labExists(name: string): Promise<boolean> {
  try {
    loadLab(name);
    return true;
  } catch {
    const namespaces = (await must(['ip', 'netns', 'list'])).split('\n').map((l) => l.split(' ')[0]);
    return namespaces.some((ns) => labNamespacePattern(name).test(ns));
  }
}

/** The MPTCP step of `demo --host`: one download over both uplinks, counted at the host's interfaces over one window. */
const MPTCP_SKIP_S = 3;
const MPTCP_WINDOW_S = 6;
/** Enough for the window at 30 mbit, and some over. */
const MPTCP_BYTES = 40_000_000;

/** What every tour has: its numbered steps (the current one names a failure), its lab, its streams of connections. */
abstract class Steps {
  step = 'start';
  private stepNo = 0;
  protected lab?: LabState;
  protected streams = new Set<RunningStream>();

  constructor(protected readonly name: string, protected readonly signal: AbortSignal) {}

  /** How many steps the tour has. */
  protected abstract steps(): number;

  protected announce(title: string, line: string): void {
    this.signal.throwIfAborted();
    this.step = title;
    say(`[${++this.stepNo}/${this.steps()}] ${line}`);
  }
}

class Tour extends Steps {
  private daemon?: LabDaemon;

  /** Where the traffic comes from: the LAN host behind the router, or the multihomed host itself. */
  private readonly client: 'lan' | 'router';
  private readonly who: string;

  constructor(name: string, signal: AbortSignal, private readonly host: boolean) {
    super(name, signal);
    this.client = host ? 'router' : 'lan';
    this.who = host ? 'the host' : 'the LAN host';
  }

  /** With MPTCP (a host whose kernel has it), the host tour has one step more. */
  private mptcp = false;

  protected steps(): number {
    return this.mptcp ? 8 : 7;
  }

  async run(): Promise<void> {
    say(this.host
      ? `uplinkd lab demo --host: a single machine with two internet uplinks (no LAN), built from network namespaces on this machine.`
      : `uplinkd lab demo: a router with two internet uplinks, built from network namespaces on this machine.`);
    say(`Nothing outside the lab's namespaces (ul-${this.name}-*) is touched; the lab is removed at the end.`);
    say();

    this.announce('lab up', `Building lab '${this.name}': ${this.host ? 'a multihomed host' : 'a LAN host, a router'}, isp1 (20 mbit) and isp2 (10 mbit), an internet with servers`);
    const lab = (this.lab = await labUp({ name: this.name, uplinks: 2, capacities: ['20mbit', '10mbit'], host: this.host }));
    const isp1 = lab.uplinks[0];
    const url = `http://${lab.server}:${lab.whoamiPort}/`;
    let configPath = lab.configPath;
    if (this.host && (await labExec(lab.name, 'router', ['sysctl', '-n', 'net.mptcp.enabled'])).stdout.trim() === '1') {
      this.mptcp = true;
      configPath = join(lab.stateDir, 'uplinkd-mptcp.yaml');
      writeFileSync(configPath, `${readFileSync(lab.configPath, 'utf8')}mptcp: subflow\n`);
    }

    this.announce('daemon up', `Starting \`uplinkd run -c ${configPath}\` in the ${this.host ? 'host' : 'router'}`);
    say(indent(describeCheck(configPath)));
    if (this.mptcp) say(indent('mptcp: subflow: each up uplink\'s address is an MPTCP endpoint of the host'));
    const daemonStarted = Date.now();
    this.daemon = await startDaemon(lab, configPath, { upWithinMs: STATE_WITHIN_MS, signal: this.signal });
    say(indent(`both uplinks up ${seconds(Date.now() - daemonStarted)} after starting`));

    this.announce('balancing', `Opening ${CONNECTIONS} new connections from ${this.who}; the server reports the address each came from:`);
    const spread = await labClient(lab.name, this.client, ['http', '--url', url, '--count', String(CONNECTIONS), '--concurrency', '16', '--timeout-ms', '2000']);
    // Shares of the connections that got through: what the far end saw.
    const shares = lab.uplinks.map((u) => ({ name: u.name, address: u.address, share: (spread.seen[u.address] ?? 0) / Math.max(1, spread.ok) }));
    say(indent(shares.map((s) => `${s.name}  ${s.address.padEnd(15)} ${percent(s.share)}`).join('\n')));
    if (spread.failed > 0) say(indent(`${spread.failed} failed: ${JSON.stringify(spread.errors)}`));
    if (shares.some((s) => s.share === 0)) throw new Error(`new connections did not use both uplinks: ${JSON.stringify(spread.seen)}`);

    this.announce('status', `\`uplinkd status\` in the ${this.host ? 'host' : 'router'}:`);
    const status = await uplinkdInRouter(lab, ['status', '-c', configPath]);
    if (status.code !== 0) throw new Error(`uplinkd status exited ${status.code}: ${status.stderr.trim()}`);
    say(indent(status.stdout));

    this.announce('failover', 'Failing isp1: ISP1 stops forwarding beyond its gateway; the gateway still answers.');
    say(indent(`Meanwhile ${this.who} opens a new connection every ${STREAM_EVERY_MS} ms.`));
    const outage = await this.measure(url, async () => {
      await labFail(lab.name, 'isp1', 'upstream');
      await this.waitFor('isp1', 'down');
    });
    const failover = failoverMs(outage.samples, outage.at);
    if (failover === undefined) throw new Error('new connections were still failing at the end of the outage window');
    const afterFault = outage.samples.filter((s) => s.start >= outage.at);
    const failed = afterFault.filter((s) => !s.ok).length;
    say(indent(`failover: ${ms(failover)}: from then on every new connection succeeded (via isp2)`));
    say(indent(`${failed} of the ${afterFault.length} connections opened after the fault failed: those balanced to isp1 before uplinkd took it down`));

    this.announce('failback', 'Healing isp1');
    const recovery = await this.measure(url, async () => {
      await labHeal(lab.name, 'isp1');
      await this.waitFor('isp1', 'up');
    }, (samples) => samples.some((s) => s.seen === isp1.address));
    const failback = failbackMs(recovery.samples, recovery.at, isp1.address);
    if (failback === undefined) throw new Error('new connections did not use isp1 again after the heal');
    say(indent(`failback: ${ms(failback)}: the first new connection through isp1 again`));
    const failedAfterHeal = recovery.samples.filter((s) => s.start >= recovery.at && !s.ok).length;
    if (failedAfterHeal > 0) say(indent(`${failedAfterHeal} connections failed after the heal`));

    const mptcp = this.mptcp ? await this.mptcpDownload(lab) : undefined;

    this.announce('summary', 'Summary');
    say(indent([
      `shares of ${CONNECTIONS} new connections: ${shares.map((s) => `${s.name} ${percent(s.share)}`).join(', ')}`,
      `failover: ${ms(failover)} (isp1 failing beyond its gateway)`,
      `failback: ${ms(failback)} (isp1 healed)`,
      ...(mptcp ? [`one MPTCP download: ${mptcp}`] : []),
      `Measured by the connections themselves: a new connection from ${this.who} every ${STREAM_EVERY_MS} ms (1 s timeout);`,
      `failover = from the fault until every new connection succeeds; failback = from the heal until the first new connection through ${isp1.name}.`,
      `\`npm run bench:failover\` repeats the measurement many times, for both kinds of fault.`,
    ].join('\n')));
  }

  /** One MPTCP download from the host; says what each uplink carried of it, and returns the summary line. */
  private async mptcpDownload(lab: LabState): Promise<string> {
    this.announce('mptcp', 'One MPTCP download from the host, to a server that speaks MPTCP (one subflow per uplink):');
    await labMptcpServer(lab.name);
    const r = await labMeasuredDownload(lab.name, 'router', {
      bytes: MPTCP_BYTES, interfaces: lab.uplinks.map((u) => u.routerIf), skipS: MPTCP_SKIP_S, windowS: MPTCP_WINDOW_S,
    });
    const mbit = (bps: number) => `${(bps / 1e6).toFixed(1)} Mbit/s`;
    for (const u of lab.uplinks) say(indent(`${u.name}  ${u.capacity}  received ${mbit(r.rxBps[u.routerIf])}`));
    const capacity = lab.uplinks.reduce((sum, u) => sum + parseRate(u.capacity!), 0);
    const line = `${mbit(r.totalBps)} over both uplinks, ${((r.totalBps / capacity) * 100).toFixed(0)}% of their ${mbit(capacity)} ` +
      `(interface counters over ${r.windowS.toFixed(1)} s, ${r.download.subflows_max + 1} subflows, bytes checked: ${r.download.sha256_ok ? 'yes' : 'NO'})`;
    say(indent(line));
    if (!r.download.sha256_ok || !r.download.mptcp) throw new Error(`the MPTCP download failed: ${JSON.stringify(r.download)}`);
    return line;
  }

  /**
   * Runs the stream around `act` (a fault or a heal): starts it, lets it run
   * half a second, stamps the moment and acts, and stops it once
   * `done(samples)` holds and connections have gone on long enough to show
   * the new state holds (every one started before the stop has finished).
   */
  private async measure(url: string, act: () => Promise<void>, done: (samples: StreamSample[]) => boolean = () => true) {
    const stream = startStream({ ns: this.lab!.ns[this.client], url, everyMs: STREAM_EVERY_MS, timeoutMs: STREAM_TIMEOUT_MS, durationMs: 60_000 });
    this.streams.add(stream);
    try {
      await stream.started;
      await sleep(500, undefined, { signal: this.signal });
      const at = monotonicMs();
      await act();
      const deadline = Date.now() + 5000;
      while (!done(stream.samples) && Date.now() < deadline) await sleep(20, undefined, { signal: this.signal });
      await sleep(STREAM_TIMEOUT_MS + 500, undefined, { signal: this.signal });
      return { at, samples: await stream.stop() };
    } finally {
      this.streams.delete(stream);
      await stream.stop().catch(() => {});
    }
  }

  private async waitFor(uplink: string, state: 'up' | 'down'): Promise<void> {
    const status = await waitForStates(this.daemon!, { [uplink]: state }, STATE_WITHIN_MS, this.signal);
    if (!status) throw new Error(`uplinkd did not take ${uplink} ${state} within ${STATE_WITHIN_MS / 1000} s`);
    const event = status.events.find((e) => e.uplink === uplink && e.event === state);
    say(indent(`uplinkd: ${uplink} ${state}${event ? `, ${event.reason}` : ''}`));
  }

  daemonLogTail(): string {
    const logs = this.daemon?.logs();
    return logs ? `\nuplinkd's last log lines:\n${lastLines(logs, 8)}` : '';
  }

  /** Stops the daemon, removes its kernel state and the lab; whatever failed before, and whatever fails here. */
  async tearDown(): Promise<void> {
    if (!this.lab) return;
    say(`Tearing down: stopping uplinkd, \`uplinkd flush\`, removing lab '${this.name}'`);
    const problems: string[] = [];
    for (const stream of this.streams) await stream.stop().catch(() => {});
    if (this.daemon) {
      const code = await this.daemon.stop();
      if (code !== 0 && !this.signal.aborted) problems.push(`uplinkd run exited ${code}`);
    }
    const flush = await uplinkdInRouter(this.lab, ['flush', '-c', this.lab.configPath]).catch((err: Error) => ({ code: -1, stderr: err.message }));
    if (flush.code !== 0) problems.push(`uplinkd flush exited ${flush.code}: ${flush.stderr.trim()}`);
    await labDown(this.name);
    say(problems.length ? `lab removed; but: ${problems.join('; ')}` : 'done: the lab is gone');
  }
}

/** The pair tour's downloads in flight: one iperf3 each (own server port, own LAN source), this long. */
const PAIR_TRANSFERS = 8;
const PAIR_TRANSFER_S = 10;
/** When r1 loses power, after the downloads started. */
const PAIR_FAIL_AFTER_MS = 3000;

/** `lab demo --pair`: the router pair's tour. */
class PairTour extends Steps {
  private daemons: LabDaemon[] = [];

  protected steps(): number {
    return 7;
  }

  async run(): Promise<void> {
    say('uplinkd lab demo --pair: two routers as one (keepalived VRRP, conntrackd FTFW), two uplinks, built from network namespaces on this machine.');
    say(`Nothing outside the lab's namespaces (ul-${this.name}-*) is touched; the lab is removed at the end.`);
    say();

    this.announce('lab up', `Building lab '${this.name}': a LAN host, routers r1 and r2, isp1 (20 mbit) and isp2 (10 mbit) shared by both, an internet with servers`);
    const startedAt = Date.now();
    const lab = (this.lab = await labUpPair({ name: this.name, uplinks: 2, capacities: ['20mbit', '10mbit'] }));
    const [r1, r2] = lab.pair!.routers;
    say(indent(`built in ${seconds(Date.now() - startedAt)}; r1 is VRRP master (priority ${r1.priority}) and holds ` +
      `${lab.pair!.vips.map((v) => `${v.address} on ${v.dev}`).join(', ')}; r2 (priority ${r2.priority}) is backup`));

    this.announce('daemons up', 'Starting uplinkd in r1 and in r2, with the same config (each uplink\'s `address` is its VRRP address)');
    for (const r of lab.pair!.routers) this.daemons.push(await startDaemon(lab, r.configPath, { node: r.name, upWithinMs: STATE_WITHIN_MS, signal: this.signal }));
    say(indent('both routers: both uplinks up'));

    const url = `http://${lab.server}:${lab.whoamiPort}/`;
    this.announce('balancing', `Opening ${CONNECTIONS} new connections from the LAN host through the master; the server reports the address each came from:`);
    const spread = await labClient(lab.name, 'lan', ['http', '--url', url, '--count', String(CONNECTIONS), '--concurrency', '16', '--timeout-ms', '2000']);
    const shares = lab.uplinks.map((u) => ({ name: u.name, address: u.address, share: (spread.seen[u.address] ?? 0) / Math.max(1, spread.ok) }));
    say(indent(shares.map((s) => `${s.name}  ${s.address.padEnd(15)} ${percent(s.share)}`).join('\n')));
    if (spread.failed > 0) say(indent(`${spread.failed} failed: ${JSON.stringify(spread.errors)}`));
    if (shares.some((s) => s.share === 0)) throw new Error(`new connections did not use both uplinks: ${JSON.stringify(spread.seen)}`);

    this.announce('transfers', `Starting ${PAIR_TRANSFERS} downloads (iperf3, ${PAIR_TRANSFER_S} s each, from ${PAIR_TRANSFERS} LAN sources) through r1`);
    const ports = Array.from({ length: PAIR_TRANSFERS }, (_, i) => lab.iperfPort + 1 + i);
    for (const port of ports) {
      const server = await labExec(lab.name, 'inet', ['iperf3', '-s', '-1', '-D', '-p', String(port), '-B', lab.server]);
      if (server.code !== 0) throw new Error(`iperf3 server on port ${port}: ${server.stderr.trim()}`);
    }
    await sleep(300, undefined, { signal: this.signal }); // the servers listening
    const transfers = ports.map((port, i) => labExec(lab.name, 'lan', [
      'iperf3', '-c', lab.server, '-p', String(port), '-B', lab.lanSources[i], '-R', '-t', String(PAIR_TRANSFER_S), '-J', '--connect-timeout', '2000', '--rcv-timeout', '5000',
    ], { timeoutMs: (PAIR_TRANSFER_S + 20) * 1000 }));
    await sleep(PAIR_FAIL_AFTER_MS, undefined, { signal: this.signal });

    this.announce('fail r1', 'Power loss of r1: its links go down, keepalived, conntrackd and uplinkd in it are killed (lab fail-router r1)');
    say(indent(`Meanwhile the LAN host opens a new connection every ${STREAM_EVERY_MS} ms.`));
    const stream = startStream({ ns: lab.ns.lan, url, everyMs: STREAM_EVERY_MS, timeoutMs: STREAM_TIMEOUT_MS, durationMs: 60_000 });
    this.streams.add(stream);
    await stream.started;
    await sleep(500, undefined, { signal: this.signal });
    const at = monotonicMs();
    const { downAt } = await labFailRouter(lab.name, 'r1');
    const vipsMs = await labWaitForVipHolder(lab.name, 'r2', downAt, STATE_WITHIN_MS);
    if (vipsMs === undefined) throw new Error(`r2 did not take every VRRP address within ${STATE_WITHIN_MS / 1000} s`);
    say(indent(`r2 holds every VRRP address ${ms(vipsMs)} after the power loss, and has committed the connections conntrackd synced from r1`));
    await sleep(STREAM_TIMEOUT_MS + 1500, undefined, { signal: this.signal });
    const samples = await stream.stop();
    this.streams.delete(stream);
    const after = samples.filter((s) => s.start >= at).sort((a, b) => a.start - b.start);
    const firstOk = after.find((s) => s.ok);
    if (firstOk === undefined) throw new Error('no new connection was answered within 2.5 s of the power loss');
    const firstMs = firstOk.start - at;
    const lost = after.filter((s) => !s.ok && s.start < firstOk.start).length;
    // Later failures are not the takeover's: with 8 downloads filling the
    // tbf queues, a SYN now and then is dropped and its retransmit comes after
    // the stream's 1 s timeout.
    const later = after.filter((s) => !s.ok && s.start > firstOk.start).length;
    say(indent(`first new connection answered: opened ${ms(firstMs)} after the power loss; the ${lost} opened before it failed`));
    if (later > 0) say(indent(`${later} of the ${after.length - lost - 1} opened after it failed too (a SYN dropped in the full queues of the downloads)`));

    this.announce('transfers done', 'The downloads, which r2 carried on:');
    const results = await Promise.all(transfers);
    const survived = results.map((r, i) => {
      const report = (() => {
        try {
          return JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bytes: number; bits_per_second: number } } };
        } catch {
          return { error: r.stderr.trim() || `exit ${r.code}` };
        }
      })();
      const ok = r.code === 0 && !report.error && (report.end?.sum_received?.bytes ?? 0) > 0;
      const rate = report.end?.sum_received ? `${(report.end.sum_received.bits_per_second / 1e6).toFixed(1)} Mbit/s` : '';
      say(indent(`${lab.lanSources[i].padEnd(15)} ${ok ? `completed, ${rate}` : `FAILED: ${report.error}`}`));
      return ok;
    }).filter(Boolean).length;

    this.announce('summary', 'Summary');
    say(indent([
      `shares of ${CONNECTIONS} new connections through r1: ${shares.map((s) => `${s.name} ${percent(s.share)}`).join(', ')}`,
      `VRRP addresses on r2: ${ms(vipsMs)} after r1's power loss (advert_int 0.1 s)`,
      `first new connection answered: ${ms(firstMs)} after the power loss (opened then, answered through r2)`,
      `downloads in flight that completed through r2: ${survived} of ${PAIR_TRANSFERS}`,
      `Measured by the connections themselves: a new connection from the LAN host every ${STREAM_EVERY_MS} ms (1 s timeout).`,
    ].join('\n')));
    if (survived < PAIR_TRANSFERS) throw new Error(`${PAIR_TRANSFERS - survived} of ${PAIR_TRANSFERS} downloads did not survive the takeover`);
  }

  daemonLogTail(): string {
    return this.daemons.map((d, i) => `\nuplinkd's last log lines in r${i + 1}:\n${lastLines(d.logs(), 6)}`).join('');
  }

  /** Stops the daemons and removes the lab, whatever failed before. */
  async tearDown(): Promise<void> {
    if (!this.lab) return;
    say(`Tearing down: stopping uplinkd, removing lab '${this.name}' (keepalived and conntrackd with it)`);
    for (const stream of this.streams) await stream.stop().catch(() => {});
    for (const d of this.daemons) await d.stop();
    await labDown(this.name);
    say('done: the lab is gone');
  }
}

/** The probe settings in force, as the config loader fills them in. */
function describeCheck(configPath: string): string {
  const loaded = loadConfigFile(configPath);
  const check: Check | undefined = loaded.ok ? loaded.config.uplinks[0].check : undefined;
  if (!check) return `config: ${configPath}`;
  return [
    `Each uplink is probed through itself: ${check.method} to ${check.targets.join(', ')} every ${check.intervalMs} ms,`,
    `timeout ${check.timeoutMs} ms; down after ${check.downAfter} bad rounds, up after ${check.upAfter} good ones (the defaults).`,
  ].join('\n');
}

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

function ms(value: number): string {
  return `${Math.round(value)} ms`;
}

function seconds(millis: number): string {
  return `${(millis / 1000).toFixed(1)} s`;
}
