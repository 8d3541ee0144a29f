// The short downloads of the aggregation benchmark, run in the lab's LAN
// host: one new HTTP connection every --every-ms (whatever the earlier ones
// are doing), each from the next of --sources in turn, counting the body
// bytes that arrive inside a measurement window.
//
//   http-load --url http://192.0.2.10:8090/ --every-ms 200 --sources a,b,c
//
// Protocol (bench/load-plan.ts): it prints `ready`, reads a LoadPlan from
// stdin, opens connections from startAt for durationMs, waits
// for the outstanding ones (at most --timeout-ms each) and prints one JSON
// line: LoadResult.

import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { monotonicMs } from '../src/lab/measure.js';
import { readLoadPlan } from './load-plan.js';

export interface LoadResult {
  started: number;
  completed: number;
  failed: number;
  errors: Record<string, number>;
  /** Body bytes received in all. */
  bytes: number;
  /** Body bytes that arrived between windowFrom and windowTo. */
  bytesInWindow: number;
  /** Median time of a completed download, ms. */
  medianMs: number;
}

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://192.0.2.10:8090/' },
    'every-ms': { type: 'string', default: '200' },
    'timeout-ms': { type: 'string', default: '5000' },
    sources: { type: 'string', default: '' },
  },
});
const everyMs = Number(values['every-ms']);
const timeoutMs = Number(values['timeout-ms']);
const sources = values.sources ? values.sources.split(',') : [undefined];

const plan = await readLoadPlan();

const result: LoadResult = { started: 0, completed: 0, failed: 0, errors: {}, bytes: 0, bytesInWindow: 0, medianMs: 0 };
const durations: number[] = [];

function download(source: string | undefined): Promise<void> {
  const began = monotonicMs();
  return new Promise<void>((resolve) => {
    const fail = (code: string) => {
      result.failed++;
      result.errors[code] = (result.errors[code] ?? 0) + 1;
      resolve();
    };
    const req = http.get(values.url!, { agent: false, localAddress: source }, (res) => {
      res.on('data', (chunk: Buffer) => {
        const now = monotonicMs();
        result.bytes += chunk.length;
        if (now >= plan.windowFrom && now < plan.windowTo) result.bytesInWindow += chunk.length;
      });
      res.on('end', () => {
        clearTimeout(timer);
        if (res.statusCode !== 200) return fail(`HTTP_${res.statusCode}`);
        result.completed++;
        durations.push(monotonicMs() - began);
        resolve();
      });
      res.on('error', (err: NodeJS.ErrnoException) => (clearTimeout(timer), fail(err.code ?? err.message)));
    });
    const timer = setTimeout(() => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => (clearTimeout(timer), fail(err.code ?? err.message)));
  });
}

const inFlight: Promise<void>[] = [];
for (let k = 0; ; k++) {
  const due = plan.startAt + k * everyMs;
  if (due >= plan.startAt + plan.durationMs) break;
  const wait = due - monotonicMs();
  if (wait > 0) await sleep(wait);
  result.started++;
  inFlight.push(download(sources[k % sources.length]));
}
await Promise.all(inFlight);
durations.sort((a, b) => a - b);
result.medianMs = durations.length ? Math.round(durations[Math.floor(durations.length / 2)]) : 0;
process.stdout.write(JSON.stringify(result) + '\n');
