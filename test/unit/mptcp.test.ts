// kernel/mptcp.ts without root, on the pretend kernel of fake-kernel.ts: it
// holds MPTCP endpoints and limits the way the real one does (ids and
// addresses unique, at most 8 endpoints, limits at most 8), answers
// `ip mptcp … show` as iproute2 6.1 prints it, and applies `ip mptcp …`
// changes. Apply, verdicts, renumbering, foreign endpoints, limits, drift and
// flush are table-tested against it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { flushOwned } from '../../src/kernel/apply.js';
import { converge, findDrift } from '../../src/kernel/converge.js';
import { applyMptcp, flushMptcp, mptcpDrift, parseEndpoints, parseLimits } from '../../src/kernel/mptcp.js';
import { FakeKernel } from './fake-kernel.js';
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

/** A pretend kernel with the interfaces' addresses, so a whole plan can be installed on it (a route's `src` must be one). */
function kernelWithAddresses(): FakeKernel {
  const kernel = new FakeKernel();
  for (const i of goldenFacts.interfaces.filter((x) => x.name !== 'lo')) {
    kernel.addresses.push(...i.addresses.map((a) => ({ dev: i.name, cidr: `${a.address}/${a.prefixLen}`, label: i.name, scope: 'global' })));
  }
  return kernel;
}

test('from nothing: limits raised, then one endpoint per up uplink; a second apply changes nothing', async () => {
  const kernel = new FakeKernel();
  const state = planOf(hostMptcp);
  const changes = await applyMptcp(state.mptcp, kernel);
  assert.deepEqual(kernel.mptcpChanges(), [
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
  assert.deepEqual(await applyMptcp(state.mptcp, kernel), []);
  assert.deepEqual(kernel.mptcpChanges(), []);
  assert.equal(await mptcpDrift(state.mptcp, kernel), undefined);
});

test('a down uplink loses its endpoint, and only it; back up, it gets it again', async () => {
  const kernel = new FakeKernel();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel);
  kernel.mptcpChanges();
  await applyMptcp(planOf(hostMptcp, ['isp1']).mptcp, kernel);
  assert.deepEqual(kernel.mptcpChanges(), ['ip mptcp endpoint delete id 255']);
  assert.deepEqual(kernel.mptcpShow(), ['203.0.113.9 id 253 backup subflow dev ppp0', '198.51.100.18 id 254 subflow dev wan2']);
  await applyMptcp(planOf(hostMptcp).mptcp, kernel);
  assert.deepEqual(kernel.mptcpChanges(), ['ip mptcp endpoint add 198.51.100.2 id 255 subflow dev wan1']);
});

test('an unusable uplink (no interface, no address) has no endpoint', async () => {
  const kernel = new FakeKernel();
  const yaml = 'uplinks:\n  isp1: { interface: wan1 }\n  gone: { interface: wan9 }\nmptcp: subflow\n';
  const state = planOf(yaml);
  assert.deepEqual(state.mptcp?.absent.map((a) => a.uplink), ['gone']);
  await applyMptcp(state.mptcp, kernel);
  assert.deepEqual(kernel.mptcpShow(), ['198.51.100.2 id 255 subflow dev wan1']);
});

test('renumbering: the old address\'s endpoint is deleted before the new one takes its id', async () => {
  const kernel = new FakeKernel();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel);
  kernel.mptcpChanges();
  const moved: KernelFacts = {
    ...goldenFacts,
    interfaces: goldenFacts.interfaces.map((i) => (i.name === 'wan1' ? { ...i, addresses: [{ address: '198.51.100.130', prefixLen: 28 }] } : i)),
  };
  await applyMptcp(planOf(hostMptcp, [], moved).mptcp, kernel);
  assert.deepEqual(kernel.mptcpChanges(), ['ip mptcp endpoint delete id 255', 'ip mptcp endpoint add 198.51.100.130 id 255 subflow dev wan1']);
});

