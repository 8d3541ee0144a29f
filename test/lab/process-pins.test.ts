// Pinning the router's own connections by the process that made them (rules
// with user, group and cgroup), checked by the address the far end saw.
//
// The daemon and the cgroup's clients run in the router's network namespace
// with the host's mounts (`nsenter --net`, as a service with systemd's
// NetworkNamespacePath= runs). `ip netns exec`, which startDaemon and labExec
// use, mounts a fresh /sys and so hides the cgroup v2 hierarchy: uplinkd
// could not see the cgroups, nor nft load a rule on one, nor a client join one.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { cgroup2MountPoint } from '../../src/kernel/cgroups.js';
import { runCommand } from '../../src/kernel/runner.js';
import type { ClientResult } from '../../src/lab/client.js';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { inRouter as routerPrefix, lastLines, startDaemon } from '../../src/lab/lab-daemon.js';
import { labDown, labUp, type LabState } from '../../src/lab/lab.js';
import { labProgram } from '../../src/lab/run.js';
import { assertShares, connections, uniqueLabName, waitFor, whoamiUrl } from './harness.js';

let lab: LabState;
let isp1: string;
let isp2: string;
let stopDaemon: (() => Promise<void>) | undefined;
let daemonLogs = () => '';
const listeners: ReturnType<typeof spawn>[] = [];

const cgroupRoot = cgroup2MountPoint(readFileSync('/proc/self/mountinfo', 'utf8'));
const name = (what: string) => `up9p-${process.pid}-${what}`;
/** Exists from the start: a service that runs. */
const PINNED = name('pinned');
/** Created only once the daemon runs, then removed and created again: a service started, then restarted. */
const LATER = name('later');
const cgroupDir = (cgroup: string) => join(cgroupRoot!, cgroup);

const UID = 4242;
const GID = 4343;

// Each rule pins to the uplink the next one does not, so a rule that stops
// matching shows as connections on both uplinks.
const rules = `rules:
  - name: by-user
    user: ${UID}
    via: isp2
  - name: by-group
    group: ${GID}
    via: isp1
  - name: by-cgroup
    cgroup: ${PINNED}
    via: isp2
  - name: started-later
    cgroup: /${LATER}/
    via: isp1
`;

/** The router namespace with the host's mounts. */
const inRouter = () => routerPrefix(lab, { hostMounts: true });

