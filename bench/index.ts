// npm run bench — the benchmark suite: programs, not tests. Each part runs in
// labs of its own (network namespaces; the host's network is never touched),
// measures, and saves its raw results in bench/results/<part>.json; then the
// report, docs/BENCHMARKS.md, and the results table in README.md (between
// <!-- bench:results:start --> and <!-- bench:results:end -->) are written
// from every part's latest results.
//
//   npm run bench                          all parts, in order (about 27 minutes on 2 cores)
//   npm run bench -- --only aggregation    one part (or a comma-separated list):
//                                          aggregation | overhead | control | failover | selfheal | mptcp
//   npm run bench -- --report              only rewrite the report from the saved results
//
// Quick look (not for the record): BENCH_REPEATS=1 BENCH_WINDOW_S=3
// BENCH_IDLE_S=10 BENCH_TRIALS=2 BENCH_SATURATION_S=10.
// Labs are always taken down, also on Ctrl-C. Run as root, from the checkout.

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { renderAggregation, runAggregation, type AggregationData } from './aggregation.js';
import { renderControl, runControl, type ControlData } from './control.js';
import {
  describeMachine, interrupt, loadResult, machine, metText, saveResult, say, stopEverythingRunning, table, teardownAll,
  writeReadmeSection, type PartResult, type SummaryRow,
} from './lib.js';
import { renderOverhead, runOverhead, type OverheadData } from './overhead.js';
import { renderMptcp, runMptcp, type MptcpData } from './mptcp.js';
import { renderSelfHeal, runSelfHeal, type SelfHealData } from './selfheal.js';

const PARTS = ['aggregation', 'overhead', 'control', 'failover', 'selfheal', 'mptcp'] as const;
type Part = (typeof PARTS)[number];

const ROOT = new URL('../', import.meta.url);
const REPORT = fileURLToPath(new URL('docs/BENCHMARKS.md', ROOT));

// ------------------------------------------------------------ failover: bench/failover.ts, as its own program

interface FailoverFigure {
  label: string;
  n: number;
  p50: number;
  p95: number;
  max: number;
}

interface FailoverData {
  exitCode: number | null;
  /** Its report as it printed it, from the `== ... ==` heading on. */
  report: string;
  figures: FailoverFigure[];
  falseFailovers?: number;
}

function parseFailover(output: string): Pick<FailoverData, 'report' | 'figures' | 'falseFailovers'> {
  const start = output.indexOf('== uplinkd failover benchmark ==');
  const report = (start >= 0 ? output.slice(start) : output.split('\n').slice(-60).join('\n')).trimEnd();
  const figures: FailoverFigure[] = [];
  const line = /^(\S.*?)\s+n=(\d+)\s+p50\s+(\d+) ms\s+p95\s+(\d+) ms\s+min\s+(\d+) ms\s+max\s+(\d+) ms/;
  for (const l of report.split('\n')) {
    const m = line.exec(l);
    if (m) figures.push({ label: m[1].trim(), n: Number(m[2]), p50: Number(m[3]), p95: Number(m[4]), max: Number(m[6]) });
  }
  const f = /false failovers \(down events\): (\d+)/.exec(report);
  return { report, figures, ...(f ? { falseFailovers: Number(f[1]) } : {}) };
}

/**
 * bench/failover.ts runs its main at import and exports none, so it is run
 * as its own program (`npm run bench:failover`), its output passed through
 * and kept.
 */
async function runFailover(): Promise<PartResult<FailoverData>> {
  const m = machine();
  const started = Date.now();
  say('failover: npm run bench:failover');
  const child = spawn('npm', ['run', '--silent', 'bench:failover'], { cwd: fileURLToPath(ROOT), stdio: ['ignore', 'pipe', 'pipe'] });
  const onAbort = () => child.kill('SIGINT');
  interrupt.signal.addEventListener('abort', onAbort);
  let output = '';
  const pass = (d: string) => {
    output += d;
    process.stdout.write(d.replace(/^(?=.)/gm, '  | '));
  };
  child.stdout.setEncoding('utf8').on('data', pass);
  child.stderr.setEncoding('utf8').on('data', pass);
  const exitCode = await new Promise<number | null>((resolve) => {
    child.on('error', (err) => ((output += err.message), resolve(null)));
    child.on('close', (code) => resolve(code));
  });
  interrupt.signal.removeEventListener('abort', onAbort);
  interrupt.signal.throwIfAborted();
  return { part: 'failover', machine: m, durationS: (Date.now() - started) / 1000, data: { exitCode, ...parseFailover(output) } };
}

