// The daemon's view, as the `status --json` schema in the README, and as the aligned
// table `uplinkd status` prints.

import type { UplinkState } from '../daemon/health.js';
import type { Family } from '../plan/state.js';

/**
 * An uplink interface's byte counters as steering.ts last read them, for
 * /metrics (its _bytes_total counters). Under a symbol, so the status JSON
 * (socket, /api/status) does not carry them.
 */
export const BYTE_COUNTERS = Symbol('byteCounters');

/** A state as a number, as /metrics (uplinkd_uplink_up) and /api/history carry it: 1 up, 0 down, -1 pending. */
export function stateValue(state: UplinkState): number {
  return state === 'up' ? 1 : state === 'down' ? 0 : -1;
}

export interface UplinkStatus {
  name: string;
  interface: string;
  /** Up while any family is up; pending while none is up and one is pending; else down. */
  state: UplinkState;
  since: string;
  /** IPv4's (the families' own are under `families`): the configured `address` if any, else the interface's own. */
  address: string | null;
  /**
   * Whether this router holds that address now, read from the interface's
   * addresses: on a router pair, true on the uplink's master and false on its
   * backup (README "Router pair"). With `address: auto`, whether it has one.
   */
  holds_address: boolean;
  gateway: string | null;
  tier: number;
  weight: number;
  share: number;
  latency_ms: number | null;
  loss: number;
  rx_bps: number;
  tx_bps: number;
  /** Both families'. */
  connections: number;
  /**
   * Each family's own health, once the uplink's IPv6 counts (gateway6 not off,
   * and the plan has IPv6): README "Health tracking, failover and kernel events".
   */
  families?: { ipv4: FamilyStatus; ipv6: FamilyStatus };
  [BYTE_COUNTERS]?: { rxBytes: number; txBytes: number };
}

/** One family of an uplink. */
export interface FamilyStatus {
  state: UplinkState;
  since: string;
  address: string | null;
  gateway: string | null;
  latency_ms: number | null;
  loss: number;
}

export interface StatusEvent {
  at: string;
  /** null for events of the daemon as a whole (reload). */
  uplink: string | null;
  event: 'up' | 'down' | 'address' | 'reload' | 'restore';
  reason: string;
  /** The family an up, down or address event is of, on an uplink whose IPv6 counts (absent on an IPv4-only one). */
  family?: Family;
}

/** What the daemon restored after someone else changed its kernel state (README "Self-healing"). */
export interface SelfHealingStatus {
  restores: number;
  /** Restores per kind of drift: nft-table, nft-structure, nft-elements, rules, routes, sysctls, update-failed. */
  by_cause: Record<string, number>;
  last: { at: string; cause: string; detail: string; trigger: string; restore_ms: number } | null;
  /** The current gap between restores while someone keeps changing the state; 0 when not backing off. */
  backoff_ms: number;
}

export interface Status { uplinks: UplinkStatus[]; events: StatusEvent[]; self_healing: SelfHealingStatus }

function rate(bps: number): string {
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(1)}G`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)}M`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(1)}k`;
  return `${Math.round(bps)}`;
}

/** An address this router does not hold (the backup of a router pair) is marked as such. */
const addressCell = (u: UplinkStatus) => (u.address === null ? '-' : u.holds_address ? u.address : `${u.address} (not held)`);

/**
 * The aligned table. A dual-stack uplink takes two rows: its own, whose
 * state and figures are IPv4's (as its address is), and an `ipv6` row under
 * it with IPv6's; the uplink-wide columns (tier, share, rates, connections)
 * are on the first only. An IPv4-only uplink keeps its one row.
 */
export function formatStatus(status: Status, eventCount = 5): string {
  const header = ['UPLINK', 'IFACE', 'STATE', 'SINCE', 'ADDRESS', 'GATEWAY', 'TIER', 'SHARE', 'LATENCY', 'LOSS', 'RX', 'TX', 'CONNS'];
  const latency = (ms: number | null) => (ms === null ? '-' : `${ms.toFixed(1)}ms`);
  const loss = (ratio: number) => `${(ratio * 100).toFixed(0)}%`;
  const rows = status.uplinks.flatMap((u) => {
    const v4 = u.families?.ipv4;
    const v6 = u.families?.ipv6;
    const row = [
      u.name, u.interface, v4?.state ?? u.state, (v4?.since ?? u.since).slice(11, 19), addressCell(u), u.gateway ?? '-', String(u.tier),
      `${(u.share * 100).toFixed(1)}%`, latency(u.latency_ms), loss(u.loss), rate(u.rx_bps), rate(u.tx_bps), String(u.connections),
    ];
    if (!v6) return [row];
    return [row, ['  ipv6', '', v6.state, v6.since.slice(11, 19), v6.address ?? '-', v6.gateway ?? '-', '', '', latency(v6.latency_ms), loss(v6.loss), '', '', '']];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  const out = [line(header), ...rows.map(line)];
  const healing = status.self_healing;
  if (healing && healing.restores > 0) {
    const causes = Object.entries(healing.by_cause).map(([k, n]) => `${k} ${n}`).join(', ');
    out.push('', `self-healing: ${healing.restores} restore${healing.restores === 1 ? '' : 's'} (${causes})` +
      (healing.last ? `; last ${healing.last.at}: ${healing.last.detail}` : '') +
      (healing.backoff_ms > 0 ? `; backing off, ${healing.backoff_ms} ms between restores` : ''));
  }
  if (status.events.length > 0) {
    out.push('', 'recent events:');
    for (const e of status.events.slice(0, eventCount)) out.push(`  ${e.at}  ${e.uplink ?? '*'} ${e.family ? `${e.family} ` : ''}${e.event}: ${e.reason}`);
  }
  return out.join('\n') + '\n';
}
