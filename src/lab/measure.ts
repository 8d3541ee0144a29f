// Measuring failover and failback the way a user experiences them: by the
// fate of NEW connections. A stream of connections is opened from the LAN
// host at a fixed rate (client.ts `stream`); each reports when it started,
// on the monotonic clock every process on the machine shares, and whether it
// got through and via which uplink address. The times below are then plain
// arithmetic on those samples, with the fault and the heal stamped on the
// same clock by whoever caused them.

import { spawn } from 'node:child_process';
import { labProgram } from './run.js';

/** One finished request of the stream, as client.ts `stream` prints it (one JSON line each). */
export interface StreamSample {
  /** When the connection was started: monotonicMs() in the client's process. */
  start: number;
  /** When it was answered, or failed: monotonicMs() in the client's process. */
  end: number;
  ok: boolean;
  /** The source address the server saw (the uplink's NAT address), or null on failure. */
  seen: string | null;
  /** ECONNREFUSED, ETIMEDOUT, HTTP_503, ... or null on success. */
  error: string | null;
  /** The local address it was bound to, when the stream was given sources. */
  source?: string;
}

/**
 * Milliseconds on CLOCK_MONOTONIC (what process.hrtime reads), at µs
 * resolution. Unlike Date.now() it never steps, and it is the same clock in
 * every process and network namespace, so a sample stamped in the LAN host
 * and a fault stamped here can be subtracted.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/**
 * The failover time: from the fault until the first moment after which every
 * new connection succeeds. That is the start of the earliest sample (at or
 * after faultAt, and before `until`) such that it and every sample started
 * after it succeeded, minus faultAt. Undefined if there is no such sample, i.e.
 * the last connection still failed (or none was started after the fault).
 * `until` (e.g. the heal) bounds the window, so what happens later cannot
 * change the figure. `good` says what succeeding means (default: answered).
 */
export function failoverMs(
  samples: readonly StreamSample[], faultAt: number, until = Infinity, good: (s: StreamSample) => boolean = (s) => s.ok,
): number | undefined {
  const window = samples.filter((s) => s.start >= faultAt && s.start < until).sort((a, b) => a.start - b.start);
  let earliest: number | undefined;
  for (let i = window.length - 1; i >= 0 && good(window[i]); i--) earliest = window[i].start;
  return earliest === undefined ? undefined : earliest - faultAt;
}

/**
 * From the fault until the first new connection opened after it is
 * answered: the end of the earliest-ending successful sample started at or
 * after faultAt, minus faultAt. Unlike failoverMs, one later failure (a SYN
 * dropped in a queue that transfers keep full) does not move it. Undefined
 * if none was answered.
 */
export function firstAnswerMs(samples: readonly StreamSample[], faultAt: number): number | undefined {
  const ends = samples.filter((s) => s.start >= faultAt && s.ok).map((s) => s.end);
  return ends.length === 0 ? undefined : Math.min(...ends) - faultAt;
}

/**
 * The failback time: from the heal until new connections use the healed
 * uplink again, i.e. the start of the first successful sample after healAt
 * that the server saw from `address`, minus healAt. Undefined if none did.
 */
export function failbackMs(samples: readonly StreamSample[], healAt: number, address: string): number | undefined {
  const starts = samples.filter((s) => s.start >= healAt && s.ok && s.seen === address).map((s) => s.start);
  return starts.length === 0 ? undefined : Math.min(...starts) - healAt;
}

/**
 * The p-th percentile (0..100) by nearest rank: the smallest value with at
 * least p% of the values at or below it. Always a value that was measured
 * (no interpolation); with few trials, p95 is simply the maximum.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new Error('percentile of no values');
  if (!(p >= 0 && p <= 100)) throw new Error(`percentile ${p} is not within 0..100`);
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

// ------------------------------------------------------------ the stream in the lab

export interface StreamOptions {
  /** The namespace to run in: the lab's LAN host (LabState.ns.lan). */
  ns: string;
  url: string;
  /** A new connection this often. Default 10 ms. */
  everyMs?: number;
  /** It stops by itself after this long, unless stopped earlier. Default 60 s. */
  durationMs?: number;
  /** A connection that has not been answered by then counts as failed. Default 1000 ms. */
  timeoutMs?: number;
  /** Local addresses to bind the connections to, in turn. Default: unbound. */
  sources?: string[];
}

export interface RunningStream {
  /** The samples so far, in the order the requests finished. */
  readonly samples: StreamSample[];
  /** Resolves once the stream has opened and finished its first connection (so a fault can be timed against it). */
  started: Promise<void>;
  /** Stops opening connections, waits for the outstanding ones to finish; resolves with every sample. */
  stop(): Promise<StreamSample[]>;
}

/**
 * Runs client.ts `stream` in a lab namespace in the background and collects
 * its samples as they come. The client stops on SIGTERM after finishing what
 * is in flight, so stop() loses nothing.
 */
export function startStream(opts: StreamOptions): RunningStream {
  const args = [
    'stream', '--url', opts.url, '--every-ms', String(opts.everyMs ?? 10),
    '--duration-ms', String(opts.durationMs ?? 60_000), '--timeout-ms', String(opts.timeoutMs ?? 1000),
    ...(opts.sources?.length ? ['--sources', opts.sources.join(',')] : []),
  ];
  // `ip netns exec` execs the program, so the child's pid is the client itself and gets our signals.
  const child = spawn('ip', ['netns', 'exec', opts.ns, ...labProgram('client'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const samples: StreamSample[] = [];
  let pending = '';
  let stderr = '';
  let markStarted: () => void = () => {};
  let failStart: (err: Error) => void = () => {};
  const started = new Promise<void>((resolve, reject) => ((markStarted = resolve), (failStart = reject)));
  started.catch(() => {}); // reported through stop() as well; never unhandled

  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) samples.push(JSON.parse(line) as StreamSample);
    if (samples.length > 0) markStarted();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const error = code === 0 ? undefined : new Error(`stream client in ${opts.ns} exited ${code ?? signal}: ${stderr.trim()}`);
      if (error) failStart(error);
      else markStarted();
      if (error) reject(error);
      else resolve();
    });
  });
  exited.catch(() => {});

  return {
    samples,
    started,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      return samples;
    },
  };
}
