// The kernel edge (src/kernel/apply.ts, update.ts, converge.ts) against the
// pretend kernel in fake-kernel.ts, without root. Each plan is installed, in
// order and in random orders, over a kernel that also holds another program's
// state; after every step the kernel must hold exactly what `uplinkd plan`
// prints for that plan (pasted into a fresh pretend kernel), a second
// converge must change nothing, and flush must leave only the other
// program's state. The other program has IPv6 rules and tables too; the
// dual-stack plans (facts-dual-stack.json) go through the same walks.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { applyState, flushOwned } from '../../src/kernel/apply.js';
import { converge, findDrift, type Installed } from '../../src/kernel/converge.js';
import { readFacts } from '../../src/kernel/facts.js';
import { DEFAULT_OWNERSHIP } from '../../src/ownership.js';
import { plan } from '../../src/plan/plan.js';
import { renderPlan } from '../../src/plan/render.js';
import type { DesiredState, Health, KernelFacts } from '../../src/plan/state.js';
import { FakeKernel } from './fake-kernel.js';

const dir = new URL('../golden/', import.meta.url);
const facts = JSON.parse(readFileSync(new URL('facts.json', dir), 'utf8')) as KernelFacts;
const dualFacts = JSON.parse(readFileSync(new URL('facts-dual-stack.json', dir), 'utf8')) as KernelFacts;

/** wan1 renumbered by its DHCP server: a new address and gateway. */
const renumbered: KernelFacts = {
  interfaces: facts.interfaces.map((i) => (i.name === 'wan1' ? { ...i, addresses: [{ address: '198.51.100.130', prefixLen: 28 }] } : i)),
  mainDefaultRoutes: facts.mainDefaultRoutes.map((r) => (r.dev === 'wan1' ? { ...r, gateway: '198.51.100.129' } : r)),
};

/** wan2's router advertised a new prefix and came back from another link-local address. */
const renumbered6: KernelFacts = {
  ...dualFacts,
  interfaces: dualFacts.interfaces.map((i) => (i.name === 'wan2' ? { ...i, addresses6: [{ address: '2001:db8:202::2', prefixLen: 64 }] } : i)),
  mainDefaultRoutes6: dualFacts.mainDefaultRoutes6!.map((r) => (r.dev === 'wan2' ? { ...r, gateway: 'fe80::2:2' } : r)),
};

/** Every uplink's IPv6 address gone (say, the ISPs withdrew their prefixes): the plan is the IPv4-only one again. */
const ipv6Gone: KernelFacts = { ...dualFacts, interfaces: dualFacts.interfaces.map(({ addresses6: _, ...i }) => i) };

function planOf(configName: string, opts: { down?: string[]; down6?: string[]; facts?: KernelFacts; weights?: Record<string, number> } = {}): DesiredState {
  const result = parseConfig(readFileSync(new URL(`${configName}.yaml`, dir), 'utf8'), configName);
  assert.ok(result.ok, configName);
  const down = (names: string[] = []) => Object.fromEntries(names.map((n) => [n, 'down' as Health]));
  return plan({ config: result.config, facts: opts.facts ?? facts, health: down(opts.down), health6: down(opts.down6), weights: opts.weights });
}

/** The named plans a router goes through, all of one config so any order is a real sequence of events. */
const steps: Record<string, () => DesiredState> = {
  'two uplinks': () => planOf('two-uplinks'),
  'isp1 down': () => planOf('two-uplinks', { down: ['isp1'] }),
  'both down': () => planOf('two-uplinks', { down: ['isp1', 'isp2'] }),
  'isp1 renumbered': () => planOf('two-uplinks', { facts: renumbered }),
};
/** Plans of other configs: a reload from one to another. */
const reloads: Record<string, () => DesiredState> = {
  pins: () => planOf('pins'),
  'pins, isp1 and isp3 down': () => planOf('pins', { down: ['isp1', 'isp3'] }),
  'least-loaded': () => planOf('least-loaded'),
  'least-loaded reweighted': () => planOf('least-loaded', { weights: { isp1: 5, isp2: 1 } }),
  'host mode': () => planOf('host-mode'),
  'host mode with pins and tiers': () => planOf('host-pins', { down: ['fibre-a'] }),
};

