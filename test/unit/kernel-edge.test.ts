// The kernel edge (src/kernel/apply.ts, update.ts, converge.ts) against the
// pretend kernel in fake-kernel.ts, without root. Each plan is installed, in
// order and in random orders, over a kernel that also holds another program's
// state; after every step the kernel must hold exactly what `uplinkd plan`
// prints for that plan (pasted into a fresh pretend kernel), a second
// converge must change nothing, and flush must leave only the other
// program's state.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { flushOwned } from '../../src/kernel/apply.js';
import { converge, findDrift, type Installed } from '../../src/kernel/converge.js';
import { DEFAULT_OWNERSHIP } from '../../src/ownership.js';
import { plan } from '../../src/plan/plan.js';
import { renderPlan } from '../../src/plan/render.js';
import type { DesiredState, Health, KernelFacts } from '../../src/plan/state.js';
import { FakeKernel } from './fake-kernel.js';

const dir = new URL('../golden/', import.meta.url);
const facts = JSON.parse(readFileSync(new URL('facts.json', dir), 'utf8')) as KernelFacts;

/** wan1 renumbered by its DHCP server: a new address and gateway. */
const renumbered: KernelFacts = {
  interfaces: facts.interfaces.map((i) => (i.name === 'wan1' ? { ...i, addresses: [{ address: '198.51.100.130', prefixLen: 28 }] } : i)),
  mainDefaultRoutes: facts.mainDefaultRoutes.map((r) => (r.dev === 'wan1' ? { ...r, gateway: '198.51.100.129' } : r)),
};

function planOf(configName: string, opts: { down?: string[]; facts?: KernelFacts; weights?: Record<string, number> } = {}): DesiredState {
  const result = parseConfig(readFileSync(new URL(`${configName}.yaml`, dir), 'utf8'), configName);
  assert.ok(result.ok, configName);
  const health = Object.fromEntries((opts.down ?? []).map((n) => [n, 'down' as Health]));
  return plan({ config: result.config, facts: opts.facts ?? facts, health, weights: opts.weights });
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

/** Another program's state: a firewall table, a rule and a table of a VPN, in the ranges uplinkd does not own. */
function kernelWithNeighbours(): FakeKernel {
  const kernel = new FakeKernel().foreignTable('inet filter', 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n');
  kernel.rules.push({ priority: 100, from: '10.8.0.0/24', table: '100' });
  kernel.routes.push({ table: '100', type: 'unicast', dst: 'default', dev: 'tun0' });
  kernel.routes.push({ table: '254', type: 'unicast', dst: 'default', via: '198.51.100.1', dev: 'wan1', metric: 101 });
  // The interfaces' addresses (a route's `src` must be one); wan1's renumbered one too, so every step finds its own.
  for (const i of [...facts.interfaces, ...renumbered.interfaces.filter((x) => x.name === 'wan1')]) {
    for (const a of i.addresses) {
      if (i.name !== 'lo') kernel.addresses.push({ dev: i.name, cidr: `${a.address}/${a.prefixLen}`, label: i.name, scope: 'global' });
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
