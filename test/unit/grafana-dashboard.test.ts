// packaging/grafana/uplinkd-dashboard.json: imports into Grafana with a
// Prometheus data source picked at import (DS_PROMETHEUS), and every metric
// its queries read is one the daemon's registry exports.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { dualStackMetrics } from './metrics-fixture.js';

interface Target { expr?: string; datasource?: { uid?: string } }
interface Panel { title: string; type: string; datasource?: { uid?: string }; targets?: Target[] }
interface Dashboard {
  __inputs: { name: string; type: string; pluginId: string }[];
  panels: Panel[];
  annotations: { list: { name: string; expr?: string; datasource?: { uid?: string } }[] };
  templating: { list: { query: { query: string } | string }[] };
}

const dashboard = JSON.parse(readFileSync(new URL('../../packaging/grafana/uplinkd-dashboard.json', import.meta.url), 'utf8')) as Dashboard;
const metricNames = (expr: string) => [...expr.matchAll(/\buplinkd_[a-z0-9_]+\b/g)].map((m) => m[0]);

describe('Grafana dashboard', () => {
  it('asks for a Prometheus data source at import, and every panel uses it', () => {
    assert.deepEqual(dashboard.__inputs.map((i) => [i.name, i.type, i.pluginId]), [['DS_PROMETHEUS', 'datasource', 'prometheus']]);
    for (const panel of dashboard.panels) {
      assert.equal(panel.datasource?.uid, '${DS_PROMETHEUS}', panel.title);
      for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid, '${DS_PROMETHEUS}', panel.title);
    }
    for (const annotation of dashboard.annotations.list) assert.equal(annotation.datasource?.uid, '${DS_PROMETHEUS}', annotation.name);
  });

  it('has panels for state, latency, loss, throughput, share, connections, transitions and events', () => {
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
    for (const metric of ['uplinkd_uplink_up', 'uplinkd_probe_latency_seconds', 'uplinkd_probe_loss_ratio', 'uplinkd_uplink_receive_bytes_total',
      'uplinkd_uplink_transmit_bytes_total', 'uplinkd_uplink_share_ratio', 'uplinkd_uplink_connections', 'uplinkd_uplink_transitions_total',
      'uplinkd_events_total']) {
      assert.ok(exprs.some((e) => metricNames(e).includes(metric)), `no panel shows ${metric}`);
    }
    // Throughput in bits per second from the byte counters.
    assert.ok(exprs.some((e) => /rate\(uplinkd_uplink_receive_bytes_total\{[^}]*\}\[[^\]]+\]\) \* 8/.test(e)));
    // State over time, and each transition marked on every time panel.
    assert.ok(dashboard.panels.some((p) => p.type === 'state-timeline' && (p.targets ?? []).some((t) => metricNames(t.expr ?? '').includes('uplinkd_uplink_up'))));
    assert.ok(dashboard.annotations.list.some((a) => metricNames(a.expr ?? '').includes('uplinkd_uplink_transitions_total')));
  });

  it('reads only metrics the daemon exports', async () => {
    const { metrics } = await dualStackMetrics();
    const exported = new Set((await metrics.registry.getMetricsAsJSON()).map((m) => m.name));
    assert.ok(exported.size >= 10, `only ${exported.size} metrics in the registry`);
    const queries = [
      ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => [p.title, t.expr ?? ''])),
      ...dashboard.templating.list.map((v) => ['variable', typeof v.query === 'string' ? v.query : v.query.query]),
      ...dashboard.annotations.list.map((a) => [`annotation ${a.name}`, a.expr ?? '']),
    ];
    for (const [where, expr] of queries) {
      assert.ok(metricNames(expr).length > 0, `${where}: ${expr} reads no uplinkd metric`);
      for (const name of metricNames(expr)) assert.ok(exported.has(name), `${where}: ${name} is not exported (${[...exported].join(', ')})`);
    }
  });
});
