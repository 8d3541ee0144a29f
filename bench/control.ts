// Control plane: how fast uplinkd changes the kernel, how long its commands
// take, and what the daemon costs while idle.
//  1. verdict -> kernel updated: `uplinkd run` at debug log level logs, after
//     each health transition, `{"ms": ..., "kernelMs": ..., "msg": "kernel
//     updated"}` (src/daemon/daemon.ts onTransition). Upstream faults (beyond the
//     gateway, so the probes decide, default probe settings) are put on and
//     taken off isp1 and isp2 in turn.
//  2. `uplinkd plan`, `apply` (from nothing) and a second `apply` (nothing to
//     change) for 16 uplinks and 1000 pinning rules: a lab has at most 8
//     uplinks, so this runs in a scratch namespace of its own with 16 veth
//     pairs (and a LAN veth), deleted afterwards. Wall time of each command,
//     Node start-up included; `node -e 0` and `uplinkd check` for reference.
//  3. the daemon idle for 60 s with 4 uplinks x 2 targets at the default
//     probe interval: its resident memory and CPU, its children's included
//     (bench/idle.ts, which also runs on its own).

import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { labFail, labHeal, type LabState } from '../src/lab/lab.js';
import { startDaemon, UPLINKD_BIN, waitForStates } from '../src/lab/lab-daemon.js';
import { percentile } from '../src/lab/measure.js';
import { runCommand } from '../src/kernel/runner.js';
import { must } from '../src/lab/run.js';
import { IDLE_S, measureIdle, type IdleCost } from './idle.js';
import {
  addScratch, describeMachine, fmtSpread, labName, machine, ms, pause, pinRules, removeScratch, say, spread,
  BENCH_START, stopDaemon, stopIfInterrupted, table, withLab, writeBenchConfig, type PartResult, type Spread, type SummaryRow,
} from './lib.js';

const FAULT_CYCLES = Number(process.env.BENCH_FAULT_CYCLES ?? 8);
const COMMAND_RUNS = Math.max(1, Number(process.env.BENCH_COMMAND_RUNS ?? 5));
const SCRATCH_UPLINKS = 16;
const SCRATCH_RULES = 1000;

export interface Transition {
  uplink: string;
  event: 'up' | 'down' | '?';
  /** Verdict -> kernel updated, queueing included (the daemon's `ms`). */
  ms: number;
  /** The kernel update itself (the daemon's `kernelMs`); for `down` it includes the conntrack flush. */
  kernelMs: number;
}

export interface CommandTimes {
  uplinks: number;
  rules: number;
  /** Wall times, ms. */
  nodeStartup: number[];
  check: number[];
  plan: number[];
  applyFull: number[];
  applyAgain: number[];
  /** What the second apply printed (should be nothing). */
  applyAgainSaid: string;
  planLines: number;
}


export interface ControlData {
  transitions: Transition[];
  transitionsError?: string;
  commands?: CommandTimes;
  commandsError?: string;
  idle?: IdleCost;
  idleError?: string;
}

// ------------------------------------------------------------ 1. verdict -> kernel

function parseKernelUpdates(logs: string): Transition[] {
  const out: Transition[] = [];
  const last: Record<string, 'up' | 'down'> = {};
  for (const line of logs.split('\n')) {
    let e: { msg?: string; event?: string; uplink?: string; ms?: number; kernelMs?: number };
    try {
      e = JSON.parse(line);
    } catch {
      continue;
    }
    if (e.uplink && (e.event === 'up' || e.event === 'down')) last[e.uplink] = e.event;
    if (e.msg === 'kernel updated' && typeof e.ms === 'number' && typeof e.kernelMs === 'number') {
      out.push({ uplink: e.uplink ?? '?', event: (e.uplink && last[e.uplink]) || '?', ms: e.ms, kernelMs: e.kernelMs });
    }
  }
  return out;
}

