// Aggregation: how much of the uplinks' combined capacity a LAN gets, with
// uplinks of unequal size, under three mixes of downloads, for five ways of
// running the router. Every figure is a ratio to the capacity actually
// usable in the lab: one bulk download pinned to each uplink, all at once
// (the "baseline"), measured in the same repeat, right before the systems.
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

import { labExec, type LabState } from '../src/lab/lab.js';
import { monotonicMs } from '../src/lab/measure.js';
import { parseRate } from '../src/lab/topology.js';
import type { LoadResult } from './http-load.js';
import {
  benchProgram, describeMachine, fmtSpread, forgetConnections, iperf, iperfServers, labMust, labName, linkBytes,
  machine, pause, say, spread, startDaemon, startHelper, stopDaemon, stopIfInterrupted, table, uplinkdYaml, withLab,
  type Daemon, type Machine, type PartResult, type Spread, type SummaryRow,
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
  /** Goodput inside the window, Mbit/s; 0 if it failed. */
  mbps: number;
  error?: string;
}

export interface MixRun {
  flows: FlowResult[];
  http?: LoadResult & { mbps: number };
  /** iperf3 goodput + HTTP body bytes inside the window, Mbit/s. */
  goodputMbps: number;
  /** The LAN host's eth0 receive counter over the same window (headers included), Mbit/s: a cross-check. */
  lanRxMbps: number;
  /** Each uplink's download (router wan<k> rx, headers included) over the window / its capacity. */
  utilisation: number[];
  /** Established long-flow connections (iperf3 data and control) on each uplink in the middle of the window, from the router's conntrack. */
  connections: number[];
}

export interface Run extends MixRun {
  repeat: number;
  system: SystemId;
  mix: Mix['id'];
  ratio: number;
  /** uplinkd systems: what the daemon logged during the mix (health changes, least-loaded steering), ms from the mix's start. */
  daemonEvents?: string[];
}

export interface Baseline {
  repeat: number;
  /** Goodput of the bulk flow pinned to each uplink, Mbit/s. */
  perUplinkMbps: number[];
  sumMbps: number;
  errors: string[];
}

export interface CapacitySetResult {
  capacities: string[];
  baselines: Baseline[];
  runs: Run[];
}

