// Self-healing: how long new LAN connections fail after another program
// removes or changes what uplinkd owns (README "Self-healing").
//  1. restore time per kind of wipe (src/lab/wipe.ts: `nft flush ruleset`, a
//     Debian-style firewall reload, every owned rule deleted, every owned
//     table flushed, one map element deleted), TRIALS each, kinds interleaved,
//     on a 3-uplink lab with `uplinkd run`: a new connection every 10 ms from
//     the LAN (half of them pinned to isp3), the wipe at a random moment,
//     restore = wipe until every new connection is good again (answered, and
//     a pinned one from isp3's address). Trials are spaced beyond the
//     back-off's quiet spell, so each restore is a first one.
//  2. a program deleting the table every 100 ms for 5 s: restores made, the
//     daemon's CPU (its own and its reaped children's), and the time from the
//     last delete until new connections are good again.

import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon } from '../src/lab/lab-daemon.js';
import { percentile, startStream, failoverMs } from '../src/lab/measure.js';
import { cpuSeconds, deleteTableLoop, pinnedSourceRule, STREAM_TIMEOUT_MS, timeRestore, WIPE_DESCRIPTIONS, WIPES, type WipeKind } from '../src/lab/wipe.js';
import { RestoreBackoff } from '../src/kernel/converge.js';
import {
  BENCH_START, describeMachine, interrupt, labName, machine, ms, say, stopDaemon, table, withLab, writeBenchConfig,
  type PartResult, type SummaryRow,
} from './lib.js';

const TRIALS = Math.max(1, Number(process.env.BENCH_TRIALS ?? 20));
/** The p95 target from the issue; the aim is 200 ms. */
const TARGET_P95_MS = 1000;

export interface WipeTrial {
  kind: WipeKind;
  restoreMs: number | null;
  opened: number;
  failed: number;
  seenAfter: string[];
}

export interface LoopRun {
  seconds: number;
  restores: number;
  cpuShare: number;
  backAfterMs: number | null;
}

export interface SelfHealData {
  trials: WipeTrial[];
  loop: LoopRun[];
}

export async function runSelfHeal(): Promise<PartResult<SelfHealData>> {
  const m = machine();
  const started = Date.now();
  const data: SelfHealData = { trials: [], loop: [] };
  await withLab({ name: labName('sh'), uplinks: 3 }, async (lab) => {
    const d = await startDaemon(lab, writeBenchConfig(lab, { top: pinnedSourceRule(lab) }, 'selfheal.yaml'), BENCH_START);
    try {
      const order = Array.from({ length: TRIALS }, () => [...WIPES]).flat();
      for (const [i, kind] of order.entries()) {
        interrupt.signal.throwIfAborted();
        const t = await timeRestore(lab, kind, interrupt.signal);
        data.trials.push({ kind, restoreMs: t.restoreMs ?? null, opened: t.opened, failed: t.failed, seenAfter: t.seenAfter });
        say(`  ${String(i + 1).padStart(3)}/${order.length} ${kind.padEnd(16)} ${t.restoreMs === undefined ? 'never' : ms(t.restoreMs)}, ${t.failed}/${t.opened} bad`);
        // Beyond the back-off's quiet spell, so the next restore is a first one too.
        await sleep(RestoreBackoff.QUIET_MS + 200, undefined, { signal: interrupt.signal });
      }
      for (let r = 0; r < 3; r++) {
        interrupt.signal.throwIfAborted();
        const stream = startStream({ ns: lab.ns.lan, url: `http://${lab.server}:${lab.whoamiPort}/`, everyMs: 10, timeoutMs: STREAM_TIMEOUT_MS, durationMs: 30_000 });
        try {
          await stream.started;
          const before = (await d.status())?.self_healing?.restores ?? 0;
          const cpuBefore = cpuSeconds(d.pid);
          const { startedAt, lastDeleteAt } = await deleteTableLoop(lab, 100, 5000);
          const seconds = (lastDeleteAt - startedAt) / 1000 + 0.1;
          const cpu = cpuSeconds(d.pid) - cpuBefore;
          const restores = ((await d.status())?.self_healing?.restores ?? 0) - before;
          await sleep(2000, undefined, { signal: interrupt.signal });
          const back = failoverMs(await stream.stop(), lastDeleteAt);
          data.loop.push({ seconds, restores, cpuShare: cpu / seconds, backAfterMs: back ?? null });
          say(`  delete loop ${r + 1}/3: ${restores} restores in ${seconds.toFixed(1)} s, CPU ${(cpu / seconds * 100).toFixed(1)}%, back ${back === undefined ? 'never' : ms(back)} after the last delete`);
        } finally {
          await stream.stop().catch(() => {});
        }
        await sleep(RestoreBackoff.QUIET_MS + 200, undefined, { signal: interrupt.signal });
      }
    } finally {
      await stopDaemon(lab, d);
    }
  });
  return { part: 'selfheal', machine: m, durationS: (Date.now() - started) / 1000, data };
}

