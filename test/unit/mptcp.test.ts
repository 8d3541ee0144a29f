// kernel/mptcp.ts without root: a pretend kernel that holds MPTCP endpoints
// and limits the way the real one does (ids and addresses unique, at most 8
// endpoints, limits at most 8), answers `ip mptcp … show` as iproute2 6.1
// prints it, and applies `ip mptcp …` changes. Apply, verdicts, renumbering,
// foreign endpoints, limits, drift and flush are table-tested against it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { flushOwned } from '../../src/kernel/apply.js';
import { converge, findDrift } from '../../src/kernel/converge.js';
import { applyMptcp, flushMptcp, mptcpDrift, parseEndpoints, parseLimits } from '../../src/kernel/mptcp.js';
import type { CommandResult, Runner } from '../../src/kernel/runner.js';
import { jsonAnswers } from './fake-kernel.js';
import { DEFAULT_OWNERSHIP } from '../../src/ownership.js';
import { plan } from '../../src/plan/plan.js';
import type { Health, KernelFacts } from '../../src/plan/state.js';

const dir = new URL('../golden/', import.meta.url);
const goldenFacts = JSON.parse(readFileSync(new URL('facts.json', dir), 'utf8')) as KernelFacts;

function planOf(yaml: string, down: string[] = [], facts = goldenFacts) {
  const result = parseConfig(yaml, 't.yaml');
  assert.ok(result.ok, JSON.stringify(!result.ok && result.errors));
  return plan({ config: result.config, facts, health: Object.fromEntries(down.map((n) => [n, 'down' as Health])) });
}

const hostMptcp = readFileSync(new URL('host-mptcp.yaml', dir), 'utf8');

interface FakeEndpoint { id: number; address: string; dev?: string; flags: string[] }

/** The kernel's MPTCP path manager state of one namespace, and every command run against it. */
class FakeMptcp {
  endpoints: FakeEndpoint[] = [];
  limits = { subflows: 2, addAddrAccepted: 0 };
  commands: string[] = [];
  /** Like a kernel built without MPTCP: every `ip mptcp` fails. */
  missing = false;

  /** Kernel settings: held here, so nothing a test converges ever reaches this machine's /proc/sys. */
  sysctls = new Map<string, string>();

  readonly runner: Runner = {
    run: async (command, args, input) => this.run(command, args, input),
    sysctl: { read: (path) => this.sysctls.get(path), write: (path, value) => void this.sysctls.set(path, value) },
  };

  private ok(stdout = ''): CommandResult {
    return { code: 0, stdout, stderr: '' };
  }

  private fail(stderr: string): CommandResult {
    return { code: 2, stdout: '', stderr };
  }

  private run(command: string, args: string[], input?: string): CommandResult {
    const line = [command, ...args].join(' ');
    this.commands.push(line);
    const at = args.indexOf('mptcp');
    if (command !== 'ip' || at < 0) {
      // Not MPTCP: an empty kernel (no routes, rules or table of ours).
      if (command === 'nft' && args[0] === '-j') return this.ok('{"nftables": [{"table": {"family": "inet", "name": "uplinkd"}}]}');
      return this.ok(args.includes('-j') ? jsonAnswers(args, input) : '');
    }
    if (this.missing) return this.fail('Error: genl: can\'t resolve family "mptcp_pm"');
    const [object, verb, ...rest] = args.slice(at + 1);
    if (object === 'endpoint' && verb === 'show') {
      // As iproute2 6.1 prints it: one boolean per flag, then dev.
      return this.ok(JSON.stringify(this.endpoints.map((e) => ({
        address: e.address, id: e.id, ...Object.fromEntries(e.flags.map((f) => [f, true])), ...(e.dev ? { dev: e.dev } : {}),
      }))));
    }
    if (object === 'limits' && verb === 'show') {
      // iproute2 6.1 prints the limits as text even with -j.
      return this.ok(`add_addr_accepted ${this.limits.addAddrAccepted} subflows ${this.limits.subflows} \n`);
    }
    if (object === 'limits' && verb === 'set') {
      const subflows = Number(rest[rest.indexOf('subflow') + 1]);
      const accepted = Number(rest[rest.indexOf('add_addr_accepted') + 1]);
      if (subflows > 8 || accepted > 8) return this.fail('Error: limit greater than maximum (8).');
      this.limits = { subflows, addAddrAccepted: accepted };
      return this.ok();
    }
    if (object === 'endpoint' && verb === 'add') {
      const [address, ...opts] = rest;
      const id = opts.includes('id') ? Number(opts[opts.indexOf('id') + 1]) : this.nextId();
      const dev = opts.includes('dev') ? opts[opts.indexOf('dev') + 1] : undefined;
      const flags = ['signal', 'subflow', 'backup', 'fullmesh'].filter((f) => opts.includes(f)).sort();
      if (this.endpoints.length >= 8 || this.endpoints.some((e) => e.id === id || e.address === address)) {
        return this.fail('Error: too many addresses or duplicate one: -17.');
      }
      this.endpoints.push({ id, address, dev, flags });
      return this.ok();
    }
    if (object === 'endpoint' && verb === 'delete') {
      const id = Number(rest[rest.indexOf('id') + 1]);
      if (!this.endpoints.some((e) => e.id === id)) return this.fail('Error: address not found.');
      this.endpoints = this.endpoints.filter((e) => e.id !== id);
      return this.ok();
    }
    return this.fail(`fake: unknown command ${line}`);
  }