function renderFailover(result: PartResult<FailoverData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const rows: SummaryRow[] = [];
  const fig = (label: string) => data.figures.find((f) => f.label === label);
  for (const [label, text] of [
    ['failover, link', 'failover after carrier loss (`link`)'],
    ['failover, upstream', 'failover after a fault beyond the gateway (`upstream`)'],
    ['failback, all', 'failback (heal → new connections use the uplink again)'],
    ['host failover, link', "host mode, the machine's own connections: failover after carrier loss"],
    ['host failover, upstream', "host mode, the machine's own connections: failover after a fault beyond the gateway"],
  ] as const) {
    const f = fig(label);
    rows.push({ measurement: `${text}, p50 / p95 of ${f?.n ?? 0} trials`, value: f ? `${f.p50} ms / ${f.p95} ms` : 'not measured', target: '—' });
  }
  if (data.falseFailovers !== undefined) {
    rows.push({ measurement: 'false failovers while saturating an uplink', value: String(data.falseFailovers), target: '0', met: data.falseFailovers === 0 });
  }
  const markdown = [
    `Measured ${describeMachine(result.machine)} by \`npm run bench:failover\` (bench/failover.ts), run as part of the suite;`,
    `took ${Math.round(result.durationS)} s${data.exitCode === 0 ? '' : `, and **exited ${data.exitCode}**`}. Its method is in its own`,
    'report below; in short: a new connection from the LAN every 10 ms, a fault injected at a random moment, failover = fault until',
    'every new connection succeeds, failback = heal until new connections use the healed uplink again. Its figures are also in the',
    'README\'s "Failover" section, which it writes itself.',
    '',
    '```',
    data.report,
    '```',
    '',
  ].join('\n');
  return { markdown, rows };
}

// ------------------------------------------------------------ the report

type Rendered = { markdown: string; rows: SummaryRow[] };

function renderPart(part: Part): (Rendered & { result: PartResult<unknown> }) | undefined {
  switch (part) {
    case 'aggregation': {
      const r = loadResult<AggregationData>(part);
      return r && { ...renderAggregation(r), result: r };
    }
    case 'overhead': {
      const r = loadResult<OverheadData>(part);
      return r && { ...renderOverhead(r), result: r };
    }
    case 'control': {
      const r = loadResult<ControlData>(part);
      return r && { ...renderControl(r), result: r };
    }
    case 'failover': {
      const r = loadResult<FailoverData>(part);
      return r && { ...renderFailover(r), result: r };
    }
    case 'selfheal': {
      const r = loadResult<SelfHealData>(part);
      return r && { ...renderSelfHeal(r), result: r };
    }
    case 'mptcp': {
      const r = loadResult<MptcpData>(part);
      return r && { ...renderMptcp(r), result: r };
    }
  }
}

const TITLES: Record<Part, string> = {
  aggregation: '1. Aggregation: unequal uplinks, goodput ÷ sum of the uplinks',
  overhead: '2. Data-plane overhead',
  control: '3. Control plane',
  failover: '4. Failover and failback',
  selfheal: '5. Self-healing: restoring what another program removed',
  mptcp: '6. MPTCP: one download over every uplink',
};

