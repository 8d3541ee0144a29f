import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  formatDiagnostic,
  loadConfigFile,
  parseConfig,
  resolveConfigPath,
  type ConfigFacts,
  type ConfigResult,
} from '../../src/config/load.js';
import { parseGateway6, parseIfname, parseIpAddress, parseIpv6Prefix, parsePortRange, parsePrefix } from '../../src/config/net.js';
import { closest } from '../../src/config/suggest.js';
import type { Config } from '../../src/config/types.js';
import { parseDuration, parsePercent, parseRate } from '../../src/config/units.js';
import { DEFAULT_OWNERSHIP, MAX_UPLINKS } from '../../src/ownership.js';

/** YAML from one string per line, so that tests can count lines and columns by eye. */
const yaml = (...lines: string[]) => lines.join('\n') + '\n';

const TWO_UPLINKS = ['uplinks:', '  isp1: {interface: wan1}', '  isp2: {interface: wan2}'];

function load(text: string, facts?: ConfigFacts): Config {
  const result = parseConfig(text, 'test.yaml', facts);
  assert.ok(result.ok, result.ok ? '' : result.errors.map(formatDiagnostic).join('\n'));
  return result.config;
}

/** The formatted errors of a config that must fail. */
function errorsOf(text: string): string[] {
  const result = parseConfig(text, 'test.yaml');
  assert.equal(result.ok, false, 'the config was accepted');
  return result.ok ? [] : result.errors.map(formatDiagnostic);
}

function assertError(text: string, position: string, substring: string): void {
  const errors = errorsOf(text);
  const found = errors.some((error) => error.startsWith(`test.yaml:${position}: `) && error.includes(substring));
  assert.ok(found, `expected test.yaml:${position}: ...${substring}... in:\n${errors.join('\n')}`);
}

describe('units', () => {
  it('reads durations in ms, s, m and h', () => {
    assert.deepEqual(parseDuration('200ms'), { ok: true, value: 200 });
    assert.deepEqual(parseDuration('1.5s'), { ok: true, value: 1500 });
    assert.deepEqual(parseDuration('10m'), { ok: true, value: 600_000 });
    assert.deepEqual(parseDuration('1h'), { ok: true, value: 3_600_000 });
  });

  it('rejects a bare number with a hint, and names the units for anything else', () => {
    const bare = parseDuration(200);
    assert.ok(!bare.ok && bare.error.includes('200 has no unit') && bare.error.includes('ms, s, m or h'));
    const unknown = parseDuration('5 parsecs');
    assert.ok(!unknown.ok && unknown.error.includes('unknown unit "parsecs"') && unknown.error.includes('ms, s, m or h'));
    assert.equal(parseDuration('0ms').ok, false);
    assert.equal(parseDuration('-1s').ok, false);
    assert.equal(parseDuration('1000h').ok, false, 'longer than a Node timer can wait');
  });

  it('reads rates in bit, kbit, mbit and gbit', () => {
    assert.deepEqual(parseRate('20mbit'), { ok: true, value: 20_000_000 });
    assert.deepEqual(parseRate('500kbit'), { ok: true, value: 500_000 });
    assert.deepEqual(parseRate('1gbit'), { ok: true, value: 1_000_000_000 });
    assert.deepEqual(parseRate('64bit'), { ok: true, value: 64 });
    assert.deepEqual(parseRate('1.5Mbit'), { ok: true, value: 1_500_000 });
    const bytes = parseRate('20mbps');
    assert.ok(!bytes.ok && bytes.error.includes('kbit, mbit or gbit'));
    assert.equal(parseRate(20).ok, false);
  });

  it('reads percentages as fractions', () => {
    assert.deepEqual(parsePercent('20%'), { ok: true, value: 0.2 });
    assert.deepEqual(parsePercent('0%'), { ok: true, value: 0 });
    assert.deepEqual(parsePercent('100%'), { ok: true, value: 1 });
    assert.equal(parsePercent('101%').ok, false);
    const fraction = parsePercent(0.2);
    assert.ok(!fraction.ok && fraction.error.includes('write 20%'));
  });
});