  private nextId(): number {
    for (let id = 1; id <= 255; id++) if (!this.endpoints.some((e) => e.id === id)) return id;
    return 0;
  }

  /** Endpoints as `ip mptcp endpoint show` would print them, sorted by id. */
  show(): string[] {
    return [...this.endpoints].sort((a, b) => a.id - b.id)
      .map((e) => [e.address, 'id', e.id, ...e.flags, ...(e.dev ? ['dev', e.dev] : [])].join(' '));
  }

  /** The `ip mptcp` changes run since the last call (listings left out). */
  changes(): string[] {
    const out = this.commands.filter((c) => c.includes(' mptcp ') && !c.endsWith(' show'));
    this.commands = [];
    return out;
  }
}

test('from nothing: limits raised, then one endpoint per up uplink; a second apply changes nothing', async () => {
  const kernel = new FakeMptcp();
  const state = planOf(hostMptcp);
  const changes = await applyMptcp(state.mptcp, kernel.runner);
  assert.deepEqual(kernel.changes(), [
    'ip mptcp limits set subflow 3 add_addr_accepted 3',
    'ip mptcp endpoint add 198.51.100.2 id 255 subflow dev wan1',
    'ip mptcp endpoint add 198.51.100.18 id 254 subflow dev wan2',
    'ip mptcp endpoint add 203.0.113.9 id 253 subflow backup dev ppp0',
  ]);
  assert.deepEqual(changes.map((c) => c.args.join(' ')), [
    'ip mptcp limits set subflow 3 add_addr_accepted 3',
    'ip mptcp endpoint add 198.51.100.2 id 255 subflow dev wan1',
    'ip mptcp endpoint add 198.51.100.18 id 254 subflow dev wan2',
    'ip mptcp endpoint add 203.0.113.9 id 253 subflow backup dev ppp0',
  ], 'each change is reported as the command it ran');
  assert.deepEqual(await applyMptcp(state.mptcp, kernel.runner), []);
  assert.deepEqual(kernel.changes(), []);
  assert.equal(await mptcpDrift(state.mptcp, kernel.runner), undefined);
});

test('a down uplink loses its endpoint, and only it; back up, it gets it again', async () => {
  const kernel = new FakeMptcp();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel.runner);
  kernel.changes();
  await applyMptcp(planOf(hostMptcp, ['isp1']).mptcp, kernel.runner);
  assert.deepEqual(kernel.changes(), ['ip mptcp endpoint delete id 255']);
  assert.deepEqual(kernel.show(), ['203.0.113.9 id 253 backup subflow dev ppp0', '198.51.100.18 id 254 subflow dev wan2']);
  await applyMptcp(planOf(hostMptcp).mptcp, kernel.runner);
  assert.deepEqual(kernel.changes(), ['ip mptcp endpoint add 198.51.100.2 id 255 subflow dev wan1']);
});

test('an unusable uplink (no interface, no address) has no endpoint', async () => {
  const kernel = new FakeMptcp();
  const yaml = 'uplinks:\n  isp1: { interface: wan1 }\n  gone: { interface: wan9 }\nmptcp: subflow\n';
  const state = planOf(yaml);
  assert.deepEqual(state.mptcp?.absent.map((a) => a.uplink), ['gone']);
  await applyMptcp(state.mptcp, kernel.runner);
  assert.deepEqual(kernel.show(), ['198.51.100.2 id 255 subflow dev wan1']);
});

