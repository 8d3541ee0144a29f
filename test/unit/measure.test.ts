// The failover arithmetic of src/lab/measure.ts, on hand-made samples (the
// real stream runs in test/lab/demo.test.ts and bench/failover.ts):
//   node --import tsx --test test/unit/measure.test.ts

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { failbackMs, failoverMs, firstAnswerMs, monotonicMs, percentile, type StreamSample } from '../../src/lab/measure.js';

const A = '198.51.100.2';
const B = '198.51.100.18';

const ok = (start: number, seen = B, end = start + 2): StreamSample => ({ start, end, ok: true, seen, error: null });
const bad = (start: number, error = 'ETIMEDOUT'): StreamSample => ({ start, end: start + 1000, ok: false, seen: null, error });

describe('firstAnswerMs', () => {
  it('is the end of the first answer to a connection opened after the fault, minus the fault; a later failure does not move it', () => {
    // Opened before the fault (answered at 101) does not count; the one opened at 100 is answered last, at 400 (a retried SYN).
    const samples = [ok(95, A, 101), ok(100, B, 400), bad(110), ok(130, B, 310), ok(150, B, 152), bad(160)];
    assert.equal(firstAnswerMs(samples, 100), 52);
    assert.equal(firstAnswerMs([bad(100), ok(90, A, 120)], 100), undefined, 'none opened after the fault was answered');
  });
});

describe('failoverMs', () => {
  it('is the start of the first sample after which all succeed, minus the fault', () => {
    const samples = [ok(90, A), bad(100), ok(110), bad(120), bad(130), ok(140), ok(150), ok(160)];
    assert.equal(failoverMs(samples, 100), 40);
  });

  it('does not care in which order the samples finished', () => {
    // Failed ones finish last (they time out), so they come last in the output.
    const samples = [ok(110), ok(140), ok(150), bad(100), bad(120), bad(130)];
    assert.equal(failoverMs(samples, 100), 40);
  });

  it('ignores failures started before the fault', () => {
    assert.equal(failoverMs([bad(50), bad(99), ok(105), ok(115)], 100), 5);
  });

  it('is the time to the first sample when nothing failed', () => {
    assert.equal(failoverMs([ok(95), ok(103), ok(113)], 100), 3);
  });

  it('counts a sample started exactly at the fault', () => {
    assert.equal(failoverMs([ok(100), ok(110)], 100), 0);
    assert.equal(failoverMs([bad(100), ok(110)], 100), 10);
  });

  it('is undefined when the last connection still failed, or none started after the fault', () => {
    assert.equal(failoverMs([ok(110), ok(120), bad(130)], 100), undefined);
    assert.equal(failoverMs([ok(90)], 100), undefined);
    assert.equal(failoverMs([], 100), undefined);
  });

  it('looks only before `until`, so what happens after the heal cannot change it', () => {
    const samples = [bad(100), ok(200), ok(300), bad(400), ok(500)];
    assert.equal(failoverMs(samples, 100, 400), 100);
    assert.equal(failoverMs(samples, 100), 400);
  });
});

describe('failbackMs', () => {
  it('is the start of the first success via the healed address after the heal, minus the heal', () => {
    const samples = [ok(990, A), ok(1000), ok(1010), bad(1020), ok(1030, A), ok(1040, A)];
    assert.equal(failbackMs(samples, 1000, A), 30);
  });

  it('does not count uses of the address before the heal, nor failures', () => {
    assert.equal(failbackMs([ok(500, A), bad(1100)], 1000, A), undefined);
  });

  it('does not care in which order the samples finished', () => {
    assert.equal(failbackMs([ok(1300, A), ok(1200, A), ok(1250)], 1000, A), 200);
  });
});

describe('percentile (nearest rank)', () => {
  const values = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];

  it('gives measured values only', () => {
    assert.equal(percentile(values, 50), 5);
    assert.equal(percentile(values, 90), 9);
    assert.equal(percentile(values, 95), 10);
    assert.equal(percentile(values, 100), 10);
    assert.equal(percentile(values, 0), 1);
    assert.equal(percentile([42], 50), 42);
  });

  it('does not reorder its input', () => {
    const copy = [...values];
    percentile(values, 50);
    assert.deepEqual(values, copy);
  });

  it('refuses no values and percentiles outside 0..100', () => {
    assert.throws(() => percentile([], 50), /no values/);
    assert.throws(() => percentile([1], 101), /0\.\.100/);
  });
});

describe('monotonicMs', () => {
  it('is process.hrtime in ms, never going backwards', () => {
    const before = Number(process.hrtime.bigint()) / 1e6;
    const a = monotonicMs();
    const b = monotonicMs();
    assert.ok(b >= a);
    assert.ok(Math.abs(a - before) < 50, `${a} vs ${before}`);
  });
});
