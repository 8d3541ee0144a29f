// The probers' pure parts, and their round logic with fakes standing in for
// fping, the network and time itself: a fake clock is advanced by the test,
// so no assertion depends on how busy the machine is (the real thing is in
// test/lab/probe.test.ts):
//   node --import tsx --test test/unit/probe.test.ts

import assert from 'node:assert/strict';
import { once, EventEmitter } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Check } from '../../src/config/types.js';
import { RoundClock, type Timers } from '../../src/probe/clock.js';
import { FpingDriver, fifoParent, fpingArgs, parseFpingLine, spawnWithFifo, type FpingChild, type FpingProcess } from '../../src/probe/icmp.js';
import { checksFamily, probeTargets, type ProbeRound, type ProbeSubject } from '../../src/probe/index.js';
import { oneShotDriver, probeOnce, type Probe } from '../../src/probe/oneshot.js';
import { RoundBook } from '../../src/probe/rounds.js';
import { RoundScheduler } from '../../src/probe/scheduler.js';
import type { FileResult, ProbeDriver } from '../../src/probe/types.js';

const subject: ProbeSubject = { uplink: 'isp1', device: 'wan1', address: '198.51.100.2', gateway: '198.51.100.1' };
/** The same uplink's IPv6, its gateway link-local as a router advertisement gives it. */
const subject6: ProbeSubject = { uplink: 'isp1', device: 'wan1', family: 'ipv6', address: '2001:db8:1::2', gateway: 'fe80::1' };

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

/** Time that moves only when the test says so; counts every timer that fires. */
class FakeTimers implements Timers {
  static readonly WALL_START = 1_750_000_000_000;
  private t = 0;
  private lastId = 0;
  private queue: { at: number; id: number; fn: () => void }[] = [];
  /** When each timer fired, clock time. */
  readonly fired: number[] = [];
  now(): number {
    return this.t;
  }
  wallNow(): number {
    return FakeTimers.WALL_START + this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    this.queue.push({ at: this.t + ms, id: ++this.lastId, fn });
    return this.lastId;
  }
  clearTimeout(handle: unknown): void {
    this.queue = this.queue.filter((x) => x.id !== handle);
  }
  get pending(): number {
    return this.queue.length;
  }
  /** Moves time on by `ms`, running every timer due meanwhile at its own time, in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.queue.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.queue[0];
      if (!next || next.at > end) break;
      this.queue.shift();
      this.t = Math.max(this.t, next.at);
      this.fired.push(this.t);
      next.fn();
    }
    this.t = end;
  }
  /** Moves time on without running anything, as a busy event loop does. */
  stall(ms: number): void {
    this.t += ms;
  }
}

