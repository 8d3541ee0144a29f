// The status page's history ring (src/api/history.ts), full: 10 minutes of
// samples of 4 dual-stack uplinks (README "Status page").
//
//  1. In this process, no root: the heap a full ring takes (heapUsed after a
//     forced GC, with and without 200 full rings alive, divided by 200), its
//     arrays' own bytes, and the size and time of one /api/history JSON.
//  2. A real daemon in a 4-uplink dual-stack lab, api.http on: its VmRSS at
//     start and every minute, /api/history fetched once a minute as a page
//     would, for BENCH_HISTORY_S seconds (default 630: past a full ring; 0
//     skips this part).
//
//   npm run build && flock /tmp/uplinkd-timing.lock node --expose-gc --import tsx bench/history-memory.ts

import { performance } from 'node:perf_hooks';
import { History } from '../src/api/history.js';
import type { Status, UplinkStatus } from '../src/api/status.js';
import { labConfig, writeLabConfig } from '../src/lab/lab-config.js';
import { startDaemon } from '../src/lab/lab-daemon.js';
import { labExec } from '../src/lab/lab.js';
import { rssKB } from './idle.js';
import { BENCH_START, labName, pause, say, stopDaemon, teardownAll, withLab } from './lib.js';

const LAB_S = Number(process.env.BENCH_HISTORY_S ?? 630);
const UPLINKS = 4;
const RINGS = 200;
const HTTP = '127.0.0.1:9271';

function dualStackStatus(k: number): Status {
  const since = new Date().toISOString();
  const family = (i: number) => ({ state: 'up' as const, since, address: null, gateway: null, latency_ms: 0.1 * i + k * 1e-3, loss: 0 });
  const uplinks: UplinkStatus[] = Array.from({ length: UPLINKS }, (_, j) => ({
    name: `isp${j + 1}`, interface: `wan${j + 1}`, state: 'up', since, address: null, holds_address: false, gateway: null, tier: 1, weight: 1,
    share: 1 / UPLINKS, latency_ms: 0.1, loss: 0, rx_bps: 18_000 + k, tx_bps: 17_000 + k, connections: 30 + (k % 7),
    families: { ipv4: family(1), ipv6: family(2) },
  }));
  return { uplinks, events: [], self_healing: { restores: 0, by_cause: {}, last: null, backoff_ms: 0 } };
}

function heapPart(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc');
  const statuses = Array.from({ length: 300 }, (_, k) => dualStackStatus(k));
  const fill = () => {
    const h = new History();
    statuses.forEach((s, k) => h.record(s, 1_764_670_000_000 + 2000 * k));
    return h;
  };
  fill(); // warm up the code paths
  gc(); gc();
  const before = process.memoryUsage().heapUsed;
  const beforeExternal = process.memoryUsage().arrayBuffers;
  const rings = Array.from({ length: RINGS }, fill);
  gc(); gc();
  const heap = (process.memoryUsage().heapUsed - before) / RINGS;
  const buffers = (process.memoryUsage().arrayBuffers - beforeExternal) / RINGS;
  const ring = rings[0];
  const t0 = performance.now();
  const json = JSON.stringify(ring.toJSON());
  const jsonMs = performance.now() - t0;
  say(`full ring, ${UPLINKS} dual-stack uplinks × ${ring.length} samples: arrays ${(ring.bytes / 1024).toFixed(1)} KiB; ` +
    `heap ${(heap / 1024).toFixed(1)} KiB + array buffers ${(buffers / 1024).toFixed(1)} KiB per ring (mean of ${RINGS} rings alive at once); ` +
    `/api/history JSON ${(json.length / 1000).toFixed(1)} kB in ${jsonMs.toFixed(1)} ms`);
}

async function labPart(): Promise<void> {
  await withLab({ name: labName('hm'), uplinks: UPLINKS }, async (lab) => {
    const d = await startDaemon(lab, writeLabConfig(lab, 'history.yaml', labConfig(lab, { api: { http: HTTP } })), BENCH_START);
    try {
      const t0 = performance.now();
      say(`daemon pid ${d.pid}, ${UPLINKS} uplinks, ${new Date().toISOString()}`);
      for (;;) {
        const r = await labExec(lab.name, 'router', ['curl', '-sf', `http://${HTTP}/api/history`]);
        const samples = r.code === 0 ? (JSON.parse(r.stdout) as { at: number[] }).at.length : NaN;
        const s = (performance.now() - t0) / 1000;
        say(`  ${s.toFixed(0).padStart(4)} s: RSS ${(rssKB(d.pid) / 1024).toFixed(1)} MB, ring ${samples} samples, /api/history ${(r.stdout.length / 1000).toFixed(1)} kB`);
        if (s >= LAB_S) break;
        await pause(Math.min(60_000, (LAB_S - s) * 1000 + 100));
      }
    } finally {
      await stopDaemon(lab, d);
    }
  });
}

heapPart();
if (LAB_S > 0) {
  try {
    await labPart();
  } finally {
    await teardownAll();
  }
}