/** argv, run as a process that first joins `cgroup` (its pid written into cgroup.procs, so every socket it opens is the cgroup's). */
const inCgroup = (cgroup: string, argv: string[]) => ['sh', '-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'sh', cgroupDir(cgroup), ...argv];

/** `count` new connections from the router, made by argv's process (setpriv, a cgroup) running the lab's client. */
async function routerClient(wrap: (client: string[]) => string[], count: number): Promise<ClientResult> {
  const client = [...labProgram('client'), 'http', '--url', whoamiUrl(lab), '--count', String(count), '--concurrency', '8', '--timeout-ms', '1500'];
  const r = await runCommand([...inRouter(), ...wrap(client)]);
  assert.equal(r.code, 0, `client: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as ClientResult;
}

/** Weighted balancing over the two uplinks of equal weight. */
const balanced = () => ({ [isp1]: 0.5, [isp2]: 0.5 });

const asIds = (uid: number, gid: number) => (client: string[]) => ['setpriv', '--reuid', String(uid), '--regid', String(gid), '--clear-groups', ...client];

/** Moves whatever still runs in the cgroup back to the root, then removes it. */
function removeCgroup(cgroup: string): void {
  const dir = cgroupDir(cgroup);
  if (!existsSync(dir)) return;
  for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
    writeFileSync(join(cgroupRoot!, 'cgroup.procs'), pid);
  }
  rmdirSync(dir);
}

before(async () => {
  assert.ok(cgroupRoot, 'no cgroup v2 hierarchy is mounted on this machine');
  lab = await labUp({ name: uniqueLabName('up9p'), uplinks: 2 });
  [isp1, isp2] = lab.uplinks.map((u) => u.address);
  mkdirSync(cgroupDir(PINNED));
  const socket = join(lab.stateDir, 'uplinkd.sock');
  const config = writeLabConfig(lab, 'process-pins.yaml', labConfig(lab, { top: `api: { socket: ${socket}, http: "off" }\n${rules}` }));

  const daemon = await startDaemon(lab, config, { hostMounts: true, logLevel: 'info', upWithinMs: 10_000 });
  daemonLogs = () => daemon.logs();
  stopDaemon = async () => void (await daemon.stop());
});

after(async () => {
  for (const l of listeners) l.kill('SIGKILL');
  await stopDaemon?.();
  for (const cgroup of [PINNED, LATER]) {
    try {
      removeCgroup(cgroup);
    } catch (err) {
      console.error(`removing cgroup ${cgroup}: ${err instanceof Error ? err.message : err}`);
    }
  }
  if (lab) await labDown(lab.name);
});

test('the config warns that the cgroup started later does not exist yet', () => {
  assert.match(daemonLogs(), new RegExp(`warning: cgroup: ${LATER} does not exist \\(yet\\)`));
});

test("a process running as the pinned user leaves through that uplink every time; the router's other connections are balanced", async () => {
  assertShares(await routerClient(asIds(UID, 4000), 40), { [isp2]: 1 }, { unlike: [balanced()], what: `uid ${UID}` });
  assertShares(await connections(lab, 'router', 200), balanced(), { unlike: [{ [isp2]: 1 }], what: 'the router as root' });
});

test('a process of the pinned group leaves through that uplink; the first matching rule wins', async () => {
  assert.deepEqual((await routerClient(asIds(4001, GID), 40)).seen, { [isp1]: 40 });
  // The user rule comes first: its uplink, though the group rule matches too.
  assert.deepEqual((await routerClient(asIds(UID, GID), 40)).seen, { [isp2]: 40 });
});

test('a process in the pinned cgroup leaves through that uplink', async () => {
  assert.deepEqual((await routerClient((client) => inCgroup(PINNED, client), 40)).seen, { [isp2]: 40 });
});

test('a cgroup created after the daemon started is followed, and so is the new cgroup of a restart', async (t) => {
  const allThroughIsp1 = async () => {
    const r = await routerClient((client) => inCgroup(LATER, client), 20);
    return r.ok === 20 && r.seen[isp1] === 20;
  };
  for (const when of ['created', 'created again']) {
    if (when === 'created again') removeCgroup(LATER);
    const at = Date.now();
    mkdirSync(cgroupDir(LATER));
    const followed = await waitFor(allThroughIsp1, 5000, 100);
    assert.ok(followed, `cgroup ${when}: its connections did not all take isp1 within 5 s:\n${lastLines(daemonLogs(), 8)}`);
    t.diagnostic(`cgroup ${when}: pinned within ${Date.now() - at} ms`);
  }
  // Followed, not merely lucky: 20 connections balanced 50/50 all take isp1 once in a million tries.
  assert.deepEqual((await routerClient((client) => inCgroup(LATER, client), 40)).seen, { [isp1]: 40 });
});

test('forwarded LAN connections never match a cgroup rule, even when a process of that cgroup listens on their port', async () => {
  // nft's `socket` looks a forwarded packet's socket up by its destination
  // port, and would find this listener (its cgroup pinned to isp2).
  const listener = spawn(inRouter()[0], [...inRouter().slice(1),
    ...inCgroup(PINNED, [process.execPath, '-e', `require('net').createServer().listen(${lab.whoamiPort})`])], { stdio: 'ignore' });
  listeners.push(listener);
  const listening = await waitFor(async () => (await runCommand([...inRouter(), 'ss', '-Htln', `sport = :${lab.whoamiPort}`])).stdout.trim() !== '', 5000);
  assert.ok(listening, 'the listener in the pinned cgroup did not start');
  const lan = await connections(lab, 'lan', 200);
  listener.kill('SIGKILL');
  assertShares(lan, balanced(), { unlike: [{ [isp2]: 1 }], what: 'the LAN' });
});
