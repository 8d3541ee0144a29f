// `uplinkd run` under a service manager: a listener in the router plays
// systemd's end of NOTIFY_SOCKET (test/lab/notify-listener.py, since Node
// cannot bind a unix datagram socket) and the real daemon must say READY=1
// only once its state is in the kernel, ping the watchdog, wrap a SIGHUP
// reload in RELOADING=1/READY=1 and say STOPPING=1 on SIGTERM; also with no
// more privilege than packaging/uplinkd.service grants.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, test } from 'node:test';
import { labConfig, writeLabConfig } from '../../src/lab/lab-config.js';
import { labDown, labUp, type LabState } from '../../src/lab/lab.js';
import { UPLINKD_BIN, lastLines, startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { mustUplinkd, uniqueLabName, waitFor } from './harness.js';

const LISTENER = fileURLToPath(new URL('./notify-listener.py', import.meta.url));
const TABLE = 'uplinkd';

interface Message { at_ms: number; sender_pid: number | null; fields: string[]; table_exists?: boolean }

interface Listener { socket: string; messages: Message[]; output(): string; kill(): Promise<void> }

const LAB = uniqueLabName('svc');
let lab: LabState;
let config: string;
let listener: Listener | undefined;
let daemon: LabDaemon | undefined;
let cappedDaemon: ChildProcess | undefined;

before(async () => {
  lab = await labUp({ name: LAB, uplinks: 2 });
  config = writeLabConfig(lab, 'service.yaml', labConfig(lab, {
    uplink: () => '    check: { targets: [192.0.2.10] }\n',
    top: `api: { socket: ${lab.stateDir}/uplinkd.sock, http: "off" }\n`,
  }));
});
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  if (cappedDaemon && cappedDaemon.exitCode === null && cappedDaemon.signalCode === null) {
    cappedDaemon.kill('SIGKILL');
    await new Promise((r) => cappedDaemon!.once('close', r));
  }
  cappedDaemon = undefined;
  await listener?.kill();
  listener = undefined;
  if (lab) await mustUplinkd(lab, 'flush');
});
// By name: also what a labUp that failed half-way left.
after(() => labDown(LAB));

/** The listener in the router's namespace, bound and ready to receive. */
async function listen(name: string): Promise<Listener> {
  const socket = join(lab.stateDir, name);
  const child = spawn('ip', ['netns', 'exec', lab.ns.router, '/usr/bin/python3', '-u', LISTENER, socket, TABLE], { stdio: ['ignore', 'pipe', 'pipe'] });
  const messages: Message[] = [];
  let out = '';
  let bound = false;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const lines = out.split('\n');
    out = lines.pop()!;
    for (const line of lines) {
      const parsed = JSON.parse(line) as Message | { listening: string };
      if ('listening' in parsed) bound = true;
      else messages.push(parsed);
    }
  });
  let errors = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (errors += d));
  const closed = new Promise((r) => child.once('close', r));
  const l: Listener = {
    socket, messages,
    output: () => messages.map((m) => m.fields.join(' ')).join('\n') + errors,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await closed;
    },
  };
  if (!(await waitFor(async () => bound || child.exitCode !== null, 10_000)) || !bound) {
    await l.kill();
    throw new Error(`notify listener did not start: ${errors}`);
  }
  return l;
}

const has = (m: Message, field: string) => m.fields.includes(field);

/** The index of the first message from `from` on that has `field`, waiting up to `withinMs`. */
async function awaitField(l: Listener, field: string, from: number, withinMs: number, logs: () => string): Promise<number> {
  let found = -1;
  await waitFor(async () => (found = l.messages.findIndex((m, i) => i >= from && has(m, field))) >= 0, withinMs, 20);
  assert.ok(found >= 0, `no ${field} within ${withinMs} ms; received:\n${l.output()}\ndaemon:\n${lastLines(logs(), 10)}`);
  return found;
}

