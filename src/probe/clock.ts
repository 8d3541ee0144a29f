// The round clock: one timer for every prober in the process. Each prober's
// rounds sit on a grid shared by all (round k of a prober with interval I is
// due at epoch + (first + k) * I), so probers with the same interval open
// their rounds, read their results and close their rounds in one wakeup,
// however many uplinks there are. The clock sleeps until the earliest thing
// any prober needs (a round to open, a round whose timeout has passed), then
// lets each prober do all that is due; with the default 100 ms interval and a
// timeout of a whole number of intervals that is one wakeup per interval.
//
// The timers are injectable, so the unit tests drive time instead of waiting
// for it (test/unit/probe.test.ts).

/** What the clock reads and arms; systemTimers in the daemon, a fake in tests. */
export interface Timers {
  /** Monotonic milliseconds (performance.now()). */
  now(): number;
  /** Date.now() at the same instant as now(). */
  wallNow(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemTimers: Timers = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** A prober as the clock sees it. */
export interface ClockMember {
  /** The clock time of the next thing it has to do; Infinity for nothing. */
  nextEventAt(): number;
  /** Does everything due by `now`. */
  tick(now: number): void;
}

/**
 * Node may run a timer up to a millisecond before its time by
 * performance.now() (its timers count whole milliseconds of a cached loop
 * time); one more millisecond makes sure a round's timeout has really passed
 * when the clock acts on it, without a second wakeup to find that out.
 */
const TIMER_MARGIN_MS = 1;

export class RoundClock {
  private readonly members = new Set<ClockMember>();
  private epoch?: number;
  private timer?: unknown;
  /** What the armed timer is for (clock time); Infinity when none is armed. */
  private armedFor = Infinity;

  constructor(readonly timers: Timers = systemTimers) {}

  /** The first slot of the grid at or after now for rounds every `intervalMs`. */
  nextSlot(intervalMs: number): number {
    const now = this.timers.now();
    this.epoch ??= now;
    return this.epoch + Math.ceil((now - this.epoch) / intervalMs) * intervalMs;
  }

  add(member: ClockMember): void {
    this.members.add(member);
    this.rearm();
  }

  delete(member: ClockMember): void {
    this.members.delete(member);
    this.rearm();
  }

  /** A member's next event changed: sleep until the earliest of all. */
  rearm(): void {
    let next = Infinity;
    for (const m of this.members) next = Math.min(next, m.nextEventAt());
    if (next === this.armedFor) return;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = next;
    if (next === Infinity) return;
    const delay = Math.max(0, Math.ceil(next - this.timers.now())) + TIMER_MARGIN_MS;
    this.timer = this.timers.setTimeout(() => this.fire(), delay);
  }

  private fire(): void {
    this.timer = undefined;
    this.armedFor = Infinity;
    const now = this.timers.now();
    for (const m of [...this.members]) if (this.members.has(m)) m.tick(now);
    this.rearm();
  }
}

/** The daemon's clock: every prober created without one of its own shares it. */
export const sharedClock = new RoundClock();
