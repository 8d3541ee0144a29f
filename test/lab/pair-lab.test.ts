// The router pair lab (`uplinkd lab up --pair`), on the real kernel (as root):
//   flock /tmp/uplinkd-timing.lock node --import tsx --test test/lab/pair-lab.test.ts
// Both routers, keepalived moving the VRRP addresses, conntrackd copying the
// connections to the backup, a power loss and a reboot of r1, uplinkd on
// both with the same config, and nothing left after `lab down`.
// The tests run in order on one lab: each starts where the previous ended.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { pairDaemonPid, startDaemon, waitForStates, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { isAlive, labDown, labExec, loadLab, type LabState } from '../../src/lab/lab.js';
import {
  conntrackdClient, labFailRouter, labHealRouter, labPairAddresses, labUpPair, labVipHolder, labWaitForVipHolder, pairFiles, vrrpState,
} from '../../src/lab/pair.js';
import { connections, namespacesOf, uniqueLabName, waitFor } from './harness.js';

const name = uniqueLabName('pl');
let lab: LabState;
const daemons: LabDaemon[] = [];

/** Every VRRP address, as labPairAddresses names them. */
const ALL_VIPS = ['198.18.0.1/24 dev lan0', '198.51.100.2/28 dev wan1', '198.51.100.18/28 dev wan2'];

before(async () => {
  const startedAt = Date.now();
  lab = await labUpPair({ name, uplinks: 2, capacities: ['20mbit', '10mbit'] });
  process.stderr.write(`# lab up --pair took ${Date.now() - startedAt} ms\n`);
});

after(async () => {
  for (const d of daemons) await d.stop();
  await labDown(name);
});

/** Running processes whose command line mentions `text`. */
function processesMentioning(text: string): string[] {
  return readdirSync('/proc').filter((pid) => /^\d+$/.test(pid) && isAlive(pid)).flatMap((pid) => {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmdline.includes(text) ? [cmdline.replaceAll('\0', ' ')] : [];
    } catch {
      return []; // gone meanwhile
    }
  });
}

/** Per uplink, whether the daemon's status says this router holds its `address`. */
async function heldPerUplink(daemon: LabDaemon): Promise<Record<string, boolean>> {
  const status = await daemon.status();
  assert.ok(status, 'uplinkd answers');
  return Object.fromEntries(status.uplinks.map((u) => [u.name, u.holds_address]));
}

/** The kernel's conntrack entries in a router to the whoami port from `source`, as `conntrack -L -o extended` prints them. */
async function trackedFrom(router: 'r1' | 'r2', source: string): Promise<string[]> {
  const r = await labExec(name, router, ['conntrack', '-L', '-o', 'extended', '-p', 'tcp', '--orig-src', source, '--dport', String(lab.whoamiPort)]);
  return r.stdout.split('\n').filter((l) => l.includes(`src=${source} `));
}

