// HealthTracker (src/daemon/health.ts) as tables: probe rounds in, verdicts and
// state transitions out. Each row is one round, written as the targets'
// results ("a=0.5 b=-": a answered in 0.5 ms, b did not), or an event the
// daemon feeds without a probe (carrier lost, carrier back).
//   node --import tsx --test test/unit/health.test.ts

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Check } from '../../src/config/types.js';
import { HealthTracker, type UplinkState } from '../../src/daemon/health.js';
import type { ProbeRound } from '../../src/probe/index.js';

function checkOf(overrides: Partial<Check> = {}): Check {
  return {
    method: 'icmp', targets: ['a'], port: 0, query: '', intervalMs: 100, timeoutMs: 400,
    downAfter: 3, upAfter: 5, quorum: 1, window: 20, ...overrides,
  };
}

/** "a=0.5 b=-" -> one round: a answered in 0.5 ms, b timed out. */
function roundOf(seq: number, text: string): ProbeRound {
  const results = text.split(' ').filter(Boolean).map((item) => {
    const [target, value] = item.split('=');
    return value === '-' ? { target, ok: false, error: 'timeout' } : { target, ok: true, latencyMs: Number(value) };
  });
  return { seq, startedAt: 1_750_000_000_000 + seq * 100, results };
}

interface Row {
  /** A round ("a=1 b=-"), or `force down: why` / `force up: why`. */
  in: string;
  /** The verdict of a round: good or bad, and for a bad one the reason. */
  verdict?: 'good' | string;
  /** The transition it causes, as `from -> to: reason`; none if absent. */
  moves?: string;
  /** The state after the row (checked on every row when given). */
  state?: UplinkState;
  /** The loss after the row, rounded to the percent. */
  lossPct?: number;
}

/** Feeds the rows in order, checking each; says which row failed. */
function play(check: Check | undefined, rows: Row[]): HealthTracker {
  const tracker = new HealthTracker(check);
  rows.forEach((row, i) => {
    const where = `row ${i + 1} (${row.in})`;
    let transition;
    const forced = /^force (down|up): (.*)$/.exec(row.in);
    if (forced) {
      transition = forced[1] === 'down' ? tracker.forceDown(forced[2]) : tracker.forceUp(forced[2]);
    } else {
      const fed = tracker.feed(roundOf(i, row.in));
      transition = fed.transition;
      if (row.verdict !== undefined) assert.equal(fed.verdict.good ? 'good' : fed.verdict.reason, row.verdict, `${where}: verdict`);
    }
    const moved = transition && `${transition.from} -> ${transition.to}: ${transition.reason}`;
    assert.equal(moved, row.moves, `${where}: transition`);
    if (row.state) assert.equal(tracker.state, row.state, `${where}: state`);
    if (row.lossPct !== undefined) assert.equal(Math.round(tracker.loss * 100), row.lossPct, `${where}: loss`);
  });
  return tracker;
}

const lost1 = '0/1 targets answered, quorum 1 (targets a)';

describe('health: pending, before a first verdict', () => {
  it('starts pending, and the first good round confirms it up, whatever up_after says', () => {
    const tracker = new HealthTracker(checkOf({ upAfter: 5 }));
    assert.equal(tracker.state, 'pending');
    play(checkOf({ upAfter: 5 }), [
      { in: 'a=1', verdict: 'good', moves: 'pending -> up: 1/1 rounds good', state: 'up' },
      { in: 'a=1', verdict: 'good', state: 'up' },
    ]);
  });

  it('stays pending through fewer than down_after bad rounds, then goes down after exactly down_after', () => {
    play(checkOf({ downAfter: 3 }), [
      { in: 'a=-', verdict: lost1, state: 'pending' },
      { in: 'a=-', verdict: lost1, state: 'pending' },
      { in: 'a=-', verdict: lost1, moves: `pending -> down: 3/3 rounds bad: ${lost1}`, state: 'down' },
      { in: 'a=-', verdict: lost1, state: 'down' },
    ]);
  });

  it('goes up from pending on a good round that follows bad ones', () => {
    play(checkOf({ downAfter: 3 }), [
      { in: 'a=-', state: 'pending' },
      { in: 'a=-', state: 'pending' },
      { in: 'a=2', verdict: 'good', moves: 'pending -> up: 1/1 rounds good', state: 'up' },
    ]);
  });

  it('is up from the start, with no rounds to judge, for an uplink without a check', () => {
    const tracker = new HealthTracker(undefined);
    assert.equal(tracker.state, 'up');
    assert.throws(() => tracker.feed(roundOf(0, 'a=1')), /no probe rounds/);
    play(undefined, [
      { in: 'force down: carrier lost on wan1', moves: 'up -> down: carrier lost on wan1', state: 'down' },
      { in: 'force up: carrier back on wan1', moves: 'down -> up: carrier back on wan1', state: 'up' },
      { in: 'force up: carrier back on wan1', state: 'up' },
    ]);
  });
});

