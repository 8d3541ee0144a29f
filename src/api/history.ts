// The last minutes of each uplink's figures, for the status page's graphs
// (README "Status page"). One sample of every uplink every HISTORY_INTERVAL_MS,
// in a ring of fixed length: memory is bounded by the number of uplinks,
// whatever the uptime.

import type { Family } from '../plan/state.js';
import { stateValue, type FamilyStatus, type Status, type UplinkStatus } from './status.js';

export const HISTORY_INTERVAL_MS = 2000;
export const HISTORY_WINDOW_MS = 10 * 60 * 1000;

/** One family's series: state as 1 up, 0 down, -1 pending; null where the uplink or family was not there. */
export interface FamilyHistory {
  state: (number | null)[];
  latency_ms: (number | null)[];
  loss: (number | null)[];
}

export interface UplinkHistory {
  interface: string;
  rx_bps: (number | null)[];
  tx_bps: (number | null)[];
  share: (number | null)[];
  families: { ipv4: FamilyHistory; ipv6?: FamilyHistory };
}

/** `/api/history`: every series is aligned with `at` (milliseconds since the epoch, oldest first). */
export interface HistoryJson {
  interval_ms: number;
  window_ms: number;
  at: number[];
  uplinks: Record<string, UplinkHistory>;
}

// The figures of one uplink in one sample, in this order; NaN where absent.
// Not connections: counting them lists the whole conntrack table, too dear every
// HISTORY_INTERVAL_MS on a busy router; the page shows the current count from /api/status.
const UPLINK_FIELDS = ['rx_bps', 'tx_bps', 'share'] as const;
const FAMILY_FIELDS = ['state', 'latency_ms', 'loss'] as const;
const FAMILIES: Family[] = ['ipv4', 'ipv6'];
const FIELD_COUNT = UPLINK_FIELDS.length + FAMILIES.length * FAMILY_FIELDS.length;

/** One uplink's ring: FIELD_COUNT figures per slot, slot k at k × FIELD_COUNT. */
interface Track { interface: string; values: Float64Array }

function writeSample(values: Float64Array, at: number, u: UplinkStatus): void {
  values.fill(NaN, at, at + FIELD_COUNT);
  UPLINK_FIELDS.forEach((field, i) => (values[at + i] = u[field]));
  // An IPv4-only uplink's own figures are its IPv4's.
  const families: Partial<Record<Family, FamilyStatus>> = u.families ?? { ipv4: u };
  FAMILIES.forEach((family, k) => {
    const f = families[family];
    if (!f) return;
    const i = at + UPLINK_FIELDS.length + k * FAMILY_FIELDS.length;
    values[i] = stateValue(f.state);
    values[i + 1] = f.latency_ms ?? NaN;
    values[i + 2] = f.loss;
  });
}

/**
 * Fixed-size typed arrays, allocated once per uplink: recording a sample
 * writes into them in place, and the memory is capacity × FIELD_COUNT × 8
 * bytes per uplink plus the times, whatever the uptime.
 */
export class History {
  /** Samples the ring holds: window ÷ interval. */
  readonly capacity: number;
  private readonly atMs: Float64Array;
  private readonly tracks = new Map<string, Track>();
  private next = 0;
  private count = 0;

  constructor(readonly intervalMs = HISTORY_INTERVAL_MS, readonly windowMs = HISTORY_WINDOW_MS) {
    this.capacity = Math.ceil(windowMs / intervalMs);
    this.atMs = new Float64Array(this.capacity);
  }

  /** Samples held now (at most `capacity`). */
  get length(): number {
    return this.count;
  }

  /** Bytes held in the ring's arrays. */
  get bytes(): number {
    return this.atMs.byteLength + [...this.tracks.values()].reduce((sum, t) => sum + t.values.byteLength, 0);
  }

  /** `status` may leave `connections` uncounted: history does not keep them. */
  record(status: Status, atMs = Date.now()): void {
    const slot = this.next;
    this.atMs[slot] = atMs;
    const names = new Set(status.uplinks.map((u) => u.name));
    // Uplinks are those of the newest sample: one removed by a reload is gone.
    for (const name of this.tracks.keys()) if (!names.has(name)) this.tracks.delete(name);
    for (const u of status.uplinks) {
      let track = this.tracks.get(u.name);
      if (!track) {
        // NaN (null in the JSON) for the samples taken before the uplink was there.
        track = { interface: u.interface, values: new Float64Array(this.capacity * FIELD_COUNT).fill(NaN) };
        this.tracks.set(u.name, track);
      }
      track.interface = u.interface;
      writeSample(track.values, slot * FIELD_COUNT, u);
    }
    this.next = (slot + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }

  /** Oldest first. */
  toJSON(): HistoryJson {
    const first = this.count < this.capacity ? 0 : this.next;
    const slots = Array.from({ length: this.count }, (_, k) => (first + k) % this.capacity);
    const uplinks: Record<string, UplinkHistory> = {};
    for (const [name, { interface: iface, values }] of this.tracks) {
      const series = (i: number) => slots.map((slot) => {
        const v = values[slot * FIELD_COUNT + i];
        return Number.isNaN(v) ? null : v;
      });
      const family = (k: number): FamilyHistory => {
        const at = UPLINK_FIELDS.length + k * FAMILY_FIELDS.length;
        return { state: series(at), latency_ms: series(at + 1), loss: series(at + 2) };
      };
      const ipv6 = family(1);
      uplinks[name] = {
        interface: iface,
        rx_bps: series(0), tx_bps: series(1), share: series(2),
        families: { ipv4: family(0), ...(ipv6.state.some((v) => v !== null) ? { ipv6 } : {}) },
      };
    }
    return { interval_ms: this.intervalMs, window_ms: this.windowMs, at: slots.map((slot) => this.atMs[slot]), uplinks };
  }
}