test('renumbering: the old address\'s endpoint is deleted before the new one takes its id', async () => {
  const kernel = new FakeMptcp();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel.runner);
  kernel.changes();
  const moved: KernelFacts = {
    ...goldenFacts,
    interfaces: goldenFacts.interfaces.map((i) => (i.name === 'wan1' ? { ...i, addresses: [{ address: '198.51.100.130', prefixLen: 28 }] } : i)),
  };
  await applyMptcp(planOf(hostMptcp, [], moved).mptcp, kernel.runner);
  assert.deepEqual(kernel.changes(), ['ip mptcp endpoint delete id 255', 'ip mptcp endpoint add 198.51.100.130 id 255 subflow dev wan1']);
});

test('foreign endpoints stay exactly as they are, through apply, drift checks and flush', async () => {
  const kernel = new FakeMptcp();
  kernel.endpoints.push(
    { id: 1, address: '192.0.2.77', flags: ['signal'] },
    // Someone else's endpoint on an uplink's own address: the kernel takes an address once, so it stays theirs.
    { id: 7, address: '198.51.100.18', dev: 'wan2', flags: ['subflow'] },
  );
  const foreign = kernel.show();
  const state = planOf(hostMptcp);
  await applyMptcp(state.mptcp, kernel.runner);
  assert.deepEqual(kernel.show(), [
    '192.0.2.77 id 1 signal', '198.51.100.18 id 7 subflow dev wan2',
    '203.0.113.9 id 253 backup subflow dev ppp0', '198.51.100.2 id 255 subflow dev wan1',
  ]);
  assert.equal(await mptcpDrift(state.mptcp, kernel.runner), undefined, 'an address held by a foreign endpoint is no drift to fight');
  await flushMptcp(kernel.runner);
  assert.deepEqual(kernel.show(), foreign);
});

test('an endpoint someone changed in the owned ids is put back as planned', async () => {
  const kernel = new FakeMptcp();
  const state = planOf(hostMptcp);
  await applyMptcp(state.mptcp, kernel.runner);
  kernel.endpoints = kernel.endpoints.map((e) => (e.id === 253 ? { ...e, flags: ['subflow'] } : e));
  assert.equal(await mptcpDrift(state.mptcp, kernel.runner), '1 endpoint missing, 1 endpoint changed or foreign in the owned ids');
  kernel.changes();
  await applyMptcp(state.mptcp, kernel.runner);
  assert.deepEqual(kernel.changes(), ['ip mptcp endpoint delete id 253', 'ip mptcp endpoint add 203.0.113.9 id 253 subflow backup dev ppp0']);
});

test('limits are raised to what the uplinks need, never lowered', async () => {
  const cases: { present: [number, number]; set?: string }[] = [
    { present: [2, 0], set: 'ip mptcp limits set subflow 3 add_addr_accepted 3' },
    // Someone needs more subflows than uplinkd: theirs stays, only the low one is raised.
    { present: [8, 0], set: 'ip mptcp limits set subflow 8 add_addr_accepted 3' },
    { present: [3, 5] },
    { present: [8, 8] },
  ];
  for (const c of cases) {
    const kernel = new FakeMptcp();
    kernel.limits = { subflows: c.present[0], addAddrAccepted: c.present[1] };
    await applyMptcp(planOf(hostMptcp).mptcp, kernel.runner);
    assert.deepEqual(kernel.changes().filter((l) => l.includes('limits')), c.set ? [c.set] : [], `present ${c.present}`);
  }
  const nine = Array.from({ length: 9 }, (_, i) => `  u${i}: { interface: wan${i} }`).join('\n');
  const state = planOf(`uplinks:\n${nine}\nmptcp: subflow\n`);
  assert.deepEqual([state.mptcp?.limits?.subflows, state.mptcp?.limits?.addAddrAccepted], [8, 8], 'the kernel allows 8 at most');
  assert.equal(state.mptcp?.absent.find((a) => a.uplink === 'u8')?.why, 'the kernel holds at most 8 MPTCP endpoints; uplinks past the eighth get none');
});

test('mptcp: off removes endpoints left in the owned ids, and a kernel without MPTCP is no error then', async () => {
  const kernel = new FakeMptcp();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel.runner);
  kernel.endpoints.push({ id: 3, address: '192.0.2.77', flags: ['subflow'] });
  const off = planOf(hostMptcp.replace('mptcp: subflow', 'mptcp: off'));
  await applyMptcp(off.mptcp, kernel.runner);
  assert.deepEqual(kernel.show(), ['192.0.2.77 id 3 subflow']);
  assert.equal(await mptcpDrift(off.mptcp, kernel.runner), undefined);

  const old = new FakeMptcp();
  old.missing = true;
  assert.deepEqual(await applyMptcp(off.mptcp, old.runner), []);
  assert.deepEqual(await flushMptcp(old.runner), []);
  await assert.rejects(applyMptcp(planOf(hostMptcp).mptcp, old.runner), /mptcp_pm/, 'subflow asks for MPTCP: its absence is an error');
});

