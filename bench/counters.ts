// Interface byte counters read at given instants, run in a lab namespace
// (`ip netns exec` mounts that namespace's /sys, so /sys/class/net shows its
// interfaces). The aggregation benchmark runs one in the LAN host and one in
// the router and hands both the same instants, so every counter of a window
// is read at the same moment, within a millisecond, by a process that is
// already running (no `ip` start-up in between).
//
//   counters --ifaces eth0[,wan1,...]
//
// Protocol: it prints `ready`; then each stdin line {"at": ms} (on
// CLOCK_MONOTONIC, see src/lab/measure.ts) schedules one reading, printed as
// one JSON line {"at": ms it was read, "rx": {ifname: bytes}, "tx": {...}}.

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { monotonicMs } from '../src/lab/measure.js';

export interface CounterReading {
  at: number;
  rx: Record<string, number>;
  tx: Record<string, number>;
}

const { values } = parseArgs({ options: { ifaces: { type: 'string', default: 'eth0' } } });
const ifaces = values.ifaces!.split(',');
const counter = (ifname: string, what: 'rx' | 'tx') =>
  Number(readFileSync(`/sys/class/net/${ifname}/statistics/${what}_bytes`, 'utf8'));
// Fail at once on a wrong name, not at the first reading.
for (const i of ifaces) counter(i, 'rx');

function readAt(at: number): void {
  // A timer to just before the instant, then a short spin: timers fire up to a few ms late.
  const wait = at - monotonicMs() - 3;
  if (wait > 0) {
    setTimeout(() => readAt(at), wait);
    return;
  }
  while (monotonicMs() < at);
  const reading: CounterReading = { at: monotonicMs(), rx: {}, tx: {} };
  for (const i of ifaces) reading.rx[i] = counter(i, 'rx');
  for (const i of ifaces) reading.tx[i] = counter(i, 'tx');
  process.stdout.write(JSON.stringify(reading) + '\n');
}

createInterface({ input: process.stdin }).on('line', (line) => readAt((JSON.parse(line) as { at: number }).at));
process.stdout.write('ready\n');