describe('addresses and names', () => {
  it('normalises addresses to prefixes and suggests the network when host bits are set', () => {
    assert.deepEqual(parsePrefix('192.0.2.1'), { ok: true, value: '192.0.2.1/32' });
    assert.deepEqual(parsePrefix('0.0.0.0/0'), { ok: true, value: '0.0.0.0/0' });
    assert.deepEqual(parsePrefix('198.18.0.5/24'), {
      ok: false,
      error: '198.18.0.5/24 has host bits set; did you mean 198.18.0.0/24?',
    });
    for (const bad of ['192.0.2', '192.0.2.256', '192.0.2.01', '192.0.2.0/33', '192.0.2.0/']) {
      assert.equal(parsePrefix(bad).ok, false, bad);
    }
  });

  it('normalises IPv6 addresses and prefixes to canonical CIDR text', () => {
    assert.deepEqual(parsePrefix('2001:DB8:0:0::1'), { ok: true, value: '2001:db8::1/128' });
    assert.deepEqual(parsePrefix('2001:0db8:0010::/48'), { ok: true, value: '2001:db8:10::/48' });
    assert.deepEqual(parsePrefix('::/0'), { ok: true, value: '::/0' });
    assert.deepEqual(parsePrefix('fe80::/10'), { ok: true, value: 'fe80::/10' });
    assert.deepEqual(parsePrefix('2001:db8:1::1/64'), { ok: false, error: '2001:db8:1::1/64 has host bits set; did you mean 2001:db8:1::/64?' });
    for (const bad of ['2001:db8::/129', '2001:db8::/', '2001:db8::/1/2', '2001:db8::%lo/64', '1:2:3:4:5:6:7:8:9/64', '2001:db8::/-1']) {
      assert.equal(parsePrefix(bad).ok, false, bad);
    }
    assert.deepEqual(parseIpv6Prefix('192.0.2.0/24'), { ok: false, error: '"192.0.2.0/24" is not an IPv6 prefix (e.g. 2001:db8:1::/64)' });
    assert.deepEqual(parseIpAddress('2001:DB8::0001'), { ok: true, value: '2001:db8::1' });
    assert.deepEqual(parseIpAddress('192.0.2.1'), { ok: true, value: '192.0.2.1' });
  });

  it('reads gateway6: an address (link-local too), auto, none or off', () => {
    assert.deepEqual(parseGateway6('fe80::1'), { ok: true, value: { kind: 'address', address: 'fe80::1' } });
    assert.deepEqual(parseGateway6('2001:DB8:1::1'), { ok: true, value: { kind: 'address', address: '2001:db8:1::1' } });
    for (const word of ['auto', 'none', 'off'] as const) assert.deepEqual(parseGateway6(word), { ok: true, value: { kind: word } });
  });

  it('reads ports and ranges', () => {
    assert.deepEqual(parsePortRange(5060), { ok: true, value: { from: 5060, to: 5060 } });
    assert.deepEqual(parsePortRange('5060-5061'), { ok: true, value: { from: 5060, to: 5061 } });
    assert.equal(parsePortRange(0).ok, false);
    assert.equal(parsePortRange('5061-5060').ok, false);
  });

  it('takes Linux interface names and nothing that could change the meaning of ip or nft input', () => {
    for (const good of ['eth0', 'wan1', 'eth0.100', 'br-lan', 'enp3s0f1', 'a23456789012345']) {
      assert.ok(parseIfname(good).ok, good);
    }
    for (const bad of ['', 'a234567890123456', 'wan/1', 'wan 1', 'eth0:1', '.', '..', '-x', 'a"b', 'a;b']) {
      assert.equal(parseIfname(bad).ok, false, bad);
    }
  });

  it('suggests only close words', () => {
    assert.equal(closest('wieght', ['weight', 'tier']), 'weight');
    assert.equal(closest('isp3', ['isp1', 'lte']), 'isp1');
    assert.equal(closest('zzz', ['weight', 'tier']), undefined);
  });
});

describe('defaults', () => {
  it('fills in every default for a minimal config', () => {
    const config = load(yaml('uplinks:', '  isp1:', '    interface: wan1'));
    const expected: Config = {
      source: 'test.yaml',
      lan: [],
      uplinks: [
        {
          name: 'isp1',
          interface: 'wan1',
          gateway: { kind: 'auto' },
          gateway6: { kind: 'auto' },
          address: { kind: 'auto' },
          weight: 1,
          tier: 1,
          nat: 'snat',
          nat6: { mode: 'snat' },
          check: {
            method: 'icmp',
            targets: [],
            port: 0,
            query: '',
            intervalMs: 100,
            timeoutMs: 400,
            downAfter: 3,
            upAfter: 5,
            quorum: 1,
            window: 20,
          },
        },
      ],
      balance: 'weighted',
      rules: [],
      mptcp: 'off',
      conntrack: { flushOnDown: true },
      hooks: [],
      api: { socket: '/run/uplinkd/uplinkd.sock', http: '127.0.0.1:9271' },
      kernel: DEFAULT_OWNERSHIP,
    };
    assert.deepEqual(config, expected);
  });

  it('gives each probe method its own port and query', () => {
    const config = load(
      yaml(
        'uplinks:',
        '  a: {interface: wan1, check: {method: tcp}}',
        '  b: {interface: wan2, check: {method: dns}}',
        '  c: {interface: wan3, check: {method: dns, port: 5353, query: probe.example.net}}',
        '  d: {interface: wan4, check: {method: http, targets: ["https://192.0.2.1/"]}}',
      ),
    );
    const [tcp, dns, dnsCustom, http] = config.uplinks.map((uplink) => uplink.check);
    assert.deepEqual([tcp?.port, tcp?.query], [443, '']);
    assert.deepEqual([dns?.port, dns?.query], [53, 'example.org']);
    assert.deepEqual([dnsCustom?.port, dnsCustom?.query], [5353, 'probe.example.net']);
    assert.deepEqual(http?.targets, ['https://192.0.2.1/']);
  });

  it('turns tracking off with check: false, and takes check: true as the defaults', () => {
    const config = load(yaml('uplinks:', '  isp1: {interface: wan1, check: false}', '  isp2: {interface: wan2, check: true}'));
    assert.equal(config.uplinks[0].check, undefined);
    assert.ok(!('check' in config.uplinks[0]));
    assert.equal(config.uplinks[1].check?.intervalMs, 100);
  });

  it('names unnamed rules by their position', () => {
    const config = load(yaml(...TWO_UPLINKS, 'rules:', '  - {name: voip, via: isp1}', '  - {via: isp2}'));
    assert.deepEqual(
      config.rules.map((rule) => rule.name),
      ['voip', 'rule-2'],
    );
    assert.deepEqual(config.rules[1], {
      name: 'rule-2',
      src: [],
      dst: [],
      proto: 'any',
      sport: [],
      dport: [],
      iif: [],
      user: [],
      group: [],
      cgroup: [],
      via: ['isp2'],
      fallback: 'any',
    });
  });
});

