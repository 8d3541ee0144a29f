// The probers' pure parts, and their round logic with fakes standing in for
// fping and the network (the real thing is in test/lab/probe.test.ts):
//   node --import tsx --test test/unit/probe.test.ts

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Check } from '../../src/config/types.js';
import { FpingDriver, fpingArgs, parseFpingLine } from '../../src/probe/icmp.js';
import { probeTargets, type ProbeRound, type ProbeSubject } from '../../src/probe/index.js';
import { probeOnce, type Probe } from '../../src/probe/oneshot.js';
import { RoundBook } from '../../src/probe/rounds.js';
import { RoundScheduler, ROUND_SLACK_MS } from '../../src/probe/scheduler.js';
import type { ProbeDriver, Report } from '../../src/probe/types.js';

const subject: ProbeSubject = { uplink: 'isp1', device: 'wan1', address: '198.51.100.2', gateway: '198.51.100.1' };

function checkOf(overrides: Partial<Check> = {}): Check {
  return {
    method: 'icmp', targets: [], port: 0, query: '', intervalMs: 200, timeoutMs: 500,
    downAfter: 3, upAfter: 5, quorum: 1, window: 20, ...overrides,
  };
}

/** Starts a prober-like scheduler and collects its rounds. */
function collect(prober: { start(onRound: (r: ProbeRound) => void): void }): ProbeRound[] {
  const rounds: ProbeRound[] = [];
  prober.start((r) => rounds.push(r));
  return rounds;
}

