// What the benchmark programs share: the machine they ran on, the statistics
// (median and spread of repeated measurements), labs that are always taken
// down (also on Ctrl-C), uplinkd's config and daemon in a lab's router (on
// src/lab/lab-config.ts and src/lab/lab-daemon.ts), iperf3, the result
// files and the Markdown helpers of the report.
//
// Nothing here imports from test/: the few helpers the benchmarks need are
// written out here.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { setMaxListeners } from 'node:events';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { labDown, labExec, labUp, type LabOptions, type LabState } from '../src/lab/lab.js';
import { labConfig, writeLabConfig, type LabConfigOptions } from '../src/lab/lab-config.js';
import { uplinkdInRouter, type LabDaemon, type StartOptions } from '../src/lab/lab-daemon.js';
import type { Status, UplinkStatus } from '../src/api/status.js';
import type { UplinkState } from '../src/daemon/health.js';
import type { Family } from '../src/plan/state.js';
import { runCommand, type CommandResult } from '../src/kernel/runner.js';
import { must } from '../src/lab/run.js';
import type { CounterReading } from './counters.js';

export const say = (line = ''): void => void process.stdout.write(line + '\n');

// ------------------------------------------------------------ the machine

export interface Machine {
  /** What nproc prints. */
  nproc: number;
  /** `model name` of /proc/cpuinfo. */
  model: string;
  /** What uname -r prints. */
  kernel: string;
  /** ISO time the measurement started. */
  date: string;
  /** 1-minute load average when it started: other work on the machine shows here. */
  loadavg: number;
}

export function machine(): Machine {
  let model = 'unknown CPU';
  try {
    model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1].trim() ?? model;
  } catch {
    // not Linux?
  }
  return { nproc: os.availableParallelism(), model, kernel: os.release(), date: new Date().toISOString(), loadavg: os.loadavg()[0] };
}

export function describeMachine(m: Machine): string {
  return `${m.nproc} CPUs (nproc), ${m.model}, Linux ${m.kernel}, ${m.date.slice(0, 16).replace('T', ' ')} UTC, load average ${m.loadavg.toFixed(2)} at the start`;
}

// ------------------------------------------------------------ statistics

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Median with the spread (min..max) of repeated measurements. */
export interface Spread {
  n: number;
  median: number;
  min: number;
  max: number;
}

export function spread(values: readonly number[]): Spread {
  const v = values.filter((x) => Number.isFinite(x));
  return { n: v.length, median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN };
}

