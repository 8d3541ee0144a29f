// New connections per second through the router: the figure where the cost
// of pinning rules would show. Only a connection's first packet is classified
// (balance map, pin maps); every later packet takes the ct-mark path, so a
// bulk transfer cannot show what rules cost, but a stream of short
// connections can. Four systems, side by side in one lab, interleaved:
//   plain        no uplinkd: a hand-written minimal NAT router, masquerade on
//                wan1 (an nft table of our own), the main table's default route;
//   rules-1      `uplinkd run`, two uplinks, 1 pinning rule (matching nothing);
//   rules-1000   `uplinkd run`, two uplinks, 1000 pinning rules matching none
//                of the test traffic (bench/lib.ts pinRules);
//   linear-1000  the control: plain, plus 1000 non-matching rules checked one
//                after another on every new connection (a forward chain
//                jumped to on `ct state new`), what rules cost when they are
//                not compiled into maps. It shows the measurement can see
//                rule cost.
// The same load for each: bench/conn-load.ts in the LAN host keeps
// CONCURRENCY connections open to bench/conn-server.ts in the internet, each a
// new TCP connection (handshake, a 3-byte answer, the server closes), the next
// started as soon as one ends.

import type { LabState } from '../src/lab/lab.js';
import { startDaemon } from '../src/lab/lab-daemon.js';
import { monotonicMs } from '../src/lab/measure.js';
import type { ConnLoadResult } from './conn-load.js';
import type { LoadPlan } from './load-plan.js';
import {
  benchProgram, cpuUse, describeMachine, fmtSpread, forgetConnections, labMust, labName, machine, pause, pinRules, say,
  BENCH_START, spread, startHelper, startReadyHelper, stopDaemon, stopIfInterrupted, table, withLab, writeBenchConfig,
  type CpuUse, type PartResult, type Spread, type SummaryRow,
} from './lib.js';

// Eight short rounds rather than a few long ones: the machine is shared, and
// a drift of its load then falls on every system alike.
const REPEATS = Math.max(1, Number(process.env.BENCH_REPEATS ?? 8));
const WARMUP_S = 1.5;
const WINDOW_S = Math.max(2, Number(process.env.BENCH_WINDOW_S ?? 5));
const CONCURRENCY = 64;
const PORT = 8091;
const TARGET_VS_PLAIN = 0.9;
/** "No fall from 1 rule to 1000": within the run-to-run noise of the ratio. */
const TARGET_1000_VS_1 = 0.95;
/**
 * The load takes both cores, so a window in which other programs on the
 * machine used more than this (in cores) measured them, not the router.
 * Before each window the part waits until they have used less for a second
 * (QUIET_WAIT_S at most), and a window in which they used more is measured
 * again, up to MAX_ATTEMPTS times in all. The waiting stops after
 * WAIT_BUDGET_S over the whole part: then windows are kept as they come, and
 * the report shows what other programs took in each.
 */
const MAX_ELSEWHERE_CORES = 0.1;
const MAX_ATTEMPTS = 3;
const QUIET_WAIT_S = 30;
const WAIT_BUDGET_S = 240;

export const CONNECTION_SYSTEMS = ['plain', 'rules-1', 'rules-1000', 'linear-1000'] as const;
export type ConnectionSystem = (typeof CONNECTION_SYSTEMS)[number];

const LABEL: Record<ConnectionSystem, string> = {
  plain: 'plain NAT router (no uplinkd)',
  'rules-1': 'uplinkd run, 1 pinning rule',
  'rules-1000': 'uplinkd run, 1000 pinning rules',
  'linear-1000': 'control: plain NAT + 1000 rules checked one by one per new connection',
};

export interface ConnectionRun {
  repeat: number;
  system: ConnectionSystem;
  /** Connections completed inside the window ÷ its length. */
  perSecond: number;
  load: ConnLoadResult;
  /** Share of the window's forwarded packets that left by each uplink (router wan<k> tx packets). */
  uplinkShares: number[];
  /**
   * Connections completed in the window ÷ the CPU time the lab got in it (the
   * machine's busy time less other programs'): the rate per CPU-second, which
   * what the hypervisor withholds (steal) does not change.
   */
  perCpuSecond: number;
  /** Where the machine's CPU went during the window. */
  cpu: CpuUse;
  /** Windows measured again because other programs used more than MAX_ELSEWHERE_CORES, before this one. */
  redone: number;
}

