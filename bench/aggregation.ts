// Aggregation: how much of the uplinks' combined capacity a LAN gets, with
// uplinks of unequal size, under three mixes of downloads, for five ways of
// running the router. Every figure is a ratio to the uplinks' configured
// rates: the bytes the LAN host's interface received in one window, ÷ what
// the uplinks' tbf shapers can let through in that window. One bulk flow
// pinned to each uplink, all at once (the "baseline"), is measured the same
// way in each repeat, right before the systems, and shown beside them: it is
// what TCP gets out of these shapers at all.
//
// Counting, so that no ratio can exceed 1.0:
//  - tbf charges each packet its length at the device, skb->len: the 14-byte
//    Ethernet header plus the IP packet (there is no FCS or preamble on a
//    veth). The LAN host's eth0 rx_bytes counts the same length for each
//    packet it receives (a veth's rx is its peer's tx: skb->len at xmit).
//  - They agree only packet by packet: a GSO packet is one skb, counted once
//    with one set of headers by the interface but charged per segment by tbf
//    (qdisc_pkt_len), which left the LAN host's count 4% short in this lab.
//    So the internet node, the only sender, sends no GSO packets
//    (`ip link set ... gso_max_segs 1` on its interfaces); every packet then
//    crosses the lab at its wire size.
//  - In any window of W seconds a tbf lets through at most rate × W + burst
//    bytes (the bucket, full at most at the window's start). The denominator
//    is that, summed over the uplinks, with rate and burst read back from the
//    kernel (`tc -j qdisc show`).
//  - Every counter of a window is read at the same two instants, by
//    bench/counters.ts processes already running in the LAN host and the
//    router, and W is the time between the LAN host's two readings.
//
// Labs: 30mbit+10mbit and 20/10/5mbit (tbf on both directions of each
// uplink). All traffic is downloads from the internet server to the LAN host.
// Mixes:
//   a. 8 long flows started together,
//   b. 3 long flows started 1.5 s apart,
//   c. 2 bulk flows plus a new 200 KB HTTP download every 200 ms.
// Systems:
//   single        uplinkd with the fastest uplink only,
//   classic       no uplinkd: the LARTC multipath default route, by hand,
//   weighted      uplinkd run, weights proportional to capacity,
//   hash          uplinkd run, the same weights, source+destination hash,
//   least-loaded  uplinkd run, capacities in the config.
// Each flow comes from its own LAN source address (as if from its own LAN
// host), so that address-hash balancing has pairs to spread; the sources move
// on from one repeat to the next.
//
// BENCH_SETS=1 (or 2) runs one capacity set; the other's results, if measured
// the same way, are kept from the last run, each set dated.

import { networkOf } from '../src/config/ipv4.js';
import { labExec, type LabState } from '../src/lab/lab.js';
import type { LabConfigOptions } from '../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../src/lab/lab-daemon.js';
import { monotonicMs } from '../src/lab/measure.js';
import { parseRate } from '../src/lab/topology.js';
import type { LoadResult } from './http-load.js';
import type { LoadPlan } from './load-plan.js';
import {
  benchProgram, describeMachine, fmtSpread, forgetConnections, iperf, iperfServers, labMust, labName, loadResult,
  BENCH_START, machine, pause, say, spread, startCounters, startHelper, startReadyHelper, stopDaemon, stopIfInterrupted, table, withLab, writeBenchConfig,
  type Counters, type Machine, type PartResult, type Spread, type SummaryRow,
} from './lib.js';

const REPEATS = Math.max(1, Number(process.env.BENCH_REPEATS ?? 3));
/** Seconds of each measurement window. */
const WINDOW_S = Math.max(2, Number(process.env.BENCH_WINDOW_S ?? 6));
const WARMUP_S = 1;
const INTERVAL_S = 0.5;
const HTTP_PORT = 8090;
const HTTP_BYTES = 200_000;
const HTTP_EVERY_MS = 200;
const FIRST_PORT = 5301;
const TARGET = 0.95;
/** Quick looks (not for the record): BENCH_SETS=2 runs only the second capacity set, BENCH_SYSTEMS=classic,least-loaded only those. */
const ONLY_SETS = process.env.BENCH_SETS?.split(',').map(Number);
const ONLY_SYSTEMS = process.env.BENCH_SYSTEMS?.split(',');

export const CAPACITY_SETS = [['30mbit', '10mbit'], ['20mbit', '10mbit', '5mbit']];

export const SYSTEMS = ['single', 'classic', 'weighted', 'hash', 'least-loaded'] as const;
export type SystemId = (typeof SYSTEMS)[number];

