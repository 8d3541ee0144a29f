// /metrics (src/api/metrics.ts) by Prometheus conventions, checked by
// Prometheus's own linter, `promtool check metrics`, on the registry's real
// output for a dual-stack router; and the series a user reads off it.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BYTE_COUNTERS, type Status } from '../../src/api/status.js';
import { assertPromtoolAccepts } from '../promtool.js';
import { dualStackMetrics, dualStackStatus } from './metrics-fixture.js';

describe('/metrics', () => {
  it('passes promtool check metrics', async () => {
    assertPromtoolAccepts((await dualStackMetrics()).text);
  });

  it('exports the interface byte counters, with uplink and interface labels', async () => {
    const { text } = await dualStackMetrics();
    for (const line of [
      '# TYPE uplinkd_uplink_receive_bytes_total counter',
      'uplinkd_uplink_receive_bytes_total{uplink="isp1",interface="wan1"} 81234567890',
      'uplinkd_uplink_transmit_bytes_total{uplink="isp1",interface="wan1"} 9876543210',
      'uplinkd_uplink_receive_bytes_total{uplink="isp2",interface="ppp0"} 1000',
      'uplinkd_uplink_share_ratio{uplink="isp1",interface="wan1"} 0.667',
      'uplinkd_uplink_connections{uplink="isp1",interface="wan1"} 42',
      'uplinkd_uplink_up{uplink="isp1",interface="wan1",family="ipv4"} 1',
      'uplinkd_uplink_up{uplink="isp1",interface="wan1",family="ipv6"} 0',
      'uplinkd_uplink_up{uplink="isp2",interface="ppp0"} -1',
      'uplinkd_probe_latency_seconds{uplink="isp1",interface="wan1",family="ipv4"} 0.0125',
      'uplinkd_probe_loss_ratio{uplink="isp2",interface="ppp0"} 0.25',
      'uplinkd_uplink_transitions_total{uplink="isp1",interface="wan1",family="ipv6",to="down"} 1',
      'uplinkd_restore_backoff_seconds 1.5',
    ]) assert.ok(text.split('\n').includes(line), `missing ${line}\n${text}`);
    assert.doesNotMatch(text, /bits_per_second/);
  });

  it('says per uplink whether this router holds its address', async () => {
    const { text } = await dualStackMetrics();
    for (const line of [
      '# TYPE uplinkd_uplink_address_held gauge',
      'uplinkd_uplink_address_held{uplink="isp1",interface="wan1"} 1',
      'uplinkd_uplink_address_held{uplink="isp2",interface="ppp0"} 0',
    ]) assert.ok(text.split('\n').includes(line), `missing ${line}\n${text}`);
  });

  it("counts the event log's entries and exports each uplink's tier", async () => {
    const { text } = await dualStackMetrics();
    for (const line of [
      '# TYPE uplinkd_events_total counter',
      'uplinkd_events_total{uplink="isp1",event="down"} 1',
      'uplinkd_events_total{event="reload"} 1',
      'uplinkd_uplink_tier{uplink="isp1",interface="wan1"} 1',
      'uplinkd_uplink_tier{uplink="isp2",interface="ppp0"} 2',
    ]) assert.ok(text.split('\n').includes(line), `missing ${line}\n${text}`);
  });

  it('leaves out the byte counters of an uplink not sampled yet', async () => {
    const status = dualStackStatus();
    delete status.uplinks[1][BYTE_COUNTERS];
    const { text } = await dualStackMetrics(status);
    assert.doesNotMatch(text, /_bytes_total\{uplink="isp2"/);
    assert.match(text, /_bytes_total\{uplink="isp1"/);
  });

  it('keeps the byte counters out of the status JSON', () => {
    const json = JSON.parse(JSON.stringify(dualStackStatus())) as Status;
    assert.deepEqual(Object.keys(json.uplinks[0]), [
      'name', 'interface', 'state', 'since', 'address', 'holds_address', 'gateway', 'tier', 'weight', 'share', 'latency_ms', 'loss', 'rx_bps', 'tx_bps',
      'connections', 'families',
    ]);
  });
});