export interface ConnectionsData {
  repeats: number;
  warmupS: number;
  windowS: number;
  concurrency: number;
  /** How the 1000 rules were compiled: the pin maps in uplinkd's nft table and their elements. */
  pinMaps?: { maps: number; elements: number };
  /** The router's conntrack table size limit (net.netfilter.nf_conntrack_max). */
  conntrackMax?: number;
  runs: ConnectionRun[];
}

/** 1000 rules of the same three shapes as pinRules, as plain nft rules one after another, none matching the test traffic. */
function linearRules(n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const a = (i >> 8) & 255;
    const b = i & 255;
    if (i < n * 0.4) out.push(`    ip saddr 10.${a}.${b}.0/24 meta mark set 0x100`);
    else if (i < n * 0.8) out.push(`    ip daddr 100.64.${a}.${b} meta mark set 0x200`);
    else out.push(`    ip saddr 172.16.${a}.${b} ip daddr 203.0.113.128/25 tcp dport ${10000 + i} meta mark set 0x100`);
  }
  return out.join('\n');
}

function plainNat(lab: LabState, withLinear: boolean): string {
  const wan1 = lab.uplinks[0].routerIf;
  const linear = withLinear
    ? `  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ct state new jump pins\n  }\n` +
      `  chain pins {\n${linearRules(1000)}\n  }\n`
    : '';
  return `table ip ulbench_conn {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n` +
    `    oifname "${wan1}" masquerade\n  }\n${linear}}\n`;
}

async function startSystem(lab: LabState, system: ConnectionSystem, data: ConnectionsData): Promise<() => Promise<void>> {
  if (system === 'plain' || system === 'linear-1000') {
    await labMust(lab, 'router', ['nft', '-f', '-'], plainNat(lab, system === 'linear-1000'));
    return async () => {
      await labMust(lab, 'router', ['nft', 'delete', 'table', 'ip', 'ulbench_conn']);
      await forgetConnections(lab);
    };
  }
  const rules = system === 'rules-1000' ? pinRules(1000, lab.uplinks.map((u) => u.name)) : '  - {src: 10.255.255.1/32, via: isp2}\n';
  const d = await startDaemon(lab, writeBenchConfig(lab, { rules }), BENCH_START);
  if (system === 'rules-1000' && !data.pinMaps) {
    const nft = JSON.parse(await labMust(lab, 'router', ['nft', '-j', 'list', 'table', 'inet', 'uplinkd'])) as
      { nftables: { map?: { name: string; elem?: unknown[] } }[] };
    const maps = nft.nftables.flatMap((x) => (x.map && /^rules_/.test(x.map.name) ? [x.map] : []));
    data.pinMaps = { maps: maps.length, elements: maps.reduce((a, m) => a + (m.elem?.length ?? 0), 0) };
  }
  return () => stopDaemon(lab, d);
}

async function txPackets(lab: LabState): Promise<number[]> {
  const out = await labMust(lab, 'router', ['ip', '-s', '-j', 'link', 'show']);
  const links = JSON.parse(out) as { ifname: string; stats64?: { tx: { packets: number } } }[];
  return lab.uplinks.map((u) => links.find((l) => l.ifname === u.routerIf)?.stats64?.tx.packets ?? 0);
}

/** Until other programs use less than MAX_ELSEWHERE_CORES over one second (or the waits have used up their budget). */
async function waitForQuiet(lab: LabState, waiting: { spentS: number }): Promise<void> {
  const namespaces = [lab.ns.lan, lab.ns.router, lab.ns.inet, ...lab.ns.isps];
  const started = monotonicMs();
  let said = false;
  while (waiting.spentS < WAIT_BUDGET_S && monotonicMs() - started < QUIET_WAIT_S * 1000) {
    const cpu = cpuUse(namespaces);
    await pause(1000);
    const use = cpu.stop();
    if (use.elsewhereS / use.seconds <= MAX_ELSEWHERE_CORES) break;
    waiting.spentS += use.seconds;
    if (!said) say(`    waiting for other programs to quieten down (${use.elsewhereTop.join(', ')})`);
    said = true;
  }
}

