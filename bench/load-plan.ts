// The start handshake of the benchmarks' load generators (bench/conn-load.ts,
// bench/http-load.ts): the generator prints `ready`, then reads one JSON line,
// a LoadPlan, from stdin. Its times are on CLOCK_MONOTONIC, the clock every
// process shares (src/lab/measure.ts), so the controller can place the window
// in the generator's own time.

import { createInterface } from 'node:readline';

export interface LoadPlan {
  /** When to start opening connections. */
  startAt: number;
  /** How long to keep opening them. */
  durationMs: number;
  /** The measurement window: only what completes between these counts. */
  windowFrom: number;
  windowTo: number;
}

/** The generator's side: says `ready`, then waits for the plan. */
export async function readLoadPlan(): Promise<LoadPlan> {
  process.stdout.write('ready\n');
  const lines = createInterface({ input: process.stdin });
  const first: string = await new Promise((resolve) => lines.once('line', resolve));
  lines.close();
  return JSON.parse(first) as LoadPlan;
}
