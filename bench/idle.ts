// The daemon idle: `uplinkd run` on a lab with 4 uplinks x 2 targets at the
// default probe settings, left alone once every uplink is up. Its resident
// memory (VmRSS, max of 1 s samples) and CPU: utime+stime of the daemon and
// of all its descendants (fping, ip monitor, nft monitor; the commands it
// ran and reaped are in its cutime+cstime), as a percentage of one core.
// Part 3 of the control plane (bench/control.ts), and a program of its own
// for a quick look that saves nothing, with each process's share:
//
//   npm run build && flock /tmp/uplinkd-timing.lock node --import tsx bench/idle.ts
//
// BENCH_IDLE_S sets the length (default 60 s), BENCH_LAB_PREFIX the lab's name
// (default ci).

import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { LabState } from '../src/lab/lab.js';
import { must } from '../src/lab/run.js';
import { startDaemon } from '../src/lab/lab-daemon.js';
import { BENCH_START, labName, pause, say, stopDaemon, teardownAll, withLab, writeBenchConfig } from './lib.js';

export const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 60);

export interface IdleCost {
  seconds: number;
  uplinks: number;
  targets: string[];
  maxRssMB: number;
  /** fping and the monitors, at the end. */
  childrenRssMB: number;
  children: string[];
  /** % of one core. */
  daemonCpuPercent: number;
  childrenCpuPercent: number;
  totalCpuPercent: number;
  clockTicks: number;
  /** Each live child's share (% of one core), and the reaped ones' together; absent in results saved before. */
  processes?: { comm: string; args: string; cpuPercent: number }[];
  reapedCpuPercent?: number;
}

interface ProcStat {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime, clock ticks. */
  cpu: number;
  /** cutime + cstime: reaped children. */
  childCpu: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    const f = text.slice(close + 2).split(' ');
    // f[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    return {
      pid, ppid: Number(f[1]), comm: text.slice(text.indexOf('(') + 1, close),
      cpu: Number(f[11]) + Number(f[12]), childCpu: Number(f[13]) + Number(f[14]),
    };
  } catch {
    return undefined;
  }
}

function descendants(root: number): ProcStat[] {
  const all = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map((d) => readStat(Number(d))).filter((s): s is ProcStat => !!s);
  const found: ProcStat[] = [];
  let frontier = [root];
  while (frontier.length) {
    const kids = all.filter((s) => frontier.includes(s.ppid));
    found.push(...kids);
    frontier = kids.map((k) => k.pid);
  }
  return found;
}

export function rssKB(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '';
  }
}

/** `labPrefix` names the lab (bench/lib.ts labName). */
export async function measureIdle(seconds = IDLE_S, labPrefix = 'ci'): Promise<IdleCost> {
  const targets = ['192.0.2.10', '192.0.2.11'];
  return withLab({ name: labName(labPrefix), uplinks: 4 }, async (lab: LabState) => {
    const d = await startDaemon(lab, writeBenchConfig(lab, { uplinks: [1, 2, 3, 4].map((k) => ({ k, targets })) }), BENCH_START);
    try {
      const pid = d.pid;
      const comm = readStat(pid)?.comm;
      if (comm !== 'node') throw new Error(`pid ${pid} is ${comm}, not the daemon's node`);
      await pause(2000); // past start-up
      const ticks = Number((await must(['getconf', 'CLK_TCK'])).trim()) || 100;
      const self0 = readStat(pid)!;
      const kids0 = new Map(descendants(pid).map((s) => [s.pid, s.cpu]));
      const t0 = performance.now();
      let maxRss = rssKB(pid);
      for (let i = 0; i < seconds; i++) {
        await pause(1000);
        maxRss = Math.max(maxRss, rssKB(pid));
      }
      const elapsedS = (performance.now() - t0) / 1000;
      const self1 = readStat(pid)!;
      const kids1 = descendants(pid);
      const pct = (t: number) => (100 * t) / ticks / elapsedS;
      const daemonTicks = self1.cpu - self0.cpu;
      // Reaped children land in cutime/cstime; live ones are read directly.
      const reapedTicks = self1.childCpu - self0.childCpu;
      const processes = kids1.map((k) => ({ comm: k.comm, args: commandLine(k.pid), cpuPercent: pct(k.cpu - (kids0.get(k.pid) ?? 0)) }));
      const childrenCpuPercent = pct(reapedTicks) + processes.reduce((a, p) => a + p.cpuPercent, 0);
      const cost: IdleCost = {
        seconds: elapsedS, uplinks: 4, targets, maxRssMB: maxRss / 1024,
        childrenRssMB: kids1.reduce((a, k) => a + (rssKB(k.pid) || 0), 0) / 1024,
        children: kids1.map((k) => k.comm),
        daemonCpuPercent: pct(daemonTicks), childrenCpuPercent, totalCpuPercent: pct(daemonTicks) + childrenCpuPercent,
        clockTicks: ticks, processes, reapedCpuPercent: pct(reapedTicks),
      };
      say(`  idle ${elapsedS.toFixed(0)} s: RSS max ${cost.maxRssMB.toFixed(1)} MB, CPU ${cost.totalCpuPercent.toFixed(2)}% of a core` +
        ` (daemon ${cost.daemonCpuPercent.toFixed(2)}%, children ${cost.childrenCpuPercent.toFixed(2)}%: ` +
        `${processes.map((p) => `${p.comm} ${p.cpuPercent.toFixed(2)}%`).join(', ')}, reaped ${pct(reapedTicks).toFixed(2)}%)`);
      return cost;
    } finally {
      await stopDaemon(lab, d);
    }
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    say(`the daemon idle for ${IDLE_S} s, 4 uplinks x 2 targets (${new Date().toISOString()})`);
    await measureIdle(IDLE_S, process.env.BENCH_LAB_PREFIX);
  } finally {
    await teardownAll();
  }
}