const SYSTEM_LABEL: Record<SystemId, string> = {
  single: 'one uplink (the fastest)',
  classic: 'classic multipath route (LARTC, no uplinkd)',
  weighted: 'uplinkd weighted',
  hash: 'uplinkd hash',
  'least-loaded': 'uplinkd least-loaded',
};

export interface Mix {
  id: 'a' | 'b' | 'c';
  label: string;
  /** Start of each long flow, s after the mix starts (multiples of INTERVAL_S). */
  flows: number[];
  http: boolean;
  /** The measurement window, s after the mix starts. */
  window: [number, number];
}

export const MIXES: Mix[] = [
  { id: 'a', label: '8 long flows started together', flows: Array<number>(8).fill(0), http: false, window: [WARMUP_S, WARMUP_S + WINDOW_S] },
  { id: 'b', label: '3 long flows started 1.5 s apart', flows: [0, 1.5, 3], http: false, window: [3 + WARMUP_S, 3 + WARMUP_S + WINDOW_S] },
  {
    id: 'c', label: `2 bulk flows + a ${HTTP_BYTES / 1000} KB HTTP download every ${HTTP_EVERY_MS} ms`,
    flows: [0, 0], http: true, window: [WARMUP_S, WARMUP_S + WINDOW_S],
  },
];

export interface FlowResult {
  source: string;
  startS: number;
  /** iperf3's own count: its interval bytes inside the window, on its own clock, Mbit/s; 0 if it failed. Only to see how the flows shared. */
  mbps: number;
  error?: string;
}

/** An uplink's download shaper as the kernel has it (tc -j qdisc show dev eth0 in its ISP). */
export interface Shaper {
  uplink: string;
  /** tbf rate, bytes per second of packet length (Ethernet header + IP packet). */
  rateBytesPerS: number;
  /** tbf bucket, bytes. */
  burstBytes: number;
}

export interface MixRun {
  flows: FlowResult[];
  http?: LoadResult & { mbps: number };
  /** The window, s: between the LAN host's two counter readings. */
  windowS: number;
  /** The LAN host's eth0 rx_bytes over the window (Ethernet header + IP packet, as tbf counts). */
  lanRxBytes: number;
  lanRxMbps: number;
  /** The most the shapers can let through in the window: Σ (rate × windowS + burst), bytes. */
  capacityBytes: number;
  /** lanRxBytes ÷ capacityBytes. */
  ratio: number;
  /** Each uplink's download (router wan<k> rx_bytes) over the window ÷ (its rate × window + its burst). */
  utilisation: number[];
  /** Established long-flow connections (iperf3 data and control) on each uplink in the middle of the window, from the router's conntrack. */
  connections: number[];
}

export interface Run extends MixRun {
  repeat: number;
  system: SystemId;
  mix: Mix['id'];
  /** uplinkd systems: what the daemon logged during the mix (health changes, least-loaded steering), ms from the mix's start. */
  daemonEvents?: string[];
}

export interface Baseline {
  repeat: number;
  /** LAN host rx over the window ÷ the shapers' capacity, like every run. */
  ratio: number;
  lanRxMbps: number;
  /** Each uplink's share of its own capacity (its utilisation). */
  perUplink: number[];
  errors: string[];
}

export interface CapacitySetResult {
  capacities: string[];
  shapers: Shaper[];
  /** Where and when this set was measured (a run may measure one set only, BENCH_SETS). */
  machine: Machine;
  durationS: number;
  baselines: Baseline[];
  runs: Run[];
}

/** Results measured as described at the top of this file; older results (goodput ÷ a measured baseline) are not comparable. */
const METHOD = 2;

export interface AggregationData {
  method: typeof METHOD;
  repeats: number;
  windowS: number;
  warmupS: number;
  sets: CapacitySetResult[];
}

// ------------------------------------------------------------ the classic recipe, by hand

const CLASSIC_TABLE_BASE = 100;
const CLASSIC_RULE_PRIORITY = 1000;
const PIN_RULE_PRIORITY = 900;

/**
 * The LARTC "split access" part, as one would type it in the router: one
 * routing table per uplink with its network and its default route, a rule
 * sending traffic from each uplink's address to its table, and masquerade on
 * every uplink (an nft table of our own).
 */
