// The probers against the real kernel (run as root, after `npm run build`):
//   node --import tsx --test test/lab/probe.test.ts
// Each prober runs in the lab's router (probe-runner.ts), with uplinkd's
// routing applied there, so a probe bound to an uplink's address is routed
// by that uplink's table, as under the daemon.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Check } from '../../src/config/types.js';
import { labCounters, labDown, labExec, labFail, labHeal, labUp, type LabState } from '../../src/lab/lab.js';
import { must } from '../../src/lab/run.js';
import type { ProbeRound, ProbeSubject } from '../../src/probe/index.js';
import { mustUplinkd, pastePlan, uniqueLabName } from './harness.js';
import type { RunnerArgs, RunnerOutput } from './probe-runner.js';

const name = uniqueLabName('prb');
const RUNNER = fileURLToPath(new URL('./probe-runner.ts', import.meta.url));
const RESPONDER = fileURLToPath(new URL('./probe-responder.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const STATUS_PORT = 8081;
let lab: LabState;
let responder: ChildProcess | undefined;

before(async () => {
  lab = await labUp({ name, uplinks: 2 });
  // uplinkd's routing: `ip rule from <uplink address> lookup <its table>` is what steers source-bound probes.
  await mustUplinkd(lab, 'apply', '-c', lab.configPath);
  responder = await startResponder();
});

after(async () => {
  responder?.kill();
  await labDown(name);
});

/** DNS on 192.0.2.10:53 and HTTP status codes on :8081, in the inet node. */
async function startResponder(): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', lab.ns.inet, process.execPath, '--import', TSX, RESPONDER,
    '--host', lab.server, '--dns-port', '53', '--http-port', String(STATUS_PORT)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = await Promise.race([
    new Promise<string[]>((resolve) => createInterface({ input: child.stdout! }).once('line', (l) => resolve([l]))),
    sleep(10000).then(() => ['(nothing)']),
  ]);
  if (line !== 'listening') throw new Error(`probe-responder said ${line}`);
  return child;
}

function subjectOf(uplink: 'isp1' | 'isp2'): ProbeSubject {
  const u = lab.uplinks.find((x) => x.name === uplink)!;
  return { uplink: u.name, device: u.routerIf, address: u.address, gateway: u.gateway };
}

function checkOf(overrides: Partial<Check>): Check {
  return {
    method: 'icmp', targets: [lab.server], port: 0, query: 'example.org', intervalMs: 100, timeoutMs: 300,
    downAfter: 3, upAfter: 5, quorum: 1, window: 20, ...overrides,
  };
}

/** Runs a prober in the router for `rounds` rounds. */
async function probe(uplink: 'isp1' | 'isp2', check: Partial<Check>, rounds = 10): Promise<RunnerOutput> {
  const args: RunnerArgs = { subject: subjectOf(uplink), check: checkOf(check), rounds };
  const r = await labExec(name, 'router', [process.execPath, '--import', TSX, RUNNER, JSON.stringify(args)], { timeoutMs: 20000 });
  if (r.code !== 0) throw new Error(`probe-runner exited ${r.code}: ${r.stderr.trim()}`);
  const out = JSON.parse(r.stdout) as RunnerOutput;
  assert.deepEqual(out.rounds.map((x) => x.seq), Array.from({ length: rounds }, (_, i) => i), 'every round, in order');
  return out;
}

/** Every result of every round, flattened. */
const results = (out: RunnerOutput) => out.rounds.flatMap((r: ProbeRound) => r.results);
const outcomes = (out: RunnerOutput) => [...new Set(results(out).map((r) => (r.ok ? 'ok' : r.error)))];

/** fping processes running in the router. */
async function fpingsInRouter(): Promise<number[]> {
  const pids = (await must(['ip', 'netns', 'pids', lab.ns.router])).split('\n').filter(Boolean).map(Number);
  return pids.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'fping';
    } catch {
      return false; // gone meanwhile
    }
  });
}