/** A clock on fake time. */
function fakeClock(): { timers: FakeTimers; clock: RoundClock } {
  const timers = new FakeTimers();
  return { timers, clock: new RoundClock(timers) };
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
    assert.deepEqual(fpingArgs(subject, checkOf({ intervalMs: 100, timeoutMs: 300 }), ['192.0.2.1', '192.0.2.2'], true), [
      '--loop', '--period=100', '--timeout=300', '--interval=0', '--iface=wan1', '--src=198.51.100.2', '192.0.2.1', '192.0.2.2',
    ]);
  });

  it('is a second fping for IPv6 (-6), sourced from the IPv6 address, bound to the device', () => {
    assert.deepEqual(fpingArgs(subject6, checkOf({ intervalMs: 100, timeoutMs: 300 }), ['fe80::1%wan1', '2001:db8:ffff::10'], true), [
      '--loop', '--period=100', '--timeout=300', '--interval=0', '--ipv6', '--iface=wan1', '--src=2001:db8:1::2', 'fe80::1%wan1', '2001:db8:ffff::10',
    ]);
  });

  it('reads the lines of a link-local target, given with its zone as fping 5.1 prints it back', () => {
    assert.deepEqual(parseFpingLine('fe80::1%wan2  : [3], 64 bytes, 0.054 ms (0.053 avg, 0% loss)'),
      { seq: 3, result: { target: 'fe80::1%wan2', ok: true, latencyMs: 0.054 } });
  });

  it('keeps the 1 ms gap between targets that fping requires of a user other than root', () => {
    assert.ok(fpingArgs(subject, checkOf(), ['192.0.2.1'], false).includes('--interval=1'));
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
  it('are the IPv4 ones of a mixed list: IPv6 targets judge IPv6 alone', () => {
    assert.deepEqual(probeTargets(subject, checkOf({ targets: ['2001:db8::1', '192.0.2.1'] })), ['192.0.2.1']);
    assert.deepEqual(probeTargets(subject, checkOf({ targets: ['2001:db8::1'] })), ['198.51.100.1'], 'no IPv4 target: the gateway');
    const http = checkOf({ method: 'http', targets: ['http://[2001:db8::80]/', 'http://192.0.2.80/', 'https://probe.example.net/'] });
    assert.deepEqual(probeTargets(subject, http), ['http://192.0.2.80/', 'https://probe.example.net/']);
  });
  it('of IPv6 are the IPv6 ones of a mixed list, else its gateway; a link-local one is reached on the device', () => {
    assert.deepEqual(probeTargets(subject6, checkOf({ targets: ['192.0.2.1', '2001:db8::1', 'fe80::9'] })), ['2001:db8::1', 'fe80::9%wan1']);
    assert.deepEqual(probeTargets(subject6, checkOf({ targets: ['192.0.2.1'] })), ['fe80::1%wan1'], 'no IPv6 target: the gateway');
    assert.deepEqual(probeTargets({ ...subject6, gateway: '2001:db8:1::1' }, checkOf({ method: 'tcp' })), ['2001:db8:1::1']);
    assert.deepEqual(probeTargets({ ...subject6, gateway: undefined }, checkOf()), [], 'gateway6: none, or no router advertisement yet');
  });
  it('of IPv6 over http are the bracketed URLs and those of a host name, which each family resolves in its own', () => {
    const http = checkOf({ method: 'http', targets: ['http://[2001:db8::80]/', 'http://192.0.2.80/', 'https://probe.example.net/'] });
    assert.deepEqual(probeTargets(subject6, http), ['http://[2001:db8::80]/', 'https://probe.example.net/']);
    assert.ok(checksFamily(http, 'ipv6') && checksFamily(http, 'ipv4'));
    // A gateway is no web server: a family with no URL of its own is not probed by an http check.
    const v4only = checkOf({ method: 'http', targets: ['http://192.0.2.80/'] });
    assert.equal(checksFamily(v4only, 'ipv6'), false);
    assert.equal(checksFamily(checkOf({ method: 'http', targets: ['http://[2001:db8::80]/'] }), 'ipv4'), false);
    assert.ok(checksFamily(checkOf({ targets: ['192.0.2.1'] }), 'ipv6'), 'icmp, tcp and dns fall back to the gateway');
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
  closed: number[] = [];
  collected = 0;
  stopped = false;
  report!: FileResult;
  roundOpened(seq: number, targets: string[], subject: ProbeSubject): void {
    this.opened.push({ seq, targets, subject });
  }
  roundClosed(seq: number): void {
    this.closed.push(seq);
  }
  collect(): void {
    this.collected++;
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
}

function scheduler(clock: RoundClock, check: Check, from = subject) {
  const driver = new FakeDriver();
  const prober = new RoundScheduler(from, check, (report) => ((driver.report = report), driver), clock);
  return { driver, prober };
}

const wall = (clockMs: number) => FakeTimers.WALL_START + clockMs;
const ok = (target: string, latencyMs = 1) => ({ target, ok: true, latencyMs });

describe('the round clock and scheduler', () => {
  it('opens a round at every slot of the grid, however late the wakeup, and delivers it once every target has reported', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 100, timeoutMs: 400, targets: ['a', 'b'] }));
    const rounds = collect(prober);
    timers.advance(1);
    assert.deepEqual(driver.opened.map((o) => o.seq), [0]);
    assert.equal(driver.report(0, ok('b', 2)), 'filed');
    assert.equal(rounds.length, 0, 'b alone is not the round');
    assert.equal(driver.report(0, ok('a')), 'filed');
    assert.deepEqual(rounds, [{ seq: 0, startedAt: wall(0), results: [ok('a'), ok('b', 2)] }]);
    timers.advance(100);
    assert.deepEqual(driver.opened.map((o) => o.seq), [0, 1]);
    // The next wakeup comes 30 ms late: round 2 still belongs to its slot, and round 3 is not moved.
    timers.stall(130);
    timers.advance(0);
    timers.advance(70);
    assert.deepEqual(timers.fired, [1, 101, 231, 301]);
    assert.deepEqual(driver.opened.map((o) => o.seq), [0, 1, 2, 3]);
    for (const { seq } of driver.opened.slice(1)) {
      driver.report(seq, ok('a'));
      driver.report(seq, ok('b'));
    }
    assert.deepEqual(rounds.map((r) => [r.seq, r.startedAt]), [[0, wall(0)], [1, wall(100)], [2, wall(200)], [3, wall(300)]]);
  });

  it('closes a round whose targets stay silent as soon as its timeout has passed, not before', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 1000, timeoutMs: 60, targets: ['a', 'b'] }));
    const rounds = collect(prober);
    timers.advance(1);
    driver.report(0, ok('b'));
    timers.advance(59); // 60 ms after the slot: the timeout has not passed yet
    assert.equal(rounds.length, 0);
    timers.advance(1);
    assert.deepEqual(rounds, [{ seq: 0, startedAt: wall(0), results: [{ target: 'a', ok: false, error: 'timeout' }, ok('b')] }]);
    assert.deepEqual(timers.fired, [1, 61]);
    assert.deepEqual(driver.closed, [0], 'attempts still running are told to give up');
    assert.equal(driver.report(0, ok('a')), 'late');
  });

  it('wakes once per interval for all its probers together, reading results once per round, with one timer', () => {
    const { timers, clock } = fakeClock();
    const check = checkOf({ intervalMs: 100, timeoutMs: 400, targets: ['a', 'b'] });
    const uplinks = ['isp1', 'isp2', 'isp3'].map((uplink) => scheduler(clock, check, { ...subject, uplink }));
    const delivered = uplinks.map(({ prober }) => collect(prober));
    timers.advance(250);
    // One more, started between two slots: it joins the grid at the next slot.
    const late = scheduler(clock, check, { ...subject, uplink: 'isp4' });
    uplinks.push(late);
    delivered.push(collect(late.prober));
    for (let i = 0; i < 175; i++) {
      timers.advance(10);
      assert.equal(timers.pending, 1, `one timer armed at ${timers.now()} ms`);
    }
    assert.deepEqual(timers.fired, Array.from({ length: 20 }, (_, k) => 100 * k + 1), 'one wakeup per slot');
    assert.deepEqual(uplinks.map(({ driver }) => driver.collected), [20, 20, 20, 17], 'one read per wakeup');
    assert.deepEqual(late.driver.opened.slice(0, 2).map((o) => o.seq), [0, 1]);
    // Silent targets: round k is lost at its slot + the timeout, for every uplink alike.
    for (const rounds of delivered.slice(0, 3)) {
      assert.deepEqual(rounds.map((r) => r.seq), Array.from({ length: 16 }, (_, k) => k));
      assert.equal(rounds[15].startedAt, wall(1500));
    }
    assert.deepEqual(delivered[3].map((r) => r.startedAt), Array.from({ length: 13 }, (_, k) => wall(300 + 100 * k)));
  });

  it('adds only its own slots for a prober with another interval', () => {
    const { timers, clock } = fakeClock();
    collect(scheduler(clock, checkOf({ intervalMs: 100, timeoutMs: 200, targets: ['a'] })).prober);
    collect(scheduler(clock, checkOf({ intervalMs: 250, timeoutMs: 500, targets: ['a'] })).prober);
    timers.advance(1000);
    assert.deepEqual(timers.fired, [1, 101, 201, 251, 301, 401, 501, 601, 701, 751, 801, 901]);
  });

  it('opens the rounds missed while the event loop stalled, in order, and closes those whose time is up', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 100, timeoutMs: 400, targets: ['a'] }));
    const rounds = collect(prober);
    timers.advance(1);
    timers.stall(450);
    timers.advance(0);
    assert.deepEqual(driver.opened.map((o) => o.seq), [0, 1, 2, 3, 4]);
    assert.deepEqual(rounds.map((r) => [r.seq, r.results[0].error]), [[0, 'timeout']]);
    assert.equal(driver.collected, 2);
  });

  it('calls a report for a round that has not begun early', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 1000, timeoutMs: 100, targets: ['a'] }));
    collect(prober);
    timers.advance(1);
    assert.equal(driver.report(1, ok('a')), 'early');
    assert.equal(driver.report(0, ok('a')), 'filed');
  });

  it('uses the new subject from the next round on', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 20, timeoutMs: 30 }));
    collect(prober);
    timers.advance(1);
    prober.update({ ...subject, address: '198.51.100.130', gateway: '198.51.100.129' });
    assert.equal(driver.opened.length, 1);
    timers.advance(20);
    assert.deepEqual(driver.opened.map((o) => [o.subject.address, o.targets]), [
      ['198.51.100.2', ['198.51.100.1']], ['198.51.100.130', ['198.51.100.129']],
    ]);
  });

  it('probes an IPv6 subject\'s own targets from its IPv6 address, not the IPv4 ones', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 20, timeoutMs: 30, targets: ['192.0.2.1', '2001:db8:ffff::10'] }), subject6);
    collect(prober);
    timers.advance(1);
    assert.deepEqual(driver.opened.map((o) => [o.subject.family, o.subject.address, o.targets]), [['ipv6', '2001:db8:1::2', ['2001:db8:ffff::10']]]);
  });

  it('fails the targets at once, without probing, while the uplink has no address', () => {
    const { timers, clock } = fakeClock();
    const { driver, prober } = scheduler(clock, checkOf({ intervalMs: 1000, timeoutMs: 500 }), { ...subject, address: '' });
    const rounds = collect(prober);
    timers.advance(1);
    assert.deepEqual(driver.opened, []);
    assert.deepEqual(rounds, [{ seq: 0, startedAt: wall(0), results: [{ target: '198.51.100.1', ok: false, error: 'uplink has no address' }] }]);
  });

  it('stops: attempts still running give up, nothing is filed afterwards, and the clock sleeps', async () => {
    const { timers, clock } = fakeClock();
    const one = scheduler(clock, checkOf({ intervalMs: 100, timeoutMs: 400, targets: ['a'] }));
    const two = scheduler(clock, checkOf({ intervalMs: 100, timeoutMs: 400, targets: ['a'] }));
    const rounds = collect(one.prober);
    collect(two.prober);
    timers.advance(201);
    await one.prober.stop();
    assert.ok(one.driver.stopped, 'the driver stops what it started');
    assert.deepEqual(one.driver.closed, []);
    assert.equal(one.driver.report(2, ok('a')), 'late');
    timers.advance(1000);
    assert.equal(one.driver.opened.length, 3, 'no round after stop');
    assert.deepEqual(rounds, []);
    assert.ok(two.driver.opened.length > 3, 'the other prober goes on');
    await two.prober.stop();
    assert.equal(timers.pending, 0);
  });
});