describe('normalisation', () => {
  it('reads every optional key of an uplink and its check', () => {
    const config = load(
      yaml(
        'uplinks:',
        '  isp1:',
        '    interface: wan1',
        '    gateway: 198.51.100.1',
        '    gateway6: "FE80::0:1"',
        '    weight: 2',
        '    tier: 3',
        '    nat: snat',
        '    address: 198.51.100.10',
        '    nat6: masquerade',
        '    capacity: {up: 20mbit, down: 100mbit}',
        '    check:',
        '      targets: 192.0.2.1',
        '      interval: 1s',
        '      timeout: 1.5s',
        '      down_after: 2',
        '      up_after: 4',
        '      max_latency: 800ms',
        '      max_loss: 20%',
        '      window: 50',
      ),
    );
    assert.deepEqual(config.uplinks[0], {
      name: 'isp1',
      interface: 'wan1',
      gateway: { kind: 'address', address: '198.51.100.1' },
      gateway6: { kind: 'address', address: 'fe80::1' },
      weight: 2,
      tier: 3,
      nat: 'snat',
      address: { kind: 'address', address: '198.51.100.10' },
      nat6: { mode: 'masquerade' },
      capacity: { up: 20_000_000, down: 100_000_000 },
      check: {
        method: 'icmp',
        targets: ['192.0.2.1'],
        port: 0,
        query: '',
        intervalMs: 1000,
        timeoutMs: 1500,
        downAfter: 2,
        upAfter: 4,
        quorum: 1,
        maxLatencyMs: 800,
        maxLoss: 0.2,
        window: 50,
      },
    });
  });

  it('reads single values and lists alike in rules', () => {
    const config = load(
      yaml(
        ...TWO_UPLINKS,
        'rules:',
        '  - src: 198.18.0.1',
        '    dst: [192.0.2.0/24, 203.0.113.7]',
        '    proto: udp',
        '    sport: 5060',
        '    dport: [5060, "5062", 10000-20000]',
        '    iif: lan0',
        '    via: [isp1, isp2]',
        '    fallback: block',
        '  - {iif: [lan0, lan1], via: main}',
      ),
    );
    const [first, second] = config.rules;
    assert.deepEqual(first.src, ['198.18.0.1/32']);
    assert.deepEqual(first.dst, ['192.0.2.0/24', '203.0.113.7/32']);
    assert.deepEqual(first.sport, [{ from: 5060, to: 5060 }]);
    assert.deepEqual(first.dport, [
      { from: 5060, to: 5060 },
      { from: 5062, to: 5062 },
      { from: 10000, to: 20000 },
    ]);
    assert.deepEqual(first.iif, ['lan0']);
    assert.deepEqual(first.via, ['isp1', 'isp2']);
    assert.equal(first.fallback, 'block');
    assert.deepEqual(second.iif, ['lan0', 'lan1']);
    assert.equal(second.via, 'main');
  });

  it('reads the other sections', () => {
    const config = load(
      yaml(
        'lan: lan0',
        ...TWO_UPLINKS,
        'balance: least-loaded',
        'sticky: 10m',
        'conntrack: {flush_on_down: false}',
        'hooks: /etc/uplinkd/notify',
        'api: {socket: /run/u.sock, http: off}',
        'kernel: {nft_table: wan_mgr, mark_mask: "0x00ff0000", table_base: 100, rule_priority: 20000, host_source: 198.18.255.1}',
      ).replace(/interface: wan(\d)/g, 'interface: wan$1, capacity: {down: 10mbit}'),
    );
    assert.deepEqual(config.lan, ['lan0']);
    assert.equal(config.balance, 'least-loaded');
    assert.equal(config.stickyMs, 600_000);
    assert.deepEqual(config.conntrack, { flushOnDown: false });
    assert.deepEqual(config.hooks, ['/etc/uplinkd/notify']);
    assert.deepEqual(config.api, { socket: '/run/u.sock', http: 'off' });
    assert.deepEqual(config.kernel, { nftTable: 'wan_mgr', markMask: 0x00ff0000, tableBase: 100, rulePriority: 20000, hostSource: '198.18.255.1' });
  });

  it('takes mark_mask as a YAML number too', () => {
    assert.equal(load(yaml(...TWO_UPLINKS, 'kernel: {mark_mask: 0xff}')).kernel.markMask, 0xff);
    assert.equal(load(yaml(...TWO_UPLINKS, 'kernel: {mark_mask: 65280}')).kernel.markMask, 0xff00);
  });

  it('keeps the uplinks in file order', () => {
    const config = load(yaml('uplinks:', '  zeta: {interface: wan1}', '  alpha: {interface: wan2}', '  mid: {interface: wan3}'));
    assert.deepEqual(
      config.uplinks.map((uplink) => uplink.name),
      ['zeta', 'alpha', 'mid'],
    );
  });
});