test('healthy uplinks: every method answers through its uplink', async () => {
  // icmp alone: fping starts a few ms after its first round opens, many more when the machine is busy.
  const [icmp1, icmp2] = await Promise.all([probe('isp1', {}), probe('isp2', {})]);
  const [tcp, tcpClosed, http, dns, dnsNx] = await Promise.all([
    probe('isp1', { method: 'tcp', port: lab.whoamiPort }),
    probe('isp1', { method: 'tcp', port: 9 }, 3),
    probe('isp1', { method: 'http', targets: [`http://${lab.server}:${lab.whoamiPort}/`,
      `http://${lab.server}:${STATUS_PORT}/status/302`, `http://${lab.server}:${STATUS_PORT}/status/503`] }, 3),
    probe('isp1', { method: 'dns', port: 53, targets: [lab.server, '192.0.2.11'] }, 3),
    probe('isp1', { method: 'dns', port: 53, query: 'nx.example.org' }, 3),
  ]);
  for (const out of [icmp1, icmp2]) {
    assert.deepEqual(outcomes(out), ['ok']);
    const latencies = results(out).map((r) => r.latencyMs!);
    assert.ok(Math.max(...latencies) < 1, `icmp latencies ${latencies.join(' ')} ms`);
    // fping's replies are read at the round clock's next wakeup, one interval
    // (and its 1 ms margin) after the round's slot: once per round, not as
    // each line comes, and long before the timeout. Round 0 may come sooner:
    // starting fping takes long enough for its first reply to be in by the
    // end of the wakeup that started it.
    assert.ok(out.deliveredAfterMs.slice(1).every((ms) => ms >= 100 && ms < 300), `delivered after ${out.deliveredAfterMs.join(' ')} ms`);
    assert.ok(out.deliveredAfterMs[0] < 300, `round 0 delivered after ${out.deliveredAfterMs[0]} ms`);
    console.log(`# icmp ${out.rounds[0].results[0].target}: latencies ${latencies.join(' ')} ms; delivered after ${out.deliveredAfterMs.join(' ')} ms`);
  }
  for (const out of [tcp, http, dns]) {
    console.log(`# ${out.rounds[0].results.map((r) => r.target).join(',')}: latencies ${results(out).map((r) => r.latencyMs ?? '-').join(' ')} ms; delivered after ${out.deliveredAfterMs.join(' ')} ms`);
  }
  assert.deepEqual(outcomes(tcp), ['ok']);
  assert.deepEqual(outcomes(tcpClosed), ['ECONNREFUSED']);
  for (const round of http.rounds) assert.deepEqual(round.results.map((r) => r.ok ? 'ok' : r.error), ['ok', 'ok', 'HTTP 503']);
  // The resolver answers; nobody listens on .11, which says so (ICMP port unreachable).
  for (const round of dns.rounds) assert.deepEqual(round.results.map((r) => r.ok ? 'ok' : r.error), ['ok', 'ECONNREFUSED']);
  assert.deepEqual(outcomes(dnsNx), ['ok'], 'NXDOMAIN is an answer: the resolver was reached');
  assert.deepEqual(await fpingsInRouter(), [], 'no fping left after stop()');
});

