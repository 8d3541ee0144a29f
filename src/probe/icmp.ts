// icmp: one long-running fping per uplink and family (-6 for IPv6), in loop
// mode, all targets in one process, bound to the uplink's device (-I) and
// address (-S). Its output, one line per target and probe (fping 5.x,
// without -q/-Q/-D):
//
//   192.0.2.10 : [7], 64 bytes, 0.052 ms (0.061 avg, 0% loss)
//   192.0.2.11 : [7], timed out (NaN avg, 100% loss)
//   fe80::1%wan2 : [7], 64 bytes, 0.040 ms (0.040 avg, 0% loss)
//
// A link-local target is given with its zone (targets.ts), which fping 5.1
// takes and prints back as given, so its lines find their target.
// The target is padded to the longest target's width; [N] is fping's probe
// index, from 0. fping prints `timed out` itself, timeout ms after sending,
// and drops a reply that comes later than that. It prints nothing at all for
// a probe it could not send (sendto failing while the address is gone), so a
// round also ends when the round clock closes it.
//
// Reading: fping's stdout is a FIFO that the daemon does not watch. Lines
// wait in the kernel's pipe buffer until the round clock's next wakeup
// (collect()), which reads them all at once: one read per uplink and round
// instead of a wakeup for every line fping prints. The FIFO is made on a
// tmpfs where there is one: every write to a pipe stamps its inode's mtime,
// and on a disk filesystem (ext4) that is a journalled inode update for each
// line fping prints, which cost more CPU than fping's own work.
//
// Rounds and fping's [N]: fping is started as round `base` opens, and it
// keeps the same period on its own clock, so its probe N belongs to round
// base + N. A wall-clock step moves fping's clock (Linux fping schedules on
// CLOCK_REALTIME) but not ours: forward, fping runs ahead and reports rounds
// that have not begun; backward, it falls silent. Either way it is restarted,
// in step with the next round.
//
// Lifetime: fping is a plain child, and the daemon holds the only read end
// of its output. stop() kills it (SIGTERM, then SIGKILL); a daemon exiting
// through process.exit or an uncaught exception kills it from an 'exit'
// hook; a daemon killed outright (SIGKILL) leaves it to die of SIGPIPE on its
// next line, at most one interval (or one timeout) later, since fping prints
// for every probe.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Check } from '../config/types.js';
import { systemTimers, type Timers } from './clock.js';
import type { FileResult, ProbeDriver, ProbeSubject, TargetResult } from './types.js';

const FIRST_RESTART_DELAY_MS = 250;
const MAX_RESTART_DELAY_MS = 5000;
/** How long a SIGTERMed fping gets before SIGKILL. */
const KILL_GRACE_MS = 1000;
/** How much longer than its timeout and two periods fping may be silent before it counts as stuck. */
const SILENCE_SLACK_MS = 50;

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

/**
 * fping's arguments. `asRoot`: fping lets only root send a round's probes
 * back to back (--interval=0); that halves its CPU time against the 1 ms gap
 * others must keep, since it then wakes once per round to send instead of
 * once per target.
 */
export function fpingArgs(subject: ProbeSubject, check: Check, targets: string[], asRoot = process.getuid?.() === 0): string[] {
  return [
    '--loop',
    `--period=${check.intervalMs}`,
    `--timeout=${check.timeoutMs}`,
    // No gap (or 1 ms) between the probes of one round rather than the
    // default 10, so that a round's last target is not sent long after its first.
    `--interval=${asRoot ? 0 : 1}`,
    // Each family has its own fping: one process sends one family only.
    ...(subject.family === 'ipv6' ? ['--ipv6'] : []),
    `--iface=${subject.device}`,
    `--src=${subject.address}`,
    ...targets,
  ];
}

/** The process part of a ChildProcess that the driver uses (a fake in the unit tests). */
export type FpingChild = Pick<ChildProcess, 'kill' | 'once' | 'stderr'>;

/** A started fping, and its output, read without waiting. */
export interface FpingProcess {
  child: FpingChild;
  /** All it printed since the last call, '' when nothing; never waits. */
  readOutput(): string;
  /** Closes the daemon's end of its output. */
  closeOutput(): void;
}

