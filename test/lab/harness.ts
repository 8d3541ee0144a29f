// What the integration tests share: a lab per test file, the uplinkd CLI run
// inside its router, and a snapshot of the router's kernel state to compare
// before and after. Configs are written by src/lab/lab-config.ts and the
// daemon started by src/lab/lab-daemon.ts, as for the demo and the benchmarks.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { isAlive, labClient, labExec, labHeal, loadLab, type LabState } from '../../src/lab/lab.js';
import { UPLINKD_BIN, uplinkdInRouter, type LabDaemon } from '../../src/lab/lab-daemon.js';
import type { ClientResult } from '../../src/lab/client.js';
import { runCommand } from '../../src/kernel/runner.js';
import { labNamespacePattern } from '../../src/lab/topology.js';
import type { Status } from '../../src/api/status.js';

export function uniqueLabName(prefix: string): string {
  return `${prefix}${process.pid % 100000}`;
}

/** `uplinkd ARGS` inside the lab's router, as an operator would run it there. */
export function uplinkd(lab: LabState, ...args: string[]) {
  return uplinkdInRouter(lab, args);
}

export async function mustUplinkd(lab: LabState, ...args: string[]): Promise<string> {
  const r = await uplinkd(lab, ...args);
  if (r.code !== 0) throw new Error(`uplinkd ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * Between the tests of one lab: the daemon stopped, every uplink healed and
 * uplinkd's state flushed. Returns the lab as it is now (a renumber moves it).
 */
export async function resetLab(lab: LabState, daemon: LabDaemon | undefined): Promise<LabState> {
  await daemon?.stop();
  for (const u of lab.uplinks) await labHeal(lab.name, u.name);
  const now = loadLab(lab.name);
  await mustUplinkd(now, 'flush');
  return now;
}

/**
 * Installs the state `uplinkd plan` prints, by running the printed text in
 * the router's shell exactly as an operator pasting it would (after a flush,
 * since `ip rule add` is not idempotent). This is how tests reach a state
 * with uplinks down without a daemon.
 */
export async function pastePlan(lab: LabState, config: string, down: string[]): Promise<void> {
  await mustUplinkd(lab, 'flush', '-c', config);
  const text = await mustUplinkd(lab, 'plan', '-c', config, ...(down.length ? ['--down', down.join(',')] : []));
  const r = await labExec(lab.name, 'router', ['bash', '-e', '-s'], { input: text });
  if (r.code !== 0) throw new Error(`pasting the plan failed: ${r.stderr.trim()}`);
}

/** What `nft list ruleset`, `ip rule` and every routing table of the router say. */
export async function kernelSnapshot(lab: LabState): Promise<{ nft: string; rules: string; routes: string }> {
  const read = async (argv: string[]) => (await labExec(lab.name, 'router', argv)).stdout;
  return {
    nft: await read(['nft', 'list', 'ruleset']),
    rules: await read(['ip', 'rule', 'show']),
    // Routes from router advertisements (uplink 2) count their lifetimes down: compare what they are, not the seconds left.
    routes: (await read(['ip', 'route', 'show', 'table', 'all'])).replace(/expires \d+sec/g, 'expires Nsec'),
  };
}

export function whoamiUrl(lab: LabState, host = lab.server): string {
  return `http://${host}:${lab.whoamiPort}/`;
}

/** `count` new HTTP connections from a node; the far end reports the source it saw. */
export function connections(lab: LabState, node: string, count: number, extra: string[] = []): Promise<ClientResult> {
  return labClient(lab.name, node, ['http', '--url', whoamiUrl(lab), '--count', String(count), '--concurrency', '16', '--timeout-ms', '1500', ...extra]);
}

/**
 * How far the share of n connections that each take an uplink with
 * probability p (weighted balancing draws `numgen random` per connection, so
 * the count is binomial) may stray from p in a test that fails by chance once
 * in a million runs: 4.89 standard deviations, two-sided.
 */
export function shareTolerance(p: number, n: number): number {
  return 4.89 * Math.sqrt((p * (1 - p)) / n);
}

/** Fraction of successful connections the far end saw coming from `address`. */
export function shareOf(result: ClientResult, address: string): number {
  return (result.seen[address] ?? 0) / result.ok;
}

// ------------------------------------------------------------ share checks from the binomial distribution

/**
 * How often a share check may fail a correct build by chance: once in a
 * million runs. The suite has a few dozen share checks, so a correct build
 * fails one of them by chance less than once in ten thousand runs of it.
 */
export const FALSE_FAILURE_RATE = 1e-6;

/**
 * How often a share check may pass a build that deals the shares a test names
 * as wrong (`unlike` in assertShares): once in a thousand runs.
 */
export const MISS_RATE = 1e-3;

/** P(X = k) for k = 0..n with X ~ Binomial(n, p), computed in log space so that large n does not underflow. */
export function binomialPmf(n: number, p: number): number[] {
  if (p <= 0) return Array.from({ length: n + 1 }, (_, k) => (k === 0 ? 1 : 0));
  if (p >= 1) return Array.from({ length: n + 1 }, (_, k) => (k === n ? 1 : 0));
  const logs = [n * Math.log1p(-p)];
  const odds = Math.log(p) - Math.log1p(-p);
  for (let k = 0; k < n; k++) logs.push(logs[k] + Math.log(n - k) - Math.log(k + 1) + odds);
  const top = Math.max(...logs);
  const weights = logs.map((l) => Math.exp(l - top));
  const sum = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => w / sum);
}

