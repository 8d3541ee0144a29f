// A dual-stack router's status and the registry's output for it: metrics.test.ts
// lints it with promtool, grafana-dashboard.test.ts checks the dashboard's metric names against it.

import { createMetrics } from '../../src/api/metrics.js';
import { BYTE_COUNTERS, type Status } from '../../src/api/status.js';

const since = '2026-12-02T04:50:01.000Z';

/** A router with a dual-stack uplink (one family down), an IPv4-only one, and a restore behind it. */
export function dualStackStatus(): Status {
  return {
    uplinks: [
      {
        name: 'isp1', interface: 'wan1', state: 'up', since, address: '198.51.100.2', holds_address: true, gateway: '198.51.100.1', tier: 1, weight: 2,
        share: 0.667, latency_ms: 12.5, loss: 0, rx_bps: 8_400_000, tx_bps: 950_000, connections: 42,
        families: {
          ipv4: { state: 'up', since, address: '198.51.100.2', gateway: '198.51.100.1', latency_ms: 12.5, loss: 0 },
          ipv6: { state: 'down', since, address: '2001:db8:1::2', gateway: 'fe80::1', latency_ms: null, loss: 1 },
        },
        [BYTE_COUNTERS]: { rxBytes: 81_234_567_890, txBytes: 9_876_543_210 },
      },
      {
        name: 'isp2', interface: 'ppp0', state: 'pending', since, address: '203.0.113.9', holds_address: false, gateway: null, tier: 2, weight: 1,
        share: 0.333, latency_ms: null, loss: 0.25, rx_bps: 0, tx_bps: 0, connections: 0,
        [BYTE_COUNTERS]: { rxBytes: 1_000, txBytes: 2_000 },
      },
    ],
    events: [{ at: since, uplink: 'isp1', event: 'down', reason: 'ipv6: 3 bad rounds', family: 'ipv6' }],
    self_healing: {
      restores: 2, by_cause: { 'nft-table': 1, rules: 1 }, backoff_ms: 1500,
      last: { at: since, cause: 'rules', detail: 'policy rule 1000 removed', trigger: 'netlink', restore_ms: 12 },
    },
  };
}

/** The registry's text for that router, with a transition per family and a restore counted. */
export async function dualStackMetrics(status: Status = dualStackStatus()) {
  const metrics = createMetrics(async () => status);
  metrics.countTransition('isp1', 'wan1', 'up', 'ipv4');
  metrics.countTransition('isp1', 'wan1', 'down', 'ipv6');
  metrics.countTransition('isp2', 'wan2', 'up');
  metrics.countRestore('rules');
  metrics.countEvent('down', 'isp1');
  metrics.countEvent('reload');
  return { metrics, text: await metrics.registry.metrics() };
}