/** "0.97 (0.95–0.99)": median, then min–max. */
export function fmtSpread(s: Spread, digits = 2, unit = ''): string {
  if (s.n === 0) return '—';
  const f = (x: number) => x.toFixed(digits) + unit;
  return s.n === 1 ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

export const ms = (v: number): string => (Number.isFinite(v) ? `${v < 10 ? v.toFixed(1) : Math.round(v)} ms` : '—');

// ------------------------------------------------------------ interruption

/** Aborted on SIGINT/SIGTERM; every part checks it between steps. */
export const interrupt = new AbortController();
// Every concurrent pause listens on it (a mix waits on a dozen timers at once).
setMaxListeners(100, interrupt.signal);

export function stopIfInterrupted(): void {
  interrupt.signal.throwIfAborted();
}

/** A sleep that ends early (throwing) on Ctrl-C. */
export function pause(msDelay: number): Promise<void> {
  return sleep(msDelay, undefined, { signal: interrupt.signal });
}

// ------------------------------------------------------------ labs and scratch namespaces

const activeLabs = new Map<string, LabState>();
const scratchNamespaces = new Set<string>();

export function labName(prefix: string): string {
  return `${prefix}${process.pid % 100000}`;
}

/** A lab for the length of `fn`; always taken down afterwards, whatever happens. */
export async function withLab<T>(opts: LabOptions, fn: (lab: LabState) => Promise<T>): Promise<T> {
  stopIfInterrupted();
  const lab = await labUp(opts);
  activeLabs.set(lab.name, lab);
  try {
    return await fn(lab);
  } finally {
    await labDown(lab.name);
    activeLabs.delete(lab.name);
  }
}

/** A network namespace of our own outside any lab (removed by removeScratch or on exit). */
export async function addScratch(ns: string): Promise<void> {
  await must(['ip', 'netns', 'add', ns]);
  scratchNamespaces.add(ns);
}

export async function removeScratch(ns: string): Promise<void> {
  await killNamespaceProcesses([ns]);
  await runCommand(['ip', 'netns', 'delete', ns]);
  scratchNamespaces.delete(ns);
}

/**
 * On Ctrl-C: SIGTERM every process running in our labs' and scratch
 * namespaces (all of them started by us: servers, clients, the daemon), so
 * whatever a part is waiting for ends at once and its `finally` takes the lab
 * down.
 */
export async function stopEverythingRunning(): Promise<void> {
  const namespaces = [...scratchNamespaces];
  for (const lab of activeLabs.values()) namespaces.push(lab.ns.lan, lab.ns.router, lab.ns.inet, ...lab.ns.isps);
  await killNamespaceProcesses(namespaces);
}

async function killNamespaceProcesses(namespaces: string[]): Promise<void> {
  for (const ns of namespaces) {
    const r = await runCommand(['ip', 'netns', 'pids', ns]);
    for (const pid of r.stdout.split('\n').filter(Boolean).map(Number)) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  }
}

/** Last resort at exit: whatever is still up is taken down. */
export async function teardownAll(): Promise<void> {
  for (const name of [...activeLabs.keys()]) {
    await labDown(name).catch(() => undefined);
    activeLabs.delete(name);
  }
  for (const ns of [...scratchNamespaces]) await removeScratch(ns).catch(() => undefined);
}

// ------------------------------------------------------------ uplinkd in the lab

/**
 * A benchmark's uplinkd config (labConfig), written into the lab's folder:
 * every uplink probing the lab's server unless it names its own targets, the
 * control socket bench.sock, no HTTP. Returns its path.
 */
export function writeBenchConfig(lab: LabState, opts: LabConfigOptions = {}, fileName = 'bench.yaml'): string {
  return writeLabConfig(lab, fileName, labConfig(lab, { checkTargets: [lab.server], api: { socket: 'bench.sock', http: 'off' }, ...opts }));
}

/** How the benchmarks start uplinkd (startDaemon): every uplink up within 10 s, and Ctrl-C ends the wait. */
export const BENCH_START: StartOptions = { upWithinMs: 10_000, signal: interrupt.signal };

/** Stops the daemon, removes what it installed and forgets every connection, so the next system starts clean. */
export async function stopDaemon(lab: LabState, daemon: LabDaemon): Promise<void> {
  await daemon.stop();
  const r = await uplinkdInRouter(lab, ['flush', '-c', daemon.configPath]);
  if (r.code !== 0) throw new Error(`uplinkd flush failed: ${r.stderr.trim()}`);
  await forgetConnections(lab);
}

export async function forgetConnections(lab: LabState): Promise<void> {
  // Both families' entries: conntrack -F (1.4.7) empties the IPv6 ones too.
  await labExec(lab.name, 'router', ['conntrack', '-F']);
}

/**
 * Polls the daemon until the given families of the named uplinks are all in
 * `state` (status `families`; an uplink without IPv6 has only its top-level
 * state, IPv4's), handing every status read to `seen`. Resolves with the last
 * status, or undefined after `withinMs`.
 */
export async function waitForFamilies(
  daemon: LabDaemon, names: readonly string[], families: readonly Family[], state: UplinkState, withinMs: number, signal: AbortSignal,
  seen: (s: Status) => void = () => {},
): Promise<Status | undefined> {
  const deadline = Date.now() + withinMs;
  const stateOf = (u: UplinkStatus, f: Family) => (u.families ? u.families[f].state : f === 'ipv4' ? u.state : undefined);
  for (;;) {
    signal.throwIfAborted();
    const status = await daemon.status();
    if (status) seen(status);
    const reached = status && names.every((name) => {
      const u = status.uplinks.find((x) => x.name === name);
      return u !== undefined && families.every((f) => stateOf(u, f) === state);
    });
    if (reached) return status;
    if (Date.now() > deadline) return undefined;
    await sleep(20, undefined, { signal });
  }
}

/** Runs argv in a lab node and throws on failure. */
export async function labMust(lab: LabState, node: string, argv: string[], input?: string): Promise<string> {
  const r = await labExec(lab.name, node, argv, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`${node}: ${argv.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/**
 * n pinning rules (YAML, indented for `rules:`) that match none of the lab's
 * traffic (sources 198.18.0.0/24, destinations 192.0.2.0/24), the way a real
 * config groups them: sources first, then destinations, then
 * source+destination+port combinations. Rules of one shape in a row share
 * one map, so this makes three lookups whatever n is.
 */
export function pinRules(n: number, uplinks: string[]): string {
  const out: string[] = [];
  const bySrc = Math.round(n * 0.4);
  const byDst = Math.round(n * 0.4);
  for (let i = 0; i < n; i++) {
    const via = uplinks[i % uplinks.length];
    const a = (i >> 8) & 255;
    const b = i & 255;
    if (i < bySrc) out.push(`  - {src: 10.${a}.${b}.0/24, via: ${via}}`);
    else if (i < bySrc + byDst) out.push(`  - {dst: 100.64.${a}.${b}/32, via: ${via}}`);
    else out.push(`  - {src: 172.16.${a}.${b}/32, dst: 203.0.113.128/25, proto: tcp, dport: ${10000 + i}, via: ${via}}`);
  }
  return out.join('\n') + '\n';
}

// ------------------------------------------------------------ iperf3

/** Starts `iperf3 -s -D` servers in the lab's internet, one per port (a server runs one test at a time). */
export async function iperfServers(lab: LabState, ports: number[]): Promise<void> {
  for (const port of ports) await labMust(lab, 'inet', ['iperf3', '-s', '-D', '-p', String(port), '-B', lab.server]);
  // -D returns before the server listens.
  for (let i = 0; i < 100; i++) {
    const out = await labMust(lab, 'inet', ['ss', '-H', '-l', '-n', '-t']);
    if (ports.every((p) => out.includes(`${lab.server}:${p} `))) return;
    await pause(50);
  }
  throw new Error(`iperf3 servers on ${ports.join(', ')} not listening`);
}

export interface IperfRun {
  json?: IperfJson;
  error?: string;
}

export interface IperfInterval {
  sum: { start: number; end: number; bytes: number };
}

export interface IperfJson {
  intervals: IperfInterval[];
  end: {
    sum_received?: { seconds: number; bytes: number; bits_per_second: number; packets?: number; lost_packets?: number };
    sum_sent?: { seconds: number; bytes: number; bits_per_second: number; packets?: number };
  };
  error?: string;
}

/** iperf3 -c SERVER ... -J in a node of the lab; SERVER is the lab's IPv4 server unless given (lab.server6 with -6). */
export async function iperf(lab: LabState, node: string, args: string[], seconds: number, server = lab.server): Promise<IperfRun> {
  const r: CommandResult = await labExec(lab.name, node, ['iperf3', '-c', server, '-J', ...args], { timeoutMs: (seconds + 20) * 1000 });
  try {
    const json = JSON.parse(r.stdout) as IperfJson;
    if (json.error) return { json, error: json.error };
    if (r.code !== 0) return { json, error: `exit ${r.code}` };
    return { json };
  } catch {
    return { error: `iperf3 exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 200)}` };
  }
}

// ------------------------------------------------------------ helper programs in a namespace

/** A bench/*.ts program run in a namespace with tsx. */
export function benchProgram(name: string): string[] {
  return [process.execPath, '--import', import.meta.resolve('tsx'), fileURLToPath(new URL(`./${name}.ts`, import.meta.url))];
}

export interface Helper {
  pid: number;
  /** Lines written to stdout so far. */
  lines: string[];
  /** Resolves with the next stdout line (or rejects when the program exits first). */
  nextLine(): Promise<string>;
  write(line: string): void;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  kill(): void;
}

export function startHelper(ns: string, argv: string[]): Helper {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let waiting: { resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  let consumed = 0;
  let pending = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      const w = waiting.shift();
      if (w) {
        consumed++;
        w.resolve(line);
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => {
    child.on('error', (err) => ((stderr += err.message), resolve(null)));
    child.on('close', (code) => {
      for (const w of waiting) w.reject(new Error(`${argv.slice(-1)[0]} exited ${code}: ${stderr.trim().slice(-300)}`));
      waiting = [];
      resolve(code);
    });
  });
  return {
    pid: child.pid ?? -1,
    lines,
    nextLine() {
      if (consumed < lines.length) return Promise.resolve(lines[consumed++]);
      if (child.exitCode !== null || child.signalCode !== null) return Promise.reject(new Error(`exited: ${stderr.trim()}`));
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    write: (line) => void child.stdin.write(line + '\n'),
    exited,
    kill: () => void child.kill('SIGTERM'),
  };
}

/** CPU time of one interval, in seconds summed over all CPUs. */
export interface CpuUse {
  seconds: number;
  /** The machine's user, nice, system, irq and softirq time (/proc/stat). */
  busyS: number;
  idleS: number;
  /** Time the hypervisor ran something else while this VM wanted the CPU (/proc/stat steal). */
  stealS: number;
  /** CPU time of the processes outside the given namespaces (the kernel's threads and this program aside). */
  elsewhereS: number;
  /** The biggest of them, "name[pid] N%" (of one core). */
  elsewhereTop: string[];
  /** busyS − elsewhereS: what the namespaces' programs and the kernel's work for them took. */
  oursS: number;
}

const USER_HZ = 100; // the unit of /proc/stat and /proc/<pid>/stat: what getconf CLK_TCK prints on Linux

function machineTicks(): { busy: number; idle: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (proc(5))
  return { busy: f[0] + f[1] + f[2] + f[5] + f[6], idle: f[3] + f[4], steal: f[7] ?? 0 };
}

/**
 * Where the machine's CPU went while a part measured: a measurement limited
 * by the CPU (connections per second) is only comparable between systems
 * when it can be told apart from what other programs took (the CPU time of
 * every process outside the given namespaces, from /proc/<pid>/stat) and from
 * what the hypervisor did not give (steal).
 */
export function cpuUse(namespaces: string[]): { stop(): CpuUse } {
  const ours = new Set(namespaces.map((ns) => `net:[${statSync(`/run/netns/${ns}`).ino}]`));
  const sample = (): Map<number, { ticks: number; name: string }> => {
    const out = new Map<number, { ticks: number; name: string }>();
    for (const entry of readdirSync('/proc')) {
      const pid = Number(entry);
      if (!Number.isInteger(pid) || pid === process.pid) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const close = stat.lastIndexOf(')');
        const fields = stat.slice(close + 2).split(' ');
        // After "pid (comm)": state ppid ...; utime and stime are fields 14 and 15 of the line (proc(5)).
        const ppid = Number(fields[1]);
        if (pid === 2 || ppid === 2) continue; // kthreadd and its kernel threads
        if (ours.has(readlinkSync(`/proc/${pid}/ns/net`))) continue;
        out.set(pid, { ticks: Number(fields[11]) + Number(fields[12]), name: stat.slice(stat.indexOf('(') + 1, close) });
      } catch {
        // gone meanwhile
      }
    }
    return out;
  };
  const started = performance.now();
  const machine0 = machineTicks();
  const before = sample();
  return {
    stop() {
      const after = sample();
      const machine1 = machineTicks();
      const seconds = (performance.now() - started) / 1000;
      const used: { name: string; s: number }[] = [];
      for (const [pid, now] of after) {
        const s = (now.ticks - (before.get(pid)?.ticks ?? 0)) / USER_HZ;
        if (s > 0) used.push({ name: `${now.name}[${pid}]`, s });
      }
      used.sort((a, b) => b.s - a.s);
      const elsewhereS = used.reduce((a, u) => a + u.s, 0);
      const busyS = (machine1.busy - machine0.busy) / USER_HZ;
      return {
        seconds, busyS, idleS: (machine1.idle - machine0.idle) / USER_HZ, stealS: (machine1.steal - machine0.steal) / USER_HZ,
        elsewhereS, elsewhereTop: used.slice(0, 3).map((u) => `${u.name} ${Math.round((u.s / seconds) * 100)}%`),
        oursS: Math.max(0, busyS - elsewhereS),
      };
    },
  };
}

/** bench/counters.ts running in a namespace: interface byte counters read at given instants. */
export interface Counters {
  /** One reading at each instant (CLOCK_MONOTONIC ms, see src/lab/measure.ts), in order. */
  read(at: number[]): Promise<CounterReading[]>;
  stop(): Promise<void>;
}

/**
 * startHelper for a program that says `ready` before it takes its input
 * (bench/counters.ts, and the load generators of bench/load-plan.ts); one that
 * says anything else, or exits, is killed and its words thrown.
 */
export async function startReadyHelper(ns: string, program: string, args: string[]): Promise<Helper> {
  const helper = startHelper(ns, [...benchProgram(program), ...args]);
  const ready = await helper.nextLine().catch((err: Error) => err.message);
  if (ready !== 'ready') {
    helper.kill();
    throw new Error(`${program} in ${ns}: ${ready}`);
  }
  return helper;
}

export async function startCounters(ns: string, ifaces: string[]): Promise<Counters> {
  const helper = await startReadyHelper(ns, 'counters', ['--ifaces', ifaces.join(',')]);
  return {
    async read(at) {
      for (const t of [...at].sort((a, b) => a - b)) helper.write(JSON.stringify({ at: t }));
      const out: CounterReading[] = [];
      for (let i = 0; i < at.length; i++) out.push(JSON.parse(await helper.nextLine()) as CounterReading);
      return out;
    },
    async stop() {
      helper.kill();
      await helper.exited;
    },
  };
}

/** Interface byte counters of a namespace: ifname -> {rx, tx} bytes. */
export async function linkBytes(ns: string): Promise<Record<string, { rx: number; tx: number }>> {
  const out = await must(['ip', '-n', ns, '-s', '-j', 'link', 'show']);
  const result: Record<string, { rx: number; tx: number }> = {};
  for (const l of JSON.parse(out) as { ifname: string; stats64?: { rx: { bytes: number }; tx: { bytes: number } } }[]) {
    if (l.stats64) result[l.ifname] = { rx: l.stats64.rx.bytes, tx: l.stats64.tx.bytes };
  }
  return result;
}

// ------------------------------------------------------------ results and the report

export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

export interface PartResult<T> {
  part: string;
  machine: Machine;
  durationS: number;
  data: T;
  /** The `npm run bench` invocation that ran it (absent when a part's program was run on its own). */
  suite?: Suite;
}

/** One `npm run bench` invocation: when it started and which parts it ran. */
export interface Suite {
  started: string;
  parts: string[];
}

export function saveResult<T>(result: PartResult<T>): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = `${RESULTS_DIR}${result.part}.json`;
  writeFileSync(file, JSON.stringify(result, null, 1) + '\n');
  return file;
}

export function loadResult<T>(part: string): PartResult<T> | undefined {
  const file = `${RESULTS_DIR}${part}.json`;
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as PartResult<T>;
}

/** One line of the README's results table. */
export interface SummaryRow {
  measurement: string;
  value: string;
  target: string;
  /** undefined: no target, or not measured. */
  met?: boolean;
  /** Where and when this figure was measured, when not its part's own (a part may keep pieces of an earlier run). */
  measured?: Machine;
}

export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map((c) => String(c).replaceAll('|', '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

const README = fileURLToPath(new URL('../README.md', import.meta.url));

/**
 * Replaces the text of README.md between `<!-- bench:NAME:start -->` and
 * `<!-- bench:NAME:end -->`, first adding a `## heading` section with those
 * markers (before "Limitations / status") if they are missing.
 */
export function writeReadmeSection(name: string, heading: string, section: string): void {
  const markStart = `<!-- bench:${name}:start -->`;
  const markEnd = `<!-- bench:${name}:end -->`;
  let text = readFileSync(README, 'utf8');
  if (!text.includes(markStart) || !text.includes(markEnd)) {
    const block = `## ${heading}\n\n${markStart}\n${markEnd}\n\n`;
    const at = text.indexOf('## Limitations / status');
    text = at >= 0 ? text.slice(0, at) + block + text.slice(at) : `${text.trimEnd()}\n\n${block.trimEnd()}\n`;
  }
  const start = text.indexOf(markStart) + markStart.length;
  const end = text.indexOf(markEnd);
  writeFileSync(README, `${text.slice(0, start)}\n${section}\n${text.slice(end)}`);
}

export const metText = (met: boolean | undefined): string => (met === undefined ? '—' : met ? 'yes' : '**no**');