export function renderSelfHeal(result: PartResult<SelfHealData>): { markdown: string; rows: SummaryRow[] } {
  const { trials, loop } = result.data;
  const rows: SummaryRow[] = [];
  const lines: (string | number)[][] = [];
  for (const kind of WIPES) {
    const of = trials.filter((t) => t.kind === kind);
    const times = of.flatMap((t) => (t.restoreMs === null ? [] : [t.restoreMs]));
    const never = of.length - times.length;
    const harmless = of.filter((t) => t.failed === 0).length;
    const p95 = times.length ? percentile(times, 95) : undefined;
    lines.push([WIPE_DESCRIPTIONS[kind], of.length, times.length ? ms(percentile(times, 50)) : '—', p95 === undefined ? '—' : ms(p95),
      times.length ? ms(Math.max(...times)) : '—', never, harmless]);
    rows.push({
      measurement: `restore after ${WIPE_DESCRIPTIONS[kind]}, p50 / p95 of ${of.length}`,
      value: p95 === undefined ? 'not measured' : `${ms(percentile(times, 50))} / ${ms(p95)}`,
      target: `p95 ≤ ${TARGET_P95_MS} ms`,
      met: p95 === undefined ? undefined : never === 0 && p95 <= TARGET_P95_MS,
    });
  }
  const loopRows = loop.map((l, i) => [i + 1, l.seconds.toFixed(1), l.restores, `${(l.cpuShare * 100).toFixed(1)}%`, l.backAfterMs === null ? 'never' : ms(l.backAfterMs)]);
  if (loop.length) {
    const worstBack = Math.max(...loop.map((l) => l.backAfterMs ?? Infinity));
    rows.push({
      measurement: 'table deleted every 100 ms for 5 s: restores, daemon CPU, back after the last delete (worst of runs)',
      value: `${Math.max(...loop.map((l) => l.restores))}, ${(Math.max(...loop.map((l) => l.cpuShare)) * 100).toFixed(0)}%, ${ms(worstBack)}`,
      target: '≤ 1000 ms', met: worstBack <= 1000,
    });
  }
  const markdown = [
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s. A 3-uplink lab with \`uplinkd run\``,
    `(default probes). A new connection from the LAN host every 10 ms (${STREAM_TIMEOUT_MS} ms timeout, shorter than TCP's first SYN retry),`,
    'alternately from the host\'s own address and from a source pinned to isp3. The wipe is done at a random moment 200–500 ms',
    'into the stream; restore time = from the wipe until the first moment after which every new connection is good: answered,',
    'and, when pinned, answered from isp3\'s address (with the uplink tables flushed, connections still work, but all through',
    'the main table\'s default route). Trials of all kinds interleaved, spaced beyond the back-off\'s quiet spell so that each',
    `restore is a first one. p95 is by nearest rank over ${TRIALS} trials per kind. "harmless" counts trials in which no`,
    'connection went bad (the restore beat every connection).',
    '',
    table(['wipe', 'trials', 'p50', 'p95', 'max', 'never restored', 'harmless'], lines),
    '',
    'A program deleting the table every 100 ms for 5 s: restores made during the loop, the daemon\'s CPU over the loop (its own',
    'and that of the nft/ip children it reaped, as a share of one core), and the time from the last delete until every new',
    'connection is good again.',
    '',
    table(['run', 'loop s', 'restores', 'CPU', 'back after last delete'], loopRows),
    '',
  ].join('\n');
  return { markdown, rows };
}
