// A real DHCP uplink in the lab (README "The lab"): dnsmasq in isp2's
// namespace leases the router's wan2 its address, and dhcpcd on the router
// applies it. Checked at the far end and in the kernel, never by reading the
// lab's or uplinkd's own bookkeeping back:
//   node --import tsx --test test/lab/dhcp.test.ts
// About 2.5 minutes: the lease-loss part waits for a real lease (dnsmasq's
// shortest, 2 minutes) to run out.

import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  isAlive, labClient, labDhcpLeases, labDhcpStart, labDhcpStop, labDown, labExec, labRenumber, labUp, loadLab, type LabState,
} from '../../src/lab/lab.js';
import { runCommand } from '../../src/kernel/runner.js';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { connections, daemonStatus, namespacesOf, processesWithEnv, uniqueLabName, waitFor, whoamiUrl } from './harness.js';

const METRIC_ISP2 = 102;
/** Where a DHCP client or server would leave traces on the host. */
const WATCHED_DIRS = ['/etc', '/var/lib/dhcp', '/var/lib/dhcpcd', '/run/dhcpcd', '/run/mount', '/usr/lib/dhcpcd'];
const WATCHED_FILES = ['/etc/resolv.conf', '/etc/hostname'];

let lab: LabState;
let daemon: LabDaemon | undefined;
let hostBefore: HostSnapshot;

before(async () => {
  hostBefore = hostSnapshot();
  lab = await labUp({ name: uniqueLabName('dhcp'), uplinks: 2, dhcp: [2] });
});

after(async () => {
  await daemon?.stop();
  await labDown(lab.name);
  await labDown(`${lab.name}-x`);
});

// ------------------------------------------------------------ helpers

interface HostSnapshot {
  hostname: string;
  /** path → mtime and content (or lstat only, for a symlink) */
  files: Record<string, string>;
  /** every path under the watched directories, with the directories' own mtimes */
  tree: Set<string>;
  dirMtimes: Record<string, number | null>;
}

function hostSnapshot(): HostSnapshot {
  const files: Record<string, string> = {};
  for (const f of WATCHED_FILES) {
    if (!existsSync(f) && !lstatSafe(f)) files[f] = 'missing';
    else {
      const l = lstatSync(f);
      files[f] = l.isSymbolicLink() ? `symlink mtime ${l.mtimeMs}` : `mtime ${statSync(f).mtimeMs}: ${readFileSync(f, 'utf8')}`;
    }
  }
  const tree = new Set<string>();
  const dirMtimes: Record<string, number | null> = {};
  for (const dir of WATCHED_DIRS) {
    dirMtimes[dir] = existsSync(dir) ? statSync(dir).mtimeMs : null;
    if (!existsSync(dir)) continue;
    for (const entry of readdirSync(dir, { recursive: true }) as string[]) tree.add(`${dir}/${entry}`);
  }
  return { hostname: hostname(), files, tree, dirMtimes };
}

