// The daemon's health per (uplink, family) without a kernel: probers are
// fakes whose rounds the test delivers, the kernel a runner that records
// every command and answers listings as an empty kernel (as in
// converge.test.ts), the kernel facts given directly (what kernel/facts.ts
// would read). What only a kernel shows (fping -6, conntrack) is in the lab
// tests.
//   node --import tsx --test test/unit/daemon.test.ts

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import pino from 'pino';
import { formatStatus, type Status } from '../../src/api/status.js';
import { parseConfig } from '../../src/config/load.js';
import type { Check } from '../../src/config/types.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { hookEnvironment } from '../../src/daemon/hooks.js';
import type { Runner } from '../../src/kernel/runner.js';
import type { KernelFacts } from '../../src/plan/state.js';
import { probeTargets, type ProbeRound, type Prober, type ProbeSubject } from '../../src/probe/index.js';
import { jsonAnswers } from './fake-kernel.js';

/** Two dual-stack uplinks: isp1 with a static IPv6 gateway, isp2 with one from a router advertisement (link-local). */
const CHECK = 'check: { targets: [192.0.2.1, 2001:db8:ffff::10], down_after: 2, up_after: 2 }';
const CONFIG = `
lan: [lan0]
sticky: 10m
api: { socket: /nonexistent/uplinkd.sock, http: "off" }
uplinks:
  isp1: { interface: wan1, gateway: 198.51.100.1, gateway6: 2001:db8:100::1, ${CHECK} }
  isp2: { interface: wan2, ${CHECK} }
`;

const goldenFacts = JSON.parse(readFileSync(new URL('../golden/facts-dual-stack.json', import.meta.url), 'utf8')) as KernelFacts;

/** facts-dual-stack.json's lan0, wan1 and wan2; `change` edits a copy. */
function factsOf(change: (f: KernelFacts) => void = () => {}): KernelFacts {
  const facts = structuredClone(goldenFacts);
  facts.interfaces = facts.interfaces.filter((i) => ['lo', 'lan0', 'wan1', 'wan2'].includes(i.name));
  change(facts);
  return facts;
}

