// The status page's back end without a browser: the history ring and the
// HTTP routes (README "Status page"). The browser test is test/lab/status-page.test.ts.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { History } from '../../src/api/history.js';
import { PAGE_DIR, serveHttp } from '../../src/api/http.js';
import type { Status, UplinkStatus } from '../../src/api/status.js';
import pino from 'pino';

const since = '2026-12-02T10:00:00.000Z';

function uplink(name: string, i: number, dualStack: boolean): UplinkStatus {
  const family = (state: 'up' | 'down') => ({ state, since, address: null, gateway: null, latency_ms: 1 + i, loss: 0.1 * i });
  return {
    name, interface: `wan${i}`, state: 'up', since, address: `198.51.100.${i}`, holds_address: true, gateway: null, tier: 1, weight: 1, share: 0.5,
    latency_ms: 1 + i, loss: 0.1 * i, rx_bps: 1000 * i, tx_bps: 10 * i, connections: i,
    ...(dualStack ? { families: { ipv4: family('up'), ipv6: family('down') } } : {}),
  };
}

const statusOf = (...uplinks: UplinkStatus[]): Status =>
  ({ uplinks, events: [], self_healing: { restores: 0, by_cause: {}, last: null, backoff_ms: 0 } });

test('history keeps at most one window of samples, oldest first, and aligns every series with its times', () => {
  const history = new History(2000, 10_000); // 5 samples
  for (let k = 0; k < 8; k++) history.record(statusOf(uplink('isp1', k, false)), 1000 * k);
  const json = history.toJSON();
  assert.equal(history.length, 5);
  assert.deepEqual(json.at, [3000, 4000, 5000, 6000, 7000]);
  assert.deepEqual(json.uplinks.isp1.rx_bps, [3000, 4000, 5000, 6000, 7000]);
  assert.deepEqual(json.uplinks.isp1.families.ipv4.latency_ms, [4, 5, 6, 7, 8]);
  assert.equal(json.uplinks.isp1.families.ipv6, undefined, 'an IPv4-only uplink has no IPv6 series');
});

test('history: per-family states, and null where an uplink was not there yet', () => {
  const history = new History(2000, 600_000);
  history.record(statusOf(uplink('isp1', 1, true)), 0);
  history.record(statusOf(uplink('isp1', 1, true), uplink('isp2', 2, false)), 2000);
  const json = history.toJSON();
  assert.deepEqual(json.uplinks.isp1.families.ipv4.state, [1, 1]);
  assert.deepEqual(json.uplinks.isp1.families.ipv6?.state, [0, 0]);
  assert.deepEqual(json.uplinks.isp2.rx_bps, [null, 2000]);
  assert.deepEqual(Object.keys(json.uplinks), ['isp1', 'isp2']);
});

test('history: an uplink a reload removed is gone, one it added starts with nulls', () => {
  const history = new History(2000, 6000); // 3 samples
  history.record(statusOf(uplink('isp1', 1, false), uplink('isp2', 2, false)), 0);
  history.record(statusOf(uplink('isp1', 1, false)), 2000);
  history.record(statusOf(uplink('isp1', 1, false), uplink('isp3', 3, false)), 4000);
  const json = history.toJSON();
  assert.deepEqual(Object.keys(json.uplinks), ['isp1', 'isp3']);
  assert.deepEqual(json.uplinks.isp3.rx_bps, [null, null, 3000]);
});

test('history wraps around many times and stays in order, its arrays never growing', () => {
  const history = new History(2000, 10_000); // 5 samples
  history.record(statusOf(uplink('isp1', 0, true)), 0);
  const bytes = history.bytes;
  for (let k = 1; k < 23; k++) history.record(statusOf(uplink('isp1', k, true)), 2000 * k);
  const json = history.toJSON();
  assert.deepEqual(json.at, [36_000, 38_000, 40_000, 42_000, 44_000]);
  assert.deepEqual(json.uplinks.isp1.tx_bps, [180, 190, 200, 210, 220]);
  assert.deepEqual(json.uplinks.isp1.families.ipv6?.latency_ms, [19, 20, 21, 22, 23]);
  assert.equal(history.bytes, bytes);
});

test('history memory stays bounded: 10 minutes of 4 dual-stack uplinks, then as many again', () => {
  const history = new History();
  const status = statusOf(...[1, 2, 3, 4].map((i) => uplink(`isp${i}`, i, true)));
  for (let k = 0; k < 300; k++) history.record(status, 2000 * k);
  const full = history.bytes;
  for (let k = 300; k < 2 * 300; k++) history.record(status, 2000 * k);
  assert.equal(history.length, 300);
  assert.equal(history.toJSON().at.length, 300);
  // 300 times, and 300 samples of 9 figures for each of the 4 uplinks, 8 bytes each.
  assert.equal(history.bytes, 300 * 8 + 4 * 300 * 9 * 8);
  assert.equal(history.bytes, full);
});

async function withServer(run: (base: string) => Promise<void>): Promise<void> {
  const history = new History();
  history.record(statusOf(uplink('isp1', 1, false)), 0);
  const server = await serveHttp('127.0.0.1:0', {
    status: async () => statusOf(uplink('isp1', 1, false)), history: () => history.toJSON(), registry: new Registry(),
    pageDir: PAGE_DIR.replace('/src/', '/dist/'),
  }, pino({ level: 'silent' }));
  try {
    await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    await new Promise((r) => server.close(r));
  }
}

test('http: the page, its vendored chart library, the JSON APIs and the text table, each with its type', async () => {
  assert.ok(existsSync(PAGE_DIR.replace('/src/', '/dist/')), 'the page is served from the build: run `npm run build` first');
  await withServer(async (base) => {
    const get = async (path: string) => {
      const res = await fetch(base + path);
      return { code: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
    };
    const page = await get('/');
    assert.equal(page.code, 200);
    assert.match(page.type, /^text\/html/);
    assert.match(page.body, /<script src="vendor\/uPlot\.iife\.min\.js">/);
    assert.doesNotMatch(page.body, /https?:\/\/(?!127)/, 'no CDN: nothing loaded from elsewhere');
    assert.match((await get('/vendor/uPlot.iife.min.js')).type, /^text\/javascript/);
    const script = (await get('/page.js')).body;
    assert.match(script, /api\/status/);
    // The daemon's texts (names, reasons, addresses) go in as text, never parsed as HTML.
    assert.doesNotMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    assert.equal(JSON.parse((await get('/api/status')).body).uplinks[0].name, 'isp1');
    assert.deepEqual(JSON.parse((await get('/api/history')).body).at, [0]);
    assert.match((await get('/status.txt')).body, /^UPLINK\s+IFACE/);
    for (const path of ['/index.html/../../../package.json', '/..%2f..%2fpackage.json', '/vendor/', '/nope']) {
      assert.equal((await get(path)).code, 404, path);
    }
    // Paths as sent, not normalized by a client: none reaches a file outside the page.
    for (const path of ['/../../../package.json', '/vendor/../../../../package.json', '/%2e%2e/%2e%2e/%2e%2e/package.json',
      '/..%2f..%2f..%2fpackage.json', '/vendor/..%2f..%2f..%2f..%2fpackage.json', '//etc/passwd']) {
      const code = await new Promise<number | undefined>((resolve, reject) =>
        http.get(base + '/', { path }, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject));
      assert.equal(code, 404, path);
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const res = await fetch(base + '/api/status', { method });
      assert.equal(res.status, 405, method);
    }
  });
});
