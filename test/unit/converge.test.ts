// kernel/converge.ts without root: which commands converge() runs for a
// verdict, what it does when an element update fails, what the drift
// fingerprint ignores, and how restores are paced.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { converge, fingerprintOf, RestoreBackoff, type Installed } from '../../src/kernel/converge.js';
import { ipMonitorChanges, nftChanges, watchLines } from '../../src/kernel/watch.js';
import type { CommandResult, Runner } from '../../src/kernel/runner.js';
import { jsonAnswers } from './fake-kernel.js';
import { plan } from '../../src/plan/plan.js';
import type { Health, KernelFacts } from '../../src/plan/state.js';

const dir = new URL('../golden/', import.meta.url);
const facts = JSON.parse(readFileSync(new URL('facts.json', dir), 'utf8')) as KernelFacts;

function planFor(configName: string, down: string[] = []) {
  const result = parseConfig(readFileSync(new URL(`${configName}.yaml`, dir), 'utf8'), configName);
  assert.ok(result.ok);
  return plan({ config: result.config, facts, health: Object.fromEntries(down.map((n) => [n, 'down' as Health])) });
}

/** Records every command; `answer` may fail some. Listings answer empty, as for a kernel with nothing of ours. */
function recordingRunner(answer: (command: string, args: string[], input?: string) => CommandResult | undefined = () => undefined) {
  const calls: { line: string; input?: string }[] = [];
  const runner: Runner = {
    async run(command, args, input) {
      calls.push({ line: [command, ...args].join(' '), input });
      const given = answer(command, args, input);
      if (given) return given;
      if (command === 'nft' && args[0] === '-j') return { code: 0, stdout: '{"nftables": [{"table": {"family": "inet", "name": "uplinkd"}}]}', stderr: '' };
      return { code: 0, stdout: args.includes('-j') ? jsonAnswers(args, input) : '', stderr: '' };
    },
  };
  return { runner, calls };
}

test('a verdict that changes only elements is one nft transaction of element updates, then the read-back', async () => {
  const before = planFor('two-uplinks');
  const installed: Installed = { state: before, nft: {} };
  const { runner, calls } = recordingRunner();
  const result = await converge(installed, planFor('two-uplinks', ['isp1']), runner);
  assert.deepEqual(calls.map((c) => c.line), ['nft -f -', 'nft -j list table inet uplinkd']);
  assert.match(calls[0].input!, /^flush map inet uplinkd balance$/m);
  assert.doesNotMatch(calls[0].input!, /delete table/);
  assert.equal(result.fellBack, undefined);
});

test('an element update that fails (the table is gone) falls back to replacing the whole table, routes and rules included', async () => {
  // Sysctls are written to /proc/sys directly, not through the runner: left out here.
  const installed: Installed = { state: { ...planFor('two-uplinks'), sysctls: [] }, nft: {} };
  const { runner, calls } = recordingRunner((command, _args, input) =>
    command === 'nft' && input?.startsWith('flush') ? { code: 1, stdout: '', stderr: 'Error: No such file or directory' } : undefined);
  const result = await converge(installed, { ...planFor('two-uplinks', ['isp1']), sysctls: [] }, runner);
  assert.match(result.fellBack ?? '', /No such file or directory/);
  const transaction = calls.find((c) => c.input?.includes('delete table inet uplinkd'));
  assert.ok(transaction, `a full table transaction was run: ${calls.map((c) => c.line).join('; ')}`);
  assert.ok(calls.some((c) => c.line.startsWith('ip -4 rule add')), 'rules converged too');
  assert.ok(calls.some((c) => c.line.startsWith('ip -4 route replace')), 'routes converged too');
});

test('drift in elements rewrites every planned set; the plan unchanged', async () => {
  const state = planFor('two-uplinks');
  const { runner, calls } = recordingRunner();
  await converge({ state, nft: {} }, state, runner, { drift: [{ kind: 'nft-elements', detail: 'x' }] });
  const script = calls[0].input ?? '';
  for (const set of state.nft.sets) assert.match(script, new RegExp(`^flush (set|map) inet uplinkd ${set.name}$`, 'm'));
});

