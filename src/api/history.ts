// The last minutes of each uplink's figures, for the status page's graphs
// (README "Status page"). One sample of every uplink every HISTORY_INTERVAL_MS,
// in a ring of fixed length: memory is bounded by the number of uplinks,
// whatever the uptime.

import type { Family } from '../plan/state.js';
import type { FamilyStatus, Status, UplinkStatus } from './status.js';

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

interface Sample { atMs: number; uplinks: Map<string, { interface: string; values: Float64Array }> }

const stateNumber = (s: FamilyStatus['state']) => (s === 'up' ? 1 : s === 'down' ? 0 : -1);

function sampleOf(u: UplinkStatus): Float64Array {
  const values = new Float64Array(FIELD_COUNT).fill(NaN);
  UPLINK_FIELDS.forEach((field, i) => (values[i] = u[field]));
  // An IPv4-only uplink's own figures are its IPv4's.
  const families: Partial<Record<Family, FamilyStatus>> = u.families ?? { ipv4: u };
  FAMILIES.forEach((family, k) => {
    const f = families[family];
    if (!f) return;
    const at = UPLINK_FIELDS.length + k * FAMILY_FIELDS.length;
    values[at] = stateNumber(f.state);
    values[at + 1] = f.latency_ms ?? NaN;
    values[at + 2] = f.loss;
  });
  return values;
}

export class History {
  private readonly ring: (Sample | undefined)[];
  private next = 0;

  constructor(readonly intervalMs = HISTORY_INTERVAL_MS, readonly windowMs = HISTORY_WINDOW_MS) {
    this.ring = new Array(Math.ceil(windowMs / intervalMs));
  }

  /** Samples held now (at most window ÷ interval). */
  get length(): number {
    return this.ring.filter(Boolean).length;
  }

  /** `status` may leave `connections` uncounted: history does not keep them. */
  record(status: Status, atMs = Date.now()): void {
    const uplinks = new Map(status.uplinks.map((u) => [u.name, { interface: u.interface, values: sampleOf(u) }]));
    this.ring[this.next] = { atMs, uplinks };
    this.next = (this.next + 1) % this.ring.length;
  }

  /** Oldest first. Uplinks are those of the newest sample (one removed by a reload is gone). */
  toJSON(): HistoryJson {
    const samples = [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)].filter((s): s is Sample => s !== undefined);
    const newest = samples.at(-1);
    const uplinks: Record<string, UplinkHistory> = {};
    for (const [name, { interface: iface }] of newest?.uplinks ?? []) {
      const series = (i: number) => samples.map((s) => {
        const v = s.uplinks.get(name)?.values[i];
        return v === undefined || Number.isNaN(v) ? null : v;
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
    return { interval_ms: this.intervalMs, window_ms: this.windowMs, at: samples.map((s) => s.atMs), uplinks };
  }
}