/** A dual-stack router's events: per-family verdicts, an IPv6 renumbering, and its IPv6 coming and going. */
const dualSteps: Record<string, () => DesiredState> = {
  'dual stack': () => planOf('dual-stack', { facts: dualFacts }),
  'IPv6 of isp1 and isp4 down': () => planOf('dual-stack', { facts: dualFacts, down6: ['isp1', 'isp4'] }),
  'isp2 down (IPv4)': () => planOf('dual-stack', { facts: dualFacts, down: ['isp2'] }),
  'wan2 IPv6 renumbered': () => planOf('dual-stack', { facts: renumbered6 }),
  'IPv6 gone': () => planOf('dual-stack', { facts: ipv6Gone }),
};
/** Reloads between dual-stack configs, and to and from IPv4-only ones, on the same machine. */
const dualReloads: Record<string, () => DesiredState> = {
  'dual stack': () => planOf('dual-stack', { facts: dualFacts }),
  'dual-stack pins': () => planOf('dual-stack-pins', { facts: dualFacts }),
  'dual-stack pins, IPv6 of isp1 down': () => planOf('dual-stack-pins', { facts: dualFacts, down6: ['isp1'] }),
  'dual-stack host': () => planOf('dual-stack-host', { facts: dualFacts }),
  'two uplinks (IPv4 only)': () => planOf('two-uplinks'),
  'host mode (IPv4 only)': () => planOf('host-mode'),
};

/**
 * Another program's state: a firewall table, a rule and a table of a VPN, in
 * the ranges uplinkd does not own, for IPv4 and for IPv6; an IPv6 table whose
 * number lies in uplinkd's range but carries no signature; the main table's
 * default routes, an RA's among them.
 */
function kernelWithNeighbours(): FakeKernel {
  const kernel = new FakeKernel().foreignTable('inet filter', 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n');
  kernel.rules.push({ priority: 100, from: '10.8.0.0/24', table: '100' });
  kernel.routes.push({ table: '100', type: 'unicast', dst: 'default', dev: 'tun0' });
  kernel.routes.push({ table: '254', type: 'unicast', dst: 'default', via: '198.51.100.1', dev: 'wan1', metric: 101 });
  kernel.rules6.push({ priority: 20000, from: '2001:db8:ee::/48', table: '77' });
  kernel.routes6.push({ table: '77', type: 'unicast', dst: 'default', via: 'fe80::77', dev: 'tun0', metric: 1024 });
  kernel.routes6.push({ table: '250', type: 'unicast', dst: '2001:db8:ee::/48', dev: 'tun0', metric: 1024 });
  kernel.routes6.push({ table: '254', type: 'unicast', dst: 'default', via: 'fe80::2:1', dev: 'wan2', metric: 1024 });
  // The interfaces' addresses (a route's `src` must be one); the renumbered ones too, so every step finds its own.
  const interfaces = [...facts.interfaces, ...dualFacts.interfaces, ...renumbered.interfaces, ...renumbered6.interfaces];
  const seen = new Set<string>();
  for (const i of interfaces.filter((x) => x.name !== 'lo')) {
    for (const a of [...i.addresses, ...(i.addresses6 ?? [])]) {
      const cidr = `${a.address}/${a.prefixLen}`;
      if (seen.has(`${i.name} ${cidr}`)) continue;
      seen.add(`${i.name} ${cidr}`);
      kernel.addresses.push({ dev: i.name, cidr, label: i.name, scope: 'global' });
    }
  }
  return kernel;
}

/** Every `ip`, `sysctl` and `nft -f` line of `uplinkd plan`, run as a root shell would run them. */
async function paste(kernel: FakeKernel, text: string): Promise<void> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === "nft -f - <<'EOF'") {
      const end = lines.indexOf('EOF', i);
      const r = await kernel.run('nft', ['-f', '-'], lines.slice(i + 1, end).join('\n') + '\n');
      assert.equal(r.code, 0, r.stderr);
      i = end;
    } else if (/^(ip|sysctl) /.test(line)) {
      const [command, ...args] = line.split(' ');
      const r = await kernel.run(command, args.map((a) => a.replace(/^'(.*)'$/, '$1')));
      assert.equal(r.code, 0, `${line}: ${r.stderr}`);
    }
  }
}

/**
 * The state printed, but for the table's comment (element updates keep the
 * digest of the plan that built the chains) and the sysctls: settings, not
 * owned objects, so a reload leaves the earlier config's in place (checked
 * apart, by sysctlsHold).
 */
const withoutComment = (print: string) => print.split('\n').filter((l) => !/^nft inet uplinkd comment /.test(l) && !l.startsWith('sysctl ')).join('\n');