test('foreign endpoints stay exactly as they are, through apply, drift checks and flush', async () => {
  const kernel = new FakeKernel();
  kernel.endpoints.push(
    { id: 1, address: '192.0.2.77', flags: ['signal'] },
    // Someone else's endpoint on an uplink's own address: the kernel takes an address once, so it stays theirs.
    { id: 7, address: '198.51.100.18', dev: 'wan2', flags: ['subflow'] },
  );
  const foreign = kernel.mptcpShow();
  const state = planOf(hostMptcp);
  await applyMptcp(state.mptcp, kernel);
  assert.deepEqual(kernel.mptcpShow(), [
    '192.0.2.77 id 1 signal', '198.51.100.18 id 7 subflow dev wan2',
    '203.0.113.9 id 253 backup subflow dev ppp0', '198.51.100.2 id 255 subflow dev wan1',
  ]);
  assert.equal(await mptcpDrift(state.mptcp, kernel), undefined, 'an address held by a foreign endpoint is no drift to fight');
  await flushMptcp(kernel);
  assert.deepEqual(kernel.mptcpShow(), foreign);
});

test('an endpoint someone changed in the owned ids is put back as planned', async () => {
  const kernel = new FakeKernel();
  const state = planOf(hostMptcp);
  await applyMptcp(state.mptcp, kernel);
  kernel.endpoints = kernel.endpoints.map((e) => (e.id === 253 ? { ...e, flags: ['subflow'] } : e));
  assert.equal(await mptcpDrift(state.mptcp, kernel), '1 endpoint missing, 1 endpoint changed or foreign in the owned ids');
  kernel.mptcpChanges();
  await applyMptcp(state.mptcp, kernel);
  assert.deepEqual(kernel.mptcpChanges(), ['ip mptcp endpoint delete id 253', 'ip mptcp endpoint add 203.0.113.9 id 253 subflow backup dev ppp0']);
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
    const kernel = new FakeKernel();
    kernel.limits = { subflows: c.present[0], addAddrAccepted: c.present[1] };
    await applyMptcp(planOf(hostMptcp).mptcp, kernel);
    assert.deepEqual(kernel.mptcpChanges().filter((l) => l.includes('limits')), c.set ? [c.set] : [], `present ${c.present}`);
  }
  const nine = Array.from({ length: 9 }, (_, i) => `  u${i}: { interface: wan${i} }`).join('\n');
  const state = planOf(`uplinks:\n${nine}\nmptcp: subflow\n`);
  assert.deepEqual([state.mptcp?.limits?.subflows, state.mptcp?.limits?.addAddrAccepted], [8, 8], 'the kernel allows 8 at most');
  assert.equal(state.mptcp?.absent.find((a) => a.uplink === 'u8')?.why, 'the kernel holds at most 8 MPTCP endpoints; uplinks past the eighth get none');
});

test('mptcp: off removes endpoints left in the owned ids, and a kernel without MPTCP is no error then', async () => {
  const kernel = new FakeKernel();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel);
  kernel.endpoints.push({ id: 3, address: '192.0.2.77', flags: ['subflow'] });
  const off = planOf(hostMptcp.replace('mptcp: subflow', 'mptcp: off'));
  await applyMptcp(off.mptcp, kernel);
  assert.deepEqual(kernel.mptcpShow(), ['192.0.2.77 id 3 subflow']);
  assert.equal(await mptcpDrift(off.mptcp, kernel), undefined);

  const old = new FakeKernel();
  old.mptcpMissing = true;
  assert.deepEqual(await applyMptcp(off.mptcp, old), []);
  assert.deepEqual(await flushMptcp(old), []);
  await assert.rejects(applyMptcp(planOf(hostMptcp).mptcp, old), /mptcp_pm/, 'subflow asks for MPTCP: its absence is an error');
});

test('a verdict: one nft transaction, then the down uplink\'s endpoint deleted, then the read-back', async () => {
  const kernel = kernelWithAddresses();
  const { installed } = await converge(undefined, planOf(hostMptcp), kernel);
  kernel.commands = [];
  const order: string[] = [];
  await converge(installed, planOf(hostMptcp, ['isp1']), kernel, { then: async () => void order.push('then') });
  const lines = kernel.commands;
  assert.equal(lines[0], 'nft -f -', 'new connections leave isp1 first');
  assert.ok(lines.includes('ip mptcp endpoint delete id 255'));
  assert.equal(lines.at(-1), 'nft -j list table inet uplinkd');
  assert.ok(!lines.some((l) => l.includes('route') || l.includes('rule')), `the elements path, no full apply: ${lines.join('; ')}`);
  assert.deepEqual(kernel.mptcpShow(), ['203.0.113.9 id 253 backup subflow dev ppp0', '198.51.100.18 id 254 subflow dev wan2']);
});