function lstatSafe(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function assertHostUnchanged(when: string): void {
  const now = hostSnapshot();
  assert.equal(now.hostname, hostBefore.hostname, `${when}: hostname`);
  assert.deepEqual(now.files, hostBefore.files, `${when}: /etc/resolv.conf and /etc/hostname, mtime and content`);
  assert.deepEqual([...now.tree].filter((p) => !hostBefore.tree.has(p)), [], `${when}: files created on the host`);
  assert.deepEqual(now.dirMtimes, hostBefore.dirMtimes, `${when}: mtimes of ${WATCHED_DIRS.join(', ')} (absent: null)`);
}

/** Every running process in the lab's namespaces, with its name. */
async function labProcesses(): Promise<{ pid: number; comm: string }[]> {
  const found: { pid: number; comm: string }[] = [];
  for (const ns of await namespacesOf(lab.name)) {
    const { stdout } = await runCommand(['ip', 'netns', 'pids', ns]);
    for (const pid of stdout.split('\n').filter(Boolean).map(Number)) {
      try {
        if (isAlive(pid)) found.push({ pid, comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim() });
      } catch {
        // gone meanwhile
      }
    }
  }
  return found;
}

async function wan2(): Promise<{ addresses: { local: string; prefixlen: number; dynamic: boolean }[]; defaults: { gateway?: string; metric?: number; protocol?: string }[] }> {
  const addrs = JSON.parse((await labExec(lab.name, 'router', ['ip', '-j', '-4', 'address', 'show', 'dev', 'wan2'])).stdout) as
    { addr_info?: { local: string; prefixlen: number; dynamic?: boolean }[] }[];
  const routes = JSON.parse((await labExec(lab.name, 'router', ['ip', '-j', '-4', 'route', 'show', 'table', 'main', 'default', 'dev', 'wan2'])).stdout);
  return {
    addresses: addrs.flatMap((l) => l.addr_info ?? []).map((a) => ({ local: a.local, prefixlen: a.prefixlen, dynamic: a.dynamic === true })),
    defaults: routes,
  };
}

async function macOf(ifname: string): Promise<string> {
  const [link] = JSON.parse((await labExec(lab.name, 'router', ['ip', '-j', 'link', 'show', 'dev', ifname])).stdout) as { address: string }[];
  return link.address;
}

/** The uplink's IPv4 state: DHCP gives only IPv4 (its IPv6 stays up through a lost lease, README "IPv6"). */
async function stateOf(path: string, uplink: string): Promise<string | undefined> {
  return (await daemonStatus(lab, path)).uplinks.find((u) => u.name === uplink)?.families?.ipv4.state;
}

// ------------------------------------------------------------ tests

test('the lease is applied by the real client: address and default route come from the server', async () => {
  const leases = labDhcpLeases(lab.name, 'isp2');
  assert.equal(leases.length, 1, `the server's lease file: ${JSON.stringify(leases)}`);
  const [lease] = leases;
  assert.equal(lease.mac, await macOf('wan2'), 'leased to the router');
  assert.equal(lease.address, '198.51.100.18', 'the one address the server hands out');
  const installed = await wan2();
  assert.deepEqual(installed.addresses, [{ local: lease.address, prefixlen: 28, dynamic: true }], 'a dynamic address, as a DHCP client adds it');
  assert.deepEqual(installed.defaults.map((r) => [r.gateway, r.metric, r.protocol]), [['198.51.100.17', METRIC_ISP2, 'dhcp']]);
  // The ISP lets the leased address through its anti-spoofing filter.
  const ping = await labExec(lab.name, 'router', ['fping', '-q', '-I', 'wan2', '-S', lease.address, '-t', '300', '-c', '3', '-p', '20', lab.server]);
  assert.equal(ping.code, 0, `pings from ${lease.address} out of wan2: ${ping.stderr}`);
});

// The daemon tests run in order on one daemon, each from where the last left off.
let path: string;
let isp1: string;
let fresh: string;

test('uplinkd with gateway: auto uses the lease: the far end sees the leased address', async () => {
  const check = '    check: { targets: [192.0.2.10], max_loss: 20% }\n';
  path = writeLabConfig(lab, 'dhcp.yaml', labConfig(lab, {
    uplink: (name) => (name === 'isp2' ? '    gateway: auto\n' : '') + check,
    top: `api: { socket: ${lab.stateDir}/uplinkd.sock, http: "off" }\n`,
  }));
  daemon = await startDaemon(lab, path);
  isp1 = lab.uplinks[0].address;
  const leased = labDhcpLeases(lab.name, 'isp2')[0].address;
  const status = (await daemonStatus(lab, path)).uplinks.find((u) => u.name === 'isp2')!;
  assert.deepEqual([status.address, status.gateway], [leased, '198.51.100.17']);
  const r = await connections(lab, 'lan', 200);
  assert.equal(r.ok, 200, JSON.stringify(r.errors));
  assert.deepEqual(Object.keys(r.seen).sort(), [isp1, leased].sort(), JSON.stringify(r.seen));
});

test('a renumber through the real client is followed within 1 s of the client applying it', async () => {
  const leased = labDhcpLeases(lab.name, 'isp2')[0].address;
  // NAK for the old address, the client's flush, the new lease.
  const renumbered = await labRenumber(lab.name, 'isp2');
  fresh = renumbered.address;
  assert.notEqual(fresh, leased);
  assert.deepEqual(labDhcpLeases(lab.name, 'isp2').map((l) => l.address), [fresh], "the server's lease file");
  assert.deepEqual((await wan2()).addresses.map((a) => a.local), [fresh], 'the client moved wan2');
  // From the moment the new address is on wan2 until a whole batch of new
  // connections succeeds, with isp2's share seen from the new address only.
  let followedMs: number | undefined;
  let last: unknown;
  while (Date.now() - renumbered.addressAt < 3000) {
    const tryAt = Date.now();
    const r = await labClient(lab.name, 'lan', ['http', '--url', whoamiUrl(lab), '--count', '20', '--concurrency', '20', '--timeout-ms', '300']);
    last = { ok: r.ok, seen: r.seen };
    if (r.ok === 20 && (r.seen[fresh] ?? 0) > 0 && Object.keys(r.seen).every((a) => a === isp1 || a === fresh)) {
      followedMs = tryAt - renumbered.addressAt;
      break;
    }
  }
  console.log(`# renumber: the client applied the new lease ${renumbered.tookMs} ms after being told to rebind; new connections followed ${followedMs} ms after the address was on wan2`);
  assert.ok(followedMs !== undefined && followedMs <= 1000,
    `new connections through isp2 from ${fresh} within 1 s of the client applying it: ${followedMs} ms (last batch: ${JSON.stringify(last)})\n${daemon!.logs().slice(-3000)}`);
  const r = await connections(lab, 'lan', 200);
  assert.equal(r.ok, 200, JSON.stringify(r.errors));
  assert.deepEqual(Object.keys(r.seen).sort(), [isp1, fresh].sort(), JSON.stringify(r.seen));
});

test('a lost lease (server stopped, lease expired) takes isp2\'s IPv4 down; new connections all go via isp1; its IPv6 stays up', async () => {
  const stoppedAt = Date.now();
  const { leaseLeftS } = await labDhcpStop(lab.name, 'isp2');
  assert.ok(leaseLeftS !== undefined && leaseLeftS <= 120, `lease left: ${leaseLeftS} s`);
  // The client's renew and rebind go unanswered; at expiry it drops address and routes.
  const lost = await waitFor(async () => (await wan2()).addresses.length === 0, (leaseLeftS + 15) * 1000, 200);
  assert.ok(lost, `the client dropped the expired lease: ${JSON.stringify(await wan2())}`);
  const lostAt = Date.now();
  console.log(`# lease lost ${Math.round((lostAt - stoppedAt) / 1000)} s after the server stopped`);
  assert.deepEqual((await wan2()).defaults, [], 'its default route went with it');
  await new Promise((r) => setTimeout(r, 1000));
  const r = await connections(lab, 'lan', 100);
  assert.equal(r.ok, 100, JSON.stringify(r.errors));
  assert.deepEqual(r.seen, { [isp1]: 100 }, 'every new connection goes via isp1');
  const down = await waitFor(async () => (await stateOf(path, 'isp2')) === 'down', 10_000, 100);
  const isp2 = (await daemonStatus(lab, path)).uplinks.find((u) => u.name === 'isp2');
  assert.ok(down, `isp2's IPv4 down in status once its lease expired: ${JSON.stringify(isp2)}\n${daemon!.logs().slice(-3000)}`);
  assert.equal(isp2?.families?.ipv6.state, 'up', 'the lease was IPv4 only: isp2 keeps carrying IPv6');
  assert.equal(isp2?.state, 'up', 'an uplink is up while any family is');
});

test('a new lease brings isp2 back up', async () => {
  const again = await labDhcpStart(lab.name, 'isp2');
  assert.equal(again.address, fresh);
  assert.deepEqual((await wan2()).addresses.map((a) => a.local), [fresh]);
  const up = await waitFor(async () => (await stateOf(path, 'isp2')) === 'up', 10_000, 100);
  assert.ok(up, `isp2 up with a new lease: ${JSON.stringify((await daemonStatus(lab, path)).uplinks.find((u) => u.name === 'isp2'))}\n${daemon!.logs().slice(-3000)}`);
  const back = await waitFor(async () => ((await connections(lab, 'lan', 50)).seen[fresh] ?? 0) > 0, 5000, 100);
  assert.ok(back, 'new connections use isp2 again');
  const r = await connections(lab, 'lan', 200);
  assert.equal(r.ok, 200, JSON.stringify(r.errors));
  assert.deepEqual(Object.keys(r.seen).sort(), [isp1, fresh].sort(), JSON.stringify(r.seen));
});

test('nothing outside the lab changed: resolv.conf, hostname, files under /etc, /var/lib and /run', () => {
  assertHostUnchanged('with the lab up');
});

test('lab down stops server and client and leaves nothing behind', async () => {
  await daemon?.stop();
  daemon = undefined;
  const before = await labProcesses();
  const dhcp = before.filter((p) => ['dnsmasq', 'dhcpcd', 'dhclient', 'sleep'].includes(p.comm));
  assert.ok(dhcp.some((p) => p.comm === 'dhcpcd'), `the client ran: ${JSON.stringify(before)}`);
  const serverPid = loadLab(lab.name).uplinks[1].dhcp?.serverPid;
  if (serverPid !== undefined) assert.ok(dhcp.some((p) => p.pid === serverPid && p.comm === 'dnsmasq'), `the server ran: ${JSON.stringify(before)}`);
  await labDown(lab.name);
  assert.deepEqual(dhcp.filter((p) => isAlive(p.pid)), [], 'no DHCP process of the lab is left');
  assert.deepEqual(await namespacesOf(lab.name), []);
  assert.equal(existsSync(lab.stateDir), false, 'its leases and logs are gone with the state directory');
  assertHostUnchanged('after lab down');
});

test('a lab up whose DHCP client gets no lease fails within seconds, says why, and leaves nothing behind', async () => {
  const broken = `${lab.name}-x`;
  // A client that never asks: the server runs, the lease never comes.
  const fakeBin = mkdtempSync(join(tmpdir(), 'lab-fake-'));
  writeFileSync(join(fakeBin, 'dhcpcd'), '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
  const path = process.env.PATH;
  process.env.PATH = `${fakeBin}:${path}`;
  // Everything the lab starts inherits this, so it can be found after its namespaces are gone.
  process.env.LAB_TEST_MARK = broken;
  const startedAt = Date.now();
  let failure: unknown;
  try {
    await labUp({ name: broken, dhcp: [2] });
  } catch (err) {
    failure = err;
  } finally {
    process.env.PATH = path;
    delete process.env.LAB_TEST_MARK;
    rmSync(fakeBin, { recursive: true });
  }
  const tookMs = Date.now() - startedAt;
  const message = failure instanceof Error ? failure.message : String(failure);
  console.log(`# lab up gave up after ${tookMs} ms: ${message.split('\n')[0]}`);
  assert.match(message, /isp2: no lease within \d+ ms: wanted 198\.51\.100\.18\/28 via 198\.51\.100\.17 metric 102 on wan2/);
  assert.ok(tookMs < 30_000, 'within seconds');
  assert.deepEqual(await namespacesOf(broken), []);
  assert.equal(existsSync(`/run/uplinkd-lab/${broken}`), false);
  assert.equal(processesWithEnv(`LAB_TEST_MARK=${broken}`), 0, 'its server, client and the rest were stopped');
});
