// The alarm decision, apart from the measurement (as dpinger keeps it): each
// probe round becomes a good or bad verdict, and a state machine with
// hysteresis turns verdicts into up and down. Pure: rounds in, transitions out.

import type { Check } from '../config/types.js';
import type { ProbeRound } from '../probe/index.js';

export type UplinkState = 'pending' | 'up' | 'down';

export interface Verdict {
  good: boolean;
  /** Why, in words an operator reads in the log. */
  reason: string;
  answered: number;
  targets: number;
  /** Mean latency of the answers of this round. */
  latencyMs?: number;
  /** Lost fraction of the last `window` probes. */
  loss: number;
}

export interface Transition { from: UplinkState; to: UplinkState; reason: string }

export class HealthTracker {
  state: UplinkState = 'pending';
  private goodRun = 0;
  private badRun = 0;
  /**
   * The last check.window probes, as a ring: true = answered. Kept without
   * allocating per round, since every uplink feeds one round per interval.
   */
  private readonly recent: boolean[] = [];
  private recentNext = 0;
  private recentLost = 0;
  private lastBadReason = '';
  latencyMs?: number;

  /** Without a check there are no rounds: the uplink is up unless forced down. */
  constructor(private readonly check: Check | undefined) {
    if (!check) this.state = 'up';
  }

  get loss(): number {
    return this.recent.length === 0 ? 0 : this.recentLost / this.recent.length;
  }

  judge(round: ProbeRound): Verdict {
    if (!this.check) throw new Error('an uplink without a check has no probe rounds');
    const check = this.check;
    let answered = 0;
    let latencySum = 0;
    for (const r of round.results) {
      this.remember(r.ok, check.window);
      if (!r.ok) continue;
      answered++;
      latencySum += r.latencyMs ?? 0;
    }
    const latencyMs = answered ? latencySum / answered : undefined;
    const loss = this.loss;
    const targets = round.results.length;
    const verdict = (good: boolean, reason: string): Verdict => ({ good, reason, answered, targets, latencyMs, loss });
    const bad = (why: string) => verdict(false, `${why} (targets ${round.results.map((r) => r.target).join(' ')})`);
    if (answered < check.quorum) return bad(`${answered}/${targets} targets answered, quorum ${check.quorum}`);
    if (check.maxLatencyMs !== undefined && latencyMs !== undefined && latencyMs > check.maxLatencyMs) {
      return bad(`latency ${latencyMs.toFixed(1)} ms > max ${check.maxLatencyMs} ms`);
    }
    if (check.maxLoss !== undefined && loss > check.maxLoss) {
      return bad(`loss ${(loss * 100).toFixed(0)}% over the last ${this.recent.length} probes > max ${(check.maxLoss * 100).toFixed(0)}%`);
    }
    return verdict(true, `${answered}/${targets} targets answered`);
  }

  private remember(answered: boolean, window: number): void {
    if (this.recent.length < window) {
      this.recent.push(answered);
    } else {
      if (!this.recent[this.recentNext]) this.recentLost--;
      this.recent[this.recentNext] = answered;
      this.recentNext = (this.recentNext + 1) % window;
    }
    if (!answered) this.recentLost++;
  }

  /** Feeds one round; returns the transition it caused, if any. */
  feed(round: ProbeRound): { verdict: Verdict; transition?: Transition } {
    const verdict = this.judge(round);
    this.latencyMs = verdict.latencyMs ?? this.latencyMs;
    if (verdict.good) {
      this.goodRun++;
      this.badRun = 0;
    } else {
      this.badRun++;
      this.goodRun = 0;
      this.lastBadReason = verdict.reason;
    }
    // Pending counts as up for balancing, so the first good round confirms it;
    // going down always takes down_after bad rounds, even from pending.
    const to =
      this.state !== 'up' && verdict.good && (this.state === 'pending' || this.goodRun >= this.check!.upAfter)
        ? 'up'
        : this.state !== 'down' && !verdict.good && this.badRun >= this.check!.downAfter
          ? 'down'
          : undefined;
    if (!to) return { verdict };
    const reason = to === 'up'
      ? `${this.goodRun}/${this.goodRun} rounds good`
      : `${this.badRun}/${this.badRun} rounds bad: ${this.lastBadReason}`;
    return { verdict, transition: this.moveTo(to, reason) };
  }

  /** Carrier loss and other facts that need no probe to be believed. */
  /** The link came back on an uplink without a check. */
  forceUp(reason: string): Transition | undefined {
    return this.state === 'up' ? undefined : this.moveTo('up', reason);
  }

  forceDown(reason: string): Transition | undefined {
    this.goodRun = 0;
    return this.state === 'down' ? undefined : this.moveTo('down', reason);
  }

  private moveTo(to: UplinkState, reason: string): Transition {
    const from = this.state;
    this.state = to;
    this.goodRun = 0;
    this.badRun = 0;
    return { from, to, reason };
  }
}