test('lab up --pair: r1 is master and holds every VRRP address, r2 is backup and holds none', async () => {
  assert.deepEqual((await namespacesOf(name)).sort(), [lab.ns.inet, ...lab.ns.isps, lab.ns.lan, `ul-${name}-r1`, `ul-${name}-r2`].sort());
  // Read in the routers themselves, with `ip -j address`.
  for (const router of ['r1', 'r2'] as const) {
    const links = JSON.parse((await labExec(name, router, ['ip', '-j', 'address', 'show'])).stdout) as
      { ifname: string; addr_info: { local: string; prefixlen: number }[] }[];
    const held = links.flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen} dev ${l.ifname}`));
    const own = router === 'r1' ? ['198.18.0.3/24 dev lan0', '198.51.100.3/28 dev wan1', '198.51.100.19/28 dev wan2', '198.18.255.1/30 dev sync0']
      : ['198.18.0.4/24 dev lan0', '198.51.100.4/28 dev wan1', '198.51.100.20/28 dev wan2', '198.18.255.2/30 dev sync0'];
    for (const a of own) assert.ok(held.includes(a), `${router} has its own ${a}: ${held.join(', ')}`);
    for (const vip of ALL_VIPS) assert.equal(held.includes(vip), router === 'r1', `${router} ${router === 'r1' ? 'holds' : 'does not hold'} ${vip}`);
  }
  assert.equal(await labVipHolder(name), 'r1');
  const pair = loadLab(name).pair!;
  for (const r of pair.routers) {
    assert.ok(r.keepalivedPid !== undefined && isAlive(r.keepalivedPid), `${r.name}: keepalived runs`);
    assert.ok(r.conntrackdPid !== undefined && isAlive(r.conntrackdPid), `${r.name}: conntrackd runs`);
    assert.equal(vrrpState(r), r.name === 'r1' ? 'MASTER' : 'BACKUP');
    await conntrackdClient(lab, r, ['-s']); // answers on its socket in the router's folder
  }
  // Every runtime file in the lab's folder, none where the packaged daemons keep theirs.
  for (const path of ['/run/keepalived', '/run/keepalived.pid', '/etc/keepalived', '/var/lock/conntrack.lock', '/var/run/conntrackd.ctl']) {
    assert.ok(!existsSync(path), `${path} exists`);
  }
  // The same uplinkd config on both routers, but for the control socket.
  const [c1, c2] = pair.routers.map((r) => readFileSync(r.configPath, 'utf8').split('\n').filter((l) => !/^#|^ {2}socket: /.test(l)));
  assert.deepEqual(c1, c2);
  assert.ok(c1.includes('    address: 198.51.100.2') && c1.includes('    address: 198.51.100.18'), c1.join('\n'));
});

test('with uplinkd on both routers the LAN host reaches the whoami server through r1, NATed to the VRRP addresses', async () => {
  for (const r of loadLab(name).pair!.routers) daemons.push(await startDaemon(lab, r.configPath, { node: r.name }));
  // Each says whether it holds the uplinks' addresses: the master does, the backup does not.
  assert.deepEqual(await heldPerUplink(daemons[0]), { isp1: true, isp2: true }, 'r1 holds both uplinks\' addresses');
  assert.deepEqual(await heldPerUplink(daemons[1]), { isp1: false, isp2: false }, 'r2 holds neither');
  const r = await connections(lab, 'lan', 40);
  assert.equal(r.failed, 0, JSON.stringify(r.errors));
  // The far end sees the uplinks' VRRP addresses, both of them (weights 1:1), never a router's own.
  assert.deepEqual(Object.keys(r.seen).sort(), ['198.51.100.18', '198.51.100.2'], JSON.stringify(r.seen));
  const sourced = await trackedFrom('r1', lab.lanHost);
  assert.ok(sourced.length > 0, 'r1 forwarded them');
  assert.deepEqual(await trackedFrom('r2', lab.lanHost), [], 'r2 forwarded none (the backup)');
});

test("conntrackd on r2 holds r1's connections, with their marks, in its external cache", async () => {
  const source = lab.lanSources[7];
  const r = await connections(lab, 'lan', 10, ['--sources', source]);
  assert.equal(r.failed, 0, JSON.stringify(r.errors));
  const onR1 = await trackedFrom('r1', source);
  const marks = new Set(onR1.map((l) => /mark=(\d+)/.exec(l)?.[1]));
  assert.ok(onR1.length >= 10 && !marks.has('0') && !marks.has(undefined), `uplinkd marked r1's connections: ${onR1.join('\n')}`);
  let external: string[] = [];
  for (let i = 0; i < 50; i++) {
    external = (await conntrackdClient(lab, 'r2', ['-e'])).split('\n').filter((l) => l.includes(`src=${source} `) && l.includes(`dport=${lab.whoamiPort}`));
    if (external.length >= onR1.length) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(external.length, onR1.length, `r2's external cache:\n${external.join('\n')}\nr1's table:\n${onR1.join('\n')}`);
  for (const line of external) assert.match(line, /mark=(\d+)/);
  assert.deepEqual(new Set(external.map((l) => /mark=(\d+)/.exec(l)?.[1])), marks, 'the same marks as on r1');
  // Probes (from the routers' own addresses) are filtered out: none of r1's in r2's cache.
  const all = await conntrackdClient(lab, 'r2', ['-e']);
  assert.doesNotMatch(all, /src=198\.51\.100\.(3|19) /, 'r1 probes are not synced');
});

test('fail-router r1 moves every VRRP address to r2 within 2 s; r2 commits the synced connections and carries new ones', async () => {
  const source = lab.lanSources[7];
  const marksOnR1 = new Set((await trackedFrom('r1', source)).map((l) => /mark=(\d+)/.exec(l)?.[1]));
  const { downAt } = await labFailRouter(name, 'r1');
  const tookMs = await labWaitForVipHolder(name, 'r2', downAt, 2000);
  process.stderr.write(`# fail-router r1: every VRRP address on r2 after ${tookMs} ms\n`);
  assert.ok(tookMs !== undefined, `r2 holds every VRRP address within 2 s: ${JSON.stringify(await labPairAddresses(name))}`);
  assert.deepEqual((await labPairAddresses(name)).r2, ALL_VIPS);
  const pair = loadLab(name).pair!;
  assert.equal(vrrpState(pair.routers[1]), 'MASTER');
  // Committed into r2's kernel table: r1's connections, with r1's marks and NAT to the VRRP address.
  const committed = await trackedFrom('r2', source);
  assert.ok(committed.length > 0, `r2's kernel has r1's connections after the commit`);
  assert.deepEqual(new Set(committed.map((l) => /mark=(\d+)/.exec(l)?.[1])), marksOnR1);
  for (const line of committed) assert.match(line, /dst=198\.51\.100\.(2|18) /, `NATed to a VRRP address: ${line}`);
  assert.match(readFileSync(pairFiles(pair.routers[1]).notifyLog, 'utf8'), /MASTER: conntrackd -c exited 0/, 'the notify script committed them');
  // Everything in r1 is dead: keepalived, conntrackd, uplinkd.
  assert.equal(pairDaemonPid(lab, 'r1'), undefined);
  assert.deepEqual((await labExec(name, 'lan', ['true'])).code, 0);
  assert.equal((await namespacesOf(name)).includes(`ul-${name}-r1`), true, 'powered off, not removed');
  assert.deepEqual(
    (await labExec(name, 'r1', ['ip', '-br', 'link'])).stdout.split('\n').filter((l) => / UP /.test(l)), [], 'every link of r1 is down');
  assert.ok(await waitFor(async () => JSON.stringify(await heldPerUplink(daemons[1])) === '{"isp1":true,"isp2":true}', 2000),
    `r2's uplinkd says it holds both addresses now: ${JSON.stringify(await heldPerUplink(daemons[1]))}`);
  const r = await connections(lab, 'lan', 20);
  assert.equal(r.failed, 0, `new connections through r2: ${JSON.stringify(r.errors)}`);
  assert.deepEqual(Object.keys(r.seen).sort(), ['198.51.100.18', '198.51.100.2'], JSON.stringify(r.seen));
});

test('heal-router r1 brings it back as backup with uplinkd running again; the addresses stay on r2', async () => {
  const { router: r1, daemon } = await labHealRouter(name, 'r1');
  assert.equal(vrrpState(r1), 'BACKUP', 'r1 comes back as backup (nopreempt)');
  assert.ok(daemon, 'uplinkd runs in r1 again (it ran there before the power loss)');
  daemons.push(daemon);
  assert.equal(pairDaemonPid(lab, 'r1'), daemon.pid, 'and the lab records it');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal(await labVipHolder(name), 'r2', 'nopreempt: r1 does not take the addresses back');
  assert.equal(vrrpState(loadLab(name).pair!.routers[0]), 'BACKUP');
  // The restarted daemon brings its uplinks up, as r2's has.
  assert.ok(await waitForStates(daemon, { isp1: 'up', isp2: 'up' }, 10_000), `r1's uplinkd: both uplinks up:\n${daemon.logs().slice(-2000)}`);
  assert.deepEqual(await heldPerUplink(daemon), { isp1: false, isp2: false }, 'r1 is the backup now: it holds neither address');
  const r = await connections(lab, 'lan', 20);
  assert.equal(r.failed, 0, JSON.stringify(r.errors));
});

test('lab down removes every namespace, process and file of the pair', async () => {
  const stateDir = lab.stateDir;
  for (const d of daemons.splice(0)) await d.stop();
  await labDown(name);
  assert.deepEqual(await namespacesOf(name), []);
  assert.equal(existsSync(stateDir), false);
  assert.deepEqual(processesMentioning(stateDir), [], 'no keepalived, conntrackd or uplinkd of the lab left');
  assert.ok(!existsSync('/run/keepalived'), 'nothing in /run/keepalived');
});