async function classicBase(lab: LabState): Promise<void> {
  const posts = lab.uplinks.map((u) => `    oifname "${u.routerIf}" masquerade\n`).join('');
  await labMust(lab, 'router', ['nft', '-f', '-'],
    `table ip ulbench {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n${posts}  }\n}\n`);
  for (const [i, u] of lab.uplinks.entries()) {
    const table = String(CLASSIC_TABLE_BASE + i + 1);
    await labMust(lab, 'router', ['ip', 'route', 'add', networkOf(u.address, u.prefixLen), 'dev', u.routerIf, 'src', u.address, 'table', table]);
    await labMust(lab, 'router', ['ip', 'route', 'add', 'default', 'via', u.gateway, 'dev', u.routerIf, 'table', table]);
    await labMust(lab, 'router', ['ip', 'rule', 'add', 'priority', String(CLASSIC_RULE_PRIORITY + i + 1), 'from', u.address, 'table', table]);
  }
}

/** LARTC's load balancing: one multipath default route in main, weights ∝ capacity, L4 hash. */
async function classicMultipath(lab: LabState, weights: number[]): Promise<void> {
  await labMust(lab, 'router', ['sysctl', '-q', '-w', 'net.ipv4.fib_multipath_hash_policy=1']);
  const hops = lab.uplinks.flatMap((u, i) => ['nexthop', 'via', u.gateway, 'dev', u.routerIf, 'weight', String(weights[i])]);
  await labMust(lab, 'router', ['ip', 'route', 'replace', 'default', 'scope', 'global', ...hops]);
}

/** For the baseline: a source address pinned to each uplink's table. */
async function classicPins(lab: LabState, sources: string[]): Promise<void> {
  for (const [i, source] of sources.entries()) {
    await labMust(lab, 'router', ['ip', 'rule', 'add', 'priority', String(PIN_RULE_PRIORITY + i + 1), 'from', source, 'table', String(CLASSIC_TABLE_BASE + i + 1)]);
  }
}

async function mainDefaults(lab: LabState): Promise<string> {
  return labMust(lab, 'router', ['ip', '-4', 'route', 'show', 'default']);
}

/** Removes every trace of the hand-written setup and checks the router is as the lab left it. */
async function classicTeardown(lab: LabState, before: string): Promise<void> {
  if ((await mainDefaults(lab)) !== before) await labExec(lab.name, 'router', ['ip', 'route', 'del', 'default', 'metric', '0']);
  await labExec(lab.name, 'router', ['sysctl', '-q', '-w', 'net.ipv4.fib_multipath_hash_policy=0']);
  const rules = JSON.parse(await labMust(lab, 'router', ['ip', '-j', 'rule', 'show'])) as { priority: number }[];
  for (const r of rules.filter((x) => x.priority >= PIN_RULE_PRIORITY && x.priority < CLASSIC_RULE_PRIORITY + 100)) {
    await labMust(lab, 'router', ['ip', 'rule', 'del', 'priority', String(r.priority)]);
  }
  for (let i = 1; i <= lab.uplinks.length; i++) await labExec(lab.name, 'router', ['ip', 'route', 'flush', 'table', String(CLASSIC_TABLE_BASE + i)]);
  await labExec(lab.name, 'router', ['nft', 'delete', 'table', 'ip', 'ulbench']);
  await forgetConnections(lab);
  const after = await mainDefaults(lab);
  if (after !== before) throw new Error(`the router's default routes did not come back:\nbefore:\n${before}after:\n${after}`);
}

// ------------------------------------------------------------ measuring one mix

function sleepUntil(at: number): Promise<void> {
  return pause(Math.max(0, at - monotonicMs()));
}

/** Bytes of an iperf3 -R run inside [from, to) s of its own clock (interval-aligned). */
function bytesInside(intervals: { sum: { start: number; end: number; bytes: number } }[], from: number, to: number): number {
  const eps = 0.05;
  return intervals.filter((i) => i.sum.start >= from - eps && i.sum.end <= to + eps).reduce((a, i) => a + i.sum.bytes, 0);
}

/** The two counter processes of a lab and its shapers: what every window is measured with. */
interface Meter {
  lan: Counters;
  router: Counters;
  shapers: Shaper[];
}