async function measureTransitions(): Promise<Transition[]> {
  return withLab({ name: labName('ct'), uplinks: 2 }, async (lab) => {
    const d = await startDaemon(lab, writeBenchConfig(lab, { uplinks: [{ k: 1 }, { k: 2 }] }), { ...BENCH_START, logLevel: 'debug' });
    try {
      for (let i = 0; i < FAULT_CYCLES; i++) {
        stopIfInterrupted();
        const uplink = lab.uplinks[i % 2].name;
        await labFail(lab.name, uplink, 'upstream');
        if (!(await waitForStates(d, { [uplink]: 'down' }, 10_000))) throw new Error(`${uplink} not down after an upstream fault`);
        await pause(300);
        await labHeal(lab.name, uplink);
        if (!(await waitForStates(d, { [uplink]: 'up' }, 10_000))) throw new Error(`${uplink} not up after the heal`);
        await pause(300);
      }
      await pause(200);
      const transitions = parseKernelUpdates(d.logs());
      say(`  ${transitions.length} transitions: kernelMs ${transitions.map((t) => t.kernelMs.toFixed(1)).join(' ')}`);
      return transitions;
    } finally {
      await stopDaemon(lab, d);
    }
  });
}

// ------------------------------------------------------------ 2. plan and apply, 16 uplinks

/** Uplink k (1..16): 1..8 on the lab's 198.51.100.x/28s, 9..16 on 198.19.0.x/30s (RFC 2544). */
function scratchUplink(k: number): { address: string; prefixLen: number; gateway: string } {
  if (k <= 8) return { address: `198.51.100.${16 * (k - 1) + 2}`, prefixLen: 28, gateway: `198.51.100.${16 * (k - 1) + 1}` };
  const base = 4 * (k - 9);
  return { address: `198.19.0.${base + 2}`, prefixLen: 30, gateway: `198.19.0.${base + 1}` };
}

async function timed(argv: string[]): Promise<{ ms: number; stdout: string }> {
  const t = performance.now();
  const r = await runCommand(argv);
  const elapsed = performance.now() - t;
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
  return { ms: elapsed, stdout: r.stdout };
}

async function measureCommands(): Promise<CommandTimes> {
  const ns = `ulbench${process.pid}`;
  await addScratch(ns);
  try {
    const exec = ['ip', 'netns', 'exec', ns];
    const batch: string[] = ['link set lo up', 'link add lan0 type veth peer name lanp', 'address add 198.18.0.1/24 dev lan0',
      'link set lan0 up', 'link set lanp up'];
    const names: string[] = [];
    for (let k = 1; k <= SCRATCH_UPLINKS; k++) {
      const u = scratchUplink(k);
      names.push(`isp${k}`);
      batch.push(`link add wan${k} type veth peer name peer${k}`, `address add ${u.address}/${u.prefixLen} dev wan${k}`,
        `link set wan${k} up`, `link set peer${k} up`, `route add default via ${u.gateway} dev wan${k} metric ${100 + k}`);
    }
    await must(['ip', '-n', ns, '-batch', '-'], { input: batch.join('\n') + '\n' });
    const config = `/tmp/${ns}.yaml`;
    const uplinks = names.map((n, i) => `  ${n}: {interface: wan${i + 1}}`).join('\n');
    writeFileSync(config, `lan: [lan0]\nuplinks:\n${uplinks}\nrules:\n${pinRules(SCRATCH_RULES, names)}api: {socket: /run/${ns}.sock, http: "off"}\n`);
    const uplinkd = (...args: string[]) => [...exec, UPLINKD_BIN, ...args, '-c', config];
    const times: CommandTimes = {
      uplinks: SCRATCH_UPLINKS, rules: SCRATCH_RULES, nodeStartup: [], check: [], plan: [], applyFull: [], applyAgain: [],
      applyAgainSaid: '', planLines: 0,
    };
    for (let i = 0; i < COMMAND_RUNS; i++) {
      stopIfInterrupted();
      times.nodeStartup.push((await timed([...exec, process.execPath, '-e', '0'])).ms);
      times.check.push((await timed(uplinkd('check'))).ms);
      const planned = await timed(uplinkd('plan'));
      times.plan.push(planned.ms);
      times.planLines = planned.stdout.split('\n').length;
      await timed([...exec, UPLINKD_BIN, 'flush', '-c', config]);
      times.applyFull.push((await timed(uplinkd('apply'))).ms);
      const again = await timed(uplinkd('apply'));
      times.applyAgain.push(again.ms);
      times.applyAgainSaid = again.stdout.trim();
      say(`  run ${i + 1}/${COMMAND_RUNS}: node -e 0 ${ms(times.nodeStartup[i])}, check ${ms(times.check[i])}, plan ${ms(planned.ms)},` +
        ` apply ${ms(times.applyFull[i])}, apply again ${ms(again.ms)} (${times.applyAgainSaid || 'printed nothing'})`);
    }
    await runCommand([...exec, UPLINKD_BIN, 'flush', '-c', config]);
    await runCommand(['rm', '-f', config]);
    return times;
  } finally {
    await removeScratch(ns);
  }
}