export type SpawnFping = (args: string[]) => FpingProcess;

/** statfs(2)'s f_type of a tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;

/**
 * Where to make the FIFOs: the first of these on a tmpfs (the service's
 * RuntimeDirectory under /run, /dev/shm), else the temporary directory.
 * `statfs` is injectable for the unit tests.
 */
export function fifoParent(
  env: NodeJS.ProcessEnv = process.env,
  fsType: (path: string) => number | undefined = (path) => {
    try {
      return Number(statfsSync(path).type);
    } catch {
      return undefined;
    }
  },
): string {
  // RUNTIME_DIRECTORY may list several, separated by colons (systemd.exec(5)).
  const candidates = [...(env.RUNTIME_DIRECTORY?.split(':').filter(Boolean) ?? []), '/dev/shm'];
  return candidates.find((dir) => fsType(dir) === TMPFS_MAGIC) ?? tmpdir();
}

/**
 * Starts `command` with its stdout on a FIFO: Node has no unwatched pipe of
 * its own, and a FIFO whose name is removed at once is one. The read end is
 * non-blocking (a read of nothing says EAGAIN) and only the daemon has it;
 * the write end is the child's stdout alone.
 */
export function spawnWithFifo(command: string, args: string[], parent = fifoParent()): FpingProcess {
  const dir = mkdtempSync(join(parent, 'uplinkd-fping-'));
  let readFd: number | undefined;
  try {
    const fifo = join(dir, 'stdout');
    const made = spawnSync('mkfifo', ['-m', '600', fifo], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`mkfifo failed: ${made.error?.message ?? made.stderr.trim()}`);
    readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeFd = openSync(fifo, constants.O_WRONLY); // returns at once: there is a reader
    try {
      const child = spawn(command, args, { stdio: ['ignore', writeFd, 'pipe'] });
      const fd = readFd;
      return { child, readOutput: () => readAvailable(fd), closeOutput: () => closeSync(fd) };
    } finally {
      closeSync(writeFd);
    }
  } catch (err) {
    if (readFd !== undefined) closeSync(readFd);
    throw err;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const spawnFping: SpawnFping = (args) => spawnWithFifo('fping', args);

const readBuffer = Buffer.alloc(64 * 1024);

/** Everything a non-blocking fd holds now. */
function readAvailable(fd: number): string {
  let text = '';
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, readBuffer, 0, readBuffer.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return text;
      throw err;
    }
    text += readBuffer.toString('latin1', 0, n);
    if (n < readBuffer.length) return text; // nothing more now (or end of file)
  }
}