test('a verdict with mptcp off runs no MPTCP command', async () => {
  const kernel = kernelWithAddresses();
  const yaml = hostMptcp.replace('mptcp: subflow', 'mptcp: off');
  const { installed } = await converge(undefined, planOf(yaml), kernel);
  kernel.commands = [];
  await converge(installed, planOf(yaml, ['isp1']), kernel);
  assert.deepEqual(kernel.commands, ['nft -f -', 'nft -j list table inet uplinkd']);
});

test('a deleted endpoint is drift, and converging with that drift restores it', async () => {
  const kernel = kernelWithAddresses();
  const state = planOf(hostMptcp);
  const { installed } = await converge(undefined, state, kernel);
  kernel.endpoints = kernel.endpoints.filter((e) => e.id !== 254);
  const drift = (await findDrift(installed, kernel)).filter((d) => d.kind === 'mptcp');
  assert.deepEqual(drift, [{ kind: 'mptcp', detail: 'MPTCP: 1 endpoint missing' }]);
  kernel.commands = [];
  await converge(installed, state, kernel, { drift });
  assert.ok(kernel.commands.includes('ip mptcp endpoint add 198.51.100.18 id 254 subflow dev wan2'), kernel.commands.join('; '));
  assert.equal(await mptcpDrift(state.mptcp, kernel), undefined);
});

test('flush removes the owned endpoints with no config', async () => {
  const kernel = new FakeKernel();
  await applyMptcp(planOf(hostMptcp).mptcp, kernel);
  kernel.endpoints.push({ id: 9, address: '192.0.2.77', flags: ['subflow'] });
  const changes = await flushOwned(DEFAULT_OWNERSHIP, kernel);
  assert.deepEqual(kernel.mptcpShow(), ['192.0.2.77 id 9 subflow']);
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

test('the pretend kernel refuses what the real one does: a limit above 8, a ninth endpoint, a taken id or address', async () => {
  const kernel = new FakeKernel();
  const ip = async (...args: string[]) => {
    const r = await kernel.run('ip', args);
    return r.code === 0 ? 'ok' : r.stderr;
  };
  assert.equal(await ip('mptcp', 'limits', 'set', 'subflow', '9', 'add_addr_accepted', '1'), 'Error: limit greater than maximum (8).');
  assert.equal(await ip('mptcp', 'limits', 'set', 'add_addr_accepted', '4'), 'ok');
  assert.equal((await kernel.run('ip', ['-j', 'mptcp', 'limits', 'show'])).stdout, 'add_addr_accepted 4 subflows 2 \n', 'as iproute2 6.1 prints it, -j or not');
  assert.equal(await ip('mptcp', 'endpoint', 'add', '192.0.2.1', 'id', '5', 'subflow'), 'ok');
  assert.equal(await ip('mptcp', 'endpoint', 'add', '192.0.2.2', 'id', '5', 'subflow'), 'Error: too many addresses or duplicate one: -17.');
  assert.equal(await ip('mptcp', 'endpoint', 'add', '192.0.2.1', 'id', '6', 'subflow'), 'Error: too many addresses or duplicate one: -17.');
  for (let n = 2; n <= 8; n++) assert.equal(await ip('mptcp', 'endpoint', 'add', `192.0.2.${10 + n}`, 'signal'), 'ok');
  assert.deepEqual(kernel.mptcpShow().map((l) => l.split(' ')[2]), ['1', '2', '3', '4', '5', '6', '7', '8'], 'no id given: the lowest free');
  assert.equal(await ip('mptcp', 'endpoint', 'add', '192.0.2.99', 'id', '99', 'subflow'), 'Error: too many addresses or duplicate one: -17.');
  assert.equal(await ip('mptcp', 'endpoint', 'delete', 'id', '42'), 'Error: address not found.');
  kernel.mptcpMissing = true;
  assert.equal(await ip('-j', 'mptcp', 'endpoint', 'show'), 'Error: genl: can\'t resolve family "mptcp_pm"');
});
