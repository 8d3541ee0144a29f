// icmp: one long-running fping per uplink, in loop mode, all targets in one
// process, bound to the uplink's device (-I) and address (-S). Its output,
// one line per target and probe (fping 5.x, without -q/-Q/-D):
//
//   192.0.2.10 : [7], 64 bytes, 0.052 ms (0.061 avg, 0% loss)
//   192.0.2.11 : [7], timed out (NaN avg, 100% loss)
//
// The target is padded to the longest target's width; [N] is fping's probe
// index, from 0. fping prints `timed out` itself, exactly timeout ms after
// sending, and drops a reply that comes later than that. It prints nothing at
// all for a probe it could not send (sendto failing while the address is
// gone), so a round also ends by the scheduler's deadline.
//
// Rounds and fping's [N]: fping is started as round `base` opens, and it
// keeps the same period on its own clock, so its probe N belongs to round
// base + N. A wall-clock step moves fping's clock (Linux fping schedules on
// CLOCK_REALTIME) but not ours: forward, fping runs ahead and reports rounds
// that have not begun; backward, it falls silent. Either way it is restarted,
// in step with the next round.
//
// Lifetime: fping is a plain child with its stdout on a pipe to us. stop()
// kills it (SIGTERM, then SIGKILL); a daemon exiting through process.exit or
// an uncaught exception kills it from an 'exit' hook; a daemon killed outright
// (SIGKILL) leaves it to die of SIGPIPE on its next line, at most one
// interval (or one timeout) later, since fping prints for every probe.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Check } from '../config/types.js';
import { ROUND_SLACK_MS } from './scheduler.js';
import type { ProbeDriver, ProbeSubject, Report, TargetResult } from './types.js';

const FIRST_RESTART_DELAY_MS = 250;
const MAX_RESTART_DELAY_MS = 5000;
/** How long a SIGTERMed fping gets before SIGKILL. */
const KILL_GRACE_MS = 1000;

const FPING_LINE = /^(\S+)\s+: \[(\d+)\], (?:\d+ bytes, ([0-9.eE+-]+) ms|(timed out))/;

/** One per-probe line of fping's output, or undefined for anything else. */
export function parseFpingLine(line: string): { seq: number; result: TargetResult } | undefined {
  const m = FPING_LINE.exec(line);
  if (!m) return undefined;
  const [, target, seq, latency, timedOut] = m;
  if (timedOut) return { seq: Number(seq), result: { target, ok: false, error: 'timeout' } };
  const latencyMs = Number(latency);
  if (!Number.isFinite(latencyMs)) return undefined;
  return { seq: Number(seq), result: { target, ok: true, latencyMs } };
}

export function fpingArgs(subject: ProbeSubject, check: Check, targets: string[]): string[] {
  return [
    '--loop',
    `--period=${check.intervalMs}`,
    `--timeout=${check.timeoutMs}`,
    // 1 ms between the probes of one round rather than the default 10, so
    // that a round's last target is not sent long after its first.
    '--interval=1',
    `--iface=${subject.device}`,
    `--src=${subject.address}`,
    ...targets,
  ];
}

export type SpawnFping = (args: string[]) => ChildProcess;