describe('dual stack', () => {
  it('reads gateway6, nat6 and mixed-family targets and rules', () => {
    const config = load(
      yaml(
        'lan: [lan0]',
        'uplinks:',
        '  isp1:',
        '    interface: wan1',
        '    gateway6: "2001:db8:100::1"',
        '    nat6: {prefix: {lan: "fd00:0:0:1::/64", uplink: "2001:DB8:100:1::/64"}}',
        '    check: {targets: [192.0.2.1, "2001:DB8::0:1"], quorum: 1}',
        '  isp2: {interface: wan2, gateway6: none, nat6: none}',
        '  isp3: {interface: wan3, gateway6: off}',
        'rules:',
        '  - {via: isp1, dst: [192.0.2.0/24, "2001:db8:5::/48"]}',
        '  - {via: isp2, src: "fd00:0:0:1::10"}',
      ),
    );
    const [isp1, isp2, isp3] = config.uplinks;
    assert.deepEqual(isp1.gateway6, { kind: 'address', address: '2001:db8:100::1' });
    assert.deepEqual(isp1.nat6, { mode: 'prefix', lan: 'fd00:0:0:1::/64', uplink: '2001:db8:100:1::/64' });
    assert.deepEqual(isp1.check?.targets, ['192.0.2.1', '2001:db8::1']);
    assert.deepEqual([isp2.gateway6, isp2.nat6], [{ kind: 'none' }, { mode: 'none' }]);
    assert.deepEqual([isp3.gateway6, isp3.nat6], [{ kind: 'off' }, { mode: 'snat' }]);
    assert.deepEqual(config.rules[0].dst, ['192.0.2.0/24', '2001:db8:5::/48']);
    assert.deepEqual(config.rules[1].src, ['fd00:0:0:1::10/128']);
  });

  it('counts the quorum per family only when both are listed', () => {
    const check = (targets: string, quorum: number) => yaml('uplinks:', '  isp1:', '    interface: wan1', `    check: {targets: ${targets}, quorum: ${quorum}}`);
    load(check('[192.0.2.1, 192.0.2.2, "2001:db8::1", "2001:db8::2"]', 2));
    load(check('[192.0.2.1, 192.0.2.2]', 2));
    load(check('["2001:db8::1", "2001:db8::2"]', 2));
    assertError(check('["2001:db8::1", "2001:db8::2"]', 3), '4:62', 'quorum: 3 is more than the 2 targets');
    assertError(check('[192.0.2.1, "2001:db8::1", "2001:db8::2"]', 2), '4:73', 'quorum: 2 is more than the 1 IPv4 target;');
  });

  it('takes IPv6 URLs for http checks', () => {
    const config = load(yaml('uplinks:', '  isp1: {interface: wan1, check: {method: http, targets: ["http://[2001:db8::80]/health"]}}'));
    assert.deepEqual(config.uplinks[0].check?.targets, ['http://[2001:db8::80]/health']);
  });

  it('reads address: auto by default, an IPv4 address, and refuses what cannot be a source', () => {
    assert.deepEqual(load(yaml(...TWO_UPLINKS)).uplinks[0].address, { kind: 'auto' });
    assert.deepEqual(load(yaml('uplinks:', '  isp1: {interface: wan1, address: 198.51.100.10}')).uplinks[0].address, { kind: 'address', address: '198.51.100.10' });
    assertError(yaml('uplinks:', '  isp1: {interface: wan1, address: "2001:db8::10"}'), '2:36', '2001:db8::10 is an IPv6 address; address takes an IPv4 address');
    assertError(yaml('uplinks:', '  isp1: {interface: wan1, address: 224.0.0.18}'), '2:36', '224.0.0.18 cannot be a source address');
    assertError(yaml('uplinks:', '  isp1: {interface: wan1, address: 198.51.100}'), '2:36', 'is not an IPv4 address (address is auto or an IPv4 address)');
    assertError(yaml('uplinks:', '  isp1: {interface: wan1, address: 198.51.100.10}', '  isp2: {interface: wan2, address: 198.51.100.10}'),
      '3:36', 'address: 198.51.100.10 is already the address of uplink isp1');
  });

  it('warns that masquerade ignores a configured address', () => {
    const result = parseConfig(yaml('uplinks:', '  isp1: {interface: wan1, nat: masquerade, address: 198.51.100.10}'), 'test.yaml');
    assert.ok(result.ok);
    assert.deepEqual(result.warnings.map(formatDiagnostic),
      ["test.yaml:2:32: warning: nat: masquerade takes the interface's primary address, not address 198.51.100.10; use nat: snat to NAT to it"]);
  });

  it('warns that nat6 does nothing on an uplink without IPv6', () => {
    const result = parseConfig(yaml('uplinks:', '  isp1: {interface: wan1, gateway6: off, nat6: masquerade}'), 'test.yaml');
    assert.ok(result.ok);
    assert.deepEqual(result.warnings.map(formatDiagnostic), ['test.yaml:2:48: warning: nat6: has no effect: gateway6: off says isp1 carries no IPv6']);
  });
});