async function until(what: string, condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe('fping output', () => {
  it('reads a reply, whatever the precision fping gave its time', () => {
    assert.deepEqual(parseFpingLine('192.0.2.10 : [0], 64 bytes, 0.052 ms (0.052 avg, 0% loss)'),
      { seq: 0, result: { target: '192.0.2.10', ok: true, latencyMs: 0.052 } });
    assert.deepEqual(parseFpingLine('10.0.0.1   : [17], 64 bytes, 10.9 ms (44.4 avg, 44% loss)'),
      { seq: 17, result: { target: '10.0.0.1', ok: true, latencyMs: 10.9 } });
    assert.equal(parseFpingLine('10.0.0.1 : [3], 64 bytes, 211 ms (52.7 avg, 50% loss)')?.result.latencyMs, 211);
    assert.equal(parseFpingLine('10.0.0.1 : [3], 64 bytes, 1.000e+06 ms (5 avg, 0% loss)')?.result.latencyMs, 1e6);
  });

  it('reads a timeout, with or without an average yet', () => {
    assert.deepEqual(parseFpingLine('10.99.0.77 : [4], timed out (NaN avg, 100% loss)'),
      { seq: 4, result: { target: '10.99.0.77', ok: false, error: 'timeout' } });
    assert.deepEqual(parseFpingLine('10.0.0.1  : [12], timed out (0.034 avg, 25% loss)')?.seq, 12);
  });

  it('ignores everything else fping may print', () => {
    for (const line of [
      '',
      '10.0.0.1 is alive',
      '10.0.0.1 : xmt/rcv/%loss = 5/5/0%, min/avg/max = 0.01/0.02/0.05',
      '[10:00:00]',
      'ICMP Host Unreachable from 10.0.0.2 for ICMP Echo sent to 10.0.0.9',
      'fping: cannot bind source address : Cannot assign requested address',
      '10.0.0.1 : duplicate for [3], 64 bytes, 0.1 ms',
    ]) {
      assert.equal(parseFpingLine(line), undefined, line);
    }
  });

  it('is asked for loop mode, bound to the device and the address, all targets in one process', () => {
    assert.deepEqual(fpingArgs(subject, checkOf({ intervalMs: 100, timeoutMs: 300 }), ['192.0.2.1', '192.0.2.2']), [
      '--loop', '--period=100', '--timeout=300', '--interval=1', '--iface=wan1', '--src=198.51.100.2', '192.0.2.1', '192.0.2.2',
    ]);
  });
});

describe('targets', () => {
  it('are the check\'s own when it has some', () => {
    assert.deepEqual(probeTargets(subject, checkOf({ targets: ['192.0.2.1', '192.0.2.2'] })), ['192.0.2.1', '192.0.2.2']);
  });
  it('default to the gateway', () => {
    assert.deepEqual(probeTargets(subject, checkOf()), ['198.51.100.1']);
  });
  it('are none without a gateway', () => {
    assert.deepEqual(probeTargets({ ...subject, gateway: undefined }, checkOf()), []);
  });
});

describe('the round book', () => {
  const ok = (target: string, latencyMs = 1) => ({ target, ok: true, latencyMs });

  it('delivers in seq order, a round that finished early waiting for the one before', () => {
    const out: ProbeRound[] = [];
    const book = new RoundBook((r) => out.push(r));
    book.openRound(0, 1000, ['a', 'b']);
    book.openRound(1, 1100, ['a', 'b']);
    assert.ok(book.record(1, ok('a')));
    assert.ok(book.record(1, ok('b')));
    assert.ok(book.record(0, ok('b')));
    assert.equal(out.length, 0);
    book.expire(0, 'no answer');
    assert.deepEqual(out.map((r) => r.seq), [0, 1]);
    assert.deepEqual(out[0], { seq: 0, startedAt: 1000, results: [{ target: 'a', ok: false, error: 'no answer' }, ok('b')] });
    assert.deepEqual(out[1].results, [ok('a'), ok('b')]);
  });

  it('keeps target order, one slot per listed target, and refuses what no slot takes', () => {
    const out: ProbeRound[] = [];
    const book = new RoundBook((r) => out.push(r));
    book.openRound(5, 0, ['a', 'a', 'b']);
    assert.ok(book.record(5, ok('b', 3)));
    assert.ok(book.record(5, ok('a', 1)));
    assert.equal(book.record(5, ok('c')), false, 'not a target');
    assert.equal(book.record(5, ok('b')), false, 'b already answered');
    assert.ok(book.record(5, ok('a', 2)));
    assert.deepEqual(out[0].results, [ok('a', 1), ok('a', 2), ok('b', 3)]);
    assert.equal(book.record(5, ok('a')), false, 'the round is gone');
    assert.equal(book.isOpen(5), false);
  });

  it('delivers a round without targets at once, in its turn', () => {
    const out: ProbeRound[] = [];
    const book = new RoundBook((r) => out.push(r));
    book.openRound(0, 0, ['a']);
    book.openRound(1, 0, []);
    assert.equal(out.length, 0);
    book.record(0, ok('a'));
    assert.deepEqual(out.map((r) => [r.seq, r.results.length]), [[0, 1], [1, 0]]);
  });
});

/** A driver that records what it is asked and answers only when told. */
class FakeDriver implements ProbeDriver {
  opened: { seq: number; targets: string[]; subject: ProbeSubject }[] = [];
  stopped = false;
  report!: Report;
  roundOpened(seq: number, targets: string[], subject: ProbeSubject): void {
    this.opened.push({ seq, targets, subject });
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
}

describe('the round scheduler', () => {
  function scheduler(check: Check, from = subject) {
    const driver = new FakeDriver();
    const prober = new RoundScheduler(from, check, (report) => ((driver.report = report), driver));
    return { driver, prober };
  }

  it('opens a round every interval and delivers each when all its targets have reported', async () => {
    const { driver, prober } = scheduler(checkOf({ intervalMs: 30, timeoutMs: 200, targets: ['a', 'b'] }));
    const rounds = collect(prober);
    await until('3 rounds opened', () => driver.opened.length >= 3);
    for (const { seq } of driver.opened.slice(0, 3)) {
      assert.equal(driver.report(seq, { target: 'b', ok: true, latencyMs: 2 }), 'filed');
      assert.equal(driver.report(seq, { target: 'a', ok: true, latencyMs: 1 }), 'filed');
    }
    await prober.stop();
    assert.deepEqual(rounds.map((r) => r.seq), [0, 1, 2]);
    assert.deepEqual(rounds[0].results.map((r) => r.target), ['a', 'b']);
    assert.ok(driver.stopped);
    // About two intervals: on schedule, not one interval after wherever the previous round happened to open.
    const span = rounds[2].startedAt - rounds[0].startedAt;
    assert.ok(span >= 45 && span <= 100, `rounds 0 and 2 ${span} ms apart`);
    assert.equal(driver.report(5, { target: 'a', ok: true }), 'late', 'nothing is filed after stop');
  });

  it('closes a round whose targets stay silent, soon after its timeout', async () => {
    const { driver, prober } = scheduler(checkOf({ intervalMs: 1000, timeoutMs: 60, targets: ['a'] }));
    const started = Date.now();
    const rounds = collect(prober);
    await until('round 0', () => rounds.length === 1);
    await prober.stop();
    const took = Date.now() - started;
    assert.deepEqual(rounds[0].results, [{ target: 'a', ok: false, error: 'no answer within 60 ms' }]);
    assert.ok(took >= 60 && took <= 60 + ROUND_SLACK_MS + 30, `closed after ${took} ms`);
    assert.equal(driver.report(0, { target: 'a', ok: true }), 'late');
    assert.equal(driver.report(9, { target: 'a', ok: true }), 'late', 'stopped');
  });

  it('calls a report for a round that has not begun early', async () => {
    const { driver, prober } = scheduler(checkOf({ intervalMs: 1000, timeoutMs: 100, targets: ['a'] }));
    collect(prober);
    assert.equal(driver.report(3, { target: 'a', ok: true }), 'early');
    await prober.stop();
  });

  it('uses the new subject from the next round on', async () => {
    const { driver, prober } = scheduler(checkOf({ intervalMs: 20, timeoutMs: 30 }));
    collect(prober);
    await until('round 0', () => driver.opened.length >= 1);
    prober.update({ ...subject, address: '198.51.100.130', gateway: '198.51.100.129' });
    await until('another round', () => driver.opened.length >= 3);
    await prober.stop();
    assert.deepEqual(driver.opened[0].targets, ['198.51.100.1']);
    assert.equal(driver.opened.at(-1)!.subject.address, '198.51.100.130');
    assert.deepEqual(driver.opened.at(-1)!.targets, ['198.51.100.129']);
  });

  it('fails the targets at once, without probing, while the uplink has no address', async () => {
    const { driver, prober } = scheduler(checkOf({ intervalMs: 1000, timeoutMs: 500 }), { ...subject, address: '' });
    const rounds = collect(prober);
    await prober.stop();
    assert.deepEqual(driver.opened, []);
    assert.deepEqual(rounds[0].results, [{ target: '198.51.100.1', ok: false, error: 'uplink has no address' }]);
  });
});

describe('one attempt of an in-process probe', () => {
  const never: Probe = () => new Promise(() => {});
  const check = checkOf({ timeoutMs: 50 });

  it('is ok with its latency when the probe resolves', async () => {
    const result = await probeOnce(async () => void (await sleep(10)), 't', subject, check, new AbortController().signal);
    assert.equal(result.ok, true);
    assert.ok(result.latencyMs! >= 9 && result.latencyMs! < 50, `${result.latencyMs} ms`);
  });

  it('fails with the error code, or the message', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    assert.deepEqual(await probeOnce(() => Promise.reject(refused), 't', subject, check, new AbortController().signal),
      { target: 't', ok: false, error: 'ECONNREFUSED' });
    assert.deepEqual(await probeOnce(() => Promise.reject(new Error('HTTP 503')), 't', subject, check, new AbortController().signal),
      { target: 't', ok: false, error: 'HTTP 503' });
  });

  it('times out at the timeout even if the probe ignores its signal', async () => {
    const started = Date.now();
    assert.deepEqual(await probeOnce(never, 't', subject, check, new AbortController().signal), { target: 't', ok: false, error: 'timeout' });
    assert.ok(Date.now() - started < 50 + 30);
  });

  it('gives up when the prober stops', async () => {
    const stop = new AbortController();
    const pending = probeOnce(never, 't', subject, checkOf({ timeoutMs: 5000 }), stop.signal);
    stop.abort();
    assert.deepEqual(await pending, { target: 't', ok: false, error: 'stopped' });
  });
});

/** Stands in for an fping process: the test writes its lines and decides when it exits. */
class FakeFping extends EventEmitter {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  killedWith?: string;
  constructor(readonly args: string[]) {
    super();
  }
  print(...lines: string[]): void {
    for (const line of lines) this.stdout.write(`${line}\n`);
  }
  exit(code: number | null, signal: string | null = null, stderr = ''): void {
    this.stderr.end(stderr);
    this.stdout.end();
    setImmediate(() => this.emit('close', code, signal));
  }
  kill(signal = 'SIGTERM'): boolean {
    this.killedWith ??= signal;
    this.exit(null, signal);
    return true;
  }
}

describe('the fping driver', () => {
  function icmpProber(check: Check) {
    const fakes: FakeFping[] = [];
    const logs: string[] = [];
    const opened: number[] = [];
    const prober = new RoundScheduler(subject, check, (report) => {
      const driver = new FpingDriver(check, report, (m) => logs.push(m), (args) => {
        const fake = new FakeFping(args);
        fakes.push(fake);
        return fake as unknown as ChildProcess;
      });
      // Note each round as it opens, to know which round a new fping started at.
      const roundOpened = driver.roundOpened.bind(driver);
      driver.roundOpened = (seq, targets, s) => (opened.push(seq), roundOpened(seq, targets, s));
      return driver;
    });
    return { prober, fakes, logs, opened };
  }
  const reply = (target: string, n: number, ms = '0.050') => `${target} : [${n}], 64 bytes, ${ms} ms (0.05 avg, 0% loss)`;
  const timedOut = (target: string, n: number) => `${target} : [${n}], timed out (NaN avg, 100% loss)`;

  it('maps fping\'s [N] to rounds from the one it started at, across a restart', async () => {
    const check = checkOf({ intervalMs: 40, timeoutMs: 100, targets: ['192.0.2.1', '192.0.2.2'] });
    const { prober, fakes, logs, opened } = icmpProber(check);
    const rounds = collect(prober);
    assert.equal(fakes.length, 1, 'fping starts with the first round');
    assert.deepEqual(fakes[0].args.slice(-2), ['192.0.2.1', '192.0.2.2']);
    fakes[0].print(reply('192.0.2.2', 0, '1.25'), reply('192.0.2.1', 0));
    await until('round 0', () => rounds.length === 1);
    assert.deepEqual(rounds[0].results, [
      { target: '192.0.2.1', ok: true, latencyMs: 0.05 }, { target: '192.0.2.2', ok: true, latencyMs: 1.25 },
    ]);
    await until('round 1 open', () => opened.length >= 2);
    fakes[0].print(timedOut('192.0.2.1', 1), reply('192.0.2.2', 1));
    await until('round 1', () => rounds.length === 2);
    assert.deepEqual(rounds[1].results.map((r) => r.error ?? r.ok), ['timeout', true]);

    fakes[0].exit(4, null, 'fping: cannot bind source address : Cannot assign requested address\n');
    await until('a restart', () => fakes.length === 2, 3000);
    assert.match(logs[0], /^isp1: fping exited with 4: fping: cannot bind source address .*; starting it again in 250 ms$/);
    const base = opened.at(-1)!;
    fakes[1].print(reply('192.0.2.1', 0), reply('192.0.2.2', 0), reply('192.0.2.1', 1, '2.00'));
    await until(`round ${base}`, () => rounds.some((r) => r.seq === base));
    await prober.stop();

    const bySeq = new Map(rounds.map((r) => [r.seq, r]));
    assert.deepEqual(bySeq.get(base)!.results.map((r) => r.ok), [true, true], 'fping [0] is the round it started at');
    for (let seq = 2; seq < base; seq++) {
      const errors = bySeq.get(seq)?.results.map((r) => r.error);
      assert.ok(errors?.every((e) => /fping exited with 4|no answer/.test(e ?? '')), `round ${seq}: ${errors}`);
    }
    assert.deepEqual(rounds.map((r) => r.seq), rounds.map((_, i) => i), 'every round, in order');
    assert.equal(fakes[1].killedWith, 'SIGTERM', 'stop() kills fping');
  });

  it('restarts fping at once when the address changes, and when it reports rounds not yet begun', async () => {
    const check = checkOf({ intervalMs: 30, timeoutMs: 60, targets: ['192.0.2.1'] });
    const { prober, fakes, logs } = icmpProber(check);
    collect(prober);
    prober.update({ ...subject, address: '198.51.100.130' });
    await until('a restart for the new address', () => fakes.length === 2);
    assert.equal(fakes[0].killedWith, 'SIGTERM');
    assert.ok(fakes[1].args.includes('--src=198.51.100.130'));

    fakes[1].print(reply('192.0.2.1', 50)); // as after a wall-clock step forward
    await until('a restart for the clock', () => fakes.length === 3);
    assert.match(logs.at(-1)!, /ahead of their rounds/);
    await prober.stop();
  });

  it('restarts an fping that has fallen silent', async () => {
    const check = checkOf({ intervalMs: 20, timeoutMs: 40, targets: ['192.0.2.1'] });
    const { prober, fakes, logs } = icmpProber(check);
    const rounds = collect(prober);
    await until('a restart', () => fakes.length === 2, 3000);
    await prober.stop();
    assert.match(logs[0], /fping printed nothing for \d+ ms; starting it again in 250 ms/);
    assert.ok(rounds.every((r) => !r.results[0].ok));
  });

  it('fails the rounds with the reason when fping cannot be run at all', async () => {
    const check = checkOf({ intervalMs: 20, timeoutMs: 40, targets: ['192.0.2.1'] });
    const logs: string[] = [];
    const prober = new RoundScheduler(subject, check, (report) =>
      new FpingDriver(check, report, (m) => logs.push(m), (args) => spawn('/nonexistent/fping', args, { stdio: ['ignore', 'pipe', 'pipe'] })));
    const rounds = collect(prober);
    await until('3 rounds', () => rounds.length >= 3);
    await prober.stop();
    assert.match(logs[0], /^isp1: could not run fping: spawn \/nonexistent\/fping ENOENT; starting it again in 250 ms$/);
    assert.deepEqual(rounds[2].results, [{ target: '192.0.2.1', ok: false, error: 'could not run fping: spawn /nonexistent/fping ENOENT' }]);
  });

  it('starts no fping for a round without targets', async () => {
    const { prober, fakes } = icmpProber(checkOf({ intervalMs: 20, timeoutMs: 40 }));
    prober.update({ ...subject, gateway: undefined });
    const rounds: ProbeRound[] = [];
    // update before start: the very first round already has no target
    prober.start((r) => rounds.push(r));
    await until('2 rounds', () => rounds.length >= 2);
    await prober.stop();
    assert.equal(fakes.length, 0);
    assert.deepEqual(rounds[0].results, []);
  });
});
