// MPTCP: what one download gets on a multihomed host with `mptcp: subflow`
// (README "MPTCP"), next to one plain TCP download over the best single
// uplink, both measured in the same repeat.
//
// Lab: `lab up --host` with 20mbit + 10mbit (tbf on both directions of each
// uplink), `uplinkd run` with both uplinks in tier 1 and `mptcp: subflow`,
// the lab's MPTCP server (src/lab/mptcp.py) in the internet. The host
// downloads:
//   mptcp  one MPTCP connection, unbound: its first subflow is balanced, and
//          the kernel opens one more from each uplink's endpoint;
//   tcp    one plain TCP connection bound to isp1's address (20 mbit, the
//          best uplink): split access keeps it there.
// Each is measured two ways, as ratios to the sum of the uplinks (30 mbit):
//   goodput   payload bytes ÷ the whole download, connect to last byte,
//             slow start included;
//   counters  what wan1 + wan2 received (interface counters, headers
//             included) in one window of WINDOW_S, opened SKIP_S after the
//             download began, every counter read at the same instant.

import { startDaemon } from '../src/lab/lab-daemon.js';
import { labMeasuredDownload, labMptcpServer, type WindowedDownload } from '../src/lab/mptcp.js';
import {
  BENCH_START, describeMachine, fmtSpread, interrupt, labName, machine, say, spread, stopDaemon, table, withLab, writeBenchConfig,
  type PartResult, type SummaryRow,
} from './lib.js';

const REPEATS = Math.max(1, Number(process.env.BENCH_REPEATS ?? 3));
const SKIP_S = 3;
const WINDOW_S = Math.max(2, Number(process.env.BENCH_WINDOW_S ?? 8));
const CAPACITIES = ['20mbit', '10mbit'];
const CAPACITY_BPS = [20e6, 10e6];
const SUM_BPS = CAPACITY_BPS[0] + CAPACITY_BPS[1];
const BEST_BPS = Math.max(...CAPACITY_BPS);
/** MPTCP's aim: most of the sum. */
const TARGET = 0.85;

export interface DownloadFigures {
  goodputBps: number;
  /** Interface-counted rate over the window, per uplink interface. */
  rxBps: Record<string, number>;
  totalBps: number;
  seconds: number;
  subflows: number;
  mptcp: boolean;
  sha256Ok: boolean;
}

export interface MptcpRun {
  repeat: number;
  mptcp: DownloadFigures;
  tcp: DownloadFigures;
}

export interface MptcpData {
  capacities: string[];
  skipS: number;
  windowS: number;
  runs: MptcpRun[];
}

function figures(w: WindowedDownload): DownloadFigures {
  const d = w.download;
  if (d.error || !d.sha256_ok) throw new Error(`download failed: ${JSON.stringify(d)}`);
  return {
    goodputBps: (d.bytes * 8) / d.seconds, rxBps: w.rxBps, totalBps: w.totalBps, seconds: d.seconds,
    subflows: d.subflows_max, mptcp: d.mptcp, sha256Ok: d.sha256_ok,
  };
}

/** Bytes that last past the skip and the window, 4 s to spare, at `bps` (a slower download lasts longer still). */
const bytesFor = (bps: number) => Math.round(((SKIP_S + WINDOW_S + 4) * bps) / 8);

export async function runMptcp(): Promise<PartResult<MptcpData>> {
  const m = machine();
  const started = Date.now();
  say(`mptcp: one download, MPTCP over ${CAPACITIES.join(' + ')} and plain TCP over the best uplink, ${REPEATS} repeats, ` +
    `${WINDOW_S} s windows after ${SKIP_S} s`);
  const data: MptcpData = { capacities: CAPACITIES, skipS: SKIP_S, windowS: WINDOW_S, runs: [] };
  await withLab({ name: labName('mp'), uplinks: 2, capacities: CAPACITIES, host: true }, async (lab) => {
    await labMptcpServer(lab.name);
    const d = await startDaemon(lab, writeBenchConfig(lab, { top: 'mptcp: subflow\n' }, 'mptcp.yaml'), BENCH_START);
    try {
      const interfaces = lab.uplinks.map((u) => u.routerIf);
      const window = { interfaces, skipS: SKIP_S, windowS: WINDOW_S };
      for (let repeat = 0; repeat < REPEATS; repeat++) {
        interrupt.signal.throwIfAborted();
        const mptcp = figures(await labMeasuredDownload(lab.name, 'router', { bytes: bytesFor(SUM_BPS), ...window }));
        interrupt.signal.throwIfAborted();
        const tcp = figures(await labMeasuredDownload(lab.name, 'router', { bytes: bytesFor(BEST_BPS), tcp: true, bind: lab.uplinks[0].address, ...window }));
        data.runs.push({ repeat, mptcp, tcp });
        say(`  ${repeat + 1}/${REPEATS}: MPTCP goodput ${(mptcp.goodputBps / SUM_BPS).toFixed(3)}, counters ${(mptcp.totalBps / SUM_BPS).toFixed(3)} ` +
          `(${interfaces.map((i) => `${i} ${(mptcp.rxBps[i] / 1e6).toFixed(1)}`).join(', ')} Mbit/s, ${mptcp.subflows} subflows); ` +
          `TCP via isp1 goodput ${(tcp.goodputBps / SUM_BPS).toFixed(3)}, counters ${(tcp.totalBps / SUM_BPS).toFixed(3)} of the sum`);
      }
    } finally {
      await stopDaemon(lab, d);
    }
  });
  return { part: 'mptcp', machine: m, durationS: (Date.now() - started) / 1000, data };
}