test('upstream failure: isp1 fails, isp2 answers, and isp1\'s probes still leave through isp1', async () => {
  await labFail(name, 'isp1', 'upstream');
  // The state the daemon would install with isp1 down: new connections go to isp2 only.
  await pastePlan(lab, lab.configPath, ['isp1']);
  try {
    const before1 = await labCounters(name, 'isp1');
    const before2 = await labCounters(name, 'isp2');
    const [icmp1, icmp2, tcp, dns] = await Promise.all([
      probe('isp1', {}),
      probe('isp2', {}),
      probe('isp1', { method: 'tcp', port: lab.whoamiPort }, 3),
      probe('isp1', { method: 'dns', port: 53 }, 3),
    ]);
    const after1 = await labCounters(name, 'isp1');
    const after2 = await labCounters(name, 'isp2');
    assert.deepEqual(outcomes(icmp1), ['timeout']);
    assert.deepEqual(outcomes(icmp2), ['ok']);
    assert.deepEqual(outcomes(tcp), ['timeout']);
    assert.deepEqual(outcomes(dns), ['timeout']);
    // A lost round is delivered as soon as its timeout has passed (the round clock's wakeup then).
    assert.ok(icmp1.deliveredAfterMs.every((ms) => ms >= 300 && ms < 360), `delivered after ${icmp1.deliveredAfterMs.join(' ')} ms`);
    for (const out of [icmp1, tcp, dns]) console.log(`# lost rounds delivered after ${out.deliveredAfterMs.join(' ')} ms (timeout 300)`);
    // 10 echo requests, 3+ SYNs, 3 queries, all from isp1's address, dropped at isp1's upstream; none leaked to isp2.
    assert.ok(after1.upstream - before1.upstream >= 16, `isp1 upstream drops ${after1.upstream - before1.upstream}`);
    console.log(`# isp1 upstream drops +${after1.upstream - before1.upstream}, isp1 spoofed +${after1.spoofed - before1.spoofed}, isp2 spoofed +${after2.spoofed - before2.spoofed}`);
    assert.equal(after1.spoofed, before1.spoofed);
    assert.equal(after2.spoofed, before2.spoofed, 'nothing of isp1 left through isp2');
  } finally {
    await labHeal(name, 'isp1');
    await pastePlan(lab, lab.configPath, []);
  }
});

test('loss:50% on isp1 (both directions, so 75% of echoes lost): a loss rate in the band', async () => {
  await labFail(name, 'isp1', 'loss:50%');
  try {
    const out = await probe('isp1', { intervalMs: 40, timeoutMs: 200 }, 50);
    const lost = results(out).filter((r) => !r.ok).length / 50;
    // 1 - 0.5 * 0.5 = 0.75; over 50 rounds the standard deviation is 0.06.
    assert.ok(lost >= 0.5 && lost <= 0.95, `lost ${lost}`);
    assert.ok(results(out).filter((r) => !r.ok).every((r) => r.error === 'timeout'));
    console.log(`# loss:50% -> ${(lost * 100).toFixed(0)}% of 50 echoes lost`);
  } finally {
    await labHeal(name, 'isp1');
  }
});

test('link failure: isp1\'s rounds fail', async () => {
  await labFail(name, 'isp1', 'link');
  try {
    const out = await probe('isp1', {}, 5);
    assert.ok(results(out).every((r) => !r.ok), JSON.stringify(outcomes(out)));
    console.log(`# link failure: ${outcomes(out).join(', ')}; logs: ${out.logs.join(' | ')}`);
  } finally {
    await labHeal(name, 'isp1');
  }
});

test('an fping outlives no daemon: killed outright, the daemon leaves fping to die of SIGPIPE', async () => {
  const args: RunnerArgs = { subject: subjectOf('isp1'), check: checkOf({}), rounds: 100, dieAfter: 3 };
  const r = await labExec(name, 'router', [process.execPath, '--import', TSX, RUNNER, JSON.stringify(args)], { timeoutMs: 20000 });
  assert.equal(r.code, 128 + 9, r.stderr);
  const { fping } = JSON.parse(r.stdout) as { fping: number[] };
  assert.equal(fping.length, 1, 'one fping ran');
  const killedAt = Date.now();
  while ((await fpingsInRouter()).includes(fping[0])) {
    assert.ok(Date.now() - killedAt < 2000, 'fping still running 2 s after its daemon died');
    await sleep(20);
  }
  console.log(`# orphaned fping gone within ${Date.now() - killedAt} ms`);
});
