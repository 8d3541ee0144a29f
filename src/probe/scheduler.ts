// One uplink's rounds on the round clock (clock.ts): round k is due at a
// fixed slot of the clock's grid, however late the previous wakeup came.
// At each wakeup the scheduler opens every round that is due, has the
// driver read what came in since the last one (fping's lines: read once per
// wakeup, not handled line by line), and closes every round whose timeout
// has passed, its silent targets lost. A round all of whose targets have
// answered is delivered as soon as that is known; delivery is in seq order
// (rounds.ts). The method itself (fping, connects, requests, queries) is a
// ProbeDriver that only sends and reports.

import type { Check } from '../config/types.js';
import { sharedClock, type ClockMember, type RoundClock } from './clock.js';
import { RoundBook } from './rounds.js';
import { probeTargets } from './targets.js';
import type { FileResult, ProbeDriver, ProbeRound, ProbeSubject, Prober, TargetResult } from './types.js';

/** The error of a target that did not answer before its round's timeout passed. */
export const TIMED_OUT = 'timeout';

export class RoundScheduler implements Prober, ClockMember {
  private readonly driver: ProbeDriver;
  private book?: RoundBook;
  private state: 'new' | 'running' | 'stopped' = 'new';
  /** Clock time when round 0 is due. */
  private firstDueAt = 0;
  private nextSeq = 0;
  /** Rounds not yet delivered, in seq order (a Map keeps insertion order), and when each one's timeout has passed. */
  private readonly open = new Map<number, number>();
  private ticking = false;

  constructor(
    private subject: ProbeSubject,
    private readonly check: Check,
    makeDriver: (report: FileResult) => ProbeDriver,
    private readonly clock: RoundClock = sharedClock,
  ) {
    this.driver = makeDriver((seq, result) => this.report(seq, result));
  }

  start(onRound: (round: ProbeRound) => void): void {
    if (this.state !== 'new') throw new Error(`prober of ${this.subject.uplink} was already started`);
    this.state = 'running';
    this.book = new RoundBook((round) => {
      this.open.delete(round.seq);
      this.driver.roundClosed?.(round.seq);
      onRound(round);
      // Delivered between wakeups (all answers in early): the clock need not wake for its timeout.
      if (!this.ticking && this.state === 'running') this.clock.rearm();
    });
    this.firstDueAt = this.clock.nextSlot(this.check.intervalMs);
    this.clock.add(this);
  }

  update(subject: ProbeSubject): void {
    this.subject = subject;
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    const wasRunning = this.state === 'running';
    this.state = 'stopped';
    if (wasRunning) this.clock.delete(this);
    this.open.clear();
    this.book?.clear();
    await this.driver.stop();
  }

  nextEventAt(): number {
    if (this.state !== 'running') return Infinity;
    const oldestClosesAt = this.open.values().next().value as number | undefined;
    return Math.min(this.dueAt(this.nextSeq), oldestClosesAt ?? Infinity);
  }

  tick(now: number): void {
    this.ticking = true;
    try {
      this.runDue(now);
    } finally {
      this.ticking = false;
    }
  }

  private runDue(now: number): void {
    // More than one round is due only after the event loop stalled.
    while (this.state === 'running' && this.dueAt(this.nextSeq) <= now) this.openRound(this.nextSeq++, now);
    // After opening: a result read now may be for the round just opened.
    if (this.state === 'running') this.driver.collect?.();
    for (const [seq, closesAt] of this.open) {
      if (this.state !== 'running' || closesAt > now) break;
      this.book!.expire(seq, TIMED_OUT);
    }
  }

  private dueAt(seq: number): number {
    return this.firstDueAt + seq * this.check.intervalMs;
  }

  private openRound(seq: number, now: number): void {
    const subject = this.subject;
    const targets = probeTargets(subject, this.check);
    const dueAt = this.dueAt(seq);
    this.open.set(seq, dueAt + this.check.timeoutMs);
    // startedAt is the round's slot, so that `timeout` is counted from the same instant the round is closed by.
    this.book!.openRound(seq, Math.floor(this.clock.timers.wallNow() - (now - dueAt)), targets);
    if (!this.book!.isOpen(seq)) return; // no targets: already delivered
    if (!subject.address) {
      // Without an address a probe could only leave by the main table, not by this uplink.
      for (const target of targets) this.book!.record(seq, { target, ok: false, error: 'uplink has no address' });
      return;
    }
    this.driver.roundOpened(seq, targets, subject);
  }

  private report(seq: number, result: TargetResult): ReturnType<FileResult> {
    if (this.state !== 'running') return 'late';
    if (seq >= this.nextSeq) return 'early';
    return this.book!.record(seq, result) ? 'filed' : 'late';
  }
}