async function startMeter(lab: LabState): Promise<Meter> {
  const shapers: Shaper[] = [];
  for (const [i, u] of lab.uplinks.entries()) {
    const qdiscs = JSON.parse(await labMust(lab, u.name, ['tc', '-j', 'qdisc', 'show', 'dev', 'eth0'])) as
      { kind: string; options?: { rate?: number; burst?: number } }[];
    const tbf = qdiscs.find((q) => q.kind === 'tbf');
    if (!tbf?.options?.rate || tbf.options.burst === undefined) throw new Error(`${u.name}: no tbf on eth0: ${JSON.stringify(qdiscs)}`);
    shapers.push({ uplink: lab.uplinks[i].name, rateBytesPerS: tbf.options.rate, burstBytes: tbf.options.burst });
  }
  const lan = await startCounters(lab.ns.lan, ['eth0']);
  const router = await startCounters(lab.ns.router, lab.uplinks.map((u) => u.routerIf)).catch(async (err: unknown) => {
    await lan.stop();
    throw err;
  });
  return { lan, router, shapers };
}

/**
 * The internet node is the only sender of the downloads: no GSO there, so
 * that every packet is one wire-sized skb all the way (see the top of this
 * file for why the counters need it).
 */
async function noGsoFromTheInternet(lab: LabState): Promise<void> {
  const links = JSON.parse(await labMust(lab, 'inet', ['ip', '-j', 'link', 'show'])) as { ifname: string }[];
  for (const l of links) if (l.ifname !== 'lo') await labMust(lab, 'inet', ['ip', 'link', 'set', 'dev', l.ifname, 'gso_max_segs', '1']);
}

async function measure(lab: LabState, meter: Meter, mix: Pick<Mix, 'flows' | 'http' | 'window'>, sources: string[], httpSources: string[]): Promise<MixRun & { t0Wall: number }> {
  const nominalS = mix.window[1] - mix.window[0];
  const loader = mix.http
    ? await startReadyHelper(lab.ns.lan, 'http-load', [
      '--url', `http://${lab.server}:${HTTP_PORT}/`, '--every-ms', String(HTTP_EVERY_MS), '--sources', httpSources.join(','),
    ])
    : undefined;
  const t0 = monotonicMs() + 200;
  const t0Wall = Date.now() + (t0 - monotonicMs());
  const from = t0 + mix.window[0] * 1000;
  const to = t0 + mix.window[1] * 1000;
  loader?.write(JSON.stringify({ startAt: t0, durationMs: mix.window[1] * 1000, windowFrom: from, windowTo: to } satisfies LoadPlan));

  const counters = Promise.all([meter.lan.read([from, to]), meter.router.read([from, to])]);
  const middle = sleepUntil((from + to) / 2).then(() => flowConnections(lab));
  const flows = mix.flows.map(async (startS, i): Promise<FlowResult> => {
    await sleepUntil(t0 + startS * 1000);
    const seconds = Math.ceil(mix.window[1] - startS);
    const r = await iperf(lab, 'lan', [
      '-p', String(FIRST_PORT + i), '-R', '-t', String(seconds), '-i', String(INTERVAL_S), '-B', sources[i], '--connect-timeout', '2000',
    ], seconds);
    const bytes = r.json ? bytesInside(r.json.intervals, mix.window[0] - startS, mix.window[1] - startS) : 0;
    return { source: sources[i], startS, mbps: (bytes * 8) / nominalS / 1e6, ...(r.error ? { error: r.error } : {}) };
  });
  // Awaited together: Ctrl-C rejects every pending wait at once, and none may go unhandled
  // (an unhandled rejection would end the process before its labs are taken down).
  const [flowResults, [[lan0, lan1], [router0, router1]], connections] = await Promise.all([Promise.all(flows), counters, middle]);
  let http: MixRun['http'];
  if (loader) {
    const line = await loader.nextLine();
    await loader.exited;
    const r = JSON.parse(line) as LoadResult;
    http = { ...r, mbps: (r.bytesInWindow * 8) / nominalS / 1e6 };
  }
  const windowS = (lan1.at - lan0.at) / 1000;
  const routerS = (router1.at - router0.at) / 1000;
  const capacityBytes = meter.shapers.reduce((a, sh) => a + sh.rateBytesPerS * windowS + sh.burstBytes, 0);
  const lanRxBytes = lan1.rx.eth0 - lan0.rx.eth0;
  return {
    t0Wall,
    flows: flowResults,
    ...(http ? { http } : {}),
    windowS,
    lanRxBytes,
    lanRxMbps: (lanRxBytes * 8) / windowS / 1e6,
    capacityBytes,
    ratio: lanRxBytes / capacityBytes,
    utilisation: lab.uplinks.map((u, i) =>
      (router1.rx[u.routerIf] - router0.rx[u.routerIf]) / (meter.shapers[i].rateBytesPerS * routerS + meter.shapers[i].burstBytes)),
    connections,
  };
}