test('the drift fingerprint ignores what packets write (sticky sets) and sees every planned element', () => {
  const listing = (stickyElems: string[], balanceElems: unknown[]) => JSON.stringify({ nftables: [
    { metainfo: { version: '1.0.6' } },
    { table: { family: 'inet', name: 'uplinkd', handle: 4 } },
    // As nft 1.0.6 lists a `flags dynamic,timeout` set: only "timeout" comes back.
    { set: { family: 'inet', name: 'sticky_isp1', table: 'uplinkd', type: 'ipv4_addr', flags: ['timeout'], timeout: 600,
      elem: stickyElems.map((val, i) => ({ elem: { val, expires: 599 - i } })) } },
    { map: { family: 'inet', name: 'balance', table: 'uplinkd', type: 'integer', map: 'verdict', flags: ['interval'], elem: balanceElems } },
    { chain: { family: 'inet', table: 'uplinkd', name: 'prerouting', handle: 1 } },
  ] });
  const dynamic = new Set(['sticky_isp1']);
  const a = fingerprintOf(listing(['198.18.0.2'], [[{ range: [0, 32767] }, { goto: { target: 'mark_isp1' } }]]), dynamic);
  const b = fingerprintOf(listing(['198.18.0.2', '198.18.0.3'], [[{ range: [0, 32767] }, { goto: { target: 'mark_isp1' } }]]), dynamic);
  const c = fingerprintOf(listing(['198.18.0.2'], []), dynamic);
  assert.deepEqual(a, b, 'sticky sources come and go with traffic');
  assert.equal(a.structure, c.structure);
  assert.notEqual(a.elements, c.elements, 'a deleted balance element is drift');
});

test('restores back off: at once, then 100, 200, 400, 500, 500 ms apart; a quiet spell forgets the streak', () => {
  const backoff = new RestoreBackoff();
  let now = 1_000_000;
  const gaps: number[] = [];
  for (let i = 0; i < 6; i++) {
    const wait = backoff.delayMs(now);
    gaps.push(wait);
    now += wait;
    backoff.restored(now);
  }
  assert.deepEqual(gaps, [0, 100, 200, 400, 500, 500]);
  assert.equal(backoff.currentGapMs(now), 500);
  // Drift found 50 ms after a restore waits out the rest of the gap, not a whole new one.
  assert.equal(backoff.delayMs(now + 50), 450);
  now += RestoreBackoff.QUIET_MS + 1;
  assert.equal(backoff.delayMs(now), 0);
  assert.equal(backoff.currentGapMs(now), 0);
});

test("nft monitor: another program's change to the table is reported once per transaction; uplinkd's own and other tables' are not", () => {
  // As nft 1.0.6 prints them (lines from a lab router).
  const lines = [
    'delete element inet uplinkd balance { 0-32767 : goto mark_isp1 }',
    '# new generation 3 by process 4430 (nft)',
    'add element inet uplinkd balance { 0-32767 : goto mark_isp2 }',
    '# new generation 4 by process 777 (nft)',
    'add table inet filter',
    'add chain inet filter forward { type filter hook forward priority filter; policy accept; }',
    '# new generation 5 by process 4431 (nft)',
    'delete rule inet uplinkd prerouting handle 28',
    'delete chain inet uplinkd prerouting',
    'delete table inet uplinkd',
    '# new generation 6 by process 4432 (nft)',
    'delete table inet uplinkd',
    '# new generation 7',
  ];
  const seen = lines.map(nftChanges('uplinkd', (pid) => pid === 777)).filter((x) => x !== undefined);
  assert.deepEqual(seen, ['delete element', 'delete rule, delete chain, delete table', 'delete table']);
});

test('nft monitor: lost events (`# ERROR: …` on its stdout) count as a change, whoever made the last transaction', () => {
  const seen = nftChanges('uplinkd', () => true);
  assert.equal(seen('add element inet uplinkd balance { 0-32767 : goto mark_isp2 }'), undefined);
  assert.equal(seen('# ERROR: We lost some netlink events!'), 'nft monitor: ERROR: We lost some netlink events!');
  assert.equal(seen('# new generation 4 by process 777 (nft)'), undefined, "uplinkd's own transaction");
});

/** A monitor stand-in: node running `script`. */
const monitor = (script: string) => [process.execPath, '-e', script];

/** Collects what a watcher reports until `until` says it has seen enough (or 5 s pass). */
function reports(argv: string[], until: (seen: string[]) => boolean): Promise<string[]> {
  return new Promise((resolve) => {
    const seen: string[] = [];
    const done = () => {
      clearTimeout(limit);
      watcher.stop();
      resolve(seen);
    };
    const watcher = watchLines(argv, (line) => (line.startsWith('event') ? line : undefined), (what) => {
      seen.push(what);
      if (until(seen)) done();
    }, { coalesceMs: 5, restartSettleMs: 20 });
    const limit = setTimeout(done, 5000);
  });
}

test('a monitor saying anything on stderr (ip monitor: netlink receive error … ENOBUFS) counts as a change', async () => {
  const seen = await reports(monitor('console.error("netlink receive error No buffer space available (105)"); setTimeout(() => {}, 10000)'), (s) => s.length > 0);
  assert.equal(seen.length, 1);
  assert.match(seen[0], / monitor: netlink receive error No buffer space available \(105\)$/);
});

