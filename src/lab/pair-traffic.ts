// Transfers in flight across a router failover in the pair lab (README
// "Router pair"), watched while they run: shared by the pair tests and the
// pair benchmark, so both measure the same way. (New connections are timed
// with measure.ts's stream, as for an uplink failover.)

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabState } from './lab.js';
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