/**
 * Where the long flows are, whatever put them there: the router's TCP
 * connections to the iperf3 ports, counted by the address the server
 * answers (the uplink's, after source NAT).
 */
async function flowConnections(lab: LabState): Promise<number[]> {
  const out = await labMust(lab, 'router', ['conntrack', '-L', '-p', 'tcp']);
  const counts = lab.uplinks.map(() => 0);
  for (const line of out.split('\n')) {
    const m = /dport=(\d+) src=\S+ dst=(\S+)/.exec(line);
    const port = Number(m?.[1]);
    if (!m || !line.includes(' ESTABLISHED ') || port < FIRST_PORT || port >= FIRST_PORT + 8) continue;
    const k = lab.uplinks.findIndex((u) => u.address === m[2]);
    if (k >= 0) counts[k]++;
  }
  return counts;
}

/** The table's view of what the daemon logged during a run: how often least-loaded moved the shares, and any health change. */
function daemonSummary(events: string[] | undefined): string {
  if (!events) return '';
  const steers = events.filter((e) => e.includes(' shares ')).length;
  const health = events.filter((e) => !e.includes(' shares '));
  return [steers ? `${steers} share rewrites` : '', ...health].filter(Boolean).join('; ') || 'nothing';
}

// ------------------------------------------------------------ the systems

interface RunningSystem {
  stop: () => Promise<void>;
  daemon?: LabDaemon;
}

async function startSystem(lab: LabState, system: SystemId, capacities: string[], defaults: string): Promise<RunningSystem> {
  const mbit = capacities.map(parseRate).map((b) => b / 1e6);
  const gcd = mbit.reduce((a, b) => { while (b) [a, b] = [b, a % b]; return a; });
  const weights = mbit.map((m) => Math.round(m / gcd));
  if (system === 'classic') {
    await classicBase(lab);
    await classicMultipath(lab, weights);
    return { stop: () => classicTeardown(lab, defaults) };
  }
  const all = lab.uplinks.map((_, i) => i + 1);
  const config: LabConfigOptions =
    system === 'single' ? { uplinks: [{ k: 1 }] }
    : system === 'least-loaded' ? { uplinks: all.map((k) => ({ k, capacity: capacities[k - 1] })), balance: 'least-loaded' }
    : { uplinks: all.map((k) => ({ k, weight: weights[k - 1] })), balance: system };
  // debug: the least-loaded loop logs each new set of shares.
  const daemon = await startDaemon(lab, writeBenchConfig(lab, config), { ...BENCH_START, logLevel: 'debug' });
  return { stop: () => stopDaemon(lab, daemon), daemon };
}

/** What the daemon logged from `fromChar` on that explains a run: health changes and least-loaded shares, at ms after `t0Wall`. */
function daemonEvents(log: string, fromChar: number, t0Wall: number): string[] {
  const out: string[] = [];
  for (const line of log.slice(fromChar).split('\n')) {
    let entry: { time?: string; msg?: string; event?: string; shares?: Record<string, number> };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    if (!entry.event || !['up', 'down', 'steer', 'flush'].includes(entry.event)) continue;
    const at = Math.round(Date.parse(entry.time ?? '') - t0Wall);
    out.push(`${at} ms ${entry.shares ? `shares ${JSON.stringify(entry.shares)}` : entry.msg}`);
  }
  return out;
}

/** The LAN sources for repeat r: a different block each repeat, the same for every system within it. */
function sourcesFor(lab: LabState, repeat: number): { flows: string[]; http: string[]; baseline: string[] } {
  const all = lab.lanSources;
  const rotated = [...all.slice((repeat * 21) % all.length), ...all.slice(0, (repeat * 21) % all.length)];
  return { flows: rotated.slice(0, 8), http: rotated.slice(8, 24), baseline: rotated.slice(24, 24 + lab.uplinks.length) };
}

async function measureBaseline(lab: LabState, meter: Meter, repeat: number, defaults: string): Promise<Baseline> {
  const sources = sourcesFor(lab, repeat).baseline;
  await classicBase(lab);
  await classicPins(lab, sources);
  try {
    const r = await measure(lab, meter, { flows: lab.uplinks.map(() => 0), http: false, window: [WARMUP_S, WARMUP_S + WINDOW_S] }, sources, []);
    return { repeat, ratio: r.ratio, lanRxMbps: r.lanRxMbps, perUplink: r.utilisation, errors: r.flows.flatMap((f) => (f.error ? [f.error] : [])) };
  } finally {
    await classicTeardown(lab, defaults);
  }
}