describe('semantic checks', () => {
  const uplink = (...keys: string[]) => yaml('uplinks:', '  isp1:', '    interface: wan1', ...keys.map((key) => `    ${key}`));
  const rule = (...keys: string[]) => yaml(...TWO_UPLINKS, 'rules:', `  - ${keys[0]}`, ...keys.slice(1).map((key) => `    ${key}`));
  const kernel = (key: string) => yaml(...TWO_UPLINKS, 'kernel:', `  ${key}`);

  const cases: [title: string, text: string, position: string, message: string][] = [
    ['uplink name', yaml('uplinks:', '  1isp: {interface: wan1}'), '2:3', 'uplink name "1isp" must match'],
    ['uplink name too long', yaml('uplinks:', '  abcdefghijklmnop: {interface: wan1}'), '2:3', 'must match [a-z][a-z0-9_-]{0,14}'],
    ['no uplinks', yaml('balance: hash'), '1:1', 'no uplinks: at least one is needed'],
    ['missing interface', yaml('uplinks:', '  isp1:', '    weight: 2'), '2:3', 'missing required key "interface"'],
    ['interface name', uplink().replace('wan1', 'wan:1'), '3:16', "must not contain '/', ':' or whitespace"],
    ['interface used twice', yaml('uplinks:', '  isp1: {interface: wan1}', '  isp2: {interface: wan1}'), '3:21', 'wan1 is already the interface of uplink isp1'],
    ['lan also an uplink', yaml('lan: wan1', 'uplinks:', '  isp1: {interface: wan1}'), '1:6', 'lan: wan1 is also the interface of uplink isp1'],
    ['lan name', yaml('lan: [lan0, "lan 1"]', ...TWO_UPLINKS), '1:13', 'must not contain'],
    ['gateway', uplink('gateway: 198.51.100'), '4:14', 'not an IPv4 address (a gateway is an IPv4 address, auto or none)'],
    ['IPv6 gateway', uplink('gateway: "fe80::1"'), '4:14', 'gateway: fe80::1 is an IPv6 address; the IPv6 next hop goes in gateway6'],
    ['IPv4 gateway6', uplink('gateway6: 198.51.100.1'), '4:15', 'gateway6: 198.51.100.1 is an IPv4 address; the IPv4 next hop goes in gateway'],
    ['gateway6 zone id', uplink('gateway6: "fe80::1%wan1"'), '4:15', 'write fe80::1 without the zone id %wan1'],
    ['gateway6 multicast', uplink('gateway6: "ff02::2"'), '4:15', 'ff02::2 is a multicast address, which cannot be a next hop'],
    ['gateway6 unspecified', uplink('gateway6: "::"'), '4:15', 'the unspecified address'],
    ['gateway6 loopback', uplink('gateway6: "::1"'), '4:15', 'the loopback address'],
    ['gateway6 mapped', uplink('gateway6: "::ffff:192.0.2.1"'), '4:15', 'an IPv4-mapped address'],
    ['gateway6 malformed', uplink('gateway6: "fe80::1::2"'), '4:15', '"::" may appear only once'],
    ['gateway6 word', uplink('gateway6: yes'), '4:15', 'is not an IPv6 address (gateway6 is an IPv6 address (link-local allowed, e.g. fe80::1), auto, none or off)'],
    ['gateway6 number', uplink('gateway6: 6'), '4:15', 'expected an IPv6 address, auto, none or off, got 6'],
    ['nat6 mode', uplink('nat6: nat66'), '4:11', 'nat6: expected snat | masquerade | prefix | none, got "nat66"'],
    ['nat6 prefix without prefixes', uplink('nat6: prefix'), '4:11', 'nat6: prefix needs the two prefixes it maps, lan and uplink'],
    ['nat6 prefix without lan', uplink('nat6: {prefix: {uplink: "2001:db8:1::/64"}}'), '4:20', 'nat6: prefix needs lan: the LAN prefix'],
    ['nat6 prefix without uplink', uplink('nat6: {prefix: {lan: "fd00::/64"}}'), '4:20', "nat6: prefix needs uplink: the uplink's prefix"],
    ['nat6 prefix lengths', uplink('nat6: {prefix: {lan: "fd00::/64", uplink: "2001:db8:1::/56"}}'), '4:47', 'a 1:1 prefix mapping needs prefixes of the same length'],
    ['nat6 prefix of IPv4', uplink('nat6: {prefix: {lan: 198.18.0.0/24, uplink: "2001:db8:1::/64"}}'), '4:26', 'lan: "198.18.0.0/24" is not an IPv6 prefix'],
    ['nat6 prefix key', uplink('nat6: {prefix: {lan: "fd00::/64", wan: "2001:db8:1::/64"}}'), '4:20', 'nat6: prefix needs uplink'],
    ['nat6 mapping key', uplink('nat6: {npt: {lan: "fd00::/64"}}'), '4:12', 'unknown key "npt"; expected one of prefix'],
    ['weight 0', uplink('weight: 0'), '4:13', 'expected an integer from 1 to 1000, got 0'],
    ['weight 1001', uplink('weight: 1001'), '4:13', 'got 1001'],
    ['weight fraction', uplink('weight: 1.5'), '4:13', 'got 1.5'],
    ['tier', uplink('tier: 0'), '4:11', 'tier: expected an integer 1 or more'],
    ['nat', uplink('nat: snta'), '4:10', 'did you mean "snat"?'],
    ['capacity rate', uplink('capacity: {down: 100}'), '4:22', 'down: 100 has no unit'],
    ['capacity key', uplink('capacity: {upload: 1mbit}'), '4:16', 'unknown key "upload"'],
    ['check method', uplink('check: {method: ping}'), '4:21', 'expected icmp | tcp | http | dns, got "ping"'],
    ['check as a word', uplink('check: off'), '4:12', 'check: expected true or false or a mapping, got "off"'],
    ['interval without unit', uplink('check: {interval: 200}'), '4:23', '200 has no unit'],
    ['timeout zero', uplink('check: {timeout: 0ms}'), '4:22', 'a duration must be positive'],
    ['max_loss', uplink('check: {max_loss: 0.2}'), '4:23', 'write 20%'],
    ['max_loss above 100%', uplink('check: {max_loss: 150%}'), '4:23', 'from 0% to 100%'],
    ['down_after', uplink('check: {down_after: 0}'), '4:25', 'down_after: expected an integer 1 or more'],
    ['window', uplink('check: {window: two}'), '4:21', 'window: expected an integer 1 or more, got "two"'],
    ['quorum over targets', uplink('check: {targets: [192.0.2.1, 192.0.2.2], quorum: 3}'), '4:54', 'quorum: 3 is more than the 2 targets'],
    ['quorum over the gateway', uplink('check: {quorum: 2}'), '4:21', 'more than the 1 target (the gateway'],
    ['icmp target', uplink('check: {targets: [192.0.2.1, example.org]}'), '4:34', '"example.org" is not an IPv4 or IPv6 address'],
    ['IPv6 target', uplink('check: {targets: [192.0.2.1, "2001:db8::1::"]}'), '4:34', '"2001:db8::1::" is not an IPv6 address: "::" may appear only once'],
    ['IPv6 target zone id', uplink('check: {targets: ["fe80::1%wan1"]}'), '4:23', 'a zone id (%wan1) is not part of an address'],
    ['IPv6 target without IPv6', uplink('gateway6: off', 'check: {targets: [192.0.2.1, "2001:db8::1"]}'), '5:34', 'targets: 2001:db8::1 is an IPv6 target, but gateway6: off says isp1 carries no IPv6'],
    ['quorum over one family', uplink('check: {targets: [192.0.2.1, 192.0.2.2, "2001:db8::1"], quorum: 2}'), '4:69', 'quorum: 2 is more than the 1 IPv6 target; each family'],
    ['http target', uplink('check: {method: http, targets: [192.0.2.1]}'), '4:37', 'http:// or https:// URL'],
    ['http target scheme', uplink('check: {method: http, targets: ["ftp://192.0.2.1/"]}'), '4:37', 'http:// or https:// URL'],
    ['http without targets', uplink('check: {method: http}'), '4:21', 'an http check needs targets'],
    ['dns query', uplink('check: {method: dns, query: "bad name"}'), '4:33', 'is not a DNS name'],
    ['check port', uplink('check: {method: tcp, port: 0}'), '4:32', 'port: expected an integer from 1 to 65535'],
    ['rule name', rule('name: VoIP', 'via: isp1'), '5:11', 'must match [a-z][a-z0-9_-]{0,31}'],
    ['rule name twice', yaml(...TWO_UPLINKS, 'rules:', '  - {name: a, via: isp1}', '  - {name: a, via: isp2}'), '6:12', 'rule name "a" is used by rules 1 and 2'],
    ['rule name equal to a default', yaml(...TWO_UPLINKS, 'rules:', '  - {via: isp1}', '  - {name: rule-1, via: isp2}'), '6:12', 'rule name "rule-1" is used by rules 1 and 2'],
    ['via unknown', rule('via: isp3'), '5:10', 'there is no uplink named "isp3"; did you mean'],
    ['via unknown in a list', rule('via: [isp1, lte]'), '5:17', 'there is no uplink named "lte"'],
    ['via main in a list', rule('via: [main, isp1]'), '5:11', 'main cannot be mixed with uplinks'],
    ['via empty', rule('via: []'), '5:10', 'an empty list names no uplink'],
    ['via listed twice', rule('via: [isp1, isp1]'), '5:17', 'isp1 is listed twice'],
    ['via missing', rule('name: x'), '5:5', 'missing required key "via"'],
    ['bad prefix', rule('via: isp1', 'dst: 192.0.2.0/40'), '6:10', 'a prefix length is 0..32'],
    ['host bits', rule('via: isp1', 'src: [198.18.0.5/24]'), '6:11', 'did you mean 198.18.0.0/24?'],
    ['IPv6 prefix length', rule('via: isp1', 'dst: "2001:db8::/129"'), '6:10', '"2001:db8::/129": an IPv6 prefix length is 0..128'],
    ['IPv6 host bits', rule('via: isp1', 'src: ["2001:db8::1/32"]'), '6:11', '2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?'],
    ['IPv6 prefix malformed', rule('via: isp1', 'dst: "2001:db8:::/48"'), '6:10', 'is not an IPv6 address or prefix: a group is empty'],
    ['families that cannot meet', rule('via: isp1', 'src: 198.18.0.0/24', 'dst: ["2001:db8::/32"]'), '7:10', 'dst: only IPv6 prefixes, but src only IPv4 ones'],
    ['port 0', rule('via: isp1', 'proto: tcp', 'dport: 0'), '7:12', 'port 0 is out of range 1..65535'],
    ['port range reversed', rule('via: isp1', 'proto: tcp', 'dport: 2000-1000'), '7:12', 'range 2000-1000 is reversed'],
    ['port with proto any', rule('via: isp1', 'sport: 53'), '6:12', 'sport: a port match needs proto: tcp or udp'],
    ['port with proto icmp', rule('via: isp1', 'proto: icmp', 'dport: [53]'), '7:12', 'proto is icmp'],
    ['proto', rule('via: isp1', 'proto: sctp'), '6:12', 'expected tcp | udp | icmp | any'],
    ['fallback', rule('via: isp1', 'fallback: drop'), '6:15', 'expected any | block'],
    ['iif', rule('via: isp1', 'iif: [lan0, "lan/1"]'), '6:17', "must not contain '/'"],
    ['sticky', yaml(...TWO_UPLINKS, 'sticky: 0s'), '4:9', 'a duration must be positive'],
    ['balance', yaml(...TWO_UPLINKS, 'balance: round-robin'), '4:10', 'expected weighted | hash | least-loaded'],
    ['flush_on_down', yaml(...TWO_UPLINKS, 'conntrack: {flush_on_down: yes}'), '4:28', 'expected true or false, got "yes"'],
    ['hook path', yaml(...TWO_UPLINKS, 'hooks: [/bin/a, bin/b]'), '4:17', 'not an absolute path'],
    ['api socket', yaml(...TWO_UPLINKS, 'api: {socket: uplinkd.sock}'), '4:15', 'not an absolute path'],
    ['api http host', yaml(...TWO_UPLINKS, 'api: {http: "[::1]:9271"}'), '4:13', 'IPv6 is not supported yet'],
    ['api http port', yaml(...TWO_UPLINKS, 'api: {http: "127.0.0.1:0"}'), '4:13', 'out of range 1..65535'],
    ['api http without port', yaml(...TWO_UPLINKS, 'api: {http: 127.0.0.1}'), '4:13', 'expected HOST:PORT'],
    ['nft_table', kernel('nft_table: 9lives'), '5:14', 'must match [A-Za-z][A-Za-z0-9_-]{0,31}'],
    ['mark_mask not contiguous', kernel('mark_mask: 0x0f0f'), '5:14', 'not one contiguous run of bits'],
    ['mark_mask zero', kernel('mark_mask: 0'), '5:14', 'expected a 32-bit mask'],
    ['mark_mask too wide', kernel('mark_mask: 0x1ffffffff'), '5:14', 'expected a 32-bit mask'],
    ['mark_mask with no room', kernel('mark_mask: 0x1'), '5:14', 'mark_mask 0x00000001 holds 0 uplinks, the config has 2; widen it'],
    ['table_base reserved', kernel('table_base: 252'), '5:15', 'tables at 253..254, which include the kernel\'s 253 (default), 254 (main); choose a table_base of at most 250 or at least 255'],
    ['table_base local', kernel('table_base: 254'), '5:15', '255 (local)'],
    ['table_base negative', kernel('table_base: -1'), '5:15', 'expected an integer from 0 to 4294967295'],
    ['table_base past the last table', kernel('table_base: 4294967294'), '5:15', 'past the largest table id'],
    ['rule_priority 0', kernel('rule_priority: 0'), '5:18', 'must lie within 1..32765'],
    ['rule_priority too high', kernel('rule_priority: 31767'), '5:18', 'owns 31767..32766'],
    ['unknown kernel key', kernel('mark: 0xff00'), '5:3', 'unknown key "mark"'],
  ];

  for (const [title, text, position, message] of cases) {
    it(title, () => assertError(text, position, message));
  }

  it('accepts the edges of each range', () => {
    load(kernel('rule_priority: 31766'));
    load(kernel('rule_priority: 1'));
    load(kernel('table_base: 250'));
    load(kernel('table_base: 4294967293'));
    load(kernel('mark_mask: 0xf'));
    load(uplink('weight: 1000'));
    load(uplink('check: {max_loss: 0%}'));
  });

  it(`allows at most ${MAX_UPLINKS} uplinks`, () => {
    const uplinks = (count: number) =>
      yaml('kernel: {table_base: 1000}', 'uplinks:', ...Array.from({ length: count }, (_, index) => `  u${index}: {interface: wan${index}}`));
    assert.equal(load(uplinks(MAX_UPLINKS)).uplinks.length, MAX_UPLINKS);
    assertError(uplinks(MAX_UPLINKS + 1), '2:1', `at most ${MAX_UPLINKS} fit`);
  });

  it('says so when the default table_base is what collides', () => {
    const uplinks = Array.from({ length: 53 }, (_, index) => `  u${index}: {interface: wan${index}}`);
    assertError(yaml('uplinks:', ...uplinks), '1:1', 'the default table_base 200 puts the uplink tables at 201..253');
  });
});