export interface AggregationData {
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

function networkOf(address: string, prefixLen: number): string {
  const n = address.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  const net = n - (n % 2 ** (32 - prefixLen));
  return `${[24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join('.')}/${prefixLen}`;
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

async function measure(lab: LabState, mix: Pick<Mix, 'flows' | 'http' | 'window'>, sources: string[], httpSources: string[]): Promise<MixRun & { t0Wall: number }> {
  const windowS = mix.window[1] - mix.window[0];
  let loader: ReturnType<typeof startHelper> | undefined;
  if (mix.http) {
    loader = startHelper(lab.ns.lan, [
      ...benchProgram('http-load'), '--url', `http://${lab.server}:${HTTP_PORT}/`, '--every-ms', String(HTTP_EVERY_MS),
      '--sources', httpSources.join(','),
    ]);
    const ready = await loader.nextLine();
    if (ready !== 'ready') throw new Error(`http-load: ${ready}`);
  }
  const t0 = monotonicMs() + 200;
  const t0Wall = Date.now() + (t0 - monotonicMs());
  const from = t0 + mix.window[0] * 1000;
  const to = t0 + mix.window[1] * 1000;
  loader?.write(JSON.stringify({ startAt: t0, durationMs: mix.window[1] * 1000, windowFrom: from, windowTo: to }));

  const counters = [from, to].map(async (at) => {
    await sleepUntil(at);
    const [lan, router] = await Promise.all([linkBytes(lab.ns.lan), linkBytes(lab.ns.router)]);
    return { lan: lan.eth0.rx, wans: lab.uplinks.map((u) => router[u.routerIf].rx) };
  });
  const middle = sleepUntil((from + to) / 2).then(() => flowConnections(lab));
  const flows = mix.flows.map(async (startS, i): Promise<FlowResult> => {
    await sleepUntil(t0 + startS * 1000);
    const seconds = Math.ceil(mix.window[1] - startS);
    const r = await iperf(lab, 'lan', [
      '-p', String(FIRST_PORT + i), '-R', '-t', String(seconds), '-i', String(INTERVAL_S), '-B', sources[i], '--connect-timeout', '2000',
    ], seconds);
    const bytes = r.json ? bytesInside(r.json.intervals, mix.window[0] - startS, mix.window[1] - startS) : 0;
    return { source: sources[i], startS, mbps: (bytes * 8) / windowS / 1e6, ...(r.error ? { error: r.error } : {}) };
  });
  // Awaited together: Ctrl-C rejects every pending wait at once, and none may go unhandled
  // (an unhandled rejection would end the process before its labs are taken down).
  const [flowResults, [c0, c1], connections] = await Promise.all([Promise.all(flows), Promise.all(counters), middle]);
  let http: MixRun['http'];
  if (loader) {
    const line = await loader.nextLine();
    await loader.exited;
    const r = JSON.parse(line) as LoadResult;
    http = { ...r, mbps: (r.bytesInWindow * 8) / windowS / 1e6 };
  }
  // Every uplink of these labs has its capacity (CAPACITY_SETS).
  const capacities = lab.uplinks.map((u) => parseRate(u.capacity!));
  return {
    t0Wall,
    flows: flowResults,
    ...(http ? { http } : {}),
    goodputMbps: flowResults.reduce((a, f) => a + f.mbps, 0) + (http?.mbps ?? 0),
    lanRxMbps: ((c1.lan - c0.lan) * 8) / windowS / 1e6,
    utilisation: c1.wans.map((b, i) => ((b - c0.wans[i]) * 8) / windowS / capacities[i]),
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
  daemon?: Daemon;
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
  const yaml =
    system === 'single' ? uplinkdYaml(lab, { uplinks: [{ k: 1 }] })
    : system === 'least-loaded' ? uplinkdYaml(lab, { uplinks: all.map((k) => ({ k, capacity: capacities[k - 1] })), balance: 'least-loaded' })
    : uplinkdYaml(lab, { uplinks: all.map((k) => ({ k, weight: weights[k - 1] })), balance: system });
  // debug: the least-loaded loop logs each new set of shares.
  const daemon = await startDaemon(lab, yaml, { env: { UPLINKD_LOG_LEVEL: 'debug' } });
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

async function measureBaseline(lab: LabState, repeat: number, defaults: string): Promise<Baseline> {
  const sources = sourcesFor(lab, repeat).baseline;
  await classicBase(lab);
  await classicPins(lab, sources);
  try {
    const r = await measure(lab, { flows: lab.uplinks.map(() => 0), http: false, window: [WARMUP_S, WARMUP_S + WINDOW_S] }, sources, []);
    return {
      repeat, perUplinkMbps: r.flows.map((f) => f.mbps), sumMbps: r.goodputMbps,
      errors: r.flows.flatMap((f) => (f.error ? [f.error] : [])),
    };
  } finally {
    await classicTeardown(lab, defaults);
  }
}

async function runCapacitySet(capacities: string[], index: number): Promise<CapacitySetResult> {
  const name = labName(`ag${index}-`);
  return withLab({ name, uplinks: capacities.length, capacities }, async (lab) => {
    await iperfServers(lab, Array.from({ length: 8 }, (_, i) => FIRST_PORT + i));
    const blob = startHelper(lab.ns.inet, [...benchProgram('http-blob'), '--host', lab.server, '--port', String(HTTP_PORT), '--bytes', String(HTTP_BYTES)]);
    if ((await blob.nextLine()) !== 'listening') throw new Error('http-blob did not start');
    const defaults = await mainDefaults(lab);
    const result: CapacitySetResult = { capacities, baselines: [], runs: [] };
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      stopIfInterrupted();
      const baseline = await measureBaseline(lab, repeat, defaults);
      result.baselines.push(baseline);
      say(`  [${capacities.join('+')}] repeat ${repeat + 1}/${REPEATS}: baseline ${baseline.perUplinkMbps.map((m) => m.toFixed(1)).join(' + ')} = ${baseline.sumMbps.toFixed(1)} Mbit/s`);
      // A different order each repeat, so a drift of the machine does not always hit the same system.
      const order = SYSTEMS.map((_, i) => SYSTEMS[(i + repeat) % SYSTEMS.length]).filter((s) => !ONLY_SYSTEMS || ONLY_SYSTEMS.includes(s));
      for (const system of order) {
        stopIfInterrupted();
        const running = await startSystem(lab, system, capacities, defaults);
        try {
          for (const mix of MIXES) {
            stopIfInterrupted();
            const sources = sourcesFor(lab, repeat);
            const logFrom = running.daemon?.daemon.logs().length ?? 0;
            const { t0Wall, ...r } = await measure(lab, mix, sources.flows, sources.http);
            const run: Run = {
              repeat, system, mix: mix.id, ratio: r.goodputMbps / baseline.sumMbps, ...r,
              ...(running.daemon ? { daemonEvents: daemonEvents(running.daemon.daemon.logs(), logFrom, t0Wall) } : {}),
            };
            result.runs.push(run);
            const errors = r.flows.filter((f) => f.error).length + (r.http?.failed ?? 0);
            say(`    ${system.padEnd(12)} mix ${mix.id}: ${r.goodputMbps.toFixed(1).padStart(5)} Mbit/s = ${run.ratio.toFixed(3)}` +
              `  uplinks ${r.utilisation.map((u) => `${Math.round(u * 100)}%`).join('/')}  connections ${r.connections.join('/')}${errors ? `  (${errors} failed)` : ''}`);
            for (const e of run.daemonEvents ?? []) say(`      ${e}`);
            await pause(300);
          }
        } finally {
          await running.stop();
        }
      }
    }
    return result;
  });
}

export async function runAggregation(): Promise<PartResult<AggregationData>> {
  const m = machine();
  const started = Date.now();
  say(`aggregation: ${CAPACITY_SETS.map((c) => c.join('+')).join(' and ')}, ${MIXES.length} mixes x ${SYSTEMS.length} systems x ${REPEATS} repeats,` +
    ` ${WINDOW_S} s windows after ${WARMUP_S} s warm-up`);
  const sets: CapacitySetResult[] = [];
  for (const [i, capacities] of CAPACITY_SETS.entries()) {
    if (!ONLY_SETS || ONLY_SETS.includes(i + 1)) sets.push(await runCapacitySet(capacities, i + 1));
  }
  return { part: 'aggregation', machine: m, durationS: (Date.now() - started) / 1000, data: { repeats: REPEATS, windowS: WINDOW_S, warmupS: WARMUP_S, sets } };
}

// ------------------------------------------------------------ the report

function ratios(set: CapacitySetResult, system: SystemId, mix: Mix['id']): Spread {
  return spread(set.runs.filter((r) => r.system === system && r.mix === mix).map((r) => r.ratio));
}

export function renderAggregation(result: PartResult<AggregationData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const rows: SummaryRow[] = [];
  const out: string[] = [];
  out.push(
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.`,
    '',
    '**Method.** Each capacity set is a lab of its own: tbf on both directions of every uplink (`uplinkd lab up --capacity`).',
    'All traffic is downloads from the internet server (192.0.2.10) to the LAN host: `iperf3 -R`, one `iperf3 -s` per concurrent',
    `flow, and for mix c a small HTTP server (bench/http-blob.ts) whose ${HTTP_BYTES / 1000} KB objects the LAN host fetches on a new`,
    `connection every ${HTTP_EVERY_MS} ms (bench/http-load.ts). Goodput is what the LAN host received inside a ${data.windowS} s window:`,
    `the iperf3 -J interval sums (0.5 s intervals, aligned to the window) plus the HTTP body bytes that arrived in it. Long flows`,
    `are measured after ${data.warmupS} s of warm-up; in mix b the window opens ${data.warmupS} s after the third flow started.`,
    'Each flow (and each HTTP download, in turn) comes from its own LAN source address, as if from its own LAN host, so that',
    'address-hash balancing has address pairs to spread; the addresses change from repeat to repeat.',
    '',
    '**Where the flows went**: in the middle of each window the router\'s conntrack is read, and the established connections to the',
    'iperf3 ports (each long flow is a control and a data connection) are counted by the uplink address the server answers.',
    'uplinkd systems run with debug logging, and the raw results keep what the daemon logged during each mix (health changes,',
    'least-loaded shares): the table counts the share rewrites and lists any health change.',
    '',
    '**Ratio** = goodput ÷ baseline, where the baseline is the sum of what each uplink carries on its own: one bulk flow pinned to',
    'each uplink (by source address, a hand-written `ip rule`), all at the same time, measured in the same repeat just before the',
    `systems. Every (system, mix) is measured ${data.repeats} times, interleaved (the system order rotates each repeat);`,
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
    out.push(`### ${set.capacities.join(' + ')}`, '');
    out.push(`Baseline (Mbit/s, per uplink = sum): ${set.baselines.map((b) =>
      `${b.perUplinkMbps.map((x) => x.toFixed(1)).join(' + ')} = **${b.sumMbps.toFixed(1)}**${b.errors.length ? ` (errors: ${b.errors.join('; ')})` : ''}`).join('; ')}.`, '');
    out.push(table(
      ['system', ...MIXES.map((m) => `mix ${m.id}: ${m.label}`)],
      SYSTEMS.map((s) => [SYSTEM_LABEL[s], ...MIXES.map((m) => fmtSpread(ratios(set, s, m.id), 3))]),
    ), '');
    for (const mix of MIXES) {
      const s = ratios(set, 'least-loaded', mix.id);
      rows.push({
        measurement: `aggregation ${set.capacities.join('+')}, mix ${mix.id} (${mix.label}): least-loaded goodput ÷ sum of uplinks`,
        value: fmtSpread(s, 2), target: `≥ ${TARGET}`, met: s.n ? s.median >= TARGET : undefined,
      });
    }
    out.push('<details><summary>Every run: goodput, ratio, per-uplink utilisation and long-flow connections, per-flow goodput, what the daemon did</summary>', '');
    out.push(table(
      ['repeat', 'system', 'mix', 'goodput Mbit/s', 'ratio', 'LAN rx Mbit/s', 'uplink utilisation', 'connections', 'flows Mbit/s', 'daemon', 'HTTP'],
      set.runs.map((r) => [
        r.repeat + 1, r.system, r.mix, r.goodputMbps.toFixed(2), r.ratio.toFixed(3), r.lanRxMbps.toFixed(2),
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
