// A router failover under load in the pair lab (README "Router pair"):
// transfers in flight, watched while they run, and a stream of new
// connections (measure.ts, as for an uplink failover) across a router's power
// loss. Shared by the pair tests and the pair benchmark, so both measure the
// same way.

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabState } from './lab.js';
import { firstAnswerMs, monotonicMs, startStream, type StreamSample } from './measure.js';
import { findRouter, labFailRouter } from './pair.js';
import type { PairRouterName } from './topology.js';
import { labProgram } from './run.js';
import { INTERNET } from './topology.js';
import type { TransferResult, TransfersProgress } from './transfers.js';

export type { TransferResult } from './transfers.js';

/** The transfers server in the lab's internet (lab.ts startServers). */
const TRANSFERS_PORT = INTERNET.transfersPort;

export interface RunningTransfers {
  /** Bytes each transfer has received so far (the client's last report, every 100 ms). */
  progress(): number[];
  /** Every transfer's end. */
  done: Promise<TransferResult[]>;
}

/**
 * Starts `count` downloads of `bytes` each from the LAN host, bound in turn
 * to `sources`, every byte checked (transfers.ts); one that receives nothing
 * for `timeoutMs` ends as ETIMEDOUT.
 */
export function startTransfers(lab: LabState, count: number, bytes: number, sources: string[], timeoutMs = 60_000): RunningTransfers {
  const child = spawn('ip', ['netns', 'exec', lab.ns.lan, ...labProgram('transfers'), 'get',
    '--url', `http://${lab.server}:${TRANSFERS_PORT}/`, '--bytes', String(bytes), '--count', String(count),
    '--sources', sources.join(','), '--progress-ms', '100', '--timeout-ms', String(timeoutMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let latest = Array<number>(count).fill(0);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const done = new Promise<TransferResult[]>((resolve, reject) => {
    let result: TransferResult[] | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const message = JSON.parse(line) as Partial<TransfersProgress> & { transfers?: TransferResult[] };
      if (message.progress) latest = message.progress;
      if (message.transfers) result = message.transfers;
    });
    child.on('error', reject);
    child.on('close', (code) => (result ? resolve(result) : reject(new Error(`transfers exited ${code}: ${stderr}`))));
  });
  return { progress: () => latest, done };
}

/** Resolves once every transfer has received at least `bytes` (they are under way), or rejects after `withinMs`. */
export async function waitUnderWay(transfers: RunningTransfers, bytes: number, withinMs = 10_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!transfers.progress().every((b) => b >= bytes)) {
    if (Date.now() > deadline) throw new Error(`transfers not under way within ${withinMs} ms: ${transfers.progress().join(', ')} bytes`);
    await sleep(20);
  }
}

/**
 * The lab's config for `router` with `sources` pinned in turn to isp1, isp2,
 * … (rules transfer-1..N), so transfers from them use every uplink whatever
 * the balancing draws; written beside it as <config>-pinned.yaml. The same
 * rules on both routers, as a pair needs.
 */
export function pinnedPairConfig(lab: LabState, router: PairRouterName, sources: string[]): string {
  const path = findRouter(lab, router).configPath;
  const rules = sources.map((s, i) => `  - {name: transfer-${i + 1}, src: ${s}, via: isp${(i % lab.uplinks.length) + 1}}`).join('\n');
  const pinned = path.replace(/\.yaml$/, '-pinned.yaml');
  writeFileSync(pinned, `${readFileSync(path, 'utf8')}rules:\n${rules}\n`);
  return pinned;
}

export interface RouterFailure {
  transfers: TransferResult[];
  /** Bytes each transfer had when the router lost power. */
  progressAtFail: number[];
  /** The new connections, on the monotonic clock, and the power loss on it. */
  samples: StreamSample[];
  faultAt: number;
  /** From the power loss until the first new connection opened after it was answered (measure.ts firstAnswerMs). */
  firstAnswer?: number;
  /** The new connections opened from that first answer on. */
  after: StreamSample[];
}

/**
 * Powers `router` off (labFailRouter) once `count` transfers of `bytes` from
 * `sources` all have a tenth of their bytes, while the LAN host opens a new
 * connection every 20 ms (each given 1 s); resolves once every transfer has
 * ended and the stream has run 1 s longer. `beforeFail` and `afterFail` run
 * just before the power loss and just after it.
 */
export async function failRouterUnderLoad(lab: LabState, router: PairRouterName, opts: {
  count: number; bytes: number; sources: string[]; idleMs?: number; beforeFail?: () => void; afterFail?: () => Promise<void>;
}): Promise<RouterFailure> {
  const transfers = startTransfers(lab, opts.count, opts.bytes, opts.sources, opts.idleMs);
  await waitUnderWay(transfers, opts.bytes / 10);
  const progressAtFail = transfers.progress();
  const stream = startStream({ ns: lab.ns.lan, url: `http://${lab.server}:${lab.whoamiPort}/`, everyMs: 20, timeoutMs: 1000, durationMs: 20_000 });
  await stream.started;
  opts.beforeFail?.();
  const { downAt } = await labFailRouter(lab.name, router);
  // labFailRouter stamps Date.now(); the stream's samples are on the monotonic clock.
  const faultAt = monotonicMs() - (Date.now() - downAt);
  await opts.afterFail?.();
  const ended = await transfers.done;
  await sleep(1000);
  const samples = await stream.stop();
  const firstAnswer = firstAnswerMs(samples, faultAt);
  return {
    transfers: ended, progressAtFail, samples, faultAt, firstAnswer,
    after: firstAnswer === undefined ? [] : samples.filter((s) => s.start >= faultAt + firstAnswer),
  };
}