describe('reporting', () => {
  it('reports every error at once, sorted by position', () => {
    const errors = errorsOf(
      yaml(
        'uplinks:',
        '  isp1:',
        '    interface: wan1',
        '    weight: two',
        '  isp2:',
        '    interface: wan2',
        '    wieght: 2',
        'rules:',
        '  - via: isp3',
        '  - via: [isp1, main]',
        'kernel: {table_base: 252}',
      ),
    );
    assert.deepEqual(errors, [
      'test.yaml:4:13: weight: expected an integer from 1 to 1000, got "two"',
      'test.yaml:7:5: unknown key "wieght"; did you mean "weight"?',
      'test.yaml:9:10: via: there is no uplink named "isp3"; did you mean "isp1"?',
      'test.yaml:10:17: via: main cannot be mixed with uplinks (it hands the connection to the main routing table); use it alone',
      "test.yaml:11:22: table_base: 252 puts the uplink tables at 253..254, which include the kernel's 253 (default), 254 (main); choose a table_base of at most 250 or at least 255",
    ]);
  });

  it('suggests the nearest key, or lists the known ones', () => {
    assertError(yaml(...TWO_UPLINKS, 'rulse: []'), '4:1', 'unknown key "rulse"; did you mean "rules"?');
    assertError(yaml(...TWO_UPLINKS, 'conntrack: {flush_on_dwn: true}'), '4:13', 'unknown key "flush_on_dwn"; did you mean "flush_on_down"?');
    assertError(yaml(...TWO_UPLINKS, 'conntrack: {flush: true}'), '4:13', 'unknown key "flush"; expected one of flush_on_down');
    assertError(yaml(...TWO_UPLINKS, 'colour: blue'), '4:1', 'unknown key "colour"; expected one of lan, uplinks, balance');
  });

  it('reports YAML syntax errors and duplicate keys at their position', () => {
    assertError(yaml('uplinks:', '  isp1: {interface: wan1', 'rules: []'), '3:1', 'invalid YAML');
    assertError(yaml('uplinks:', '  isp1: {interface: wan1}', '  isp1: {interface: wan2}'), '3:3', 'duplicate key "isp1"');
  });

  it('reports an empty file', () => {
    assertError('', '1:1', 'the config is empty');
    assertError('# nothing here\n', '1:1', 'the config is empty');
  });

  it('formats errors and warnings', () => {
    const at = { file: 'f.yaml', line: 3, col: 7, message: 'boom' };
    assert.equal(formatDiagnostic({ ...at, severity: 'error' }), 'f.yaml:3:7: boom');
    assert.equal(formatDiagnostic({ ...at, severity: 'warning' }), 'f.yaml:3:7: warning: boom');
  });
});