const spawnFping: SpawnFping = (args) => spawn('fping', args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** One fping process and what is known about it. */
interface FpingRun {
  child: ChildProcess;
  uplink: string;
  /** The round its probe [0] belongs to. */
  base: number;
  /** device, address and targets it was started with. */
  key: string;
  targets: string[];
  lastOutputAt: number;
  /** It reported a round that has not begun: its clock jumped ahead of ours. */
  ahead: boolean;
  /** Replaced or stopped on purpose: its end is no failure. */
  retired: boolean;
  /** The end of what it wrote to stderr, for the message when it exits. */
  stderr: string;
  ended: Promise<void>;
}

export class FpingDriver implements ProbeDriver {
  private current?: FpingRun;
  /** The current run and retired ones that have not exited yet. */
  private readonly alive = new Set<FpingRun>();
  /** Why no fping runs, as the error of the rounds meanwhile. */
  private downReason = 'fping is not running';
  private restartAt = 0;
  private restartDelayMs = FIRST_RESTART_DELAY_MS;
  private stopped = false;
  private lastOpenedSeq = -1;

  constructor(
    private readonly check: Check,
    private readonly report: Report,
    private readonly log: (msg: string) => void,
    private readonly spawnProcess: SpawnFping = spawnFping,
  ) {}

  roundOpened(seq: number, targets: string[], subject: ProbeSubject): void {
    this.lastOpenedSeq = seq;
    const now = performance.now();
    const key = JSON.stringify([subject.device, subject.address, targets]);
    const run = this.current;
    if (run && run.key !== key) {
      this.retire(run);
      this.restartAt = 0;
      this.restartDelayMs = FIRST_RESTART_DELAY_MS;
    } else if (run?.ahead) {
      this.log(`${subject.uplink}: fping reported probes ahead of their rounds (a clock step?); restarting it`);
      this.retire(run);
      this.restartAt = 0;
    } else if (run && now - run.lastOutputAt > this.silenceLimitMs()) {
      this.retire(run);
      this.failed(subject.uplink, `fping printed nothing for ${Math.round(now - run.lastOutputAt)} ms`);
    }
    if (!this.current && targets.length > 0 && now >= this.restartAt) this.start(seq, key, targets, subject);
    if (!this.current) {
      for (const target of targets) this.report(seq, { target, ok: false, error: this.downReason });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const runs = [...this.alive];
    for (const run of runs) this.retire(run);
    await Promise.all(runs.map((run) => run.ended));
  }

  /**
   * A healthy fping prints a line per target every interval (a reply or
   * `timed out`); one that has said nothing for a whole timeout and two
   * periods is stuck: failing to send, or waiting out a clock stepped back.
   */
  private silenceLimitMs(): number {
    return this.check.timeoutMs + 2 * this.check.intervalMs + ROUND_SLACK_MS;
  }

  private start(base: number, key: string, targets: string[], subject: ProbeSubject): void {
    const child = this.spawnProcess(fpingArgs(subject, this.check, targets));
    let markEnded!: () => void;
    const run: FpingRun = {
      child, uplink: subject.uplink, base, key, targets, lastOutputAt: performance.now(), ahead: false, retired: false, stderr: '',
      ended: new Promise((resolve) => (markEnded = resolve)),
    };
    this.current = run;
    this.alive.add(run);
    killOnExit.add(child);
    createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(run, line));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      run.stderr = (run.stderr + chunk).slice(-1000);
    });
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      killOnExit.delete(child);
      this.alive.delete(run);
      markEnded();
      this.onEnd(run, why);
    };
    // 'close' rather than 'exit': by then its stderr has been read to the end.
    child.once('close', (code, signal) => {
      const said = lastLine(run.stderr);
      end(`fping exited with ${code ?? signal}${said ? `: ${said}` : ''}`);
    });
    child.once('error', (err) => end(`could not run fping: ${err.message}`));
  }

  private onLine(run: FpingRun, line: string): void {
    const parsed = parseFpingLine(line);
    if (!parsed) return;
    run.lastOutputAt = performance.now();
    if (run === this.current) this.restartDelayMs = FIRST_RESTART_DELAY_MS; // it works
    // 'late' needs no action: the round was closed as lost, which it was.
    if (this.report(run.base + parsed.seq, parsed.result) === 'early' && !run.retired) run.ahead = true;
  }

  private onEnd(run: FpingRun, why: string): void {
    if (run.retired || this.stopped) return;
    if (this.current === run) this.current = undefined;
    this.failed(run.uplink, why);
    // Its rounds still open will get no more lines: close them now, with the reason.
    const overlap = Math.ceil((this.check.timeoutMs + ROUND_SLACK_MS) / this.check.intervalMs);
    for (let seq = Math.max(run.base, this.lastOpenedSeq - overlap); seq <= this.lastOpenedSeq; seq++) {
      for (const target of run.targets) this.report(seq, { target, ok: false, error: why });
    }
  }

  /** No fping now: rounds fail with `why` until it is started again, after a growing delay. */
  private failed(uplink: string, why: string): void {
    this.downReason = why;
    this.restartAt = performance.now() + this.restartDelayMs;
    this.log(`${uplink}: ${why}; starting it again in ${this.restartDelayMs} ms`);
    this.restartDelayMs = Math.min(2 * this.restartDelayMs, MAX_RESTART_DELAY_MS);
  }

  /** Stops a run on purpose: SIGTERM, and SIGKILL if it lingers. */
  private retire(run: FpingRun): void {
    if (this.current === run) this.current = undefined;
    if (run.retired) return;
    run.retired = true;
    run.child.kill('SIGTERM');
    const killer = setTimeout(() => run.child.kill('SIGKILL'), KILL_GRACE_MS);
    void run.ended.then(() => clearTimeout(killer));
  }
}

function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return (lines.at(-1) ?? '').slice(0, 200);
}

/**
 * Every fping still running, killed if the daemon exits by process.exit or an
 * uncaught exception (the 'exit' hook may only do synchronous work: kill is).
 */
const killOnExit = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of killOnExit) child.kill('SIGKILL');
});
