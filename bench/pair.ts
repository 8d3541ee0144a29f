// Router pair: what a router failover costs (README "Router pair"). In the
// pair lab (`lab up --pair`, keepalived + conntrackd, uplinkd on both
// routers with the same config, tbf at the ISPs so the links are the
// bottleneck), each trial powers the master off (`lab fail-router`) with
// transfers in flight over both uplinks and a stream of new connections
// from the LAN host, then reboots it (`lab heal-router`: it comes back as
// backup), so the next trial fails the other router.
//   new connections: from the power loss until every new connection works
//                    again (measure.ts failoverMs, as for an uplink failover)
//   transfers:       how many of those in flight completed with every byte
//                    intact (src/lab/transfers.ts checks each one)

import { startDaemon, type LabDaemon } from '../src/lab/lab-daemon.js';
import { labDown } from '../src/lab/lab.js';
import { failoverMs, percentile } from '../src/lab/measure.js';
import { labHealRouter, labUpPair, labVipHolder } from '../src/lab/pair.js';
import { failRouterUnderLoad, pinnedPairConfig } from '../src/lab/pair-traffic.js';
import { BENCH_START, describeMachine, interrupt, labName, machine, ms, pause, say, table, type PartResult, type SummaryRow } from './lib.js';

const TRIALS = Math.max(2, Number(process.env.BENCH_TRIALS ?? 12));
const CAPACITY = '20mbit';
const TRANSFERS = 8;
const TRANSFER_BYTES = 3_000_000;
/** The target for new connections after a router dies (the pair's tests assert 2 s). */
const TARGET_MS = 2000;

export interface PairTrial {
  trial: number;
  failed: 'r1' | 'r2';
  /** From the power loss until the first new connection opened after it was answered (measure.ts firstAnswerMs); null if none was. */
  firstAnswerMs: number | null;
  /** From the power loss until every new connection opened from then on succeeded (measure.ts failoverMs); null if the last failed. */
  allSucceedMs: number | null;
  /** Connections opened after the first answer that failed anyway, with when they were opened (ms after the power loss) and why. */
  laterFailures: string[];
  survived: number;
  inFlight: number;
  /** What ended the others. */
  errors: string[];
}

export interface PairData { capacity: string; transfers: number; transferBytes: number; trials: PairTrial[] }

export async function runPair(): Promise<PartResult<PairData>> {
  const m = machine();
  const started = Date.now();
  say(`pair: ${TRIALS} router failovers, ${TRANSFERS} transfers of ${TRANSFER_BYTES / 1e6} MB in flight over 2 × ${CAPACITY}`);
  const data: PairData = { capacity: CAPACITY, transfers: TRANSFERS, transferBytes: TRANSFER_BYTES, trials: [] };
  const lab = await labUpPair({ name: labName('bp'), uplinks: 2, capacities: [CAPACITY] });
  const daemons: LabDaemon[] = [];
  try {
    const sources = lab.lanSources.slice(0, TRANSFERS);
    for (const r of ['r1', 'r2'] as const) daemons.push(await startDaemon(lab, pinnedPairConfig(lab, r, sources), { ...BENCH_START, node: r }));
    for (let trial = 1; trial <= TRIALS; trial++) {
      interrupt.signal.throwIfAborted();
      const master = await labVipHolder(lab.name);
      if (master !== 'r1' && master !== 'r2') throw new Error(`trial ${trial}: no single master (${master})`);
      const { transfers: ended, samples, faultAt, firstAnswer, after } = await failRouterUnderLoad(lab, master, { count: TRANSFERS, bytes: TRANSFER_BYTES, sources });
      const later = after.filter((s) => !s.ok);
      const result: PairTrial = {
        trial, failed: master, firstAnswerMs: firstAnswer ?? null, allSucceedMs: failoverMs(samples, faultAt) ?? null,
        laterFailures: later.map((s) => `${Math.round(s.start - faultAt)} ms ${s.error}`),
        survived: ended.filter((t) => t.intact).length, inFlight: ended.length,
        errors: ended.filter((t) => !t.intact).map((t) => t.error ?? 'corrupt'),
      };
      data.trials.push(result);
      say(`  ${trial}/${TRIALS}: ${master} died; first new connection answered after ${result.firstAnswerMs === null ? 'never' : ms(result.firstAnswerMs)}, ` +
        `every one from ${result.allSucceedMs === null ? 'never' : ms(result.allSucceedMs)} on` +
        `${later.length ? ` (${later.length} of ${after.length} after the first answer failed: ${result.laterFailures.join(', ')})` : ''}, ` +
        `${result.survived}/${result.inFlight} transfers intact${result.errors.length ? ` (${result.errors.join(', ')})` : ''}`);
      const healed = await labHealRouter(lab.name, master);
      if (healed.daemon) daemons.push(healed.daemon);
      // Let the rebooted backup's conntrackd take its bulk copy of the master's table.
      await pause(1000);
    }
  } finally {
    for (const d of daemons) await d.stop().catch(() => {});
    await labDown(lab.name);
  }
  return { part: 'pair', machine: m, durationS: (Date.now() - started) / 1000, data };
}