function writeReport(): void {
  const rendered = PARTS.map((p) => ({ part: p, r: renderPart(p) }));
  const rows = rendered.flatMap(({ r }) => r?.rows ?? []);
  const machines = [...new Set(rendered.flatMap(({ r }) => (r ? [`${r.result.machine.nproc} CPUs, ${r.result.machine.model}, Linux ${r.result.machine.kernel}`] : [])))];
  const total = rendered.reduce((a, { r }) => a + (r?.result.durationS ?? 0), 0);
  const doc = [
    '# uplinkd benchmarks',
    '',
    'Written by `npm run bench` (bench/index.ts) from the raw results in `bench/results/*.json`; do not edit by hand.',
    'Everything runs in the namespace lab (`uplinkd lab`), on one machine: every node of the lab (LAN host, router, ISPs,',
    'internet servers) shares its CPUs, so the figures are for comparing systems measured side by side in the same run, not',
    'for predicting a real router. Measurements are repeated and given as median and spread (min–max).',
    '',
    `Machine: ${machines.join('; ') || 'no results yet'}. Suite runtime: ${Math.round(total / 60)} min (${Math.round(total)} s, the parts summed).`,
    '',
    '## Summary',
    '',
    table(['measurement', 'value', 'target', 'met?'], rows.map((r) => [r.measurement, r.value, r.target, metText(r.met)])),
    '',
    ...rendered.flatMap(({ part, r }) => [`## ${TITLES[part]}`, '', r ? r.markdown : `Not run yet (\`npm run bench -- --only ${part}\`).`, '']),
  ].join('\n');
  mkdirSync(fileURLToPath(new URL('docs/', ROOT)), { recursive: true });
  writeFileSync(REPORT, doc.trimEnd() + '\n');

  const first = rendered.find(({ r }) => r)?.r?.result.machine;
  const readme = [
    first ? `Measured by \`npm run bench\` on ${describeMachine(first).replace(/, load average.*$/, '')}, in the namespace lab` : 'Not measured yet.',
    '(all lab nodes share the machine\'s CPUs). Method, raw numbers and every run: [docs/BENCHMARKS.md](docs/BENCHMARKS.md).',
    '',
    table(['measurement', 'value', 'target', 'met?'], rows.map((r) => [r.measurement, r.value, r.target, metText(r.met)])),
  ].join('\n');
  writeReadmeSection('results', 'Benchmarks', readme);
}

// ------------------------------------------------------------ main

async function runPart(part: Part): Promise<PartResult<unknown>> {
  switch (part) {
    case 'aggregation': return runAggregation();
    case 'overhead': return runOverhead();
    case 'control': return runControl();
    case 'failover': return runFailover();
    case 'selfheal': return runSelfHeal();
    case 'mptcp': return runMptcp();
  }
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({ options: { only: { type: 'string' }, report: { type: 'boolean', default: false } } }).values;
  } catch (err) {
    say(`usage: npm run bench [-- --only ${PARTS.join('|')}[,...]] [-- --report]\n${(err as Error).message}`);
    return 2;
  }
  const chosen = args.only ? args.only.split(',').map((s) => s.trim()) : [...PARTS];
  const unknown = chosen.filter((p) => !(PARTS as readonly string[]).includes(p));
  if (unknown.length) {
    say(`unknown part(s): ${unknown.join(', ')}; choose from ${PARTS.join(', ')}`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    say('npm run bench needs root (it builds network namespaces)');
    return 1;
  }
  if (args.report) {
    writeReport();
    say(`wrote ${REPORT} and the README section from the saved results`);
    return 0;
  }

  let interrupted = 0;
  const onSignal = () => {
    interrupted++;
    say(interrupted === 1 ? '\ninterrupted: stopping and removing the labs ...' : 'still cleaning up; one moment');
    if (interrupted === 1) {
      interrupt.abort();
      void stopEverythingRunning();
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = Date.now();
  say(`uplinkd benchmarks: ${chosen.join(', ')}; ${describeMachine(machine())}`);
  let failed = 0;
  try {
    for (const part of PARTS.filter((p) => chosen.includes(p))) {
      interrupt.signal.throwIfAborted();
      const t = Date.now();
      say(`\n== ${part} ==`);
      try {
        const result = await runPart(part);
        const file = saveResult(result);
        say(`${part}: done in ${Math.round((Date.now() - t) / 1000)} s, raw results in ${file}`);
        writeReport();
      } catch (err) {
        if (interrupt.signal.aborted) throw err;
        failed++;
        say(`${part} failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      }
    }
    say(`\nwrote ${REPORT} and the README section; suite took ${Math.round((Date.now() - started) / 1000)} s`);
    for (const r of PARTS.flatMap((p) => (chosen.includes(p) ? renderPart(p)?.rows ?? [] : []))) {
      say(`  ${metText(r.met).replaceAll('*', '').padEnd(4)} ${r.value.padEnd(24)} ${r.target.padEnd(8)} ${r.measurement}`);
    }
    return failed ? 1 : 0;
  } catch (err) {
    if (interrupt.signal.aborted) {
      say('interrupted; the report keeps the results of the parts that finished');
      return 130;
    }
    throw err;
  } finally {
    await teardownAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

process.exitCode = await main();