// ------------------------------------------------------------ 3. idle cost: bench/idle.ts

export async function runControl(): Promise<PartResult<ControlData>> {
  const m = machine();
  const started = Date.now();
  const data: ControlData = { transitions: [] };
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<[T?, string?]> => {
    stopIfInterrupted();
    say(`control: ${what}`);
    try {
      return [await fn()];
    } catch (err) {
      stopIfInterrupted();
      const message = err instanceof Error ? err.message : String(err);
      say(`  failed: ${message}`);
      return [undefined, message];
    }
  };
  [data.transitions = [], data.transitionsError] = await attempt(`verdict -> kernel, ${FAULT_CYCLES} upstream faults and heals`, measureTransitions);
  [data.commands, data.commandsError] = await attempt(`plan/apply with ${SCRATCH_UPLINKS} uplinks and ${SCRATCH_RULES} rules`, measureCommands);
  [data.idle, data.idleError] = await attempt(`the daemon idle for ${IDLE_S} s, 4 uplinks x 2 targets`, () => measureIdle());
  return { part: 'control', machine: m, durationS: (Date.now() - started) / 1000, data };
}

// ------------------------------------------------------------ the report

/** The children's CPU by program (fping, the monitors) and the commands run and reaped, when the results have them. */
function childShares(i: IdleCost): string[][] {
  if (!i.processes) return [];
  const by = new Map<string, { n: number; pct: number }>();
  for (const p of i.processes) {
    const e = by.get(p.comm) ?? { n: 0, pct: 0 };
    by.set(p.comm, { n: e.n + 1, pct: e.pct + p.cpuPercent });
  }
  return [
    ...[...by].map(([comm, e]) => [`  of which ${comm} (${e.n} running)`, `${e.pct.toFixed(2)}% of a core`]),
    ['  of which commands run and reaped (drift checks)', `${(i.reapedCpuPercent ?? 0).toFixed(2)}% of a core`],
  ];
}

const pctl = (values: number[], p: number) => (values.length ? percentile(values, p) : NaN);