test('READY=1 once the nft table is installed, WATCHDOG=1 while healthy, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM', async () => {
  listener = await listen('notify.sock');
  daemon = await startDaemon(lab, config, { env: { NOTIFY_SOCKET: listener.socket, WATCHDOG_USEC: '1000000' }, upWithinMs: false });
  const logs = daemon.logs;

  const ready = await awaitField(listener, 'READY=1', 0, 10_000, logs);
  const readyMessage = listener.messages[ready];
  assert.equal(readyMessage.table_exists, true, 'the nft table existed when READY=1 arrived');
  assert.ok(listener.messages.slice(0, ready).every((m) => !has(m, 'READY=1')));
  assert.ok(has(readyMessage, `MAINPID=${daemon.pid}`), readyMessage.fields.join(' '));
  assert.ok(readyMessage.fields.some((f) => /^STATUS=\d+\/2 uplinks up$/.test(f)), readyMessage.fields.join(' '));

  // The summary follows the uplinks: both come up after their first probe rounds.
  await awaitField(listener, 'STATUS=2/2 uplinks up', 0, 10_000, logs);

  // Half of WATCHDOG_USEC is 500 ms; over 4 s a healthy daemon pings about 8 times.
  const pingsFrom = listener.messages.length;
  await new Promise((r) => setTimeout(r, 4000));
  const pings = listener.messages.slice(pingsFrom).filter((m) => has(m, 'WATCHDOG=1'));
  assert.ok(pings.length >= 4, `${pings.length} WATCHDOG=1 in 4 s:\n${listener.output()}`);

  const hupFrom = listener.messages.length;
  daemon.signal('SIGHUP');
  const reloading = await awaitField(listener, 'RELOADING=1', hupFrom, 10_000, logs);
  assert.ok(listener.messages[reloading].fields.some((f) => /^MONOTONIC_USEC=\d+$/.test(f)));
  const readyAgain = await awaitField(listener, 'READY=1', reloading + 1, 10_000, logs);
  assert.ok(listener.messages.slice(hupFrom, reloading).every((m) => !has(m, 'READY=1')), 'no READY=1 between SIGHUP and RELOADING=1');
  assert.equal(listener.messages[readyAgain].table_exists, true);
  assert.match(logs(), /reloaded/);

  const stopFrom = listener.messages.length;
  assert.equal(await daemon.stop(), 0);
  daemon = undefined;
  await awaitField(listener, 'STOPPING=1', stopFrom, 5000, logs);
});

test("with only the unit's CAP_NET_ADMIN and CAP_NET_RAW and no new privileges it installs its state and reports READY=1", async () => {
  listener = await listen('capped.sock');
  // What packaging/uplinkd.service grants: that bounding set, NoNewPrivileges=yes.
  const child = spawn('ip', ['netns', 'exec', lab.ns.router, 'setpriv', '--no-new-privs', '--bounding-set=-all,+net_admin,+net_raw',
    UPLINKD_BIN, 'run', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: listener.socket, WATCHDOG_USEC: '1000000' } });
  cappedDaemon = child;
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<number | null>((r) => child.once('close', r));

  const ready = await awaitField(listener, 'READY=1', 0, 10_000, () => output);
  const message = listener.messages[ready];
  assert.equal(message.table_exists, true);
  assert.ok(has(message, `MAINPID=${child.pid}`), message.fields.join(' '));
  // Without CAP_SYS_ADMIN systemd-notify cannot send as the daemon, so the
  // message comes from its own PID: why the unit needs NotifyAccess=all.
  assert.notEqual(message.sender_pid, child.pid);
  await awaitField(listener, 'STATUS=2/2 uplinks up', 0, 10_000, () => output);
  await awaitField(listener, 'WATCHDOG=1', ready + 1, 5000, () => output);

  child.kill('SIGTERM');
  assert.equal(await exited, 0, lastLines(output, 10));
  // Anything short of privilege shows as a warning or an error; the doctor's
  // findings about this machine's own files are warnings too, and no concern here.
  const complaints = output.split('\n').filter((l) => /"level":(40|50|60)/.test(l) && !l.includes('"event":"doctor"'));
  assert.deepEqual(complaints, [], 'no warning or error logged');
});
