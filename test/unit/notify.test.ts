// The systemd notify protocol's pure parts (src/service/notify.ts): the
// watchdog interval and whose watchdog it is, the environment taken away
// from children, the message fields, and what the notifier sends when, with
// a recording runner in place of systemd-notify and mocked timers. The real
// exchange with a listening socket is test/lab/service.test.ts.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import type { CommandResult, Runner } from '../../src/kernel/runner.js';
import {
  notifyArgv, reloadingFields, ServiceNotifier, statusField, takeServiceEnvironment, watchdogIntervalMs, type ServiceHealth,
} from '../../src/service/notify.js';

test('the watchdog interval is half of WATCHDOG_USEC, in ms', () => {
  assert.equal(watchdogIntervalMs('10000000', undefined, 42), 5000);
  assert.equal(watchdogIntervalMs('1000000', undefined, 42), 500);
  assert.equal(watchdogIntervalMs('3001', undefined, 42), 1);
  assert.equal(watchdogIntervalMs('1', undefined, 42), 1, 'never a 0 ms interval');
  assert.equal(watchdogIntervalMs('999999999999999', undefined, 42), 2 ** 31 - 1, 'capped at the longest timer Node has');
});

test('no watchdog when WATCHDOG_USEC is unset, zero or not a number', () => {
  for (const usec of [undefined, '', '0', '-5', '1.5', '10s', ' 100']) assert.equal(watchdogIntervalMs(usec, undefined, 42), undefined, String(usec));
});

test('WATCHDOG_PID: the watchdog is ours only when it names this process', () => {
  assert.equal(watchdogIntervalMs('2000000', '42', 42), 1000);
  assert.equal(watchdogIntervalMs('2000000', '43', 42), undefined, 'another process');
  for (const pid of ['', 'abc', '0', '-42', '42x']) assert.equal(watchdogIntervalMs('2000000', pid, 42), undefined, `WATCHDOG_PID=${pid}`);
});

test("systemd's variables are taken out of the environment, so children never see them", () => {
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '10000000', WATCHDOG_PID: '42', PATH: '/usr/bin' };
  assert.deepEqual(takeServiceEnvironment(env, 42), { socket: '/run/systemd/notify', watchdogMs: 5000 });
  assert.deepEqual(env, { PATH: '/usr/bin' });

  const other: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '@abstract', WATCHDOG_USEC: '10000000', WATCHDOG_PID: '7' };
  assert.deepEqual(takeServiceEnvironment(other, 42), { socket: '@abstract', watchdogMs: undefined });

  const none: NodeJS.ProcessEnv = { WATCHDOG_USEC: '10000000' };
  assert.equal(takeServiceEnvironment(none, 42), undefined, 'no NOTIFY_SOCKET: not under a service manager that listens');
  assert.deepEqual(none, {});
});

test('message fields: STATUS on one line, RELOADING with MONOTONIC_USEC, the argument vector', () => {
  assert.equal(statusField('1/2 uplinks up; kernel: nft: Error:\n  table gone\n'), 'STATUS=1/2 uplinks up; kernel: nft: Error: table gone');
  const long = statusField('x'.repeat(500));
  assert.equal(long.length, 'STATUS='.length + 200);
  assert.ok(long.endsWith('…'));
  assert.deepEqual(reloadingFields(1_234_567_890_123n), ['RELOADING=1', 'MONOTONIC_USEC=1234567890']);
  assert.deepEqual(notifyArgv('/run/systemd/notify', 42, ['READY=1', 'STATUS=2/2 uplinks up']),
    ['NOTIFY_SOCKET=/run/systemd/notify', 'systemd-notify', '--pid=42', 'READY=1', 'STATUS=2/2 uplinks up']);
});

// ------------------------------------------------------------ the notifier

/** A runner in place of `env NOTIFY_SOCKET=… systemd-notify …`: records each message; `hold` keeps sends pending. */
class FakeNotify implements Runner {
  sent: string[][] = [];
  pending: (() => void)[] = [];
  hold = false;
  result: CommandResult = { code: 0, stdout: '', stderr: '' };
  run(command: string, args: string[]): Promise<CommandResult> {
    assert.equal(command, 'env');
    assert.deepEqual(args.slice(0, 3), ['NOTIFY_SOCKET=/run/systemd/notify', 'systemd-notify', '--pid=42']);
    this.sent.push(args.slice(3));
    if (!this.hold) return Promise.resolve(this.result);
    return new Promise((resolve) => this.pending.push(() => resolve(this.result)));
  }
  /** Message kinds in order, e.g. READY=1, WATCHDOG=1, STATUS=… */
  get kinds(): string[] {
    return this.sent.map((fields) => fields[0]);
  }
}

let fake: FakeNotify;
let logged: string[];
let health: ServiceHealth;
const log = { info: (m: string) => logged.push(`info: ${m}`), warn: (m: string) => logged.push(`warn: ${m}`) };
const notifier = (watchdogMs?: number) => new ServiceNotifier({ socket: '/run/systemd/notify', pid: 42, runner: fake, log, watchdogMs, statusEveryMs: 1000 });
/** Lets the send queue run: each message is a few promise hops. */
const settle = () => new Promise((r) => setImmediate(r));
async function advance(ms: number, stepMs = 100) {
  for (let t = 0; t < ms; t += stepMs) {
    mock.timers.tick(stepMs);
    await settle();
  }
}

beforeEach(() => {
  mock.timers.enable({ apis: ['setInterval', 'setTimeout'] });
  fake = new FakeNotify();
  logged = [];
  health = { healthy: true, summary: '0/2 uplinks up' };
});
afterEach(() => mock.timers.reset());

