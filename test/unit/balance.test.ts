import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DEADBAND, MIN_CAPACITY_BPS, RateEstimator, SAMPLE_MS, effectiveCapacity, leastLoadedWeights, sharesMoved, type UplinkLoad,
} from '../../src/daemon/balance.js';

const mbit = 1_000_000;

function load(rx: number, capacityMbit?: number, tx = 0): UplinkLoad {
  const capacity = capacityMbit === undefined ? undefined : { up: capacityMbit * mbit, down: capacityMbit * mbit };
  return { rxBps: rx * mbit, txBps: tx * mbit, capacity, peakRxBps: rx * mbit, peakTxBps: tx * mbit };
}

test('the estimator is within 5% of a steady rate after 1.2 s, and keeps the peak', () => {
  const e = new RateEstimator();
  let bytes = 0;
  for (let t = 0; t <= 1200; t += SAMPLE_MS) {
    e.update({ rxBytes: bytes, txBytes: 0, atMs: t });
    bytes += (10 * mbit / 8) * (SAMPLE_MS / 1000); // 10 Mbit/s
  }
  assert.ok(Math.abs(e.rxBps - 10 * mbit) / (10 * mbit) < 0.05, `${e.rxBps}`);
  for (let t = 1300; t <= 3300; t += SAMPLE_MS) e.update({ rxBytes: bytes, txBytes: 0, atMs: t }); // idle
  assert.ok(e.rxBps < 0.01 * 10 * mbit, `after 2 s idle: ${e.rxBps}`);
  assert.ok(e.peakRxBps > 9.5 * mbit);
});

test('a counter reset does not produce a negative rate', () => {
  const e = new RateEstimator();
  e.update({ rxBytes: 1e9, txBytes: 1e9, atMs: 0 });
  e.update({ rxBytes: 0, txBytes: 0, atMs: 100 });
  assert.equal(e.rxBps, 0);
});

test('weights follow spare capacity', () => {
  assert.deepEqual(leastLoadedWeights([load(0, 20), load(0, 10), load(0, 10)]).weights, [20 * mbit, 10 * mbit, 10 * mbit]);
  assert.deepEqual(leastLoadedWeights([load(5, 20), load(0, 10)]).weights, [15 * mbit, 10 * mbit]);
});

test('a full uplink gets no new connections while another has room', () => {
  assert.deepEqual(leastLoadedWeights([load(19, 20), load(0, 10), load(0, 10)]).weights, [0, 10 * mbit, 10 * mbit]);
  assert.deepEqual(leastLoadedWeights([load(19, 20), load(9.5, 10), load(0, 10)]).weights, [0, 0, 10 * mbit]);
});

test('a full uplink stays full until it drops below the room threshold', () => {
  const dip = [load(17, 20), load(0, 10)]; // 85%: between the thresholds
  assert.deepEqual(leastLoadedWeights(dip).full, [false, false]);
  assert.deepEqual(leastLoadedWeights(dip, [true, false]), { weights: [0, 10 * mbit], full: [true, false] });
  assert.deepEqual(leastLoadedWeights([load(15, 20), load(0, 10)], [true, false]).full, [false, false]);
});

test('upload counts too: spare is the smaller of the two directions', () => {
  assert.deepEqual(leastLoadedWeights([load(0, 20, 15), load(0, 10)]).weights, [5 * mbit, 10 * mbit]);
});

test('all full: weights fall back to capacity', () => {
  assert.deepEqual(leastLoadedWeights([load(20, 20), load(10, 10)]).weights, [20 * mbit, 10 * mbit]);
});

test('without a configured capacity, the highest rate seen is the capacity', () => {
  const unknown: UplinkLoad = { rxBps: 2 * mbit, txBps: 0, peakRxBps: 8 * mbit, peakTxBps: 0 };
  assert.deepEqual(effectiveCapacity(unknown), { down: 8 * mbit, up: MIN_CAPACITY_BPS });
});

test('the map is only rewritten past the deadband', () => {
  assert.equal(sharesMoved([0.5, 0.5], [0.5 + DEADBAND / 2, 0.5 - DEADBAND / 2]), false);
  assert.equal(sharesMoved([0.5, 0.5], [0.5 + DEADBAND, 0.5 - DEADBAND]), true);
  assert.equal(sharesMoved([0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]), true);
});

test('an uplink that fills or gets room again rewrites the map, however small its share was', () => {
  // Nearly full (a share under the deadband), then full: it must stop getting new connections.
  assert.equal(sharesMoved([0.034, 0.483, 0.483], [0, 0.5, 0.5]), true);
  assert.equal(sharesMoved([0, 0.5, 0.5], [0.03, 0.485, 0.485]), true);
});