export function renderPair(result: PartResult<PairData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const figures = (pick: (t: PairTrial) => number | null) => {
    const values = data.trials.flatMap((t) => (pick(t) === null ? [] : [pick(t)!]));
    const never = data.trials.length - values.length;
    const [p50, p95] = values.length ? [percentile(values, 50), percentile(values, 95)] : [NaN, NaN];
    return { text: `${ms(p50)} / ${ms(p95)}${never ? ` (${never} never)` : ''}`, met: never === 0 && p95 < TARGET_MS };
  };
  const first = figures((t) => t.firstAnswerMs);
  const all = figures((t) => t.allSucceedMs);
  const survived = data.trials.reduce((a, t) => a + t.survived, 0);
  const inFlight = data.trials.reduce((a, t) => a + t.inFlight, 0);
  const rows: SummaryRow[] = [
    { measurement: `router pair: the master dies, first new connection answered through the new master, p50 / p95 of ${data.trials.length}`,
      value: first.text, target: `< ${TARGET_MS} ms`, met: first.met },
    { measurement: 'router pair: transfers in flight that completed intact through the new master', value: `${survived} of ${inFlight}`, target: 'all', met: survived === inFlight },
  ];
  const markdown = [
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.`,
    '',
    `**Method.** \`lab up --pair\` with 2 uplinks of ${data.capacity} each (tbf at the ISPs, both directions): two routers on one LAN`,
    'switch and one segment per uplink, keepalived (VRRPv3, 0.1 s adverts, nopreempt) moving the LAN gateway and each',
    'uplink\'s `address`, conntrackd FTFW over a sync link with the commit-on-master notify script (examples/pair/), and',
    'uplinkd on both routers with the same config. In each trial the LAN host runs',
    `${data.transfers} downloads of ${data.transferBytes / 1e6} MB, pinned half to each uplink, every byte checked (src/lab/transfers.ts), and opens a new`,
    'connection every 20 ms (each given 1 s); once every download has 300 kB, the master loses power (`lab fail-router`:',
    'its links down, every process in it killed). **First answer**: from the power loss until the first new connection',
    'opened after it is answered (measure.ts firstAnswerMs). **Every one from**: until every new connection opened from then',
    'on succeeded (measure.ts failoverMs); a single SYN dropped later in the ISP queues the downloads keep full moves this one',
    'by seconds, which is why it is not the headline. **Transfers**: those in flight that completed intact. Then the dead',
    'router reboots (`lab heal-router`) and comes back as backup, so the next trial fails the other router.',
    `p50 and p95 by nearest rank over ${data.trials.length} trials: first answer ${first.text}, every one from ${all.text}.`,
    '',
    table(['trial', 'router that died', 'first answer', 'every one from', 'failed after the first answer', 'transfers intact', 'ended by'],
      data.trials.map((t) => [t.trial, t.failed, t.firstAnswerMs === null ? 'never' : ms(t.firstAnswerMs), t.allSucceedMs === null ? 'never' : ms(t.allSucceedMs),
        t.laterFailures.join(', ') || '—', `${t.survived} / ${t.inFlight}`, t.errors.join(', ') || '—'])),
    '',
  ].join('\n');
  return { markdown, rows };
}
