// npm run bench — the benchmark suite: programs, not tests. Each part runs in
// labs of its own (network namespaces; the host's network is never touched),
// measures, and saves its raw results in bench/results/<part>.json; then the
// report, docs/BENCHMARKS.md, and the results table in README.md (between
// <!-- bench:results:start --> and <!-- bench:results:end -->) are written
// from every part's latest results.
//
//   npm run bench                          all parts, in order (about an hour on 2 cores)
//   npm run bench -- --only aggregation    one part (or a comma-separated list):
//                                          aggregation | overhead | connections | control | failover | selfheal | mptcp | pair
//   npm run bench -- --report              only rewrite the report from the saved results
//
// Every figure of the README's table carries the time it was measured, and
// the table says whether all of them come from one run: a part not run this
// time keeps its last results, and so does a piece of a part run on its own
// (BENCH_SETS for aggregation, BENCH_FAILOVER_SETUPS for failover).
//
// Quick look (not for the record): BENCH_REPEATS=1 BENCH_WINDOW_S=3
// BENCH_IDLE_S=10 BENCH_TRIALS=2 BENCH_SATURATION_S=10.
// Labs are always taken down, also on Ctrl-C. Run as root, from the checkout.

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { renderAggregation, runAggregation, type AggregationData } from './aggregation.js';
import { renderConnections, runConnections, type ConnectionsData } from './connections.js';
import { renderControl, runControl, type ControlData } from './control.js';
import { renderFailover, type FailoverData } from './failover-report.js';
import {
  describeMachine, interrupt, loadResult, machine, metText, saveResult, say, stopEverythingRunning, table, teardownAll,
  writeReadmeSection, type Machine, type PartResult, type Suite, type SummaryRow,
} from './lib.js';
import { renderOverhead, runOverhead, type OverheadData } from './overhead.js';
import { renderMptcp, runMptcp, type MptcpData } from './mptcp.js';
import { renderPair, runPair, type PairData } from './pair.js';
import { renderSelfHeal, runSelfHeal, type SelfHealData } from './selfheal.js';

const PARTS = ['aggregation', 'overhead', 'connections', 'control', 'failover', 'selfheal', 'mptcp', 'pair'] as const;
type Part = (typeof PARTS)[number];

const ROOT = new URL('../', import.meta.url);
const REPORT = fileURLToPath(new URL('docs/BENCHMARKS.md', ROOT));

// ------------------------------------------------------------ failover: bench/failover.ts, as its own program

/**
 * bench/failover.ts runs its main at import and exports none, so it is run
 * as its own program (`npm run bench:failover`), its output passed through.
 * It saves its results in bench/results/failover.json itself; they are read
 * back from there.
 */
async function runFailover(): Promise<PartResult<FailoverData>> {
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
  const result = loadResult<FailoverData>('failover');
  if (exitCode !== 0 || !result || Date.parse(result.machine.date) < started) {
    throw new Error(`npm run bench:failover exited ${exitCode}: ${output.trim().split('\n').slice(-5).join(' / ')}`);
  }
  return result;
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
    case 'connections': {
      const r = loadResult<ConnectionsData>(part);
      return r && { ...renderConnections(r), result: r };
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
    case 'pair': {
      const r = loadResult<PairData>(part);
      return r && { ...renderPair(r), result: r };
    }
  }
}

const TITLES: Record<Part, string> = {
  aggregation: '1. Aggregation: unequal uplinks, what the LAN host receives ÷ the sum of the uplinks\' rates',
  overhead: '2. Data-plane overhead',
  connections: '3. New connections per second through the router',
  control: '4. Control plane',
  failover: '5. Failover and failback',
  selfheal: '6. Self-healing: restoring what another program removed',
  mptcp: '7. MPTCP: one download over every uplink',
  pair: '8. Router pair: the master dies with transfers in flight',
};

const utc = (iso: string): string => `${iso.slice(0, 16).replace('T', ' ')} UTC`;

/**
 * The summary table, each figure with the time (and, if not the latest run's, the machine) it was measured on. "earlier
 * run": measured before the latest `npm run bench` started, i.e. that run did
 * not measure it (a part it did not run, or a piece of a part kept from before).
 */
