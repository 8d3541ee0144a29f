// The book of open rounds: results come in whenever they come (a reply
// after 0.1 ms, a timeout after timeoutMs, out of order across rounds when
// rounds overlap), and complete rounds leave strictly in seq order. No timers
// and no I/O here: the scheduler says when a round opens and when its time is
// up, so the ordering rules can be tested on their own.

import type { ProbeRound, TargetResult } from './types.js';

interface OpenRound {
  seq: number;
  startedAt: number;
  /** One slot per target, in target order; undefined until that target reports. */
  slots: { target: string; result?: TargetResult }[];
  complete: boolean;
}

export class RoundBook {
  private readonly open = new Map<number, OpenRound>();
  /** The seq the consumer gets next: rounds open consecutively, so none is ever skipped. */
  private nextToDeliver: number | undefined;

  constructor(private readonly deliver: (round: ProbeRound) => void) {}

  /** Opens round `seq` (one more than the last one opened) for these targets. */
  openRound(seq: number, startedAt: number, targets: string[]): void {
    if (this.open.has(seq)) throw new Error(`round ${seq} is already open`);
    this.nextToDeliver ??= seq;
    this.open.set(seq, { seq, startedAt, slots: targets.map((target) => ({ target })), complete: false });
    this.settleIfFull(seq); // no targets at all: complete at once
  }

  isOpen(seq: number): boolean {
    const round = this.open.get(seq);
    return round !== undefined && !round.complete;
  }

  /**
   * Files a result in the first empty slot of its target (a target listed
   * twice has two). Returns false when round `seq` is not open or has no empty
   * slot for that target: a late or stray report, which the caller may count.
   */
  record(seq: number, result: TargetResult): boolean {
    const round = this.open.get(seq);
    if (!round || round.complete) return false;
    const slot = round.slots.find((s) => s.target === result.target && s.result === undefined);
    if (!slot) return false;
    slot.result = result;
    this.settleIfFull(seq);
    return true;
  }

  /** Round `seq`'s time is up: every target that has not reported did not answer in time. */
  expire(seq: number, error: string): void {
    const round = this.open.get(seq);
    if (!round || round.complete) return;
    for (const slot of round.slots) slot.result ??= { target: slot.target, ok: false, error };
    this.settle(round);
  }

  /** Forgets every open round without delivering it (the prober is stopping). */
  clear(): void {
    this.open.clear();
  }

  private settleIfFull(seq: number): void {
    const round = this.open.get(seq)!;
    if (round.slots.every((s) => s.result !== undefined)) this.settle(round);
  }

  private settle(round: OpenRound): void {
    round.complete = true;
    // A complete round waits for the ones opened before it; as every round
    // gets the same time, that wait never takes it past its own deadline.
    for (let next = this.open.get(this.nextToDeliver!); next?.complete; next = this.open.get(this.nextToDeliver!)) {
      this.open.delete(next.seq);
      this.nextToDeliver = next.seq + 1;
      this.deliver({ seq: next.seq, startedAt: next.startedAt, results: next.slots.map((s) => s.result!) });
    }
  }
}