export function renderMptcp(result: PartResult<MptcpData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const ratio = (pick: (r: MptcpRun) => number, of = SUM_BPS) => spread(data.runs.map((r) => pick(r) / of));
  const sum = data.capacities.join(' + ');
  const mptcpCounters = ratio((r) => r.mptcp.totalBps);
  const rows: SummaryRow[] = [
    {
      measurement: `MPTCP (\`mptcp: subflow\`), one download over ${sum}, host's interface counters ÷ sum of uplinks`,
      value: fmtSpread(mptcpCounters, 2), target: `≥ ${TARGET}`, met: mptcpCounters.n ? mptcpCounters.median >= TARGET : undefined,
    },
    { measurement: `MPTCP, one download over ${sum}: goodput (whole download) ÷ sum of uplinks`, value: fmtSpread(ratio((r) => r.mptcp.goodputBps), 2), target: '—' },
    { measurement: `plain TCP, one download over the best uplink (${data.capacities[0]}): interface counters ÷ sum of uplinks`, value: fmtSpread(ratio((r) => r.tcp.totalBps), 2), target: '—' },
  ];
  const fmt = (s: ReturnType<typeof spread>) => fmtSpread(s, 3);
  const markdown = [
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.`,
    '',
    `**Method.** \`lab up --host\` with ${sum} (tbf on both directions of each uplink); \`uplinkd run\` with both uplinks in tier 1`,
    'and `mptcp: subflow`; the lab\'s MPTCP server (src/lab/mptcp.py) in the internet namespace. The host downloads one MPTCP',
    'connection, unbound (its first subflow is balanced; the kernel opens one more subflow from each uplink\'s endpoint), then',
    `one plain TCP connection bound to isp1's address (the best single uplink, ${data.capacities[0]}), in every repeat. Both are`,
    `measured two ways, as ratios to the sum of the uplinks: **goodput** = payload bytes ÷ the whole download (connect to last`,
    `byte, slow start included), and **counters** = what wan1 + wan2 received (interface counters, headers included) over one`,
    `${data.windowS} s window opened ${data.skipS} s after the download began, every counter read in one \`ip -s -j link\` at each end.`,
    `Every download's bytes are checked against the server's SHA-256. ${data.runs.length} repeats; median and, in brackets, min–max.`,
    '',
    table(['download', 'goodput ÷ sum', 'counters ÷ sum', `counters ÷ best uplink (${data.capacities[0]})`], [
      ['MPTCP, unbound', fmt(ratio((r) => r.mptcp.goodputBps)), fmt(mptcpCounters), fmt(ratio((r) => r.mptcp.totalBps, BEST_BPS))],
      ['plain TCP, bound to isp1', fmt(ratio((r) => r.tcp.goodputBps)), fmt(ratio((r) => r.tcp.totalBps)), fmt(ratio((r) => r.tcp.totalBps, BEST_BPS))],
    ]),
    '',
    '<details><summary>Every run</summary>',
    '',
    table(['repeat', 'download', 'goodput Mbit/s', 'seconds', 'wan1 / wan2 Mbit/s (window)', 'subflows', 'MPTCP'],
      data.runs.flatMap((r) => (['mptcp', 'tcp'] as const).map((k) => [
        r.repeat + 1, k, (r[k].goodputBps / 1e6).toFixed(2), r[k].seconds.toFixed(1),
        Object.values(r[k].rxBps).map((b) => (b / 1e6).toFixed(2)).join(' / '), r[k].subflows, r[k].mptcp ? 'yes' : 'no',
      ]))),
    '',
    '</details>',
    '',
  ].join('\n');
  return { markdown, rows };
}