async function runCapacitySet(capacities: string[], index: number): Promise<CapacitySetResult> {
  const name = labName(`ag${index}-`);
  const m = machine();
  const started = Date.now();
  return withLab({ name, uplinks: capacities.length, capacities }, async (lab) => {
    await noGsoFromTheInternet(lab);
    await iperfServers(lab, Array.from({ length: 8 }, (_, i) => FIRST_PORT + i));
    const blob = startHelper(lab.ns.inet, [...benchProgram('http-blob'), '--host', lab.server, '--port', String(HTTP_PORT), '--bytes', String(HTTP_BYTES)]);
    if ((await blob.nextLine()) !== 'listening') throw new Error('http-blob did not start');
    const meter = await startMeter(lab);
    try {
      const defaults = await mainDefaults(lab);
      const result: CapacitySetResult = { capacities, shapers: meter.shapers, machine: m, durationS: 0, baselines: [], runs: [] };
      say(`  [${capacities.join('+')}] shapers (tbf, download): ${meter.shapers.map((sh) =>
        `${sh.uplink} ${((sh.rateBytesPerS * 8) / 1e6).toFixed(1)} Mbit/s burst ${sh.burstBytes} B`).join(', ')}`);
      for (let repeat = 0; repeat < REPEATS; repeat++) {
        stopIfInterrupted();
        const baseline = await measureBaseline(lab, meter, repeat, defaults);
        result.baselines.push(baseline);
        say(`  [${capacities.join('+')}] repeat ${repeat + 1}/${REPEATS}: baseline (one flow per uplink) ${baseline.lanRxMbps.toFixed(1)} Mbit/s = ${baseline.ratio.toFixed(3)}` +
          `  uplinks ${baseline.perUplink.map((u) => `${Math.round(u * 100)}%`).join('/')}${baseline.errors.length ? `  errors: ${baseline.errors.join('; ')}` : ''}`);
        // A different order each repeat, so a drift of the machine does not always hit the same system.
        const order = SYSTEMS.map((_, i) => SYSTEMS[(i + repeat) % SYSTEMS.length]).filter((s) => !ONLY_SYSTEMS || ONLY_SYSTEMS.includes(s));
        for (const system of order) {
          stopIfInterrupted();
          const running = await startSystem(lab, system, capacities, defaults);
          try {
            for (const mix of MIXES) {
              stopIfInterrupted();
              const sources = sourcesFor(lab, repeat);
              const logFrom = running.daemon?.logs().length ?? 0;
              const { t0Wall, ...r } = await measure(lab, meter, mix, sources.flows, sources.http);
              const run: Run = {
                repeat, system, mix: mix.id, ...r,
                ...(running.daemon ? { daemonEvents: daemonEvents(running.daemon.logs(), logFrom, t0Wall) } : {}),
              };
              result.runs.push(run);
              const errors = r.flows.filter((f) => f.error).length + (r.http?.failed ?? 0);
              say(`    ${system.padEnd(12)} mix ${mix.id}: ${r.lanRxMbps.toFixed(1).padStart(5)} Mbit/s = ${run.ratio.toFixed(3)}` +
                `  uplinks ${r.utilisation.map((u) => `${Math.round(u * 100)}%`).join('/')}  connections ${r.connections.join('/')}${errors ? `  (${errors} failed)` : ''}`);
              for (const e of run.daemonEvents ?? []) say(`      ${e}`);
              await pause(300);
            }
          } finally {
            await running.stop();
          }
        }
      }
      result.durationS = (Date.now() - started) / 1000;
      return result;
    } finally {
      await meter.lan.stop();
      await meter.router.stop();
    }
  });
}

export async function runAggregation(): Promise<PartResult<AggregationData>> {
  const m = machine();
  const started = Date.now();
  say(`aggregation: ${CAPACITY_SETS.map((c) => c.join('+')).join(' and ')}, ${MIXES.length} mixes x ${SYSTEMS.length} systems x ${REPEATS} repeats,` +
    ` ${WINDOW_S} s windows after ${WARMUP_S} s warm-up`);
  // A set not run this time keeps its last results, if they were measured this way (each set carries its date).
  const before = loadResult<AggregationData>('aggregation');
  const kept = before?.data.method === METHOD ? before.data.sets : [];
  const sets: CapacitySetResult[] = [];
  for (const [i, capacities] of CAPACITY_SETS.entries()) {
    if (!ONLY_SETS || ONLY_SETS.includes(i + 1)) sets.push(await runCapacitySet(capacities, i + 1));
    else {
      const old = kept.find((s) => s.capacities.join('+') === capacities.join('+'));
      if (old) sets.push(old);
    }
  }
  return {
    part: 'aggregation', machine: m, durationS: (Date.now() - started) / 1000,
    data: { method: METHOD, repeats: REPEATS, windowS: WINDOW_S, warmupS: WARMUP_S, sets },
  };
}