test('a verdict: one nft transaction, then the down uplink\'s endpoint deleted, then the read-back', async () => {
  const kernel = new FakeMptcp();
  const before = planOf(hostMptcp);
  await applyMptcp(before.mptcp, kernel.runner);
  kernel.commands = [];
  const order: string[] = [];
  await converge({ state: before, nft: {} }, planOf(hostMptcp, ['isp1']), kernel.runner, { then: async () => void order.push('then') });
  const lines = kernel.commands;
  assert.equal(lines[0], 'nft -f -', 'new connections leave isp1 first');
  assert.ok(lines.includes('ip mptcp endpoint delete id 255'));
  assert.equal(lines.at(-1), 'nft -j list table inet uplinkd');
  assert.ok(!lines.some((l) => l.includes('route') || l.includes('rule')), `the elements path, no full apply: ${lines.join('; ')}`);
  assert.deepEqual(kernel.show(), ['203.0.113.9 id 253 backup subflow dev ppp0', '198.51.100.18 id 254 subflow dev wan2']);
});

test('a verdict with mptcp off runs no MPTCP command', async () => {
  const kernel = new FakeMptcp();
  const yaml = hostMptcp.replace('mptcp: subflow', 'mptcp: off');
  await converge({ state: planOf(yaml), nft: {} }, planOf(yaml, ['isp1']), kernel.runner);
  assert.deepEqual(kernel.commands, ['nft -f -', 'nft -j list table inet uplinkd']);
});

test('a deleted endpoint is drift, and converging with that drift restores it', async () => {
  const kernel = new FakeMptcp();
  const state = planOf(hostMptcp);
  await applyMptcp(state.mptcp, kernel.runner);
  kernel.endpoints = kernel.endpoints.filter((e) => e.id !== 254);
  const drift = (await findDrift({ state, nft: {} }, kernel.runner)).filter((d) => d.kind === 'mptcp');
  assert.deepEqual(drift, [{ kind: 'mptcp', detail: 'MPTCP: 1 endpoint missing' }]);
  kernel.commands = [];
  await converge({ state, nft: {} }, state, kernel.runner, { drift });
  assert.ok(kernel.commands.includes('ip mptcp endpoint add 198.51.100.18 id 254 subflow dev wan2'), kernel.commands.join('; '));
  assert.equal(await mptcpDrift(state.mptcp, kernel.runner), undefined);
});

test('flush removes the owned endpoints with no config', async () => {
  const kernel = new FakeMptcp();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel.runner);
  kernel.endpoints.push({ id: 9, address: '192.0.2.77', flags: ['subflow'] });
  const changes = await flushOwned(DEFAULT_OWNERSHIP, kernel.runner);
  assert.deepEqual(kernel.show(), ['192.0.2.77 id 9 subflow']);
  assert.deepEqual(changes.filter((c) => c.what === 'mptcp endpoint').map((c) => c.args.join(' ')).sort(),
    ['ip mptcp endpoint delete id 253', 'ip mptcp endpoint delete id 254', 'ip mptcp endpoint delete id 255']);
  assert.deepEqual(kernel.limits, { subflows: 3, addAddrAccepted: 3 }, 'limits are left as they are');
});

test('what iproute2 prints is read whichever way it prints it', () => {
  assert.deepEqual(parseLimits('add_addr_accepted 0 subflows 2 \n'), { subflows: 2, addAddrAccepted: 0 });
  assert.deepEqual(parseLimits('{"add_addr_accepted":1,"subflows":3}'), { subflows: 3, addAddrAccepted: 1 });
  assert.throws(() => parseLimits('Error: something'), /cannot read/);
  assert.deepEqual(parseEndpoints('[{"address":"198.51.100.2","id":255,"subflow":true,"backup":true,"dev":"wan1"},{"address":"192.0.2.1","id":1,"flags":["signal"]}]'), [
    { id: 255, address: '198.51.100.2', dev: 'wan1', flags: ['backup', 'subflow'] },
    { id: 1, address: '192.0.2.1', flags: ['signal'] },
  ]);
});
