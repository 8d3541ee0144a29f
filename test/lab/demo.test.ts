// `uplinkd lab demo` end to end, as a user runs it (root; builds first):
//   node --import tsx --test test/lab/demo.test.ts

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { runCommand } from '../../src/kernel/runner.js';
import { labDown } from '../../src/lab/lab.js';
import { labNamespacePattern } from '../../src/lab/topology.js';
import { UPLINKD_BIN } from '../../src/lab/lab-daemon.js';
import { uniqueLabName } from './harness.js';

const names = { router: uniqueLabName('demo'), host: uniqueLabName('hdemo'), pair: uniqueLabName('pdemo') };
const checkout = fileURLToPath(new URL('../..', import.meta.url));

before(async () => {
  // The demo runs the built CLI (bin/uplinkd -> dist), daemon and lab programs included.
  const build = await runCommand(['npm', 'run', 'build', '--silent', '--prefix', checkout]);
  assert.equal(build.code, 0, `npm run build failed:\n${build.stdout}${build.stderr}`);
});

// Only if the demo itself failed to clean up: the assertion below has already said so.
after(async () => {
  for (const name of Object.values(names)) await labDown(name);
});

for (const kind of ['router', 'host'] as const) {
  test(`lab demo${kind === 'host' ? ' --host' : ''}: shares, failover, failback, and nothing left behind`, { timeout: 120_000 }, async () => {
    const name = names[kind];
    const demo = await runCommand([UPLINKD_BIN, 'lab', 'demo', '--name', name, ...(kind === 'host' ? ['--host'] : [])], { timeoutMs: 110_000 });
    const output = demo.stdout + demo.stderr;
    assert.equal(demo.code, 0, output);
    assert.match(output, kind === 'host' ? /new connections from the host;/ : /new connections from the LAN host;/);

    assert.match(output, /isp1\s+198\.51\.100\.2\s+\d+\.\d%/, 'isp1 share');
    assert.match(output, /isp2\s+198\.51\.100\.18\s+\d+\.\d%/, 'isp2 share');
    const failover = Number(/failover: (\d+) ms/.exec(output)?.[1]);
    assert.ok(failover < 3000, `failover ${failover} ms\n${output}`);
    assert.match(output, /failback: \d+ ms/, 'failback time');
    // A kernel with MPTCP has this file, and a new namespace has MPTCP on.
    if (kind === 'host' && existsSync('/proc/sys/net/mptcp/enabled')) {
      // One download over 20 + 10 mbit, its bytes checked: a sum no single uplink can carry.
      const mbit = Number(/one MPTCP download: ([\d.]+) Mbit\/s over both uplinks/.exec(output)?.[1]);
      assert.ok(mbit > 21, `MPTCP download at ${mbit} Mbit/s\n${output}`);
      assert.match(output, /bytes checked: yes/);
    }

    const namespaces = (await runCommand(['ip', 'netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]);
    assert.deepEqual(namespaces.filter((ns) => labNamespacePattern(name).test(ns)), [], 'no namespace of the demo left');
  });
}

test('lab demo --pair: the master balancing, r1 losing power, every download in flight completing through r2, nothing left behind', { timeout: 120_000 }, async () => {
  const name = names.pair;
  const demo = await runCommand([UPLINKD_BIN, 'lab', 'demo', '--pair', '--name', name], { timeoutMs: 110_000 });
  const output = demo.stdout + demo.stderr;
  assert.equal(demo.code, 0, output);
  // Through the master, NATed to the uplinks' VRRP addresses.
  assert.match(output, /isp1\s+198\.51\.100\.2\s+\d+\.\d%/, 'isp1 share');
  assert.match(output, /isp2\s+198\.51\.100\.18\s+\d+\.\d%/, 'isp2 share');
  const takeover = Number(/VRRP addresses on r2: (\d+) ms/.exec(output)?.[1]);
  assert.ok(takeover < 2000, `VRRP addresses on r2 after ${takeover} ms\n${output}`);
  const answered = Number(/first new connection answered: (\d+) ms/.exec(output)?.[1]);
  assert.ok(answered < 2000, `first new connection answered ${answered} ms after the power loss\n${output}`);
  assert.match(output, /downloads in flight that completed through r2: 8 of 8/);
  const namespaces = (await runCommand(['ip', 'netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]);
  assert.deepEqual(namespaces.filter((ns) => labNamespacePattern(name).test(ns)), [], 'no namespace of the demo left');
  assert.ok(!existsSync(`/run/uplinkd-lab/${name}`), 'no state dir left');
});