test('a monitor that exited is started again and its restart counts as a change: events went unseen meanwhile', async () => {
  const started = Date.now();
  // Prints one event and exits at once: each run gives the event, then the restart.
  const seen = await reports(monitor('console.log("event 1")'), (s) => s.filter((w) => w.endsWith('monitor restarted')).length >= 1);
  assert.deepEqual(seen.slice(0, 1), ['event 1']);
  assert.ok(seen.some((w) => w.endsWith(' monitor restarted')), seen.join(' | '));
  // Restarted after its 500 ms pause, reported 20 ms after that.
  assert.ok(Date.now() - started >= 500, `${Date.now() - started} ms`);
});

test('ip monitor: a router advertisement re-announcing addresses with fresh lifetimes is no change; DAD, deprecation, rules and routes are', () => {
  // As iproute2 6.1 printed `ip monitor link address route rule` in a namespace on Linux 6.18 (interface names
  // renamed): 2001:db8:9::8 added (tentative, then DAD done), deprecated, an IPv6 rule and route, all deleted, an IPv4
  // rule; meanwhile dnsmasq's router advertisements (every 4 s) refreshed wan2's SLAAC and temporary addresses.
  const lines = [
    '3: wan1    inet6 2001:db8:9::8/64 scope global tentative ',
    '       valid_lft forever preferred_lft forever',
    '6: wan2    inet6 2001:db8:2:0:c076:6bff:fe01:a58b/64 scope global dynamic mngtmpaddr ',
    '       valid_lft 600sec preferred_lft 600sec',
    '6: wan2    inet6 2001:db8:2:0:5390:77d4:4132:ab9a/64 scope global temporary dynamic ',
    '       valid_lft 600sec preferred_lft 600sec',
    '3: wan1    inet6 2001:db8:9::8/64 scope global ',
    '       valid_lft forever preferred_lft forever',
    'local 2001:db8:9::8 dev wan1 table local proto kernel metric 0 pref medium',
    '3: wan1    inet6 2001:db8:9::8/64 scope global deprecated ',
    '       valid_lft forever preferred_lft 0sec',
    '10700:\tfrom 2001:db8:9::8 lookup 203',
    'default via fe80::9 dev wan1 table 203 metric 1024 pref medium',
    'Deleted 10700:\tfrom 2001:db8:9::8 lookup 203',
    'Deleted 3: wan1    inet6 2001:db8:9::8/64 scope global deprecated ',
    '       valid_lft forever preferred_lft 0sec',
    'Deleted local 2001:db8:9::8 dev wan1 table local proto kernel metric 0 pref medium',
    '10700:\tfrom 192.0.2.5 lookup 203',
    'Deleted 10700:\tfrom 192.0.2.5 lookup 203',
    '6: wan2    inet6 2001:db8:2:0:c076:6bff:fe01:a58b/64 scope global dynamic mngtmpaddr ',
    '       valid_lft 600sec preferred_lft 600sec',
    '6: wan2    inet6 2001:db8:2:0:5390:77d4:4132:ab9a/64 scope global temporary dynamic ',
    '       valid_lft 600sec preferred_lft 600sec',
    '6: wan2    inet6 2001:db8:2:0:c076:6bff:fe01:a58b/64 scope global dynamic mngtmpaddr ',
    '       valid_lft 600sec preferred_lft 600sec',
    '6: wan2    inet6 2001:db8:2:0:5390:77d4:4132:ab9a/64 scope global temporary dynamic ',
    '       valid_lft 600sec preferred_lft 600sec',
    '6: wan2    inet6 2001:db8:2:0:c076:6bff:fe01:a58b/64 scope global dynamic mngtmpaddr ',
    '       valid_lft 600sec preferred_lft 600sec',
    '6: wan2    inet6 2001:db8:2:0:5390:77d4:4132:ab9a/64 scope global temporary dynamic ',
    '       valid_lft 600sec preferred_lft 600sec',
  ];
  const seen = lines.map(ipMonitorChanges()).filter((x) => x !== undefined);
  assert.deepEqual(seen, [
    // The first announcements of wan2's addresses after the start count once; the 6 later ones do not.
    '3: wan1', '6: wan2', '6: wan2', '3: wan1', 'local 2001:db8:9::8', '3: wan1', '10700:\tfrom 2001:db8:9::8', 'default via',
    'Deleted 10700:\tfrom', 'Deleted 3:', 'Deleted local', '10700:\tfrom 192.0.2.5', 'Deleted 10700:\tfrom',
  ]);
});