/** Cores other programs took during a run's window. */
const elsewhere = (r: Pick<ConnectionRun, 'cpu'>) => r.cpu.elsewhereS / r.cpu.seconds;

async function measure(lab: LabState, repeat: number, system: ConnectionSystem): Promise<Omit<ConnectionRun, 'redone'>> {
  // Unbound: every connection leaves from the LAN host's own address. With
  // one (LAN host, server) pair, TCP timestamps and initial sequence numbers
  // keep rising from one connection to the next on a reused port, so the
  // server takes a new SYN over a TIME_WAIT of an earlier one; with several
  // source addresses NATed to one, they would not, and some SYNs would wait
  // out a 1 s retransmission.
  const load = await startReadyHelper(lab.ns.lan, 'conn-load', ['--host', lab.server, '--port', String(PORT), '--concurrency', String(CONCURRENCY)]);
  const t0 = monotonicMs() + 200;
  const from = t0 + WARMUP_S * 1000;
  const to = from + WINDOW_S * 1000;
  load.write(JSON.stringify({ startAt: t0, durationMs: to - t0, windowFrom: from, windowTo: to } satisfies LoadPlan));
  await pause(Math.max(0, from - monotonicMs()));
  const cpu = cpuUse([lab.ns.lan, lab.ns.router, lab.ns.inet, ...lab.ns.isps]);
  const tx0 = await txPackets(lab);
  await pause(Math.max(0, to - monotonicMs()));
  const tx1 = await txPackets(lab);
  const used = cpu.stop();
  const result = JSON.parse(await load.nextLine()) as ConnLoadResult;
  await load.exited;
  const sent = tx1.map((t, i) => t - tx0[i]);
  const total = sent.reduce((a, b) => a + b, 0);
  return {
    repeat, system, perSecond: result.completedInWindow / WINDOW_S, load: result, uplinkShares: sent.map((s) => (total ? s / total : 0)),
    perCpuSecond: used.oursS ? result.completedInWindow / used.oursS : 0, cpu: used,
  };
}

export async function runConnections(): Promise<PartResult<ConnectionsData>> {
  const m = machine();
  const started = Date.now();
  say(`connections: ${CONNECTION_SYSTEMS.join(', ')} x ${REPEATS} repeats; ${CONCURRENCY} at a time, ${WINDOW_S} s windows after ${WARMUP_S} s`);
  const data: ConnectionsData = { repeats: REPEATS, warmupS: WARMUP_S, windowS: WINDOW_S, concurrency: CONCURRENCY, runs: [] };
  await withLab({ name: labName('cn'), uplinks: 2 }, async (lab) => {
    const server = startHelper(lab.ns.inet, [...benchProgram('conn-server'), '--host', lab.server, '--port', String(PORT)]);
    try {
      if ((await server.nextLine()) !== 'listening') throw new Error('conn-server did not start');
      const waiting = { spentS: 0 };
      data.conntrackMax = Number((await labMust(lab, 'router', ['sysctl', '-n', 'net.netfilter.nf_conntrack_max'])).trim());
      for (let repeat = 0; repeat < REPEATS; repeat++) {
        const order = CONNECTION_SYSTEMS.map((_, i) => CONNECTION_SYSTEMS[(i + repeat) % CONNECTION_SYSTEMS.length]);
        for (const system of order) {
          stopIfInterrupted();
          const stop = await startSystem(lab, system, data);
          let run: ConnectionRun | undefined;
          try {
            await pause(500);
            for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
              await waitForQuiet(lab, waiting);
              run = { ...(await measure(lab, repeat, system)), redone: attempt };
              if (elsewhere(run) <= MAX_ELSEWHERE_CORES || waiting.spentS >= WAIT_BUDGET_S) break;
              say(`  repeat ${repeat + 1}/${REPEATS} ${system.padEnd(11)} other programs took ${elsewhere(run).toFixed(2)} cores` +
                ` (${run.cpu.elsewhereTop.join(', ')})${attempt + 1 < MAX_ATTEMPTS ? ': measuring again' : ''}`);
            }
          } finally {
            await stop();
          }
          if (!run) throw new Error('no measurement');
          data.runs.push(run);
          const l = run.load;
          const cores = (cpuS: number) => (cpuS / run.cpu.seconds).toFixed(2);
          say(`  repeat ${repeat + 1}/${REPEATS} ${system.padEnd(11)} ${Math.round(run.perSecond).toString().padStart(5)} connections/s` +
            `  (p50 ${l.p50Ms} ms, p99 ${l.p99Ms} ms${l.failed ? `, ${l.failed} failed ${JSON.stringify(l.errors)}` : ''})` +
            `  ${Math.round(run.perCpuSecond)} per CPU-second  uplinks ${run.uplinkShares.map((s) => `${Math.round(s * 100)}%`).join('/')}` +
            `  cores: lab ${cores(run.cpu.oursS)}, elsewhere ${cores(run.cpu.elsewhereS)}, steal ${cores(run.cpu.stealS)}, idle ${cores(run.cpu.idleS)}`);
          await pause(300);
        }
      }
    } finally {
      server.kill();
      await server.exited;
    }
  });
  return { part: 'connections', machine: m, durationS: (Date.now() - started) / 1000, data };
}