/** One fping process and what is known about it. */
interface FpingRun {
  proc: FpingProcess;
  uplink: string;
  /** The round its probe [0] belongs to. */
  base: number;
  /** device, address and targets it was started with. */
  key: string;
  targets: string[];
  /** A line read in part: the rest comes with the next read. */
  partial: string;
  lastOutputAt: number;
  /** It reported a round that has not begun: its clock jumped ahead of ours. */
  ahead: boolean;
  /** Replaced or stopped on purpose: its end is no failure. */
  retired: boolean;
  /** Its output is closed (it ended): nothing more to read. */
  drained: boolean;
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
    private readonly report: FileResult,
    private readonly log: (msg: string) => void,
    private readonly spawnProcess: SpawnFping = spawnFping,
    private readonly timers: Timers = systemTimers,
  ) {}

  roundOpened(seq: number, targets: string[], subject: ProbeSubject): void {
    this.lastOpenedSeq = seq;
    const now = this.timers.now();
    const key = `${subject.device} ${subject.address} ${targets.join(' ')}`;
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

  /** Reads every line the running fpings printed since the last wakeup. */
  collect(): void {
    for (const run of this.alive) this.drain(run);
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
   * Its lines are read at the round clock's wakeups, so the gap seen is up
   * to one interval longer than fping's own.
   */
  private silenceLimitMs(): number {
    return this.check.timeoutMs + 2 * this.check.intervalMs + SILENCE_SLACK_MS;
  }

  private start(base: number, key: string, targets: string[], subject: ProbeSubject): void {
    let proc: FpingProcess;
    try {
      proc = this.spawnProcess(fpingArgs(subject, this.check, targets));
    } catch (err) {
      this.failed(subject.uplink, `could not run fping: ${err instanceof Error ? err.message : err}`);
      return;
    }
    const { child } = proc;
    let markEnded!: () => void;
    const run: FpingRun = {
      proc, uplink: subject.uplink, base, key, targets, partial: '', lastOutputAt: this.timers.now(),
      ahead: false, retired: false, drained: false, stderr: '', ended: new Promise((resolve) => (markEnded = resolve)),
    };
    this.current = run;
    this.alive.add(run);
    killOnExit.add(child);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      run.stderr = (run.stderr + chunk).slice(-1000);
    });
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      killOnExit.delete(child);
      // What it printed before it ended still counts; then its output is closed.
      this.drain(run);
      run.drained = true;
      proc.closeOutput();
      this.alive.delete(run);
      markEnded();
      this.onEnd(run, why);
    };
    // 'close' rather than 'exit': by then its stderr has been read to the end.
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      const said = lastLine(run.stderr);
      end(`fping exited with ${code ?? signal}${said ? `: ${said}` : ''}`);
    });
    child.once('error', (err: Error) => end(`could not run fping: ${err.message}`));
  }

  private drain(run: FpingRun): void {
    if (run.drained) return;
    let text: string;
    try {
      text = run.proc.readOutput();
    } catch (err) {
      // Not expected (EAGAIN is no error); the run then falls silent and is restarted.
      run.drained = true;
      this.log(`${run.uplink}: reading fping's output failed: ${err instanceof Error ? err.message : err}`);
      return;
    }
    if (!text) return;
    run.lastOutputAt = this.timers.now();
    const lines = (run.partial + text).split('\n');
    run.partial = lines.pop()!;
    for (const line of lines) this.onLine(run, line);
  }

  private onLine(run: FpingRun, line: string): void {
    const parsed = parseFpingLine(line);
    if (!parsed) return;
    if (run === this.current) this.restartDelayMs = FIRST_RESTART_DELAY_MS; // it works
    // 'late' needs no action: the round was closed as lost, which it was.
    if (this.report(run.base + parsed.seq, parsed.result) === 'early' && !run.retired) run.ahead = true;
  }

  private onEnd(run: FpingRun, why: string): void {
    if (run.retired || this.stopped) return;
    if (this.current === run) this.current = undefined;
    this.failed(run.uplink, why);
    // Its rounds still open will get no more lines: close them now, with the reason.
    const overlap = Math.ceil(this.check.timeoutMs / this.check.intervalMs) + 1;
    for (let seq = Math.max(run.base, this.lastOpenedSeq - overlap); seq <= this.lastOpenedSeq; seq++) {
      for (const target of run.targets) this.report(seq, { target, ok: false, error: why });
    }
  }

  /** No fping now: rounds fail with `why` until it is started again, after a growing delay. */
  private failed(uplink: string, why: string): void {
    this.downReason = why;
    this.restartAt = this.timers.now() + this.restartDelayMs;
    this.log(`${uplink}: ${why}; starting it again in ${this.restartDelayMs} ms`);
    this.restartDelayMs = Math.min(2 * this.restartDelayMs, MAX_RESTART_DELAY_MS);
  }

  /** Stops a run on purpose: SIGTERM, and SIGKILL if it lingers. */
  private retire(run: FpingRun): void {
    if (this.current === run) this.current = undefined;
    if (run.retired) return;
    run.retired = true;
    run.proc.child.kill('SIGTERM');
    const killer = this.timers.setTimeout(() => run.proc.child.kill('SIGKILL'), KILL_GRACE_MS);
    void run.ended.then(() => this.timers.clearTimeout(killer));
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
const killOnExit = new Set<FpingChild>();
process.once('exit', () => {
  for (const child of killOnExit) child.kill('SIGKILL');
});