describe('gateway: none', () => {
  const text = yaml('uplinks:', '  isp1:', '    interface: wan1', '    gateway: none', '  lte: {interface: ppp0, gateway: none}');
  const facts = (pointToPoint: Record<string, boolean>): ConfigFacts => ({ isPointToPoint: (ifname) => pointToPoint[ifname] });
  const warningsOf = (result: ConfigResult) => result.warnings.map(formatDiagnostic);

  it('warns, without failing, when the interface is known not to be point-to-point', () => {
    const result = parseConfig(text, 'test.yaml', facts({ wan1: false, ppp0: true }));
    assert.ok(result.ok);
    assert.equal(warningsOf(result).length, 1);
    assert.match(warningsOf(result)[0], /^test\.yaml:4:14: warning: gateway: none is for point-to-point links .* wan1 is not one/);
  });

  it('says nothing when the interface is unknown here, or when no facts are given', () => {
    assert.deepEqual(warningsOf(parseConfig(text, 'test.yaml', facts({}))), []);
    assert.deepEqual(warningsOf(parseConfig(text, 'test.yaml')), []);
  });

  it('warns about check keys the method ignores', () => {
    const result = parseConfig(yaml('uplinks:', '  isp1: {interface: wan1, check: {port: 443, query: example.org}}'), 'test.yaml');
    assert.ok(result.ok);
    assert.deepEqual(
      warningsOf(result).map((warning) => warning.split(': warning: ')[1].split(';')[0]),
      ['port: ignored by icmp checks (icmp has no ports)', 'query: ignored by icmp checks'],
    );
  });
});