function sysctlsHold(kernel: FakeKernel, state: DesiredState, step: string): void {
  for (const s of state.sysctls) assert.equal(kernel.sysctl.read(s.path), s.value, `${s.key} after "${step}"`);
}

async function expectedAfter(state: DesiredState): Promise<string> {
  const kernel = kernelWithNeighbours();
  await paste(kernel, renderPlan(state, 'expected'));
  return withoutComment(kernel.print());
}

/** A small seeded generator, so a failing order can be replayed. */
function shuffled<T>(items: T[], seed: number): T[] {
  let s = seed >>> 0;
  const next = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

async function walk(names: string[], plans: Record<string, () => DesiredState>): Promise<void> {
  const kernel = kernelWithNeighbours();
  const untouched = kernel.print();
  let installed: Installed | undefined;
  for (const name of names) {
    const desired = plans[name]();
    const result = await converge(installed, desired, kernel);
    assert.equal(withoutComment(kernel.print()), await expectedAfter(desired), `after "${name}" (steps ${names.join(' → ')})`);
    sysctlsHold(kernel, desired, name);
    installed = result.installed;
    assert.deepEqual(await findDrift(installed, kernel), [], `no drift right after "${name}"`);
    const before = kernel.changes.length;
    await converge(installed, desired, kernel);
    assert.deepEqual(kernel.changes.slice(before), [], `a second converge of "${name}" changes nothing`);
  }
  await flushOwned(DEFAULT_OWNERSHIP, kernel);
  // Sysctls are settings, not owned objects: flush leaves them as they are.
  assert.equal(withoutComment(kernel.print()), withoutComment(untouched), 'flush leaves only the neighbours');
}

describe('the kernel edge on a pretend kernel', () => {
  test('each plan installed on its own holds exactly what `plan` prints', async () => {
    for (const name of Object.keys(steps)) await walk([name], steps);
    for (const name of Object.keys(reloads)) await walk([name], reloads);
  });

  test('health and address changes in order, then in 20 random orders', async () => {
    const names = Object.keys(steps);
    await walk([...names, ...names.reverse()], steps);
    for (let seed = 1; seed <= 20; seed++) await walk(shuffled([...names, ...names], seed), steps);
  });

  test('reloads between configs (router, pins, least-loaded, host mode), in order and in 10 random orders', async () => {
    const names = Object.keys(reloads);
    await walk(names, reloads);
    for (let seed = 1; seed <= 10; seed++) await walk(shuffled(names, seed), reloads);
  });

  test('a health verdict is one element transaction; a renumber converges routes and rules', async () => {
    const kernel = kernelWithNeighbours();
    const first = await converge(undefined, steps['two uplinks'](), kernel);
    const before = kernel.changes.length;
    await converge(first.installed, steps['isp1 down'](), kernel);
    const verdict = kernel.changes.slice(before);
    assert.equal(verdict.length, 1, verdict.join('\n'));
    assert.match(verdict[0], /^nft -f - <<flush (map|set) inet uplinkd /);
    const again = kernel.changes.length;
    await converge(first.installed, steps['isp1 renumbered'](), kernel);
    const renumber = kernel.changes.slice(again);
    assert.ok(renumber.some((c) => c.startsWith('ip -4 rule add priority 10101 from 198.51.100.130')), renumber.join('\n'));
    assert.ok(renumber.some((c) => c.startsWith('ip -4 rule del priority 10101 from 198.51.100.2')), renumber.join('\n'));
  });

  test("a restarted daemon adopts the previous instance's table: no table reload, its elements rewritten to the plan", async () => {
    const kernel = kernelWithNeighbours();
    // The previous instance installed the plan, then followed a verdict element by element.
    const first = await converge(undefined, steps['two uplinks'](), kernel);
    await converge(first.installed, steps['isp1 down'](), kernel);
    const before = kernel.changes.length;
    await converge(undefined, steps['two uplinks'](), kernel);
    const adoption = kernel.changes.slice(before);
    assert.ok(!adoption.some((c) => c.includes('delete table')), `the table was not replaced: ${adoption.join('\n')}`);
    assert.equal(withoutComment(kernel.print()), await expectedAfter(steps['two uplinks']()));
  });

  test('the drift check reads rules, routes and addresses with one `ip -batch`, the table with one `nft -j list`', async () => {
    const kernel = kernelWithNeighbours();
    const { installed } = await converge(undefined, reloads['host mode'](), kernel);
    const commands: string[] = [];
    const counting = { run: (c: string, a: string[], i?: string) => (commands.push([c, ...a].join(' ')), kernel.run(c, a, i)), sysctl: kernel.sysctl };
    assert.deepEqual(await findDrift(installed, counting), []);
    assert.deepEqual(commands.sort(), ['ip -j -N -4 -batch -', 'nft -j list table inet uplinkd']);
    // The host source address (scope host, printed as 254 under -N) is found, and found missing once deleted.
    const source = installed.state.addresses[0];
    assert.ok(source, 'host mode plans a source address');
    await kernel.run('ip', ['address', 'del', source.cidr, 'dev', source.dev]);
    assert.deepEqual((await findDrift(installed, kernel)).map((d) => d.kind).filter((k) => k === 'addresses'), ['addresses']);
  });

  test('an `unwatched` drift check runs no command without MPTCP, and sees only what no monitor reports', async () => {
    const kernel = kernelWithNeighbours();
    const { installed } = await converge(undefined, steps['two uplinks'](), kernel);
    const commands: string[] = [];
    const counting = { run: (c: string, a: string[], i?: string) => (commands.push([c, ...a].join(' ')), kernel.run(c, a, i)), sysctl: kernel.sysctl };
    await kernel.run('nft', ['delete', 'table', 'inet', 'uplinkd']);
    const rule = installed.state.rules[0];
    await kernel.run('ip', ['-4', 'rule', 'del', 'priority', String(rule.priority)]);
    const sysctl = installed.state.sysctls[0];
    kernel.sysctl.write(sysctl.path, sysctl.value === '1' ? '0' : '1');
    assert.deepEqual((await findDrift(installed, counting, 'unwatched')).map((d) => d.kind), ['sysctls']);
    assert.deepEqual(commands, [], 'sysctls are read from /proc/sys, not through commands');
    assert.deepEqual((await findDrift(installed, counting)).map((d) => d.kind), ['nft-table', 'rules', 'sysctls']);
  });

  test('a table someone deleted is found as drift and replaced whole', async () => {
    const kernel = kernelWithNeighbours();
    const { installed } = await converge(undefined, steps['two uplinks'](), kernel);
    await kernel.run('nft', ['delete', 'table', 'inet', 'uplinkd']);
    const drift = await findDrift(installed, kernel);
    assert.deepEqual(drift.map((d) => d.kind), ['nft-table']);
    await converge(installed, steps['two uplinks'](), kernel, { drift });
    assert.equal(withoutComment(kernel.print()), await expectedAfter(steps['two uplinks']()));
  });
});

describe('the kernel edge on a pretend kernel, dual stack', () => {
  test('each dual-stack plan installed on its own holds exactly what `plan` prints, IPv6 routes and rules included', async () => {
    for (const name of Object.keys(dualSteps)) await walk([name], dualSteps);
    for (const name of Object.keys(dualReloads)) await walk([name], dualReloads);
    const kernel = kernelWithNeighbours();
    await converge(undefined, dualSteps['dual stack'](), kernel);
    const print = kernel.print();
    assert.match(print, /^ip -6 route default via fe80::2:1 dev wan2 src fd00:0:0:1::1 metric 1024 table 202$/m);
    assert.match(print, /^ip -6 route unreachable default metric 4278198272 table 201$/m);
    assert.match(print, /^ip -6 rule priority 10104 from 2001:db8:400:1::\/64 lookup 204$/m);
    assert.match(print, /^ip -6 rule priority 10590 iif lo ipproto 58 lookup 254$/m);
    assert.match(print, /^ip -6 rule priority 10600 iif lo lookup 201$/m);
  });

  test('per-family verdicts, an IPv6 renumbering and IPv6 coming and going, in order and in 20 random orders', async () => {
    const names = Object.keys(dualSteps);
    await walk([...names, ...names.reverse()], dualSteps);
    for (let seed = 1; seed <= 20; seed++) await walk(shuffled([...names, ...names], seed), dualSteps);
  });

  test('reloads between dual-stack and IPv4-only configs, in order and in 10 random orders', async () => {
    const names = Object.keys(dualReloads);
    await walk(names, dualReloads);
    for (let seed = 1; seed <= 10; seed++) await walk(shuffled(names, seed), dualReloads);
  });

  test("a restarted daemon with an IPv4-only plan removes the previous instance's IPv6 routes and rules, and nothing foreign", async () => {
    const kernel = kernelWithNeighbours();
    await converge(undefined, dualSteps['dual stack'](), kernel);
    await converge(undefined, dualSteps['IPv6 gone'](), kernel);
    assert.equal(withoutComment(kernel.print()), await expectedAfter(dualSteps['IPv6 gone']()));
    assert.ok(!/^ip -6 (route|rule) .*(table 20[1-4]|lookup 20[1-4])/m.test(kernel.print()), kernel.print());
  });

  test('flush removes the IPv6 side with no config, and leaves the foreign IPv6 rule and tables byte for byte', async () => {
    const kernel = kernelWithNeighbours();
    const untouched = kernel.print();
    // As `uplinkd apply` installs it: no daemon state.
    await applyState(dualReloads['dual-stack pins'](), kernel);
    assert.match(kernel.print(), /^ip -6 rule priority 10302 /m);
    const changes = await flushOwned(DEFAULT_OWNERSHIP, kernel);
    assert.ok(changes.some((c) => c.args.join(' ') === 'ip -6 route flush table 201'), changes.map((c) => c.args.join(' ')).join('\n'));
    assert.ok(changes.some((c) => c.args.join(' ').startsWith('ip -6 rule del priority 10000')));
    assert.equal(withoutComment(kernel.print()), withoutComment(untouched));
  });

  test('the drift check of a dual-stack plan reads each family with one `ip -batch`; an IPv4-only update runs no `ip -6`', async () => {
    const kernel = kernelWithNeighbours();
    const { installed } = await converge(undefined, dualSteps['dual stack'](), kernel);
    const commands: string[] = [];
    const counting = { run: (c: string, a: string[], i?: string) => (commands.push([c, ...a].join(' ')), kernel.run(c, a, i)), sysctl: kernel.sysctl };
    assert.deepEqual(await findDrift(installed, counting), []);
    assert.deepEqual(commands.sort(), ['ip -j -N -4 -batch -', 'ip -j -N -6 -batch -', 'nft -j list table inet uplinkd']);
    // An IPv6 rule deleted, a foreign one in the owned range, an IPv6 route deleted: each is drift.
    await kernel.run('ip', ['-6', 'rule', 'del', 'priority', '10302']);
    await kernel.run('ip', ['-6', 'rule', 'add', 'priority', '10500', 'from', '2001:db8:ee::/48', 'lookup', '77']);
    await kernel.run('ip', ['-6', 'route', 'del', 'default', 'via', 'fe80::3:1', 'dev', 'wan3', 'metric', '1024', 'table', '203']);
    const drift = await findDrift(installed, kernel);
    assert.deepEqual(drift.map((d) => d.detail), ['1 rule missing, 1 foreign rule in the owned range', '1 route missing']);
    await converge(installed, dualSteps['dual stack'](), kernel, { drift });
    assert.equal(withoutComment(kernel.print()), await expectedAfter(dualSteps['dual stack']()));

    const v4 = kernelWithNeighbours();
    const first = await converge(undefined, steps['two uplinks'](), v4);
    const seen: string[] = [];
    const watching = { run: (c: string, a: string[], i?: string) => (seen.push([c, ...a].join(' ')), v4.run(c, a, i)), sysctl: v4.sysctl };
    await converge(first.installed, steps['isp1 renumbered'](), watching);
    await findDrift(first.installed, watching);
    assert.deepEqual(seen.filter((c) => c.includes('-6')), [], seen.join('\n'));
  });

  test('a kernel without IPv6 (no /proc/sys/net/ipv6, `ip -6` fails): IPv4-only facts, apply, adoption and flush work', async () => {
    const kernel = kernelWithNeighbours();
    kernel.routes6 = [];
    kernel.rules6 = [];
    kernel.ipv6Missing = true;
    const untouched = kernel.print();
    const read = await readFacts(kernel);
    assert.deepEqual(read.mainDefaultRoutes6, []);
    await converge(undefined, steps['two uplinks'](), kernel);
    await converge(undefined, steps['isp1 down'](), kernel);
    assert.equal(withoutComment(kernel.print()), withoutComment(await expectedAfter(steps['isp1 down']())).split('\n').filter((l) => !l.startsWith('ip -6 ')).join('\n'));
    await flushOwned(DEFAULT_OWNERSHIP, kernel);
    assert.equal(withoutComment(kernel.print()), withoutComment(untouched));
    assert.ok(!kernel.commands.some((c) => c.includes(' -6 ')), kernel.commands.filter((c) => c.includes(' -6 ')).join('\n'));
  });
});