describe('health: down_after and up_after, counted exactly', () => {
  it('goes down at the down_after-th consecutive bad round; a good round in between starts the count again', () => {
    play(checkOf({ downAfter: 3, upAfter: 2 }), [
      { in: 'a=1', moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=-', state: 'up' },
      { in: 'a=-', state: 'up' },
      { in: 'a=1', verdict: 'good', state: 'up' },
      { in: 'a=-', state: 'up' },
      { in: 'a=-', state: 'up' },
      { in: 'a=-', moves: `up -> down: 3/3 rounds bad: ${lost1}`, state: 'down' },
    ]);
  });

  it('comes back up at the up_after-th consecutive good round; a bad round in between starts the count again', () => {
    play(checkOf({ downAfter: 1, upAfter: 5 }), [
      { in: 'a=1', moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=-', moves: `up -> down: 1/1 rounds bad: ${lost1}` },
      ...Array.from({ length: 4 }, (): Row => ({ in: 'a=1', verdict: 'good', state: 'down' })),
      { in: 'a=-', state: 'down' },
      ...Array.from({ length: 4 }, (): Row => ({ in: 'a=1', verdict: 'good', state: 'down' })),
      { in: 'a=1', moves: 'down -> up: 5/5 rounds good', state: 'up' },
    ]);
  });

  it('down_after 1 and up_after 1: every verdict that disagrees with the state moves it', () => {
    play(checkOf({ downAfter: 1, upAfter: 1 }), [
      { in: 'a=-', moves: `pending -> down: 1/1 rounds bad: ${lost1}` },
      { in: 'a=1', moves: 'down -> up: 1/1 rounds good' },
      { in: 'a=-', moves: `up -> down: 1/1 rounds bad: ${lost1}` },
    ]);
  });
});

describe('health: facts that need no probe', () => {
  it('a forced down (carrier lost) takes effect at once, and coming back takes up_after good rounds', () => {
    play(checkOf({ upAfter: 3 }), [
      { in: 'a=1', moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=1' },
      { in: 'force down: carrier lost on wan1', moves: 'up -> down: carrier lost on wan1', state: 'down' },
      { in: 'force down: carrier lost on wan1', state: 'down' },
      { in: 'a=1', state: 'down' },
      { in: 'a=1', state: 'down' },
      { in: 'a=1', moves: 'down -> up: 3/3 rounds good', state: 'up' },
    ]);
  });

  it('good rounds before a forced down do not count toward coming back', () => {
    play(checkOf({ downAfter: 1, upAfter: 3 }), [
      { in: 'a=-', moves: `pending -> down: 1/1 rounds bad: ${lost1}` },
      { in: 'a=1' },
      { in: 'a=1' },
      { in: 'force down: unusable: no address' },
      { in: 'a=1', state: 'down' },
      { in: 'a=1', state: 'down' },
      { in: 'a=1', moves: 'down -> up: 3/3 rounds good' },
    ]);
  });

  it('a forced down before any verdict leaves pending at once', () => {
    play(checkOf(), [{ in: 'force down: wan1 is gone', moves: 'pending -> down: wan1 is gone', state: 'down' }]);
  });
});

describe('health: quorum', () => {
  it('needs quorum answers in a round: 2 of 3 is good, 1 of 3 is bad', () => {
    const check = checkOf({ targets: ['a', 'b', 'c'], quorum: 2, downAfter: 2 });
    const oneOfThree = '1/3 targets answered, quorum 2 (targets a b c)';
    play(check, [
      { in: 'a=1 b=1 c=1', verdict: 'good', moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=1 b=- c=1', verdict: 'good' },
      { in: 'a=- b=- c=1', verdict: oneOfThree, state: 'up' },
      { in: 'a=1 b=- c=-', verdict: oneOfThree, moves: `up -> down: 2/2 rounds bad: ${oneOfThree}` },
      { in: 'a=- b=- c=-', verdict: '0/3 targets answered, quorum 2 (targets a b c)' },
    ]);
  });

  it('a round without targets (no gateway known yet) answers nothing, so it is bad', () => {
    const tracker = new HealthTracker(checkOf({ targets: [] }));
    const { verdict } = tracker.feed(roundOf(0, ''));
    assert.equal(verdict.good, false);
    assert.equal(verdict.answered, 0);
    assert.equal(verdict.targets, 0);
  });
});

describe('health: max_latency', () => {
  it('is the mean of the answers of the round, over the max is bad, at the max is good', () => {
    const check = checkOf({ targets: ['a', 'b'], maxLatencyMs: 100, downAfter: 2 });
    const slow = 'latency 150.0 ms > max 100 ms (targets a b)';
    const tracker = play(check, [
      { in: 'a=50 b=150', verdict: 'good', moves: 'pending -> up: 1/1 rounds good' }, // mean 100
      { in: 'a=100 b=200', verdict: slow },
      { in: 'a=- b=150', verdict: slow, moves: `up -> down: 2/2 rounds bad: ${slow}` }, // the lost probe is no latency
      { in: 'a=10 b=30', verdict: 'good', state: 'down' },
    ]);
    assert.equal(tracker.latencyMs, 20);
    // A round without answers keeps the last latency known.
    tracker.feed(roundOf(9, 'a=- b=-'));
    assert.equal(tracker.latencyMs, 20);
  });
});

describe('health: max_loss over window probes', () => {
  it('counts the last `window` probes of every target, and slides', () => {
    // window 10 probes = the last 5 rounds of 2 targets.
    const check = checkOf({ targets: ['a', 'b'], window: 10, maxLoss: 0.3, downAfter: 2 });
    play(check, [
      { in: 'a=1 b=1', verdict: 'good', lossPct: 0, moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=1 b=-', verdict: 'good', lossPct: 25 }, // 1 of 4
      { in: 'a=1 b=-', verdict: 'loss 33% over the last 6 probes > max 30% (targets a b)', lossPct: 33 },
      { in: 'a=1 b=1', verdict: 'good', lossPct: 25 }, // 2 of 8
      { in: 'a=1 b=1', verdict: 'good', lossPct: 20 }, // 2 of 10: the window is full
      { in: 'a=1 b=1', verdict: 'good', lossPct: 20 }, // round 1 left the window, no loss in it
      { in: 'a=1 b=1', verdict: 'good', lossPct: 10 }, // round 2's lost probe left
      { in: 'a=1 b=1', verdict: 'good', lossPct: 0 },
    ]);
  });

  it('takes the uplink down after down_after rounds over the max, though each round met its quorum', () => {
    const check = checkOf({ targets: ['a', 'b'], window: 4, maxLoss: 0.25, downAfter: 2 });
    const lossy = 'loss 50% over the last 4 probes > max 25% (targets a b)';
    play(check, [
      { in: 'a=1 b=1', moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=1 b=-', verdict: 'good', lossPct: 25 }, // at the max is not over it
      { in: 'a=1 b=-', verdict: lossy, state: 'up' },
      { in: 'a=1 b=-', verdict: lossy, moves: `up -> down: 2/2 rounds bad: ${lossy}`, state: 'down' },
    ]);
  });

  it('without max_loss, loss is measured and reported but decides nothing', () => {
    play(checkOf({ targets: ['a', 'b'], window: 4 }), [
      { in: 'a=1 b=-', verdict: 'good', lossPct: 50, moves: 'pending -> up: 1/1 rounds good' },
      { in: 'a=1 b=-', verdict: 'good', lossPct: 50 },
      { in: 'a=1 b=-', verdict: 'good', lossPct: 50, state: 'up' },
    ]);
  });
});