describe('files', () => {
  it('picks -c, then $UPLINKD_CONFIG, then the default path', () => {
    const saved = process.env.UPLINKD_CONFIG;
    try {
      process.env.UPLINKD_CONFIG = '/from/env.yaml';
      assert.equal(resolveConfigPath('/from/cli.yaml'), '/from/cli.yaml');
      assert.equal(resolveConfigPath(), '/from/env.yaml');
      delete process.env.UPLINKD_CONFIG;
      assert.equal(resolveConfigPath(), '/etc/uplinkd/uplinkd.yaml');
    } finally {
      if (saved === undefined) delete process.env.UPLINKD_CONFIG;
      else process.env.UPLINKD_CONFIG = saved;
    }
  });

  it('reports an unreadable file as one error at 1:1 with the reason', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uplinkd-config-'));
    try {
      const missing = join(dir, 'missing.yaml');
      const result = loadConfigFile(missing);
      assert.ok(!result.ok);
      assert.deepEqual(result.errors.map(formatDiagnostic), [`${missing}:1:1: cannot read the config: no such file or directory (ENOENT)`]);
      const directory = loadConfigFile(dir);
      assert.ok(!directory.ok && directory.errors[0].message.includes('EISDIR'));
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});

describe('process keys: user, group, cgroup', () => {
  const rule = (...keys: string[]) => yaml(...TWO_UPLINKS, 'rules:', '  - via: isp1', ...keys.map((key) => `    ${key}`));
  /** Facts in which exactly `present` exist, under a hybrid layout's mount point. */
  const cgroups = (present: string[], mountPoint: string | null = '/sys/fs/cgroup/unified'): ConfigFacts => ({
    cgroups: (paths) => ({ mountPoint: mountPoint ?? undefined, present: paths.filter((p) => present.includes(p)).map((path) => ({ path, id: 7, nftPath: `unified/${path}` })) }),
  });
  const warningsOf = (text: string, facts: ConfigFacts) => {
    const result = parseConfig(text, 'test.yaml', facts);
    assert.ok(result.ok, result.ok ? '' : result.errors.map(formatDiagnostic).join('\n'));
    return result.warnings.map(formatDiagnostic);
  };

  it('takes ids as they are and resolves names now, through getent', () => {
    const [first] = load(rule('user: [root, 4242, "4243", root]', 'group: [root, 4343]')).rules;
    assert.deepEqual([first.user, first.group], [[0, 4242, 4243], [0, 4343]]);
    // Ids need no entry on this machine: the kernel compares numbers.
    assert.deepEqual(load(rule('user: 4294967294')).rules[0].user, [4294967294]);
  });

  it('reads cgroup paths relative to the cgroup v2 root, with or without slashes around them', () => {
    const config = load(rule("cgroup: [/system.slice/restic.service/, user.slice, 'system.slice/a\\x2db@c.service']"), cgroups([]));
    assert.deepEqual(config.rules[0].cgroup, ['system.slice/restic.service', 'user.slice', 'system.slice/a\\x2db@c.service']);
  });

  const errors: [title: string, text: string, position: string, message: string][] = [
    ['unknown user', rule('user: bakup'), '6:11', 'user: no user "bakup" on this machine'],
    ['unknown user in a list', rule('user: [root, bakup]'), '6:18', 'no user "bakup"'],
    ['unknown group', rule('group: [medai]'), '6:13', 'group: no group "medai" on this machine'],
    ['uid out of range', rule('user: 4294967295'), '6:11', 'an id from 0 to 4294967294'],
    ['negative gid', rule('group: -1'), '6:12', 'group: expected a group name or an id'],
    ['user as an option', rule('user: "-x"'), '6:11', 'is not a user name'],
    ['root cgroup', rule('cgroup: /'), '6:13', 'the root cgroup holds every process'],
    ['cgroup with ..', rule('cgroup: system.slice/../x'), '6:13', 'no empty, . or .. parts'],
    ['cgroup with a quote', rule('cgroup: \'a"b\''), '6:13', 'may hold only letters'],
    ['iif beside user', rule('user: 4242', 'iif: lan0'), '7:10', "iif: user matches the machine's own connections, which arrive on no interface"],
    ['iif beside group and cgroup', rule('group: 1', 'cgroup: x.slice', 'iif: [lan0]'), '8:10', 'iif: group and cgroup match'],
  ];
  for (const [title, text, position, message] of errors) {
    it(title, () => assertError(text, position, message));
  }

  it('warns about a cgroup that does not exist yet, at the path, and accepts the config', () => {
    const text = rule('cgroup: [system.slice/restic.service, system.slice/backup.service]');
    assert.deepEqual(warningsOf(text, cgroups(['system.slice/restic.service'])), [
      'test.yaml:6:43: warning: cgroup: system.slice/backup.service does not exist (yet): no ' +
        '/sys/fs/cgroup/unified/system.slice/backup.service; the rule is left out until it does, and matches from then on',
    ]);
    assert.deepEqual(warningsOf(text, cgroups(['system.slice/restic.service', 'system.slice/backup.service'])), []);
  });

  it('warns when no cgroup v2 hierarchy is mounted at all', () => {
    const [warning] = warningsOf(rule('cgroup: x.service'), cgroups([], null));
    assert.match(warning, /^test\.yaml:6:13: warning: cgroup: no cgroup v2 hierarchy is mounted here .*this rule cannot match/);
  });

  it('asks the machine when not told: a cgroup no machine has is a warning', () => {
    const [warning] = warningsOf(rule('cgroup: up9p-no-such-cgroup.slice'), {});
    assert.match(warning, /cgroup: (up9p-no-such-cgroup\.slice does not exist|no cgroup v2 hierarchy)/);
  });
});
