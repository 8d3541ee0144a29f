// /metrics: Prometheus metrics, read from the daemon's status at each scrape.

import { Counter, Gauge, Registry } from 'prom-client';
import type { StatusSource } from './socket.js';
import type { Family } from '../plan/state.js';
import { BYTE_COUNTERS, stateValue, type FamilyStatus, type Status, type StatusEvent, type UplinkStatus } from './status.js';

/** Prometheus metrics, filled from a fresh status at each scrape. */
export interface Metrics {
  registry: Registry;
  /** `family`: given for a dual-stack uplink's transitions, left out for an IPv4-only uplink's (README "Health tracking, failover and kernel events"). */
  countTransition(uplink: string, iface: string, to: string, family?: Family): void;
  countRestore(cause: string): void;
  /** Every entry of the status's event log; `uplink` for an uplink's events (none for a reload). */
  countEvent(event: StatusEvent['event'], uplink?: string): void;
}

export function createMetrics(status: StatusSource): Metrics {
  const registry = new Registry();
  // prom-client collects all metrics of a scrape at once: they share one status.
  let scrape: Promise<Status> | undefined;
  const snapshot = () => (scrape ??= status().finally(() => (scrape = undefined)));
  // Per-uplink series carry the uplink and its interface (README "Metrics").
  const uplinkLabels = (u: UplinkStatus) => ({ uplink: u.name, interface: u.interface });
  const gauge = (name: string, help: string, value: (u: UplinkStatus) => number | null) =>
    new Gauge({
      name, help, labelNames: ['uplink', 'interface'], registers: [registry],
      async collect() {
        this.reset(); // a removed or renamed uplink leaves no stale series
        for (const u of (await snapshot()).uplinks) {
          const v = value(u);
          if (v !== null) this.set(uplinkLabels(u), v);
        }
      },
    });
  // The interface's own byte counters, as steering.ts last read them: Prometheus
  // takes rate() of them (×8 for bits); a recreated interface restarts them, which rate() handles.
  const bytes = (name: string, help: string, direction: 'rxBytes' | 'txBytes') =>
    new Counter({
      name, help, labelNames: ['uplink', 'interface'], registers: [registry],
      async collect() {
        this.reset();
        for (const u of (await snapshot()).uplinks) {
          const counters = u[BYTE_COUNTERS];
          if (counters) this.inc(uplinkLabels(u), counters[direction]);
        }
      },
    });
  // Health is per family: a dual-stack uplink has one series per family
  // (family="ipv4", family="ipv6"); an IPv4-only uplink keeps its one series, without the label.
  const familyGauge = (name: string, help: string, value: (f: FamilyStatus | UplinkStatus) => number | null) =>
    new Gauge({
      name, help, labelNames: ['uplink', 'interface', 'family'], registers: [registry],
      async collect() {
        const { uplinks } = await snapshot();
        this.reset(); // an uplink that became dual stack (or stopped being) leaves no stale series
        for (const u of uplinks) {
          const series: [Record<string, string>, FamilyStatus | UplinkStatus][] = u.families
            ? [[{ ...uplinkLabels(u), family: 'ipv4' }, u.families.ipv4], [{ ...uplinkLabels(u), family: 'ipv6' }, u.families.ipv6]]
            : [[uplinkLabels(u), u]];
          for (const [labels, of] of series) {
            const v = value(of);
            if (v !== null) this.set(labels, v);
          }
        }
      },
    });
  familyGauge('uplinkd_uplink_up', 'Health of the uplink (per family on a dual-stack uplink): 1 up, 0 down, -1 pending (no verdict yet).',
    (f) => stateValue(f.state));
  familyGauge('uplinkd_probe_latency_seconds', 'Mean round-trip time of the probes of the last round, in seconds.',
    (f) => (f.latency_ms === null ? null : f.latency_ms / 1000));
  familyGauge('uplinkd_probe_loss_ratio', 'Fraction (0..1) of the last `window` probes that got no answer.', (f) => f.loss);
  bytes('uplinkd_uplink_receive_bytes_total', 'Bytes received on the uplink interface (its kernel counter).', 'rxBytes');
  bytes('uplinkd_uplink_transmit_bytes_total', 'Bytes sent on the uplink interface (its kernel counter).', 'txBytes');
  gauge('uplinkd_uplink_share_ratio', 'Fraction (0..1) of new connections the uplink receives now.', (u) => u.share);
  gauge('uplinkd_uplink_connections', 'Tracked connections (both families) marked for the uplink.', (u) => u.connections);
  gauge('uplinkd_uplink_address_held', "1 while this router holds the uplink's address (on a router pair: it is the uplink's master), else 0.",
    (u) => (u.holds_address ? 1 : 0));
  gauge('uplinkd_uplink_tier', 'Tier of the uplink (1 first): a higher tier is used only while every uplink of every lower tier is down.', (u) => u.tier);
  const transitions = new Counter({
    name: 'uplinkd_uplink_transitions_total', help: 'Health state changes of the uplink (of one family on a dual-stack uplink), by the state entered.', labelNames: ['uplink', 'interface', 'family', 'to'], registers: [registry],
  });
  const events = new Counter({
    name: 'uplinkd_events_total', help: 'Entries of the event log (uplinkd status): up, down, address, reload, restore; labelled with the uplink for its own events.',
    labelNames: ['uplink', 'event'], registers: [registry],
  });
  const restores = new Counter({
    name: 'uplinkd_restores_total', help: 'Restores of kernel state that another program removed or changed, by what had changed.',
    labelNames: ['cause'], registers: [registry],
  });
  new Gauge({
    name: 'uplinkd_last_restore_timestamp_seconds', help: 'When the last restore happened (Unix time, seconds), labelled with its cause.', labelNames: ['cause'],
    registers: [registry],
    async collect() {
      this.reset();
      const last = (await snapshot()).self_healing.last;
      if (last) this.set({ cause: last.cause }, Date.parse(last.at) / 1000);
    },
  });
  new Gauge({
    name: 'uplinkd_restore_backoff_seconds', help: 'Current gap between restores while another program keeps changing the state, in seconds (0: not backing off).',
    registers: [registry],
    async collect() {
      this.set(((await snapshot()).self_healing.backoff_ms) / 1000);
    },
  });
  return {
    registry,
    countTransition: (uplink, iface, to, family) => transitions.inc({ uplink, interface: iface, ...(family ? { family } : {}), to }),
    countRestore: (cause) => restores.inc({ cause }),
    countEvent: (event, uplink) => events.inc(uplink ? { uplink, event } : { event }),
  };
}