// ------------------------------------------------------------ the report

/** Per repeat, the system's rate divided by `against`'s in the same repeat. */
function ratioSpread(data: ConnectionsData, system: ConnectionSystem, against: ConnectionSystem, pick: (r: ConnectionRun) => number = (r) => r.perCpuSecond): Spread {
  const values: number[] = [];
  for (let repeat = 0; repeat < data.repeats; repeat++) {
    const base = data.runs.find((r) => r.repeat === repeat && r.system === against);
    const mine = data.runs.find((r) => r.repeat === repeat && r.system === system);
    if (base && mine && pick(base)) values.push(pick(mine) / pick(base));
  }
  return spread(values);
}

export function renderConnections(result: PartResult<ConnectionsData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const of = (s: ConnectionSystem) => data.runs.filter((r) => r.system === s);
  const raw = (r: ConnectionRun) => r.perSecond;
  const perCore = (cpuS: (r: ConnectionRun) => number) => (list: ConnectionRun[]) => fmtSpread(spread(list.map((r) => cpuS(r) / r.cpu.seconds)), 2);
  const out: string[] = [
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.`,
    '',
    '**Method.** One lab with two unshaped uplinks, so the CPU is the limit (the LAN host, the router, the ISPs and the server',
    `share the machine's cores). The LAN host keeps ${data.concurrency} connections open at a time to a small TCP server beyond the ISPs`,
    '(bench/conn-load.ts, bench/conn-server.ts): each is a new TCP connection, a 3-byte answer and the server\'s close, and the',
    `next starts as soon as one ends. A connection counts once its answer was read and it closed, inside a ${data.windowS} s window`,
    `that opens ${data.warmupS} s after the load started.`,
    '',
    'Systems: **plain** = no uplinkd, a hand-written nft masquerade on wan1 and the main table\'s default route; **uplinkd run** =',
    'the daemon (with its probes) on both uplinks, weighted, with 1 pinning rule or 1000 pinning rules that match none of the test',
    `traffic (400 source prefixes, 400 destinations, 200 source+destination+port combinations)${data.pinMaps ?
      `; the 1000 rules compile to ${data.pinMaps.maps} nft maps with ${data.pinMaps.elements} elements in all` : ''};`,
    '**control** = plain, plus 1000 rules of the same three shapes checked one after another on each new connection (an nft',
    'chain jumped to on `ct state new`): what rule count costs when rules are not compiled into maps, so the table shows that the',
    'measurement sees such a cost.',
    '',
    '**Per CPU-second.** This machine is a VM whose hypervisor withholds a varying share of the CPU (/proc/stat *steal*), and',
    'other programs may run: either changes the connections per second of a window by a third from one minute to the next, more',
    'than any difference between the systems. So each window also reads where the CPU went (/proc/stat for the machine,',
    '/proc/<pid>/stat for every process outside the lab), and the ratios are of **connections per CPU-second the lab used**',
    '(the machine\'s user + system + irq + softirq time, less what processes outside the lab took): the rate each system reaches',
    'when it has the same CPU. Before each window the part waits (up to ' + `${QUIET_WAIT_S} s) until other programs take less than ${MAX_ELSEWHERE_CORES} of a`,
    `core, and a window in which they took more is measured again (up to ${MAX_ATTEMPTS} times; after ${WAIT_BUDGET_S} s of waiting in all, windows are`,
    'kept as they come). The raw connections per second and their ratios are given beside.',
    `Repeated ${data.repeats} times, interleaved (the order rotates each repeat); conntrack is flushed between systems` +
      `${data.conntrackMax ? ` (its limit in the router: ${data.conntrackMax} entries)` : ''}. A ratio is taken against plain`,
    '(or 1 rule) in the same repeat, then the median and min–max of those ratios are given.',
    '',
    table(['system', 'per CPU-second', '÷ plain', 'connections/s', '÷ plain (raw)', 'p50 / p99 connection time', 'failed', 'cores: lab / steal / idle'],
      CONNECTION_SYSTEMS.map((s) => [
        LABEL[s], fmtSpread(spread(of(s).map((r) => r.perCpuSecond)), 0),
        s === 'plain' ? '1' : fmtSpread(ratioSpread(data, s, 'plain'), 3),
        fmtSpread(spread(of(s).map(raw)), 0),
        s === 'plain' ? '1' : fmtSpread(ratioSpread(data, s, 'plain', raw), 3),
        `${fmtSpread(spread(of(s).map((r) => r.load.p50Ms)), 1, ' ms')} / ${fmtSpread(spread(of(s).map((r) => r.load.p99Ms)), 1, ' ms')}`,
        String(of(s).reduce((a, r) => a + r.load.failed, 0)),
        [perCore((r) => r.cpu.oursS), perCore((r) => r.cpu.stealS), perCore((r) => r.cpu.idleS)].map((f) => f(of(s))).join(' / '),
      ])),
    '',
    '<details><summary>Every run</summary>',
    '',
    table(['repeat', 'system', 'connections/s', 'per CPU-second', 'completed in window', 'failed', 'p50 ms', 'p99 ms', 'packets out by uplink',
      'cores: lab / elsewhere / steal / idle', 'measured again'],
      data.runs.map((r) => [
        r.repeat + 1, r.system, Math.round(r.perSecond), Math.round(r.perCpuSecond), r.load.completedInWindow,
        r.load.failed ? `${r.load.failed} ${JSON.stringify(r.load.errors)}` : '0', r.load.p50Ms, r.load.p99Ms,
        r.uplinkShares.map((s) => `${Math.round(s * 100)}%`).join(' / '),
        [r.cpu.oursS, r.cpu.elsewhereS, r.cpu.stealS, r.cpu.idleS].map((x) => (x / r.cpu.seconds).toFixed(2)).join(' / ') +
          (elsewhere(r) > MAX_ELSEWHERE_CORES ? ` (${r.cpu.elsewhereTop.join(', ')})` : ''),
        r.redone,
      ])),
    '',
    '</details>',
    '',
  ];
  const rows: SummaryRow[] = [];
  const both = (system: ConnectionSystem, against: ConnectionSystem) => {
    const r = ratioSpread(data, system, against);
    return { r, value: `${fmtSpread(r, 2)} (raw ${fmtSpread(ratioSpread(data, system, against, raw), 2)})` };
  };
  for (const s of ['rules-1', 'rules-1000'] as const) {
    const { r, value } = both(s, 'plain');
    rows.push({ measurement: `new connections per second (per CPU-second), ${LABEL[s]} ÷ plain NAT router`, value, target: `≥ ${TARGET_VS_PLAIN}`, met: r.n ? r.median >= TARGET_VS_PLAIN : undefined });
  }
  const fall = both('rules-1000', 'rules-1');
  rows.push({ measurement: 'new connections per second (per CPU-second), uplinkd 1000 rules ÷ 1 rule (no fall with rule count)', value: fall.value, target: `≥ ${TARGET_1000_VS_1}`, met: fall.r.n ? fall.r.median >= TARGET_1000_VS_1 : undefined });
  const control = both('linear-1000', 'plain');
  rows.push({ measurement: 'new connections per second (per CPU-second), control: 1000 rules checked one by one ÷ plain (shows that rule cost is seen)', value: control.value, target: '—' });
  const plainRate = spread(of('plain').map(raw));
  if (plainRate.n) rows.push({ measurement: `new connections per second, plain NAT router (${data.concurrency} at a time; absolute, for scale)`, value: fmtSpread(plainRate, 0), target: '—' });
  return { markdown: out.join('\n'), rows };
}