class FakeProber implements Prober {
  updates: ProbeSubject[] = [];
  stopped = false;
  private onRound?: (round: ProbeRound) => void;
  private seq = 0;
  constructor(public subject: ProbeSubject, readonly check: Check) {}
  start(onRound: (round: ProbeRound) => void): void {
    this.onRound = onRound;
  }
  update(subject: ProbeSubject): void {
    this.updates.push(subject);
    this.subject = subject;
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
  /** One round: every target of the subject's family answers (ok) or none does. */
  round(ok: boolean, startedAt = Date.now()): void {
    const results = probeTargets(this.subject, this.check).map((target) => (ok ? { target, ok, latencyMs: 2 } : { target, ok, error: 'timeout' }));
    this.onRound!({ seq: this.seq++, startedAt, results });
  }
}

/**
 * An uplink's conntrack entries as `conntrack -L -f F -m MARK/MASK` lists
 * them: one TCP, UDP and ICMP connection of that family.
 */
function markedEntries(args: string[]): string {
  const mark = Number(args[args.indexOf('-m') + 1].split('/')[0]);
  const [src, dst, icmp] = args[args.indexOf('-f') + 1] === 'ipv6' ? ['fd00::2', '2001:db8:ffff::10', 'icmpv6   58'] : ['198.18.0.2', '192.0.2.10', 'icmp     1'];
  return [
    `tcp      6 431999 ESTABLISHED src=${src} dst=${dst} sport=40000 dport=80 mark=${mark} use=1`,
    `udp      17 29 src=${src} dst=${dst} sport=40001 dport=53 mark=${mark} use=1`,
    `${icmp} 29 src=${src} dst=${dst} type=8 code=0 id=7 mark=${mark} use=1`,
  ].join('\n') + '\n';
}

/** Records every command; listings answer empty (an uplink's conntrack entries: markedEntries), conntrack -D as conntrack-tools 1.4.7 does when nothing matched. */
function recordingRunner(): { runner: Runner; lines: string[] } {
  const lines: string[] = [];
  const settings = new Map<string, string>();
  const runner: Runner = {
    async run(command, args, input) {
      lines.push([command, ...args].join(' '));
      if (command === 'nft' && args[0] === '-j') return { code: 0, stdout: '{"nftables": [{"table": {"family": "inet", "name": "uplinkd"}}]}', stderr: '' };
      if (command === 'conntrack' && args[0] === '-L' && args.includes('-m')) return { code: 0, stdout: markedEntries(args), stderr: '' };
      if (command === 'conntrack' && args[0] === '-D') return { code: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n' };
      return { code: 0, stdout: args.includes('-j') ? jsonAnswers(args, input) : '', stderr: '' };
    },
    // Never this machine's /proc/sys.
    sysctl: { read: (path) => settings.get(path), write: (path, value) => void settings.set(path, value) },
  };
  return { runner, lines };
}

/** A daemon brought up as `start` does, without its watchers and servers. */
async function started(facts = factsOf(), config = CONFIG) {
  const parsed = parseConfig(config, 'test.yaml');
  assert.ok(parsed.ok, JSON.stringify(!parsed.ok && parsed.errors));
  const { runner, lines } = recordingRunner();
  const probers: FakeProber[] = [];
  const daemon = new Daemon('test.yaml', parsed.config, pino({ level: 'silent' }), runner, (subject, check) => {
    const p = new FakeProber(subject, check);
    probers.push(p);
    return p;
  });
  // The private parts start() drives; the tests give the facts themselves.
  daemon['facts'] = facts;
  daemon['tracking'].track(parsed.config);
  daemon['tracking'].noteCarrierAndAddresses(facts);
  await daemon['converging'].converge('start');
  assert.equal(daemon['converging'].kernelError, undefined);
  daemon['tracking'].syncProbers(facts, daemon['converging'].installed?.state.uplinks);
  const prober = (uplink: string, family: 'ipv4' | 'ipv6') =>
    probers.filter((p) => p.subject.uplink === uplink && (p.subject.family ?? 'ipv4') === family && !p.stopped).at(-1)!;
  const settle = () => daemon['converging'].idle();
  const uplink = async (name: string) => (await daemon.status()).uplinks.find((u) => u.name === name)!;
  const planned = (name: string) => daemon['converging'].installed!.state.uplinks.find((u) => u.name === name)!;
  return { daemon, probers, prober, lines, settle, uplink, planned };
}

describe('health per uplink and family', () => {
  it('runs one prober per family, each from its own address to its own targets (IPv6: the link-local gateway, with its zone)', async () => {
    const { probers } = await started(factsOf(), CONFIG.replaceAll('targets: [192.0.2.1, 2001:db8:ffff::10], ', ''));
    assert.deepEqual(probers.map((p) => [p.subject.uplink, p.subject.family ?? 'ipv4', p.subject.address, probeTargets(p.subject, p.check)]), [
      ['isp1', 'ipv4', '198.51.100.2', ['198.51.100.1']],
      // The stable address, not the temporary one listed first: the plan routes from it (ip -6 rule from).
      ['isp1', 'ipv6', '2001:db8:100::2', ['2001:db8:100::1']],
      ['isp2', 'ipv4', '198.51.100.18', ['198.51.100.17']],
      ['isp2', 'ipv6', '2001:db8:200::2', ['fe80::2:1%wan2']],
    ]);
  });

  it('takes only IPv6 down when IPv6 rounds fail: IPv4 keeps carrying, the plan gets both verdicts, only IPv6 is flushed', async () => {
    const { prober, lines, settle, uplink, planned, daemon } = await started();
    for (const u of ['isp1', 'isp2']) for (const f of ['ipv4', 'ipv6'] as const) prober(u, f).round(true);
    await settle();
    lines.length = 0;
    prober('isp1', 'ipv6').round(false);
    prober('isp1', 'ipv6').round(false);
    prober('isp1', 'ipv4').round(true);
    await settle();
    const isp1 = await uplink('isp1');
    assert.equal(isp1.state, 'up', 'up while one family is up');
    assert.equal(isp1.families?.ipv4.state, 'up');
    assert.equal(isp1.families?.ipv6.state, 'down');
    assert.deepEqual([planned('isp1').health, planned('isp1').ipv6?.health], ['up', 'down']);
    assert.equal(planned('isp1').ipv6?.share, 0);
    assert.ok(planned('isp1').share > 0);
    assert.ok(lines.includes('nft flush set inet uplinkd sticky6_isp1'), lines.join('\n'));
    assert.ok(!lines.includes('nft flush set inet uplinkd sticky_isp1'), 'IPv4 sticky sources stay');
    // Its unanswered TCP, UDP and ICMPv6 entries are deleted; its other TCP ones stay, to be reset by the plan's ended6 set.
    const marked = `-m ${planned('isp1').mark}/${0xff00}`;
    assert.deepEqual(lines.filter((l) => l.startsWith('conntrack -D')),
      [`conntrack -D -f ipv6 ${marked} -p tcp --state SYN_SENT`, `conntrack -D -f ipv6 ${marked} -p udp`, `conntrack -D -f ipv6 ${marked} -p icmpv6`]);
    const [event] = (await daemon.status()).events;
    assert.deepEqual([event.uplink, event.family, event.event], ['isp1', 'ipv6', 'down']);
    assert.match(event.reason, /2\/2 rounds bad: 0\/1 targets answered, quorum 1 \(targets 2001:db8:ffff::10\)/);
  });

  it('takes only IPv4 down when IPv4 rounds fail, and IPv6 carries on', async () => {
    const { prober, lines, settle, uplink, planned } = await started();
    prober('isp2', 'ipv4').round(false);
    prober('isp2', 'ipv4').round(false);
    await settle();
    const flushes = [...lines];
    assert.equal((await uplink('isp2')).state, 'pending', 'none up, IPv6 still pending');
    lines.length = 0;
    prober('isp2', 'ipv6').round(true);
    await settle();
    assert.equal(lines.length, 0, 'pending to up changes nothing in the kernel');
    const isp2 = await uplink('isp2');
    assert.deepEqual([isp2.state, isp2.families?.ipv4.state, isp2.families?.ipv6.state], ['up', 'down', 'up']);
    assert.deepEqual([planned('isp2').health, planned('isp2').ipv6?.health], ['down', 'up']);
    assert.ok(flushes.includes('nft flush set inet uplinkd sticky_isp2') && !flushes.includes('nft flush set inet uplinkd sticky6_isp2'), flushes.join('\n'));
    const marked = `-m ${planned('isp2').mark}/${0xff00}`;
    assert.deepEqual(flushes.filter((l) => l.startsWith('conntrack -D')),
      [`conntrack -D -f ipv4 ${marked} -p tcp --state SYN_SENT`, `conntrack -D -f ipv4 ${marked} -p udp`, `conntrack -D -f ipv4 ${marked} -p icmp`]);
  });

  it("a router pair: takes isp1's shared address over without moving its probes, NATs to it, and says so", async () => {
    const pair = CONFIG.replace('isp1: { interface: wan1,', 'isp1: { interface: wan1, address: 198.51.100.10,');
    const { daemon, lines, settle, uplink, prober } = await started(factsOf(), pair);
    const probeSource = prober('isp1', 'ipv4').subject.address;
    assert.deepEqual([(await uplink('isp1')).address, (await uplink('isp1')).holds_address], ['198.51.100.10', false]);
    lines.length = 0;
    // keepalived adds it, first in the interface's list.
    await daemon['followFacts'](factsOf((f) => f.interfaces.find((i) => i.name === 'wan1')!.addresses.unshift({ address: '198.51.100.10', prefixLen: 32 })), 'address');
    await settle();
    assert.equal((await uplink('isp1')).holds_address, true);
    const snat = () => daemon['converging'].installed!.state.nft.sets.find((x) => x.name === 'snat_address')!.elements;
    assert.ok(lines.includes('nft -f -'), 'the kernel is updated');
    assert.deepEqual(snat(), ['"wan1" : 198.51.100.10', '"wan2" : 198.51.100.18'], 'SNAT to the shared address');
    assert.equal(prober('isp1', 'ipv4').subject.address, probeSource, 'probes keep the own address');
    const [event] = (await daemon.status()).events;
    assert.deepEqual([event.uplink, event.event, event.reason], ['isp1', 'address', 'wan1 took address 198.51.100.10 (master for isp1)']);
    await daemon['followFacts'](factsOf(), 'address');
    await settle();
    assert.equal((await uplink('isp1')).holds_address, false);
    assert.deepEqual(snat()[0], '"wan1" : 198.51.100.2', "as backup, NAT to the interface's own address");
    assert.equal((await daemon.status()).events[0].reason, 'wan1 gave up address 198.51.100.10 (backup for isp1)');
  });

  it('takes both families down on carrier loss, and the uplink with them', async () => {
    const { daemon, settle, uplink, lines } = await started();
    lines.length = 0;
    await daemon['followFacts'](factsOf((f) => (f.interfaces.find((i) => i.name === 'wan1')!.carrier = false)), 'link');
    await settle();
    const isp1 = await uplink('isp1');
    assert.deepEqual([isp1.state, isp1.families?.ipv4.state, isp1.families?.ipv6.state], ['down', 'down', 'down']);
    const events = (await daemon.status()).events.filter((e) => e.uplink === 'isp1');
    assert.deepEqual(events.map((e) => [e.family, e.event, e.reason]), [
      ['ipv6', 'down', 'carrier lost on wan1'], ['ipv4', 'down', 'carrier lost on wan1'],
    ]);
    assert.deepEqual(lines.filter((l) => l.startsWith('conntrack -D')).map((l) => `${l.split(' ')[3]} ${l.split(' ').at(-1)}`),
      ['ipv4 SYN_SENT', 'ipv4 udp', 'ipv4 icmp', 'ipv6 SYN_SENT', 'ipv6 udp', 'ipv6 icmpv6']);
  });

  it('takes only IPv6 down when the plan finds IPv6 unusable (its router advertisement gone)', async () => {
    const { daemon, settle, uplink } = await started();
    await daemon['followFacts'](factsOf((f) => (f.mainDefaultRoutes6 = f.mainDefaultRoutes6!.filter((r) => r.dev !== 'wan2'))), 'route');
    await settle();
    const isp2 = await uplink('isp2');
    assert.deepEqual([isp2.state, isp2.families?.ipv4.state, isp2.families?.ipv6.state], ['pending', 'pending', 'down']);
    const [event] = (await daemon.status()).events;
    assert.deepEqual([event.uplink, event.family, event.event], ['isp2', 'ipv6', 'down']);
    assert.equal(event.reason, 'unusable: no IPv6 default route on wan2 in the main table (gateway6: auto)');
  });

  it('follows a new IPv6 address: an address event of IPv6, the prober moved, rounds from the old address ignored', async () => {
    const { daemon, settle, prober, uplink } = await started();
    const v6 = prober('isp1', 'ipv6');
    const sentBefore = Date.now() - 1;
    await daemon['followFacts'](factsOf((f) => {
      f.interfaces.find((i) => i.name === 'wan1')!.addresses6 = [{ address: '2001:db8:100::99', prefixLen: 64 }];
    }), 'address');
    await settle();
    assert.equal(prober('isp1', 'ipv6'), v6, 'the same prober, told the new address');
    assert.deepEqual(v6.updates.map((s) => s.address), ['2001:db8:100::99']);
    assert.equal(prober('isp1', 'ipv4').updates.length, 0, 'IPv4 is not disturbed');
    const [event] = (await daemon.status()).events;
    assert.deepEqual([event.uplink, event.family, event.event, event.reason],
      ['isp1', 'ipv6', 'address', 'wan1 IPv6 address 2001:db8:100::2 -> 2001:db8:100::99']);
    // Two failed rounds, sent before the change: they say nothing about the new address.
    v6.round(false, sentBefore);
    v6.round(false, sentBefore);
    await settle();
    assert.equal((await uplink('isp1')).families?.ipv6.state, 'pending');
    assert.equal((await uplink('isp1')).families?.ipv6.address, '2001:db8:100::99');
  });

  it('with check: false, both families are up', async () => {
    const { uplink, probers } = await started(factsOf(), CONFIG.replace(`isp2: { interface: wan2, ${CHECK} }`, 'isp2: { interface: wan2, check: false }'));
    const isp2 = await uplink('isp2');
    assert.deepEqual([isp2.state, isp2.families?.ipv4.state, isp2.families?.ipv6.state], ['up', 'up', 'up']);
    assert.ok(!probers.some((p) => p.subject.uplink === 'isp2'));
  });

  it('keeps an IPv4-only router as it was: no families, no family on events, no IPv6 prober', async () => {
    const facts = factsOf((f) => {
      for (const i of f.interfaces) delete i.addresses6;
      delete f.mainDefaultRoutes6;
    });
    const { daemon, prober, probers, settle, uplink } = await started(facts);
    assert.deepEqual(probers.map((p) => p.subject.family ?? 'ipv4'), ['ipv4', 'ipv4']);
    await daemon['followFacts'](factsOf((f) => {
      for (const i of f.interfaces) delete i.addresses6;
      delete f.mainDefaultRoutes6;
      f.interfaces.find((i) => i.name === 'wan1')!.carrier = false;
    }), 'link');
    prober('isp2', 'ipv4').round(true);
    await settle();
    const isp1 = await uplink('isp1');
    assert.deepEqual(Object.keys(isp1), ['name', 'interface', 'state', 'since', 'address', 'holds_address', 'gateway', 'tier', 'weight', 'share', 'latency_ms', 'loss',
      'rx_bps', 'tx_bps', 'connections']);
    assert.equal(isp1.state, 'down');
    const events = (await daemon.status()).events;
    assert.deepEqual(events.map((e) => [e.uplink, e.event]), [['isp2', 'up'], ['isp1', 'down']], 'one event per transition, as before');
    for (const e of events) assert.deepEqual(Object.keys(e), ['at', 'uplink', 'event', 'reason']);
  });
});

describe('status, hooks and metrics per family', () => {
  it('shows each family in the status JSON, IPv4 at the top level', async () => {
    const { prober, settle, uplink } = await started();
    prober('isp2', 'ipv4').round(true);
    await settle();
    const isp2 = await uplink('isp2');
    assert.deepEqual(Object.keys(isp2.families!), ['ipv4', 'ipv6']);
    for (const f of [isp2.families!.ipv4, isp2.families!.ipv6]) {
      assert.deepEqual(Object.keys(f), ['state', 'since', 'address', 'gateway', 'latency_ms', 'loss']);
    }
    assert.deepEqual(isp2.families, {
      ipv4: { state: 'up', since: isp2.families!.ipv4.since, address: '198.51.100.18', gateway: '198.51.100.17', latency_ms: 2, loss: 0 },
      ipv6: { state: 'pending', since: isp2.families!.ipv6.since, address: '2001:db8:200::2', gateway: 'fe80::2:1', latency_ms: null, loss: 0 },
    });
    assert.deepEqual([isp2.state, isp2.address, isp2.gateway, isp2.latency_ms], ['up', '198.51.100.18', '198.51.100.17', 2]);
  });

  it('labels the health metrics with the family on a dual-stack uplink', async () => {
    const { daemon, prober, settle } = await started();
    prober('isp1', 'ipv6').round(false);
    prober('isp1', 'ipv6').round(false);
    prober('isp1', 'ipv4').round(true);
    await settle();
    const text = await daemon['metrics'].registry.metrics();
    for (const line of [
      'uplinkd_uplink_up{uplink="isp1",interface="wan1",family="ipv4"} 1',
      'uplinkd_uplink_up{uplink="isp1",interface="wan1",family="ipv6"} 0',
      'uplinkd_uplink_up{uplink="isp2",interface="wan2",family="ipv6"} -1',
      'uplinkd_probe_loss_ratio{uplink="isp1",interface="wan1",family="ipv6"} 1',
      'uplinkd_probe_latency_seconds{uplink="isp1",interface="wan1",family="ipv4"} 0.002',
      'uplinkd_uplink_transitions_total{uplink="isp1",interface="wan1",family="ipv6",to="down"} 1',
      'uplinkd_uplink_transitions_total{uplink="isp1",interface="wan1",family="ipv4",to="up"} 1',
    ]) assert.ok(text.includes(line), `missing ${line}\n${text}`);
    assert.doesNotMatch(text, /uplinkd_uplink_up\{uplink="isp1",interface="wan1"\}/);
  });

  it('keeps the metrics of an IPv4-only uplink unlabelled', async () => {
    const { daemon, prober, settle } = await started(factsOf((f) => {
      for (const i of f.interfaces) delete i.addresses6;
    }));
    prober('isp1', 'ipv4').round(true);
    await settle();
    const text = await daemon['metrics'].registry.metrics();
    assert.match(text, /^uplinkd_uplink_up\{uplink="isp1",interface="wan1"\} 1$/m);
    assert.match(text, /^uplinkd_uplink_transitions_total\{uplink="isp1",interface="wan1",to="up"\} 1$/m);
    assert.doesNotMatch(text, /family=/);
  });

  it('counts every entry of the event log in uplinkd_events_total, by uplink and event', async () => {
    const { daemon, prober, settle } = await started();
    prober('isp1', 'ipv6').round(false);
    prober('isp1', 'ipv6').round(false);
    prober('isp1', 'ipv4').round(true);
    await settle();
    const { events } = await daemon.status();
    const expected = new Map<string, number>();
    for (const e of events) {
      const series = `uplinkd_events_total{${e.uplink ? `uplink="${e.uplink}",` : ''}event="${e.event}"}`;
      expected.set(series, (expected.get(series) ?? 0) + 1);
    }
    assert.ok(expected.has('uplinkd_events_total{uplink="isp1",event="down"}'), JSON.stringify(events));
    const text = await daemon['metrics'].registry.metrics();
    const counted = new Map([...text.matchAll(/^(uplinkd_events_total\{[^}]*\}) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    assert.deepEqual(counted, expected);
  });

  it('tells the hooks the family (empty for events of no family)', () => {
    const base = { uplink: 'isp2', interface: 'wan2', reason: 'x' };
    assert.equal(hookEnvironment({ ...base, event: 'down', family: 'ipv6', address: '2001:db8:200::2' }).UPLINKD_FAMILY, 'ipv6');
    assert.equal(hookEnvironment({ ...base, event: 'up', family: 'ipv4' }).UPLINKD_FAMILY, 'ipv4');
    assert.equal(hookEnvironment({ event: 'reload', reason: 'x' }).UPLINKD_FAMILY, '');
  });

  it('prints an ipv6 row under a dual-stack uplink, and the IPv4-only table as before', () => {
    const family = (state: 'up' | 'down' | 'pending', address: string, gateway: string, latency: number | null, loss: number) =>
      ({ state, since: '2026-12-02T04:50:01.000Z', address, gateway, latency_ms: latency, loss });
    const common = { tier: 1, weight: 1, share: 0.5, rx_bps: 1500, tx_bps: 2_000_000, connections: 7, since: '2026-12-02T04:50:01.000Z' };
    const status: Status = {
      uplinks: [
        { name: 'isp1', interface: 'wan1', state: 'up', address: '198.51.100.2', holds_address: true, gateway: '198.51.100.1', latency_ms: 1.25, loss: 0, ...common,
          families: { ipv4: family('up', '198.51.100.2', '198.51.100.1', 1.25, 0), ipv6: family('down', '2001:db8:100::2', 'fe80::1', null, 1) } },
        { name: 'isp2', interface: 'wan2', state: 'up', address: '198.51.100.18', holds_address: true, gateway: '198.51.100.17', latency_ms: 3, loss: 0.05, ...common },
      ],
      events: [{ at: '2026-12-02T04:52:00.000Z', uplink: 'isp1', family: 'ipv6', event: 'down', reason: '3/3 rounds bad' }],
      self_healing: { restores: 0, by_cause: {}, last: null, backoff_ms: 0 },
    };
    assert.equal(formatStatus(status), [
      'UPLINK  IFACE  STATE  SINCE     ADDRESS          GATEWAY        TIER  SHARE  LATENCY  LOSS  RX    TX    CONNS',
      'isp1    wan1   up     04:50:01  198.51.100.2     198.51.100.1   1     50.0%  1.3ms    0%    1.5k  2.0M  7',
      '  ipv6         down   04:50:01  2001:db8:100::2  fe80::1                     -        100%',
      'isp2    wan2   up     04:50:01  198.51.100.18    198.51.100.17  1     50.0%  3.0ms    5%    1.5k  2.0M  7',
      '',
      'recent events:',
      '  2026-12-02T04:52:00.000Z  isp1 ipv6 down: 3/3 rounds bad',
      '',
    ].join('\n'));
    const v4only: Status = { ...status, uplinks: [status.uplinks[1]], events: [] };
    assert.equal(formatStatus(v4only), [
      'UPLINK  IFACE  STATE  SINCE     ADDRESS        GATEWAY        TIER  SHARE  LATENCY  LOSS  RX    TX    CONNS',
      'isp2    wan2   up     04:50:01  198.51.100.18  198.51.100.17  1     50.0%  3.0ms    5%    1.5k  2.0M  7',
      '',
    ].join('\n'));
  });
});