function summary(rendered: { part: Part; r: ReturnType<typeof renderPart> }[]): { heading: string; table: string } {
  const results = rendered.flatMap(({ r }) => (r ? [r.result] : []));
  const suites = results.flatMap((r) => (r.suite ? [r.suite] : [])).sort((a, b) => a.started.localeCompare(b.started));
  const latest: Suite | undefined = suites[suites.length - 1];
  const rows = rendered.flatMap(({ r }) => (r?.rows ?? []).map((row) => ({ ...row, m: row.measured ?? r!.result.machine })));
  const earlier = (m: Machine) => latest !== undefined && m.date < latest.started;
  const oneRun = latest !== undefined && rendered.every(({ r }) => r?.result.suite?.started === latest.started) && !rows.some((row) => earlier(row.m));
  // The machine of the latest run (or of the newest figure): figures measured elsewhere name theirs.
  const newest = [...rows].sort((a, b) => a.m.date.localeCompare(b.m.date)).pop()?.m;
  const home = results.find((r) => latest && r.suite?.started === latest.started)?.machine ?? newest;
  const describe = (m: Machine) => `${m.nproc} CPUs (nproc), ${m.model}, Linux ${m.kernel}`;
  const where = home ? ` On ${describe(home)}, in the namespace lab (all lab nodes share the machine's CPUs).` : '';
  const heading = !latest ? `Not from one \`npm run bench\`: each figure gives the time it was measured.${where}`
    : oneRun ? `Every figure below is from one \`npm run bench\`, started ${utc(latest.started)}.${where}`
    : `**Not all from one run.** The latest \`npm run bench\` started ${utc(latest.started)} and ran ${latest.parts.join(', ')}; ` +
      `figures marked *earlier run* were not measured by it.${where}`;
  const body = table(['measurement', 'value', 'target', 'met?', 'measured'],
    rows.map((r) => {
      const notes = [earlier(r.m) ? '*earlier run*' : '', home && describe(r.m) !== describe(home) ? `on ${r.m.model}, Linux ${r.m.kernel}` : ''].filter(Boolean);
      return [r.measurement, r.value, r.target, metText(r.met), `${utc(r.m.date)}${notes.length ? ` (${notes.join(', ')})` : ''}`];
    }));
  return { heading, table: body };
}

function writeReport(): void {
  const rendered = PARTS.map((p) => ({ part: p, r: renderPart(p) }));
  const machines = [...new Set(rendered.flatMap(({ r }) => (r ? [`${r.result.machine.nproc} CPUs, ${r.result.machine.model}, Linux ${r.result.machine.kernel}`] : [])))];
  const total = rendered.reduce((a, { r }) => a + (r?.result.durationS ?? 0), 0);
  const { heading, table: summaryTable } = summary(rendered);
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
    heading,
    '',
    summaryTable,
    '',
    ...rendered.flatMap(({ part, r }) => [`## ${TITLES[part]}`, '', r ? r.markdown : `Not run yet (\`npm run bench -- --only ${part}\`).`, '']),
  ].join('\n');
  mkdirSync(fileURLToPath(new URL('docs/', ROOT)), { recursive: true });
  writeFileSync(REPORT, doc.trimEnd() + '\n');

  const readme = [
    heading,
    'Method, raw numbers and every run: [docs/BENCHMARKS.md](docs/BENCHMARKS.md).',
    '',
    summaryTable,
  ].join('\n');
  writeReadmeSection('results', 'Benchmarks', readme);
}

// ------------------------------------------------------------ main

async function runPart(part: Part): Promise<PartResult<unknown>> {
  switch (part) {
    case 'aggregation': return runAggregation();
    case 'overhead': return runOverhead();
    case 'connections': return runConnections();
    case 'control': return runControl();
    case 'failover': return runFailover();
    case 'selfheal': return runSelfHeal();
    case 'mptcp': return runMptcp();
    case 'pair': return runPair();
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
  const suite: Suite = { started: new Date(started).toISOString(), parts: PARTS.filter((p) => chosen.includes(p)) };
  say(`uplinkd benchmarks: ${chosen.join(', ')}; ${describeMachine(machine())}`);
  let failed = 0;
  try {
    for (const part of PARTS.filter((p) => chosen.includes(p))) {
      interrupt.signal.throwIfAborted();
      const t = Date.now();
      say(`\n== ${part} ==`);
      try {
        const result = await runPart(part);
        const file = saveResult({ ...result, suite });
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