export function renderControl(result: PartResult<ControlData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const out: string[] = [`Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.`, ''];
  const rows: SummaryRow[] = [];

  out.push('### Verdict to kernel updated', '');
  const t = data.transitions;
  if (t.length) {
    const k = t.map((x) => x.kernelMs);
    const w = t.map((x) => x.ms);
    out.push(
      `\`uplinkd run\` at \`UPLINKD_LOG_LEVEL=debug\` on a two-uplink lab (default probe settings, target 192.0.2.10). ${FAULT_CYCLES}`,
      'times in turn on isp1 and isp2, an `upstream` fault (the ISP stops forwarding beyond its gateway), then the heal, each',
      'waited out; every transition gives one `kernel updated` log line. `kernelMs` is the time the kernel update took once',
      'started (for `down` it includes deleting the uplink\'s connections from conntrack); `ms` is from the verdict to the',
      'kernel updated, queueing behind other kernel work included. Percentiles are nearest-rank.',
      '',
      table(['', 'n', 'p50', 'p95', 'max'], [
        ['kernelMs, all', k.length, ms(pctl(k, 50)), ms(pctl(k, 95)), ms(Math.max(...k))],
        ...(['down', 'up'] as const).map((e) => {
          const v = t.filter((x) => x.event === e).map((x) => x.kernelMs);
          return [`kernelMs, ${e}`, v.length, ms(pctl(v, 50)), ms(pctl(v, 95)), v.length ? ms(Math.max(...v)) : '—'];
        }),
        ['ms (verdict → kernel updated), all', w.length, ms(pctl(w, 50)), ms(pctl(w, 95)), ms(Math.max(...w))],
      ]),
      '',
      `Raw (uplink event kernelMs/ms): ${t.map((x) => `${x.uplink} ${x.event} ${x.kernelMs.toFixed(1)}/${x.ms.toFixed(1)}`).join(', ')}.`,
      '',
    );
    const p50 = pctl(k, 50);
    const p95 = pctl(k, 95);
    rows.push({ measurement: `verdict → kernel updated (kernelMs), p50 / p95 of ${k.length} transitions`, value: `${ms(p50)} / ${ms(p95)}`, target: '≤ 50 ms', met: p95 <= 50 });
  } else {
    out.push(`Not measured: ${data.transitionsError ?? 'no `kernel updated` lines in the log'}.`, '');
    rows.push({ measurement: 'verdict → kernel updated', value: 'not measured', target: '≤ 50 ms' });
  }

  out.push('### plan and apply: 16 uplinks, 1000 rules', '');
  const c = data.commands;
  if (c) {
    const s = (v: number[]): Spread => spread(v);
    out.push(
      `A lab has at most 8 uplinks, so this runs in a scratch namespace: ${c.uplinks} veth pairs (uplinks 1–8 on the lab's`,
      '198.51.100.x/28s, 9–16 on 198.19.0.x/30s), each with a main-table default route as DHCP would install it, a LAN veth, and',
      `a config with \`gateway: auto\` and ${c.rules} pinning rules (\`uplinkd plan\` prints ${c.planLines} lines). Each command is run`,
      `${c.plan.length} times through \`ip netns exec\`; wall time, Node start-up included. The full apply follows an \`uplinkd flush\`;`,
      `the second apply finds everything in place (it printed ${c.applyAgainSaid ? `"${c.applyAgainSaid}"` : 'nothing'}). Median (min–max):`,
      '',
      table(['command', 'wall time'], [
        ['`node -e 0` (Node start-up alone)', fmtSpread(s(c.nodeStartup), 0, ' ms')],
        ['`uplinkd check` (start-up + config)', fmtSpread(s(c.check), 0, ' ms')],
        ['`uplinkd plan`', fmtSpread(s(c.plan), 0, ' ms')],
        ['`uplinkd apply` (from nothing)', fmtSpread(s(c.applyFull), 0, ' ms')],
        ['`uplinkd apply` again (idempotent)', fmtSpread(s(c.applyAgain), 0, ' ms')],
      ]),
      '',
    );
    for (const [label, v] of [['`uplinkd apply` (full)', c.applyFull], ['`uplinkd apply` (second, no change)', c.applyAgain], ['`uplinkd plan`', c.plan]] as const) {
      const sp = s([...v]);
      rows.push({ measurement: `${label}, 16 uplinks + 1000 rules, wall time (median)`, value: fmtSpread(sp, 0, ' ms'), target: '≤ 1 s', met: sp.median <= 1000 });
    }
  } else {
    out.push(`Not measured: ${data.commandsError}.`, '');
  }

  out.push('### The daemon idle', '');
  const i = data.idle;
  if (i) {
    out.push(
      `\`uplinkd run\` on a lab with ${i.uplinks} uplinks, each probing ${i.targets.join(' and ')} at the default interval and`,
      `timeout, left alone for ${Math.round(i.seconds)} s once every uplink was up. Memory: VmRSS of the daemon (/proc/PID/status),`,
      'sampled every second, maximum. CPU: utime+stime from /proc/PID/stat over the whole time, of the daemon and of all its',
      `descendants (${[...new Set(i.children)].join(', ')}: found through their ppid; those that exited are in the daemon's cutime+cstime),`,
      'as a percentage of one core.',
      '',
      table(['', 'value'], [
        ['daemon VmRSS, max', `${i.maxRssMB.toFixed(1)} MB`],
        ['children VmRSS (at the end)', `${i.childrenRssMB.toFixed(1)} MB`],
        ['daemon CPU', `${i.daemonCpuPercent.toFixed(2)}% of a core`],
        ['children CPU', `${i.childrenCpuPercent.toFixed(2)}% of a core`],
        ...childShares(i),
        ['total CPU', `${i.totalCpuPercent.toFixed(2)}% of a core`],
      ]),
      '',
    );
    rows.push({ measurement: `daemon resident memory (VmRSS, max over ${Math.round(i.seconds)} s idle, 4 uplinks × 2 targets)`, value: `${i.maxRssMB.toFixed(1)} MB`, target: '≤ 80 MB', met: i.maxRssMB <= 80 });
    rows.push({ measurement: 'daemon CPU idle, fping and other children included', value: `${i.totalCpuPercent.toFixed(2)}% of a core`, target: '≤ 1%', met: i.totalCpuPercent <= 1 });
  } else {
    out.push(`Not measured: ${data.idleError}.`, '');
  }
  return { markdown: out.join('\n'), rows };
}
