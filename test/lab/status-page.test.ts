// The status page in a real browser: Debian's chromium, headless, driven by
// playwright-core, against a daemon in a lab router. It must show every
// uplink, show a failed uplink down without a reload within 2 s, and log no
// console error. It also makes the screenshots in docs/ (README "Status page").

import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { HistoryJson } from '../../src/api/history.js';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { labDown, labExec, labFail, labUp, type LabState } from '../../src/lab/lab.js';
import { connections, mustUplinkd, uniqueLabName } from './harness.js';

const CHROMIUM = '/usr/bin/chromium';
// What this machine needs to start chromium as root with no network (README "Tests").
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];
const HTTP = '127.0.0.1:9271';

let lab: LabState;
let daemon: LabDaemon | undefined;
let browser: Browser | undefined;
const problems: string[] = [];

before(async () => {
  lab = await labUp({ name: uniqueLabName('pg'), uplinks: 3 });
  const config = writeLabConfig(lab, 'page.yaml', labConfig(lab, { api: { http: HTTP } }));
  daemon = await startDaemon(lab, config);
  // The daemon listens on the router's own loopback: the browser runs in the
  // router's namespace too, through a wrapper that enters it. Playwright talks
  // to it over a pipe, which crosses `ip netns exec`.
  const wrapper = join(lab.stateDir, 'chromium-in-router');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.ns.router} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  browser = await chromium.launch({ executablePath: wrapper, args: CHROMIUM_ARGS, timeout: 30_000 });
});

after(async () => {
  await browser?.close().catch(() => {});
  await daemon?.stop();
  if (lab) {
    await mustUplinkd(lab, 'flush').catch(() => {});
    await labDown(lab.name);
  }
});

async function openPage(width: number, height: number): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width, height } });
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(`http://${HTTP}/`);
  return page;
}

const stateOf = (page: Page, uplink: string) => page.locator(`[data-uplink="${uplink}"]`).getAttribute('data-state');

test('the page shows every uplink with its state, figures and graphs, and follows a failure within 2 s without a reload', async () => {
  const page = await openPage(1280, 1000);
  for (const u of lab.uplinks) {
    await page.locator(`[data-uplink="${u.name}"] .state[data-state="up"]`).first().waitFor({ timeout: 15_000 });
  }
  assert.deepEqual(await page.locator('[data-uplink]').evaluateAll((els) => els.map((e) => e.getAttribute('data-uplink'))), lab.uplinks.map((u) => u.name));
  for (const u of lab.uplinks) {
    const card = page.locator(`[data-uplink="${u.name}"]`);
    assert.equal(await card.locator('.head h2').textContent(), u.name);
    assert.equal(await card.locator('[data-field="address"]').textContent().then((t) => t?.split(' · ')[0]), u.address);
    // Three graphs (latency, loss, throughput), each a drawn canvas.
    assert.equal(await card.locator('.chart canvas').count(), 3);
  }
  // 20 s of traffic and history, so the graphs and shares have something to
  // show: paced downloads (6 streams at 4 Mbit/s, spread over the uplinks) and
  // new connections.
  await Promise.all([
    labExec(lab.name, 'lan', ['iperf3', '-c', lab.server, '-p', String(lab.iperfPort), '-R', '-t', '20', '-P', '6', '-b', '4M']),
    connections(lab, 'lan', 60, ['--concurrency', '2']),
  ]);
  await page.waitForTimeout(2500);
  // What the graphs draw: the daemon's history, fetched by the page itself.
  const history = await page.evaluate(() => fetch('api/history').then((r) => r.json())) as HistoryJson;
  assert.ok(history.at.length >= 10, `the history holds ${history.at.length} samples after 20 s, want >= 10`);
  assert.deepEqual(Object.keys(history.uplinks), lab.uplinks.map((u) => u.name));
  const peakRxBps = Math.max(...Object.values(history.uplinks).flatMap((h) => h.rx_bps.map((v) => v ?? 0)));
  assert.ok(peakRxBps > 2e6, `the history's highest rx rate is ${peakRxBps} bit/s during 24 Mbit/s of downloads`);
  const marker = await page.evaluate(() => (window as unknown as { pageMarker: number }).pageMarker = Math.random());

  const failed = lab.uplinks[1].name;
  const faultAt = Date.now();
  await labFail(lab.name, failed, 'link');
  await page.locator(`[data-uplink="${failed}"][data-state="down"]`).waitFor({ timeout: 5000 });
  const shownMs = Date.now() - faultAt;
  console.log(`# ${failed} shown down ${shownMs} ms after the fault`);
  assert.ok(shownMs <= 2000, `the page showed ${failed} down ${shownMs} ms after the fault, want <= 2000`);
  // The same page, not a reload: the marker set before the fault is still there.
  assert.equal(await page.evaluate(() => (window as unknown as { pageMarker: number }).pageMarker), marker);
  await page.locator('#timeline li', { hasText: `${failed}` }).filter({ hasText: 'down' }).first().waitFor({ timeout: 2000 });
  for (const u of lab.uplinks.filter((x) => x.name !== failed)) assert.equal(await stateOf(page, u.name), 'up');

  await page.waitForTimeout(2500); // one more history sample, so the graphs show the loss
  await page.screenshot({ path: 'docs/status-page.png', fullPage: true });
  const phone = await openPage(390, 844);
  await phone.locator(`[data-uplink="${failed}"][data-state="down"]`).waitFor({ timeout: 5000 });
  // Readable on a phone: nothing wider than the window.
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 390 px window`);
  await phone.waitForTimeout(2500);
  await phone.screenshot({ path: 'docs/status-page-phone.png' });
  assert.deepEqual(problems, [], 'no console errors, page errors or failed requests');
});