describe('in-process probes', () => {
  /** A probe that answers (or fails) when the test says, and records its signal. */
  function controlled() {
    const calls: { target: string; signal: AbortSignal; answer: () => void; fail: (err: Error) => void }[] = [];
    const probe: Probe = (target, _from, _check, signal) =>
      new Promise<void>((answer, fail) => calls.push({ target, signal, answer, fail }));
    return { probe, calls };
  }

  it('deliver a round as soon as every target has answered, latency measured on the clock', async () => {
    const { timers, clock } = fakeClock();
    const check = checkOf({ method: 'tcp', intervalMs: 100, timeoutMs: 400, targets: ['a', 'b'] });
    const { probe, calls } = controlled();
    const prober = new RoundScheduler(subject, check, (report) => oneShotDriver(probe, check, report, () => timers.now()), clock);
    const rounds = collect(prober);
    timers.advance(1);
    assert.deepEqual(calls.map((c) => c.target), ['a', 'b']);
    timers.stall(3);
    calls[1].answer();
    calls[0].fail(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    await nextTurn();
    assert.deepEqual(rounds, [{ seq: 0, startedAt: wall(0), results: [{ target: 'a', ok: false, error: 'ECONNREFUSED' }, ok('b', 3)] }]);
    await prober.stop();
  });

  it('give up when their round closes, even a probe that ignores its signal: a timeout', async () => {
    const { timers, clock } = fakeClock();
    const check = checkOf({ method: 'dns', intervalMs: 1000, timeoutMs: 50, targets: ['a'] });
    const { probe, calls } = controlled();
    const reports: string[] = [];
    const prober = new RoundScheduler(subject, check, (report) => oneShotDriver(probe, check, (seq, r) => {
      const said = report(seq, r);
      reports.push(`${r.error} ${said}`);
      return said;
    }, () => timers.now()), clock);
    const rounds = collect(prober);
    timers.advance(50);
    await nextTurn();
    assert.equal(rounds.length, 0);
    timers.advance(1);
    assert.deepEqual(rounds[0].results, [{ target: 'a', ok: false, error: 'timeout' }]);
    assert.equal(calls[0].signal.aborted, true);
    await nextTurn();
    assert.deepEqual(reports, ['timeout late'], 'the attempt settled, after its round');
    await prober.stop();
  });

  it('give up when the prober stops, and the stop waits for them', async () => {
    const { timers, clock } = fakeClock();
    const check = checkOf({ method: 'http', intervalMs: 100, timeoutMs: 400, targets: ['a'] });
    const { probe, calls } = controlled();
    const prober = new RoundScheduler(subject, check, (report) => oneShotDriver(probe, check, report, () => timers.now()), clock);
    const rounds = collect(prober);
    timers.advance(101);
    assert.equal(calls.length, 2);
    await prober.stop();
    assert.deepEqual(calls.map((c) => c.signal.reason), ['stopped', 'stopped']);
    assert.equal(rounds.length, 0, 'a stopped prober delivers nothing');
    assert.equal(timers.pending, 0);
  });

  it('fail with the error code, or the message', async () => {
    const signal = new AbortController().signal;
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    assert.deepEqual(await probeOnce(() => Promise.reject(refused), 't', subject, checkOf(), signal),
      { target: 't', ok: false, error: 'ECONNREFUSED' });
    assert.deepEqual(await probeOnce(() => Promise.reject(new Error('HTTP 503')), 't', subject, checkOf(), signal),
      { target: 't', ok: false, error: 'HTTP 503' });
  });

  it('give up when the prober stops', async () => {
    const stop = new AbortController();
    const pending = probeOnce(() => new Promise(() => {}), 't', subject, checkOf(), stop.signal);
    stop.abort('stopped');
    assert.deepEqual(await pending, { target: 't', ok: false, error: 'stopped' });
    assert.deepEqual(await probeOnce(() => Promise.resolve(), 't', subject, checkOf(), stop.signal), { target: 't', ok: false, error: 'stopped' },
      'not even started once stopped');
  });
});

/** Stands in for an fping process: the test writes its output and decides when it exits. */
class FakeFping extends EventEmitter {
  readonly stderr = new PassThrough();
  private output = '';
  /** How often the driver read the output. */
  reads = 0;
  outputClosed = false;
  /** When set, reading the output fails with it. */
  readError?: Error;
  killedWith?: string;
  private exited = false;
  constructor(readonly args: string[]) {
    super();
  }
  process(): FpingProcess {
    return {
      child: this as unknown as FpingChild,
      readOutput: () => {
        if (this.readError) throw this.readError;
        this.reads++;
        const text = this.output;
        this.output = '';
        return text;
      },
      closeOutput: () => void (this.outputClosed = true),
    };
  }
  print(...lines: string[]): void {
    this.output += lines.map((l) => `${l}\n`).join('');
  }
  printRaw(text: string): void {
    this.output += text;
  }
  exit(code: number | null, signal: string | null = null, stderr = ''): void {
    if (this.exited) return;
    this.exited = true;
    this.stderr.end(stderr);
    setImmediate(() => this.emit('close', code, signal));
  }
  kill(signal = 'SIGTERM'): boolean {
    this.killedWith ??= signal;
    this.exit(null, signal);
    return true;
  }
}

/** Lets the fake's 'close' (setImmediate) and what follows it run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await nextTurn();
}

describe('the fping driver', () => {
  function icmpProber(check: Check) {
    const { timers, clock } = fakeClock();
    const fakes: FakeFping[] = [];
    const logs: string[] = [];
    const opened: number[] = [];
    const prober = new RoundScheduler(subject, check, (report) => {
      const driver = new FpingDriver(check, report, (m) => logs.push(m), (args) => {
        const fake = new FakeFping(args);
        fakes.push(fake);
        return fake.process();
      }, timers);
      // Note each round as it opens, to know which round a new fping started at.
      const roundOpened = driver.roundOpened.bind(driver);
      driver.roundOpened = (seq, targets, s) => (opened.push(seq), roundOpened(seq, targets, s));
      return driver;
    }, clock);
    return { prober, fakes, logs, opened, timers };
  }
  const reply = (target: string, n: number, ms = '0.050') => `${target} : [${n}], 64 bytes, ${ms} ms (0.05 avg, 0% loss)`;
  const timedOut = (target: string, n: number) => `${target} : [${n}], timed out (NaN avg, 100% loss)`;

  it('reads fping\'s output at the round clock\'s wakeups, once each, not line by line', async () => {
    const check = checkOf({ intervalMs: 100, timeoutMs: 400, targets: ['192.0.2.1', '192.0.2.2'] });
    const { prober, fakes, timers } = icmpProber(check);
    const rounds = collect(prober);
    timers.advance(1);
    assert.equal(fakes.length, 1, 'fping starts with the first round');
    assert.deepEqual(fakes[0].args.slice(-2), ['192.0.2.1', '192.0.2.2']);
    const reads = fakes[0].reads;
    fakes[0].print(reply('192.0.2.2', 0, '1.25'), reply('192.0.2.1', 0));
    fakes[0].printRaw(reply('192.0.2.1', 1).slice(0, 20)); // half a line: the rest comes later
    timers.advance(99);
    assert.equal(rounds.length, 0, 'printed, but not read before the next wakeup');
    timers.advance(1);
    assert.equal(fakes[0].reads, reads + 1);
    assert.deepEqual(rounds, [{ seq: 0, startedAt: wall(0), results: [
      { target: '192.0.2.1', ok: true, latencyMs: 0.05 }, { target: '192.0.2.2', ok: true, latencyMs: 1.25 },
    ] }]);
    fakes[0].printRaw(reply('192.0.2.1', 1).slice(20) + '\n');
    fakes[0].print(timedOut('192.0.2.2', 1));
    timers.advance(100);
    assert.equal(fakes[0].reads, reads + 2);
    assert.deepEqual(rounds[1].results, [{ target: '192.0.2.1', ok: true, latencyMs: 0.05 }, { target: '192.0.2.2', ok: false, error: 'timeout' }],
      'the line read in two halves');
    await prober.stop();
    await settle();
    assert.equal(fakes[0].killedWith, 'SIGTERM', 'stop() kills fping');
    assert.ok(fakes[0].outputClosed);
  });

  it('maps fping\'s [N] to rounds from the one it started at, across a restart', async () => {
    const check = checkOf({ intervalMs: 40, timeoutMs: 120, targets: ['192.0.2.1', '192.0.2.2'] });
    const { prober, fakes, logs, opened, timers } = icmpProber(check);
    const rounds = collect(prober);
    timers.advance(1);
    fakes[0].print(reply('192.0.2.1', 0), reply('192.0.2.2', 0));
    timers.advance(40);
    assert.deepEqual(rounds.map((r) => r.seq), [0]);

    fakes[0].exit(4, null, 'fping: cannot bind source address : Cannot assign requested address\n');
    await settle();
    assert.match(logs[0], /^isp1: fping exited with 4: fping: cannot bind source address .*; starting it again in 250 ms$/);
    assert.deepEqual(rounds.map((r) => r.seq), [0, 1], 'round 1, still open, failed with the reason at once');
    // Started again at the first round at least 250 ms after it exited (at 41 ms): the one due at 320.
    timers.advance(279);
    assert.equal(fakes.length, 1);
    timers.advance(1);
    assert.equal(fakes.length, 2);
    const base = opened.at(-1)!;
    assert.equal(base, 8);
    fakes[1].print(reply('192.0.2.1', 0), reply('192.0.2.2', 0), reply('192.0.2.1', 1, '2.00'));
    timers.advance(40);
    await prober.stop();

    const bySeq = new Map(rounds.map((r) => [r.seq, r]));
    assert.deepEqual(bySeq.get(base)!.results.map((r) => r.ok), [true, true], 'fping [0] is the round it started at');
    for (let seq = 1; seq < base; seq++) {
      assert.deepEqual(bySeq.get(seq)?.results.map((r) => r.error), Array(2).fill(logs[0].replace(/^isp1: (.*); starting.*$/, '$1')), `round ${seq}`);
    }
    assert.deepEqual(rounds.map((r) => r.seq), rounds.map((_, i) => i), 'every round, in order');
  });

  it('restarts fping at once when the address changes, and when it reports rounds not yet begun', async () => {
    const check = checkOf({ intervalMs: 30, timeoutMs: 60, targets: ['192.0.2.1'] });
    const { prober, fakes, logs, timers } = icmpProber(check);
    collect(prober);
    timers.advance(1);
    prober.update({ ...subject, address: '198.51.100.130' });
    timers.advance(30);
    assert.equal(fakes.length, 2, 'restarted with the next round');
    assert.equal(fakes[0].killedWith, 'SIGTERM');
    assert.ok(fakes[1].args.includes('--src=198.51.100.130'));

    fakes[1].print(reply('192.0.2.1', 50)); // as after a wall-clock step forward
    timers.advance(30);
    assert.equal(fakes.length, 2, 'read at this wakeup: noted, restarted with the next round');
    timers.advance(30);
    assert.equal(fakes.length, 3);
    assert.match(logs.at(-1)!, /ahead of their rounds/);
    await prober.stop();
  });

  it('restarts an fping that has fallen silent for its timeout and two intervals', async () => {
    const check = checkOf({ intervalMs: 20, timeoutMs: 40, targets: ['192.0.2.1'] });
    const { prober, fakes, logs, timers } = icmpProber(check);
    const rounds = collect(prober);
    timers.advance(121); // silent for 120 ms: within 40 + 2 * 20 + 50
    assert.equal(fakes.length, 1);
    timers.advance(20);
    assert.deepEqual(logs, ['isp1: fping printed nothing for 140 ms; starting it again in 250 ms']);
    timers.advance(259); // the round at 381 is too soon
    assert.equal(fakes.length, 1);
    timers.advance(1);
    assert.equal(fakes.length, 2, 'started again with the first round 250 ms later');
    await prober.stop();
    assert.ok(rounds.length > 10 && rounds.every((r) => !r.results[0].ok));
  });

  it('says so when its output cannot be read, and restarts it once it counts as silent', async () => {
    const check = checkOf({ intervalMs: 20, timeoutMs: 40, targets: ['192.0.2.1'] });
    const { prober, fakes, logs, timers } = icmpProber(check);
    collect(prober);
    timers.advance(1);
    fakes[0].readError = Object.assign(new Error('EBADF: bad file descriptor, read'), { code: 'EBADF' });
    timers.advance(20);
    assert.deepEqual(logs, ["isp1: reading fping's output failed: EBADF: bad file descriptor, read"]);
    timers.advance(140);
    assert.match(logs[1], /fping printed nothing for \d+ ms/);
    await prober.stop();
  });

  it('fails the rounds with the reason when fping cannot be run at all', async () => {
    const check = checkOf({ intervalMs: 20, timeoutMs: 40, targets: ['192.0.2.1'] });
    const { timers, clock } = fakeClock();
    const logs: string[] = [];
    const prober = new RoundScheduler(subject, check, (report) =>
      new FpingDriver(check, report, (m) => logs.push(m), (args) => spawnWithFifo('/nonexistent/fping', args), timers), clock);
    const rounds = collect(prober);
    timers.advance(1);
    await settle();
    timers.advance(20);
    await prober.stop();
    assert.deepEqual(logs, ['isp1: could not run fping: spawn /nonexistent/fping ENOENT; starting it again in 250 ms']);
    const error = 'could not run fping: spawn /nonexistent/fping ENOENT';
    assert.deepEqual(rounds.map((r) => r.results), [[{ target: '192.0.2.1', ok: false, error }], [{ target: '192.0.2.1', ok: false, error }]]);
  });

  it('starts no fping for a round without targets', async () => {
    const { prober, fakes, timers } = icmpProber(checkOf({ intervalMs: 20, timeoutMs: 40 }));
    prober.update({ ...subject, gateway: undefined });
    const rounds: ProbeRound[] = [];
    // update before start: the very first round already has no target
    prober.start((r) => rounds.push(r));
    timers.advance(21);
    await prober.stop();
    assert.equal(fakes.length, 0);
    assert.deepEqual(rounds.map((r) => r.results), [[], []]);
  });
});

describe('a child with its output on a FIFO', () => {
  it('leaves its output in the pipe until it is read, and nothing on disk', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'probe-test-'));
    try {
      const proc = spawnWithFifo('printf', ['192.0.2.1 : [0], 64 bytes, 0.1 ms (0.1 avg, 0%% loss)\nsecond line\n'], dir);
      assert.deepEqual(readdirSync(dir), [], 'the FIFO and its directory are gone once both ends are open');
      await once(proc.child as unknown as EventEmitter, 'close');
      assert.equal(proc.readOutput(), '192.0.2.1 : [0], 64 bytes, 0.1 ms (0.1 avg, 0% loss)\nsecond line\n');
      assert.equal(proc.readOutput(), '', 'all of it was read at once');
      proc.closeOutput();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is made on a tmpfs: the RuntimeDirectory, else /dev/shm, else the temporary directory', () => {
    const TMPFS = 0x01021994;
    const EXT4 = 0xef53;
    const types = (m: Record<string, number>) => (path: string) => m[path];
    assert.equal(fifoParent({ RUNTIME_DIRECTORY: '/run/uplinkd' }, types({ '/run/uplinkd': TMPFS, '/dev/shm': TMPFS })), '/run/uplinkd');
    assert.equal(fifoParent({ RUNTIME_DIRECTORY: '/run/uplinkd' }, types({ '/run/uplinkd': EXT4, '/dev/shm': TMPFS })), '/dev/shm');
    assert.equal(fifoParent({ RUNTIME_DIRECTORY: '/run/a:/run/b' }, types({ '/run/b': TMPFS })), '/run/b', 'several directories');
    assert.equal(fifoParent({}, types({ '/dev/shm': EXT4 })), tmpdir());
    assert.equal(fifoParent({}, types({})), tmpdir(), 'no /dev/shm at all');
  });
});
