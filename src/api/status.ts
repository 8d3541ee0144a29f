// The daemon's view, as the `status --json` schema in the README, and as the aligned
// table `uplinkd status` prints.

import type { UplinkState } from '../daemon/health.js';

export interface UplinkStatus {
  name: string;
  interface: string;
  state: UplinkState;
  since: string;
  address: string | null;
  gateway: string | null;
  tier: number;
  weight: number;
  share: number;
  latency_ms: number | null;
  loss: number;
  rx_bps: number;
  tx_bps: number;
  connections: number;
}

export interface StatusEvent {
  at: string;
  /** null for events of the daemon as a whole (reload). */
  uplink: string | null;
  event: 'up' | 'down' | 'address' | 'reload' | 'restore';
  reason: string;
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

export function formatStatus(status: Status, eventCount = 5): string {
  const header = ['UPLINK', 'IFACE', 'STATE', 'SINCE', 'ADDRESS', 'GATEWAY', 'TIER', 'SHARE', 'LATENCY', 'LOSS', 'RX', 'TX', 'CONNS'];
  const rows = status.uplinks.map((u) => [
    u.name, u.interface, u.state, u.since.slice(11, 19), u.address ?? '-', u.gateway ?? '-', String(u.tier),
    `${(u.share * 100).toFixed(1)}%`, u.latency_ms === null ? '-' : `${u.latency_ms.toFixed(1)}ms`,
    `${(u.loss * 100).toFixed(0)}%`, rate(u.rx_bps), rate(u.tx_bps), String(u.connections),
  ]);
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
    for (const e of status.events.slice(0, eventCount)) out.push(`  ${e.at}  ${e.uplink ?? '*'} ${e.event}: ${e.reason}`);
  }
  return out.join('\n') + '\n';
}
