// `balance: least-loaded`: a closed loop from measured rates to the shares of
// new connections. Pure: counter samples in, weights out; the daemon reads the
// counters and writes the balance map.
//
// The control law, once per SAMPLE_MS:
//   1. rate: each uplink's rx and tx rate, smoothed by an EWMA with time
//      constant RATE_TAU_MS (fast enough to see a download ramp up within a
//      second, slow enough to ignore one burst);
//   2. capacity: the configured `capacity`, else the highest smoothed rate
//      seen so far (at least MIN_CAPACITY_BPS), so an unconfigured uplink
//      learns its size from the traffic it has carried;
//   3. spare: min(capacity.down - rx, capacity.up - tx), never below 0;
//   4. weights: proportional to spare. An uplink used above FULL_UTILISATION
//      gets no new connections while another has room: a full uplink only
//      adds queueing. It counts as full until it drops below
//      ROOM_UTILISATION (hysteresis: a saturated TCP flow dips now and then).
//      If all are full, weights fall back to capacity;
//   5. the daemon rewrites the balance map only when some uplink's share
//      moves by DEADBAND or more, so steady load does not churn the map,
//      or when an uplink's share falls to 0 or rises from it: an uplink
//      that was nearly full (a share under DEADBAND) and then fills must
//      stop getting new connections all the same.
// Established connections keep their uplink whatever the map says (their
// conntrack mark), so steering only ever moves new connections, and the loop
// cannot oscillate faster than connections arrive.

export const SAMPLE_MS = 100;
/** Without least-loaded, the rates are only reported (status, metrics): sampled once a second. */
export const STATUS_SAMPLE_MS = 1000;
export const RATE_TAU_MS = 300;
export const MIN_CAPACITY_BPS = 1_000_000;
export const FULL_UTILISATION = 0.9;
export const ROOM_UTILISATION = 0.8;
export const DEADBAND = 0.05;

export interface Counters { rxBytes: number; txBytes: number; atMs: number }

/** Smoothed rates and learned capacity of one uplink. */
export class RateEstimator {
  rxBps = 0;
  txBps = 0;
  /** Highest smoothed rates seen: the capacity of an uplink without one configured. */
  peakRxBps = 0;
  peakTxBps = 0;
  private last?: Counters;

  /** The counters of the last sample: /metrics exports them as the uplink's byte counters. */
  get latest(): Counters | undefined {
    return this.last;
  }

  update(sample: Counters): void {
    const last = this.last;
    this.last = sample;
    if (!last || sample.atMs <= last.atMs) return;
    const seconds = (sample.atMs - last.atMs) / 1000;
    // Counters only grow; a smaller one means the interface was recreated.
    const rx = Math.max(0, ((sample.rxBytes - last.rxBytes) * 8) / seconds);
    const tx = Math.max(0, ((sample.txBytes - last.txBytes) * 8) / seconds);
    const alpha = 1 - Math.exp(-(sample.atMs - last.atMs) / RATE_TAU_MS);
    this.rxBps += alpha * (rx - this.rxBps);
    this.txBps += alpha * (tx - this.txBps);
    this.peakRxBps = Math.max(this.peakRxBps, this.rxBps);
    this.peakTxBps = Math.max(this.peakTxBps, this.txBps);
  }
}

export interface UplinkLoad {
  rxBps: number;
  txBps: number;
  /** Configured capacity in bits per second, per direction. */
  capacity?: { up?: number; down?: number };
  peakRxBps: number;
  peakTxBps: number;
}

export function effectiveCapacity(load: UplinkLoad): { down: number; up: number } {
  return {
    down: load.capacity?.down ?? Math.max(MIN_CAPACITY_BPS, load.peakRxBps),
    up: load.capacity?.up ?? Math.max(MIN_CAPACITY_BPS, load.peakTxBps),
  };
}

/**
 * Weights for the uplinks that may carry new connections, in the order given,
 * and which of them are full now. `wasFull` is the previous answer, for the
 * hysteresis.
 */
export function leastLoadedWeights(loads: UplinkLoad[], wasFull: boolean[] = []): { weights: number[]; full: boolean[] } {
  const capacities = loads.map(effectiveCapacity);
  const utilisation = loads.map((l, i) => Math.max(l.rxBps / capacities[i].down, l.txBps / capacities[i].up));
  const spare = loads.map((l, i) => Math.max(0, Math.min(capacities[i].down - l.rxBps, capacities[i].up - l.txBps)));
  const full = utilisation.map((u, i) => u >= (wasFull[i] ? ROOM_UTILISATION : FULL_UTILISATION));
  if (full.every(Boolean)) return { weights: capacities.map((c) => c.down), full };
  return { weights: spare.map((s, i) => (full[i] ? 0 : s)), full };
}

/** Whether new shares differ enough from the installed ones to rewrite the map. */
export function sharesMoved(installed: number[], next: number[]): boolean {
  return installed.length !== next.length ||
    next.some((s, i) => Math.abs(s - installed[i]) >= DEADBAND || (s === 0) !== (installed[i] === 0));
}