// ------------------------------------------------------------ the report

function ratios(set: CapacitySetResult, system: SystemId, mix: Mix['id']): Spread {
  return spread(set.runs.filter((r) => r.system === system && r.mix === mix).map((r) => r.ratio));
}

const mbit = (bytesPerS: number) => `${((bytesPerS * 8) / 1e6).toFixed(bytesPerS * 8 >= 1e7 ? 0 : 1)} Mbit/s`;

export function renderAggregation(result: PartResult<AggregationData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const rows: SummaryRow[] = [];
  const out: string[] = [];
  if (data.method !== METHOD) {
    out.push('These results were measured by an older method (iperf3\'s own interval sums ÷ a measured baseline) and are not',
      'comparable; run `npm run bench -- --only aggregation`.', '');
    for (const capacities of CAPACITY_SETS) {
      rows.push({ measurement: `aggregation ${capacities.join('+')}: least-loaded, LAN host receive rate ÷ sum of the uplinks' rates`, value: 'not measured', target: `≥ ${TARGET}` });
    }
    return { markdown: out.join('\n'), rows };
  }
  const allRatios = data.sets.flatMap((s) => [...s.runs.map((r) => r.ratio), ...s.baselines.map((b) => b.ratio)]);
  out.push(
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.` +
      (data.sets.some((s) => s.machine.date !== result.machine.date) ? ' Each capacity set below gives its own date: not all were measured in this run.' : ''),
    '',
    '**Method.** Each capacity set is a lab of its own: tbf on both directions of every uplink (`uplinkd lab up --capacity`).',
    'All traffic is downloads from the internet server (192.0.2.10) to the LAN host: `iperf3 -R`, one `iperf3 -s` per concurrent',
    `flow, and for mix c a small HTTP server (bench/http-blob.ts) whose ${HTTP_BYTES / 1000} KB objects the LAN host fetches on a new`,
    `connection every ${HTTP_EVERY_MS} ms (bench/http-load.ts). Long flows are measured in a ${data.windowS} s window after ${data.warmupS} s`,
    `(past slow start); in mix b the window opens ${data.warmupS} s after the third flow started.`,
    'Each flow (and each HTTP download, in turn) comes from its own LAN source address, as if from its own LAN host, so that',
    'address-hash balancing has address pairs to spread; the addresses change from repeat to repeat.',
    '',
    '**Ratio** = what the LAN host\'s interface received in the window (eth0 rx_bytes) ÷ what the uplinks\' shapers can let',
    'through in it: Σ (tbf rate × window + tbf burst), rate and burst read back from the kernel (`tc -j qdisc show`).',
    'Both count the same bytes: tbf charges each packet its length at the device, the 14-byte Ethernet header plus the IP',
    'packet (no FCS or preamble on a veth), and a veth\'s rx_bytes is that same length. They agree packet by packet only, so the',
    'internet node sends no GSO packets (`ip link set … gso_max_segs 1`): a GSO packet is counted once by the interface but',
    'charged per segment by tbf, which left the interface 4% short. Every counter of a window is read at the same two instants',
    '(bench/counters.ts, already running in the LAN host and the router, reading /sys/class/net/*/statistics), and the window',
    'is the time between the LAN host\'s two readings. A tbf cannot let more than rate × window + burst through, so a ratio',
    `above 1.0 would mean the counting is wrong; the highest below (every run and baseline) is ${allRatios.length ? Math.max(...allRatios).toFixed(3) : '—'}.`,
    '',
    '**Baseline**, shown beside the systems: one bulk flow pinned to each uplink (by source address, a hand-written `ip rule`),',
    'all at once, measured the same way in each repeat just before the systems: what TCP gets out of these shapers at all.',
    '',
    '**Where the flows went**: in the middle of each window the router\'s conntrack is read, and the established connections to the',
    'iperf3 ports (each long flow is a control and a data connection) are counted by the uplink address the server answers.',
    'uplinkd systems run with debug logging, and the raw results keep what the daemon logged during each mix (health changes,',
    'least-loaded shares): the table counts the share rewrites and lists any health change.',
    '',
    `Every (system, mix) is measured ${[...new Set(data.sets.map((s) => s.baselines.length))].join(' or ')} times (each set says), interleaved (the system order rotates each repeat);`,
    'the tables give the median and, in brackets, min–max.',
    '',
    'Systems:',
    '- **one uplink**: `uplinkd run` with only the fastest uplink in its config;',
    '- **classic**: no uplinkd. By hand in the router, the LARTC recipe: per-uplink masquerade (an nft table of its own),',
    '  split-access tables and `ip rule from <uplink address>`, and `ip route replace default scope global nexthop via GW1 dev',
    '  wan1 weight W1 nexthop ...` in main with weights ∝ capacity and `net.ipv4.fib_multipath_hash_policy=1` (L4 hash). Removed',
    '  afterwards, and the router checked to be back as it was;',
    '- **uplinkd weighted** and **uplinkd hash**: `uplinkd run`, weights ∝ capacity (3:1, 4:2:1);',
    '- **uplinkd least-loaded**: `uplinkd run`, `balance: least-loaded`, each uplink\'s `capacity` in the config.',
    '',
    `Target: least-loaded ≥ ${TARGET} on every mix.`,
    '',
  );
  for (const set of data.sets) {
    const baseline = spread(set.baselines.map((b) => b.ratio));
    out.push(`### ${set.capacities.join(' + ')}`, '');
    out.push(`Measured ${describeMachine(set.machine)}; took ${Math.round(set.durationS)} s; ${set.baselines.length} repeats. Download shapers (tbf): ${set.shapers.map((sh) =>
      `${sh.uplink} ${mbit(sh.rateBytesPerS)}, burst ${sh.burstBytes} B`).join('; ')}: ${mbit(set.shapers.reduce((a, sh) => a + sh.rateBytesPerS, 0))} in all.`, '');
    out.push(`Baseline, one bulk flow pinned to each uplink: **${fmtSpread(baseline, 3)}** of the sum of the rates; per repeat ${set.baselines.map((b) =>
      `${b.ratio.toFixed(3)} (uplinks ${b.perUplink.map((u) => u.toFixed(2)).join(' / ')})${b.errors.length ? ` (errors: ${b.errors.join('; ')})` : ''}`).join(', ')}.`, '');
    out.push(table(
      ['system', ...MIXES.map((m) => `mix ${m.id}: ${m.label}`)],
      [
        ['baseline: one bulk flow pinned to each uplink (the same measurement for every mix)', ...MIXES.map(() => fmtSpread(baseline, 3))],
        ...SYSTEMS.map((s) => [SYSTEM_LABEL[s], ...MIXES.map((m) => fmtSpread(ratios(set, s, m.id), 3))]),
      ],
    ), '');
    for (const mix of MIXES) {
      const s = ratios(set, 'least-loaded', mix.id);
      rows.push({
        measurement: `aggregation ${set.capacities.join('+')}, mix ${mix.id} (${mix.label}): least-loaded, LAN host receive rate ÷ sum of the uplinks' tbf rates (baseline: one flow pinned per uplink)`,
        value: `${fmtSpread(s, 2)} (baseline ${fmtSpread(baseline, 2)})`, target: `≥ ${TARGET}`, met: s.n ? s.median >= TARGET : undefined,
        measured: set.machine,
      });
    }
    out.push('<details><summary>Every run: LAN host receive rate, ratio, per-uplink utilisation and long-flow connections, per-flow iperf3 figures, what the daemon did</summary>', '');
    out.push(table(
      ['repeat', 'system', 'mix', 'LAN rx Mbit/s', 'window s', 'ratio', 'uplink utilisation', 'connections', 'flows Mbit/s (iperf3\'s own clock)', 'daemon', 'HTTP'],
      set.runs.map((r) => [
        r.repeat + 1, r.system, r.mix, r.lanRxMbps.toFixed(2), r.windowS.toFixed(3), r.ratio.toFixed(3),
        r.utilisation.map((u) => `${Math.round(u * 100)}%`).join(' / '),
        r.connections.join(' / '),
        r.flows.map((f) => (f.error ? `err(${f.error})` : f.mbps.toFixed(1))).join(' '),
        daemonSummary(r.daemonEvents),
        r.http ? `${r.http.mbps.toFixed(1)} Mbit/s, ${r.http.completed}/${r.http.started} done, median ${r.http.medianMs} ms${r.http.failed ? `, ${r.http.failed} failed ${JSON.stringify(r.http.errors)}` : ''}` : '',
      ]),
    ), '', '</details>', '');
  }
  return { markdown: out.join('\n'), rows };
}
