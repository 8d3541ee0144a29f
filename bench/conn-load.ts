// The load of the connection-rate benchmark (bench/connections.ts), run in
// the lab's LAN host: --concurrency connections at a time, each a new TCP
// connection to bench/conn-server.ts (connect, read its `ok`, see it close),
// the next started as soon as one ends, from --sources in turn. It counts the
// connections that completed inside a measurement window.
//
//   conn-load --host 192.0.2.10 --port 8091 --concurrency 64 --sources a,b,c
//
// Protocol (bench/load-plan.ts): it prints `ready`, reads a LoadPlan from
// stdin, runs from startAt for durationMs, waits for the
// outstanding connections (at most --timeout-ms each) and prints one JSON
// line: ConnLoadResult.

import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { monotonicMs } from '../src/lab/measure.js';
import { readLoadPlan } from './load-plan.js';

export interface ConnLoadResult {
  started: number;
  completed: number;
  /** Completed (answer read, closed by the server) between windowFrom and windowTo. */
  completedInWindow: number;
  failed: number;
  errors: Record<string, number>;
  /** Connect → answer read, ms, of the connections completed in the window: median and 99th percentile (nearest rank). */
  p50Ms: number;
  p99Ms: number;
}

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '192.0.2.10' },
    port: { type: 'string', default: '8091' },
    concurrency: { type: 'string', default: '64' },
    'timeout-ms': { type: 'string', default: '3000' },
    sources: { type: 'string', default: '' },
  },
});
const host = values.host!;
const port = Number(values.port);
const concurrency = Math.max(1, Number(values.concurrency));
const timeoutMs = Number(values['timeout-ms']);
const sources = values.sources ? values.sources.split(',') : [undefined];

const plan = await readLoadPlan();

const result: ConnLoadResult = { started: 0, completed: 0, completedInWindow: 0, failed: 0, errors: {}, p50Ms: 0, p99Ms: 0 };
const durations: number[] = [];

function connection(source: string | undefined): Promise<void> {
  const began = monotonicMs();
  result.started++;
  return new Promise<void>((resolve) => {
    let answered = false;
    let done = false;
    const finish = (code?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (code) {
        result.failed++;
        result.errors[code] = (result.errors[code] ?? 0) + 1;
      } else {
        const now = monotonicMs();
        result.completed++;
        if (now >= plan.windowFrom && now < plan.windowTo) {
          result.completedInWindow++;
          durations.push(now - began);
        }
      }
      resolve();
    };
    const socket = net.connect({ host, port, localAddress: source });
    socket.on('data', (d: Buffer) => (answered ||= d.toString().startsWith('ok')));
    socket.on('end', () => finish(answered ? undefined : 'NO_ANSWER'));
    socket.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
    socket.on('close', () => finish(answered ? undefined : 'CLOSED'));
    const timer = setTimeout(() => finish('ETIMEDOUT'), timeoutMs);
  });
}

const wait = plan.startAt - monotonicMs();
if (wait > 0) await sleep(wait);
const stopAt = plan.startAt + plan.durationMs;
let next = 0;
async function worker(): Promise<void> {
  while (monotonicMs() < stopAt) await connection(sources[next++ % sources.length]);
}
await Promise.all(Array.from({ length: concurrency }, worker));
durations.sort((a, b) => a - b);
const rank = (p: number) => durations[Math.max(0, Math.ceil((p / 100) * durations.length) - 1)] ?? 0;
result.p50Ms = Math.round(rank(50) * 10) / 10;
result.p99Ms = Math.round(rank(99) * 10) / 10;
process.stdout.write(JSON.stringify(result) + '\n');