test('healthy at start: READY=1 with STATUS first, then WATCHDOG=1 every interval', async () => {
  const n = notifier(500);
  n.start(() => health);
  await settle();
  assert.deepEqual(fake.sent, [['READY=1', 'STATUS=0/2 uplinks up']]);
  await advance(2000);
  assert.equal(fake.kinds.filter((k) => k === 'WATCHDOG=1').length, 4);
  assert.ok(fake.sent.slice(1).every((f) => f.length === 1 && f[0] === 'WATCHDOG=1'), 'no STATUS while the summary is unchanged');
  n.close();
});

test('STATUS= is sent when the summary changes, and only then', async () => {
  const n = notifier(5000);
  n.start(() => health);
  await settle();
  health = { healthy: true, summary: '2/2 uplinks up' };
  await advance(1000);
  assert.deepEqual(fake.sent, [['READY=1', 'STATUS=0/2 uplinks up'], ['STATUS=2/2 uplinks up']]);
  await advance(3000);
  assert.equal(fake.sent.length, 2);
  health = { healthy: true, summary: '1/2 uplinks up' };
  await advance(1000);
  assert.deepEqual(fake.sent.slice(2).flat().filter((f) => f.startsWith('STATUS=')), ['STATUS=1/2 uplinks up']);
  await advance(10_000);
  assert.deepEqual(fake.sent.slice(2).flat().filter((f) => f.startsWith('STATUS=')), ['STATUS=1/2 uplinks up'], 'sent once');
  n.close();
});

test('not healthy at start: STATUS says why, no READY=1 and no ping until it is', async () => {
  health = { healthy: false, summary: '0/2 uplinks up; kernel: nft: No such file or directory' };
  const n = notifier(500);
  n.start(() => health);
  await advance(3000);
  assert.deepEqual(fake.sent, [['STATUS=0/2 uplinks up; kernel: nft: No such file or directory']]);
  assert.ok(logged.some((l) => l.startsWith('warn: not ready for systemd yet')), logged.join('\n'));
  health = { healthy: true, summary: '0/2 uplinks up' };
  await advance(1000);
  assert.deepEqual(fake.sent[1], ['READY=1', 'STATUS=0/2 uplinks up']);
  assert.ok(fake.kinds.includes('WATCHDOG=1'));
  n.close();
});

test('pings stop while unhealthy and resume after, each change logged once', async () => {
  const n = notifier(500);
  n.start(() => health);
  await advance(1000);
  const before = fake.kinds.filter((k) => k === 'WATCHDOG=1').length;
  health = { healthy: false, summary: '2/2 uplinks up; kernel: table gone' };
  await advance(5000);
  assert.equal(fake.kinds.filter((k) => k === 'WATCHDOG=1').length, before, 'no ping while unhealthy');
  health = { healthy: true, summary: '2/2 uplinks up' };
  await advance(1000);
  assert.ok(fake.kinds.filter((k) => k === 'WATCHDOG=1').length > before);
  assert.equal(logged.filter((l) => l.includes('watchdog pings withheld')).length, 1);
  assert.equal(logged.filter((l) => l.includes('watchdog pings resume')).length, 1);
  n.close();
});

test('RELOADING=1 and READY=1 go out in order even when sends are slow', async () => {
  const n = notifier();
  n.start(() => health);
  await settle();
  fake.hold = true;
  void n.reloading();
  void n.reloaded();
  await settle();
  assert.deepEqual(fake.kinds, ['READY=1', 'RELOADING=1'], 'one message in flight at a time');
  while (fake.pending.length) {
    fake.pending.shift()!();
    await settle();
  }
  assert.deepEqual(fake.kinds, ['READY=1', 'RELOADING=1', 'READY=1']);
  n.close();
});

test('a watchdog ping waiting behind a stuck send is not queued again', async () => {
  const n = notifier(100);
  n.start(() => health);
  await settle();
  fake.hold = true;
  await advance(1000);
  // One ping in flight, one waiting; the eight other ticks found one waiting.
  assert.deepEqual(fake.kinds, ['READY=1', 'WATCHDOG=1']);
  fake.pending.shift()!();
  await settle();
  assert.deepEqual(fake.kinds, ['READY=1', 'WATCHDOG=1', 'WATCHDOG=1']);
  n.close();
});

test('a failing systemd-notify is logged once and never throws', async () => {
  fake.result = { code: 1, stdout: '', stderr: 'Failed to notify init system: Connection refused' };
  const n = notifier(100);
  n.start(() => health);
  await advance(2000);
  await n.reloading();
  await n.reloaded();
  await n.stopping();
  assert.ok(fake.sent.length > 10);
  const warnings = logged.filter((l) => l.includes('systemd notify'));
  assert.equal(warnings.length, 1, logged.join('\n'));
  assert.match(warnings[0], /READY=1\) failed: Failed to notify init system: Connection refused/);
});

test('a send that never returns times out, and the next message still goes out', async () => {
  const n = new ServiceNotifier({ socket: '/run/systemd/notify', pid: 42, runner: fake, log, sendTimeoutMs: 10_000 });
  fake.hold = true;
  n.start(() => health);
  await settle();
  const stopped = n.stopping();
  await advance(10_000, 1000);
  assert.deepEqual(fake.kinds, ['READY=1', 'STOPPING=1']);
  await advance(10_000, 1000);
  await stopped;
  assert.deepEqual(logged.filter((l) => l.includes('systemd notify')).length, 1);
  assert.match(logged[0], /READY=1\) failed: no answer within 10 s/);
});

test('STOPPING=1 ends the pings', async () => {
  const n = notifier(500);
  n.start(() => health);
  await advance(1000);
  await n.stopping();
  const sent = fake.sent.length;
  assert.deepEqual(fake.sent.at(-1), ['STOPPING=1']);
  await advance(3000);
  assert.equal(fake.sent.length, sent);
});
