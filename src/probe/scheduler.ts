// The round clock every probe method shares: a round opens every interval,
// on a drift-free schedule (round k is due at start + k * interval on the
// monotonic clock, however late the previous timer fired), and is delivered
// once each target has reported or its time is up. The method itself (fping,
// connects, requests, queries) is a ProbeDriver that only sends and reports.

import type { Check } from '../config/types.js';
import { RoundBook } from './rounds.js';
import { probeTargets } from './targets.js';
import type { ProbeDriver, ProbeRound, ProbeSubject, Prober, Report, TargetResult } from './types.js';

/**
 * How long after its timeout a round is closed regardless. Each method
 * normally settles every probe by the timeout itself (fping prints `timed
 * out`, the others time themselves out); this backstop covers an fping that
 * fell silent or started a few ms after the round, and event-loop jitter.
 */
export const ROUND_SLACK_MS = 50;

export class RoundScheduler implements Prober {
  private readonly driver: ProbeDriver;
  private book?: RoundBook;
  private state: 'new' | 'running' | 'stopped' = 'new';
  /** performance.now() when round 0 was due. */
  private epoch = 0;
  private nextSeq = 0;
  private tickTimer?: NodeJS.Timeout;
  private readonly deadlines = new Map<number, NodeJS.Timeout>();

  constructor(
    private subject: ProbeSubject,
    private readonly check: Check,
    makeDriver: (report: Report) => ProbeDriver,
  ) {
    this.driver = makeDriver((seq, result) => this.report(seq, result));
  }

  start(onRound: (round: ProbeRound) => void): void {
    if (this.state !== 'new') throw new Error(`prober of ${this.subject.uplink} was already started`);
    this.state = 'running';
    this.book = new RoundBook((round) => {
      clearTimeout(this.deadlines.get(round.seq));
      this.deadlines.delete(round.seq);
      onRound(round);
    });
    this.epoch = performance.now();
    this.tick();
  }

  update(subject: ProbeSubject): void {
    this.subject = subject;
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    clearTimeout(this.tickTimer);
    for (const timer of this.deadlines.values()) clearTimeout(timer);
    this.deadlines.clear();
    this.book?.clear();
    await this.driver.stop();
  }

  private dueAt(seq: number): number {
    return this.epoch + seq * this.check.intervalMs;
  }

  /** Opens every round that is due (more than one only after the event loop stalled), then sleeps until the next. */
  private tick(): void {
    this.openDueRounds(Infinity);
    if (this.state !== 'running') return;
    this.tickTimer = setTimeout(() => this.tick(), Math.max(0, this.dueAt(this.nextSeq) - performance.now()));
  }

  private openDueRounds(throughSeq: number): void {
    while (this.state === 'running' && this.nextSeq <= throughSeq && this.dueAt(this.nextSeq) <= performance.now()) {
      this.openRound(this.nextSeq++);
    }
  }

  private openRound(seq: number): void {
    const subject = this.subject;
    const targets = probeTargets(subject, this.check);
    this.book!.openRound(seq, Date.now(), targets);
    if (!this.book!.isOpen(seq)) return; // no targets: already delivered
    const timeout = this.check.timeoutMs;
    this.deadlines.set(seq, setTimeout(() => this.book?.expire(seq, `no answer within ${timeout} ms`), timeout + ROUND_SLACK_MS));
    if (!subject.address) {
      // Without an address a probe could only leave by the main table, not by this uplink.
      for (const target of targets) this.book!.record(seq, { target, ok: false, error: 'uplink has no address' });
      return;
    }
    this.driver.roundOpened(seq, targets, subject);
  }

  private report(seq: number, result: TargetResult): ReturnType<Report> {
    if (this.state !== 'running') return 'late';
    // An answer can be read before the timer of its round has run when both
    // fall due in the same turn of the event loop: open the round first.
    if (seq >= this.nextSeq) this.openDueRounds(seq);
    if (seq >= this.nextSeq) return 'early';
    return this.book!.record(seq, result) ? 'filed' : 'late';
  }
}