/**
 * The counts a share check accepts when n connections each take an uplink
 * with probability p (weighted balancing draws `numgen random` per
 * connection, so the count is binomial): the widest [lo, hi] with
 * P(X < lo) ≤ rate/2 and P(X > hi) ≤ rate/2, from the exact distribution.
 */
export function binomialRange(n: number, p: number, rate = FALSE_FAILURE_RATE): [number, number] {
  const pmf = binomialPmf(n, p);
  let lo = 0;
  for (let below = 0; lo < n && below + pmf[lo] <= rate / 2; lo++) below += pmf[lo];
  let hi = n;
  for (let above = 0; hi > 0 && above + pmf[hi] <= rate / 2; hi--) above += pmf[hi];
  return [lo, hi];
}

/** How often the check for share p over n connections passes when the real share is `actual`. */
export function missRate(n: number, p: number, actual: number, rate = FALSE_FAILURE_RATE): number {
  const [lo, hi] = binomialRange(n, p, rate);
  return binomialPmf(n, actual).slice(lo, hi + 1).reduce((a, b) => a + b, 0);
}

/**
 * Asserts that the far end saw the successful connections of `result` from
 * the addresses in `expected` only, each with a count in binomialRange(ok,
 * share): an address with share 0, or not named, must get none. `unlike`
 * lists the shares a broken build would deal instead (pins ignored, weights
 * ignored, ...); each must fail this check at least 999 times in 1000
 * (MISS_RATE), or the test has too few connections to tell them apart, and
 * says so.
 */
export function assertShares(result: ClientResult, expected: Record<string, number>, opts: { unlike?: Record<string, number>[]; what?: string } = {}): void {
  const n = result.ok;
  const what = opts.what ? `${opts.what}: ` : '';
  const seen = JSON.stringify(result.seen);
  assert.ok(n > 0 && result.failed === 0, `${what}${result.failed} of ${result.total} connections failed: ${JSON.stringify(result.errors)}`);
  for (const address of Object.keys(result.seen)) {
    assert.ok((expected[address] ?? 0) > 0, `${what}${result.seen[address]} of ${n} connections came from ${address}, which should get none: ${seen}`);
  }
  for (const [address, p] of Object.entries(expected)) {
    const [lo, hi] = binomialRange(n, p);
    const count = result.seen[address] ?? 0;
    assert.ok(count >= lo && count <= hi,
      `${what}${address}: ${count} of ${n} connections, expected share ${p} (${lo}..${hi} at a false-failure rate of ${FALSE_FAILURE_RATE}): ${seen}`);
  }
  for (const alternative of opts.unlike ?? []) {
    // The check passes only if every address passes, so the least likely address bounds the miss.
    const miss = Math.min(...Object.entries(expected).map(([address, p]) => missRate(n, p, alternative[address] ?? 0)));
    assert.ok(miss <= MISS_RATE, `${what}${n} connections cannot tell ${JSON.stringify(expected)} from ${JSON.stringify(alternative)} (missed ${miss.toPrecision(2)} of runs)`);
  }
}

// ------------------------------------------------------------ the daemon

export async function daemonStatus(lab: LabState, config: string): Promise<Status> {
  return JSON.parse(await mustUplinkd(lab, 'status', '--json', '-c', config)) as Status;
}

/** Polls `check` every `everyMs` until it holds or `withinMs` passes. */
export async function waitFor(check: () => Promise<boolean>, withinMs: number, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Time from `faultAt` until a batch of new connections from `node` (the LAN
 * host unless given) all succeed, the README's failover time: batches of
 * `batch` connections (300 ms timeout each) are tried back to back. Resolves to ms, or undefined after `withinMs`.
 */
export async function timeUntilAllSucceed(lab: LabState, faultAt: number,
  opts: { batch?: number; withinMs?: number; expectVia?: string[]; node?: 'lan' | 'router' } = {}): Promise<number | undefined> {
  const batch = opts.batch ?? 10;
  const deadline = faultAt + (opts.withinMs ?? 10_000);
  while (Date.now() < deadline) {
    const tryAt = Date.now();
    const r = await labClient(lab.name, opts.node ?? 'lan', ['http', '--url', whoamiUrl(lab), '--count', String(batch), '--concurrency', String(batch), '--timeout-ms', '300']);
    const viaOk = !opts.expectVia || Object.keys(r.seen).every((a) => opts.expectVia!.includes(a));
    if (r.ok === batch && viaOk) return tryAt - faultAt;
  }
  return undefined;
}

// ------------------------------------------------------------ what a lab leaves behind

/** The namespaces of lab `name` that exist now. */
export async function namespacesOf(name: string): Promise<string[]> {
  const { stdout } = await runCommand(['ip', 'netns', 'list']);
  return stdout.split('\n').map((l) => l.split(' ')[0]).filter((ns) => labNamespacePattern(name).test(ns));
}

/** Running processes whose environment holds `entry` (NAME=value). */
export function processesWithEnv(entry: string): number {
  const pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && isAlive(p));
  return pids.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(entry);
    } catch {
      return false; // gone meanwhile
    }
  }).length;
}
