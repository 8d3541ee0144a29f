// The daemon's view, as the SPEC's `status --json` schema, and as the aligned
// table `uplinkd status` prints.

import type { UplinkState } from './health.js';

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
  event: 'up' | 'down' | 'address' | 'reload';
  reason: string;
}

export interface Status { uplinks: UplinkStatus[]; events: StatusEvent[] }

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
  if (status.events.length > 0) {
    out.push('', 'recent events:');
    for (const e of status.events.slice(0, eventCount)) out.push(`  ${e.at}  ${e.uplink ?? '*'} ${e.event}: ${e.reason}`);
  }
  return out.join('\n') + '\n';
}
