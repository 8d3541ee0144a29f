// `uplinkd doctor` on made-up machines: config files in temporary roots,
// command output from a scripted runner, tools from a temporary PATH. Each
// hazard is shown found, and shown absent when the machine is set up right.

import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { diagnose, runDoctor, type Finding } from '../../src/doctor/index.js';
import type { RouteJson, RuleJson } from '../../src/doctor/routing.js';
import type { CommandResult, Runner } from '../../src/kernel/runner.js';

const temps: string[] = [];
after(() => temps.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'uplinkd-doctor-'));
  temps.push(dir);
  return dir;
}

/** A root directory holding these files (path → text). */
function fakeRoot(files: Record<string, string> = {}): string {
  const root = tempDir();
  for (const [path, text] of Object.entries(files)) writeAt(root, path, text);
  return root;
}

function writeAt(root: string, path: string, text: string): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), text);
}

/** A PATH of one directory with these (do-nothing) programs in it. */
function fakePath(tools: string[]): string {
  const dir = tempDir();
  for (const t of tools) {
    writeFileSync(join(dir, t), '#!/bin/sh\n');
    chmodSync(join(dir, t), 0o755);
  }
  return dir;
}

const ALL_TOOLS = ['nft', 'ip', 'conntrack', 'fping'];

/** A plain router as the lab builds it: one default route per uplink, metric 100+k, and connected networks. */
const LAB_MAIN: RouteJson[] = [
  { dst: 'default', gateway: '198.51.100.1', dev: 'wan1', metric: 101 },
  { dst: 'default', gateway: '198.51.100.17', dev: 'wan2', metric: 102 },
  { dst: '198.18.0.0/24', dev: 'lan0' },
  { dst: '198.51.100.0/28', dev: 'wan1' },
  { dst: '198.51.100.16/28', dev: 'wan2' },
];
const STANDARD_RULES: RuleJson[] = [
  { priority: 0, src: 'all', table: 'local' },
  { priority: 32766, src: 'all', table: 'main' },
  { priority: 32767, src: 'all', table: 'default' },
];
/** What `uplinkd apply` adds (README "What uplinkd installs"). */
const UPLINKD_RULES: RuleJson[] = [
  { priority: 10000, src: 'all', table: 'main', suppress_prefixlen: 0 },
  { priority: 10101, src: '198.51.100.2', table: '201' },
  { priority: 10301, src: 'all', fwmark: '0x100', fwmask: '0xff00', table: '201' },
];

interface Machine {
  main?: RouteJson[];
  rules?: RuleJson[];
  /** Routes per table other than main. */
  tables?: Record<string, RouteJson[]>;
  nmcli?: CommandResult;
  /** Answers that replace the normal one, by "command args…". */
  answers?: Record<string, CommandResult>;
}

const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });

/** Answers the commands doctor runs as this machine would. */
function fakeRunner(m: Machine): Runner & { ran: string[] } {
  const ran: string[] = [];
  return {
    ran,
    async run(command, args) {
      const key = [command, ...args].join(' ');
      ran.push(key);
      if (m.answers?.[key]) return m.answers[key];
      if (key === 'ip -j -4 route show table main') return ok(JSON.stringify(m.main ?? LAB_MAIN));
      if (key === 'ip -j -4 rule show') return ok(JSON.stringify(m.rules ?? STANDARD_RULES));
      const table = /^ip -j -4 route show table (\S+) default$/.exec(key);
      if (table) {
        const routes = m.tables?.[table[1]];
        return routes ? ok(JSON.stringify(routes.filter((r) => r.dst === 'default'))) : { code: 2, stdout: '[', stderr: 'Error: ipv4: FIB table does not exist.\n' };
      }
      if (key === 'nmcli -t -f DEVICE,STATE device') return m.nmcli ?? { code: 8, stdout: '', stderr: 'Error: NetworkManager is not running.\n' };
      if (key === 'ip -j address show') return ok('[]');
      if (key === 'ip -j -4 route show table main default') return ok('[]');
      if (['nft list tables', 'conntrack -S', 'ip -4 rule show'].includes(key)) return ok();
      throw new Error(`unexpected command: ${key}`);
    },
  };
}

function labConfig(extra = ''): Config {
  const r = parseConfig(`lan: [lan0]\nuplinks:\n  isp1:\n    interface: wan1\n  isp2:\n    interface: wan2\n${extra}`, '/etc/uplinkd/uplinkd.yaml');
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

async function findings(opts: { root?: string; machine?: Machine; path?: string; config?: Config | null } = {}): Promise<Finding[]> {
  return diagnose({
    root: opts.root ?? fakeRoot(),
    runner: fakeRunner(opts.machine ?? {}),
    path: opts.path ?? fakePath(ALL_TOOLS),
    config: opts.config === null ? undefined : (opts.config ?? labConfig()),
  });
}

const ids = (fs: Finding[]) => fs.map((f) => f.id);

test('a plain router (the lab: one default per uplink) with a config has nothing to report', async () => {
  assert.deepEqual(await findings(), []);
  assert.deepEqual(await findings({ config: null }), []);
});

test('a plain router with uplinkd state installed has nothing to report: its own rules and tables are not foreign', async () => {
  const machine: Machine = {
    rules: [...STANDARD_RULES.slice(0, 1), ...UPLINKD_RULES, ...STANDARD_RULES.slice(1)],
    tables: { 201: [{ dst: 'default', gateway: '198.51.100.1', dev: 'wan1' }] },
  };
  const root = fakeRoot({ 'proc/sys/net/ipv4/conf/all/rp_filter': '0\n', 'proc/sys/net/ipv4/conf/wan1/rp_filter': '2\n', 'proc/sys/net/ipv4/conf/wan2/rp_filter': '2\n' });
  assert.deepEqual(await findings({ root, machine }), []);
});

describe('systemd-networkd', () => {
  const wants = 'etc/systemd/system/multi-user.target.wants/systemd-networkd.service';
  const enabled = (files: Record<string, string> = {}) => fakeRoot({ [wants]: '[Unit]\n', ...files });
  const dropinOf = (f: Finding) => {
    // The fix is a command line: mkdir -p DIR && printf 'TEXT' > FILE && systemctl restart …
    const m = /printf '([^']*)' > (\S+)/.exec(f.fix);
    assert.ok(m, f.fix);
    return { path: m[2], text: m[1].replaceAll('\\n', '\n') };
  };

  test('enabled without ManageForeign…=no: found, and the drop-in it gives silences it', async () => {
    const root = enabled({ 'etc/systemd/networkd.conf': '[Network]\n#ManageForeignRoutingPolicyRules=yes\n#ManageForeignRoutes=yes\n' });
    const [f, ...rest] = await findings({ root });
    assert.equal(rest.length, 0);
    assert.equal(f.id, 'networkd');
    assert.match(f.message, /enabled \(\/etc\/systemd\/system\/multi-user\.target\.wants\/systemd-networkd\.service\)/);
    assert.match(f.message, /ManageForeignRoutingPolicyRules=yes \(the default\), ManageForeignRoutes=yes \(the default\)/);
    const dropin = dropinOf(f);
    assert.equal(dropin.path, '/etc/systemd/networkd.conf.d/99-uplinkd.conf');
    assert.equal(dropin.text, '[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n');
    writeAt(root, dropin.path, dropin.text);
    assert.deepEqual(await findings({ root }), []);
  });

  test('running this boot (it writes /run/systemd/netif/state): found even when not enabled', async () => {
    assert.deepEqual(ids(await findings({ root: fakeRoot({ 'run/systemd/netif/state': 'OPER_STATE=routable\n' }) })), ['networkd']);
  });

  test('not enabled, not running: nothing, although systemd-tmpfiles created /run/systemd/netif', async () => {
    const root = fakeRoot({ 'run/systemd/netif/links/.keep': '', 'lib/systemd/system/systemd-networkd.service': '[Service]\n' });
    assert.deepEqual(await findings({ root }), []);
  });

  test('masked: nothing', async () => {
    const root = enabled();
    symlinkSync('/dev/null', join(root, 'etc/systemd/system/systemd-networkd.service'));
    assert.deepEqual(await findings({ root }), []);
  });

  test('both set to no in the main file: nothing; one turned back on by a drop-in: found, naming it', async () => {
    const root = enabled({ 'etc/systemd/networkd.conf': '[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n' });
    assert.deepEqual(await findings({ root }), []);
    writeAt(root, 'usr/lib/systemd/networkd.conf.d/50-vendor.conf', '[Network]\nManageForeignRoutes=yes\n');
    const [f] = await findings({ root });
    assert.match(f.message, /ManageForeignRoutes=yes \(set in \/usr\/lib\/systemd\/networkd\.conf\.d\/50-vendor\.conf\)/);
    assert.doesNotMatch(f.message, /ManageForeignRoutingPolicyRules/);
  });

  test('a drop-in in /etc hides the /usr/lib one of the same name', async () => {
    const root = enabled({ 'usr/lib/systemd/networkd.conf.d/10-x.conf': '[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n' });
    assert.deepEqual(await findings({ root }), []);
    writeAt(root, 'etc/systemd/networkd.conf.d/10-x.conf', '');
    assert.deepEqual(ids(await findings({ root })), ['networkd']);
  });

  test('a drop-in read after 99-uplinkd.conf that sets yes: the fix names that file', async () => {
    const root = enabled({ 'etc/systemd/networkd.conf.d/zz-local.conf': '[Network]\nManageForeignRoutes=true\n' });
    const [f] = await findings({ root });
    assert.match(f.fix, /in \/etc\/systemd\/networkd\.conf\.d\/zz-local\.conf/);
  });

  test('settings outside [Network] do not count', async () => {
    const root = enabled({ 'etc/systemd/networkd.conf.d/x.conf': '[DHCPv4]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n' });
    assert.deepEqual(ids(await findings({ root })), ['networkd']);
  });
});

describe('nftables config', () => {
  const DEBIAN = '#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n}\n';

  test("Debian's /etc/nftables.conf: found at its line, with the tables to delete instead", async () => {
    const [f, ...rest] = await findings({ root: fakeRoot({ 'etc/nftables.conf': DEBIAN }) });
    assert.equal(rest.length, 0);
    assert.equal(f.id, 'nftables-flush');
    assert.match(f.message, /^\/etc\/nftables\.conf:3: flush ruleset removes every table, uplinkd's too/);
    assert.match(f.fix, /replace "flush ruleset" with "table inet filter; delete table inet filter"/);
  });

  test('the fix applied: nothing', async () => {
    const fixed = DEBIAN.replace('flush ruleset', 'table inet filter; delete table inet filter');
    assert.deepEqual(await findings({ root: fakeRoot({ 'etc/nftables.conf': fixed }) }), []);
  });

  test('flush ruleset in an included file is found there; every table of the set is named', async () => {
    const root = fakeRoot({
      'etc/nftables.conf': 'include "/etc/nftables.d/*.nft"\n',
      'etc/nftables.d/00-base.nft': 'flush ruleset # start clean\n',
      'etc/nftables.d/10-filter.nft': 'table inet filter {\n}\ntable ip nat {\n}\n',
    });
    const [f] = await findings({ root });
    assert.match(f.message, /^\/etc\/nftables\.d\/00-base\.nft:1:/);
    assert.match(f.fix, /"table inet filter; delete table inet filter; table ip nat; delete table ip nat"/);
  });

  test('the unit flushing on stop is mentioned', async () => {
    const root = fakeRoot({ 'etc/nftables.conf': DEBIAN, 'lib/systemd/system/nftables.service': '[Service]\nExecStop=/usr/sbin/nft flush ruleset\n' });
    assert.match((await findings({ root }))[0].fix, /systemctl reload nftables, not restart or stop/);
  });

  test('no file, a commented flush, or a flush of another family: nothing', async () => {
    assert.deepEqual(await findings({ root: fakeRoot({ 'etc/nftables.conf': '# flush ruleset\ntable inet filter {\n}\n' }) }), []);
    assert.deepEqual(await findings({ root: fakeRoot({ 'etc/nftables.conf': 'flush ruleset ip\n' }) }), []);
    assert.deepEqual(ids(await findings({ root: fakeRoot({ 'etc/nftables.conf': 'flush ruleset inet\n' }) })), ['nftables-flush']);
  });
});

describe('rp_filter', () => {
  const installed: Machine = { rules: [...STANDARD_RULES, ...UPLINKD_RULES] };
  const proc = (all: number, wan1: number, wan2 = 2) => ({
    'proc/sys/net/ipv4/conf/all/rp_filter': `${all}\n`,
    'proc/sys/net/ipv4/conf/wan1/rp_filter': `${wan1}\n`,
    'proc/sys/net/ipv4/conf/wan2/rp_filter': `${wan2}\n`,
  });

  test('strict on an uplink while uplinkd state is installed: found for that uplink, with the sysctl fix', async () => {
    const fs = await findings({ root: fakeRoot(proc(0, 1)), machine: installed });
    assert.deepEqual(ids(fs), ['rp-filter']);
    assert.match(fs[0].message, /^wan1 \(uplink isp1\) has strict rp_filter \(conf\/all=0, conf\/wan1=1\)/);
    assert.match(fs[0].fix, /^sysctl -w net\.ipv4\.conf\.wan1\.rp_filter=2, .*"net\.ipv4\.conf\.wan1\.rp_filter = 2" in \/etc\/sysctl\.d\//);
  });

  test('the kernel takes the larger of conf/all and conf/IFACE', async () => {
    assert.deepEqual(await findings({ root: fakeRoot(proc(2, 1)), machine: installed }), []);
    assert.deepEqual(ids(await findings({ root: fakeRoot(proc(1, 0)), machine: installed })), ['rp-filter']);
  });

  test('strict before uplinkd installed anything: not reported, since uplinkd loosens it itself', async () => {
    assert.deepEqual(await findings({ root: fakeRoot(proc(0, 1)) }), []);
  });

  test('a sysctl.d file making an uplink strict: found at its line', async () => {
    const fs = await findings({ root: fakeRoot({ 'etc/sysctl.d/50-hardening.conf': '# strict\nnet.ipv4.conf.wan1.rp_filter = 1\n' }) });
    assert.deepEqual(ids(fs), ['rp-filter-file']);
    assert.match(fs[0].message, /^\/etc\/sysctl\.d\/50-hardening\.conf:2 sets rp_filter=1 \(strict\) for wan1 \(uplink isp1\)/);
  });

  test('sysctl.d: a glob counts, an explicit key beats a glob, a later file wins, loose conf/all makes it moot', async () => {
    assert.deepEqual(ids(await findings({ root: fakeRoot({ 'usr/lib/sysctl.d/50-x.conf': 'net/ipv4/conf/*/rp_filter = 1\n' }) })), ['rp-filter-file', 'rp-filter-file']);
    assert.deepEqual(await findings({ root: fakeRoot({ 'etc/sysctl.d/50-x.conf': 'net.ipv4.conf.*.rp_filter = 1\nnet.ipv4.conf.wan1.rp_filter = 2\nnet.ipv4.conf.wan2.rp_filter=2\n' }) }), []);
    assert.deepEqual(await findings({ root: fakeRoot({ 'etc/sysctl.d/50-x.conf': 'net.ipv4.conf.wan1.rp_filter = 1\n', 'etc/sysctl.d/90-y.conf': 'net.ipv4.conf.wan1.rp_filter = 2\n' }) }), []);
    assert.deepEqual(await findings({ root: fakeRoot({ 'etc/sysctl.d/50-x.conf': 'net.ipv4.conf.wan1.rp_filter = 1\n', 'proc/sys/net/ipv4/conf/all/rp_filter': '2\n' }) }), []);
  });
});

describe('NetworkManager', () => {
  const withNmcli = () => fakePath([...ALL_TOOLS, 'nmcli']);

  test('managing an uplink: found, only for the managed one, with a conf.d file that unmanages it', async () => {
    const fs = await findings({ path: withNmcli(), machine: { nmcli: ok('wan1:connected\nwan2:unmanaged\nlan0:unmanaged\nlo:unmanaged\n') } });
    assert.deepEqual(ids(fs), ['networkmanager']);
    assert.match(fs[0].message, /manages wan1 \(uplink isp1, connected\):/);
    assert.doesNotMatch(fs[0].message, /wan2/);
    assert.match(fs[0].fix, /^printf '\[keyfile\]\\nunmanaged-devices=interface-name:wan1\\n' > \/etc\/NetworkManager\/conf\.d\/99-uplinkd\.conf/);
  });

  test('every uplink unmanaged, NetworkManager not running, or no nmcli: nothing', async () => {
    assert.deepEqual(await findings({ path: withNmcli(), machine: { nmcli: ok('wan1:unmanaged\nwan2:unmanaged\neth9:connected\n') } }), []);
    assert.deepEqual(await findings({ path: withNmcli() }), []);
    assert.deepEqual(await findings({ machine: { nmcli: ok('wan1:connected\n') } }), []);
  });
});

describe('routes and rules that decide before uplinkd', () => {
  test('0.0.0.0/1 + 128.0.0.0/1 (a VPN client\'s def1): found, with the routes', async () => {
    const main = [...LAB_MAIN, { dst: '0.0.0.0/1', gateway: '203.0.113.5', dev: 'tun0' }, { dst: '128.0.0.0/1', gateway: '203.0.113.5', dev: 'tun0' }];
    const fs = await findings({ machine: { main }, config: null });
    assert.deepEqual(ids(fs), ['shadowing-route']);
    assert.match(fs[0].message, /0\.0\.0\.0\/1 via 203\.0\.113\.5 dev tun0, 128\.0\.0\.0\/1 via 203\.0\.113\.5 dev tun0/);
    assert.match(fs[0].fix, /ip route del 0\.0\.0\.0\/1 dev tun0; ip route del 128\.0\.0\.0\/1 dev tun0/);
  });

  test('ordinary site and VPN routes (a /8, a host route, a throw): nothing', async () => {
    const main = [...LAB_MAIN, { dst: '10.0.0.0/8', dev: 'tun0' }, { dst: '203.0.113.9', dev: 'tun0' }, { type: 'throw', dst: '0.0.0.0/1' }];
    assert.deepEqual(await findings({ machine: { main } }), []);
  });

  test('a default route on an interface that is neither an uplink nor the LAN: found (needs the config)', async () => {
    const main = [{ dst: 'default', dev: 'tun0', metric: 50 }, ...LAB_MAIN];
    const fs = await findings({ machine: { main } });
    assert.deepEqual(ids(fs), ['foreign-default']);
    assert.match(fs[0].message, /default route on tun0, which is neither an uplink nor the LAN/);
    assert.match(fs[0].fix, /^ip route del default dev tun0 metric 50/);
    assert.deepEqual(await findings({ machine: { main }, config: null }), []);
  });

  test('a multipath default over the uplinks: nothing; with a foreign next hop: found', async () => {
    const multipath = { dst: 'default', nexthops: [{ gateway: '198.51.100.1', dev: 'wan1' }, { gateway: '198.51.100.17', dev: 'wan2' }] };
    assert.deepEqual(await findings({ machine: { main: [multipath] } }), []);
    const foreign = { dst: 'default', nexthops: [{ gateway: '198.51.100.1', dev: 'wan1' }, { gateway: '203.0.113.1', dev: 'eth9' }] };
    assert.deepEqual(ids(await findings({ machine: { main: [foreign] } })), ['foreign-default']);
  });

  test('a rule before uplinkd\'s range into a table with a default route: found', async () => {
    const rules = [...STANDARD_RULES, { priority: 100, src: 'all', table: '100' }, ...UPLINKD_RULES];
    const fs = await findings({ machine: { rules, tables: { 100: [{ dst: 'default', gateway: '198.51.100.1', dev: 'wan1' }] } }, config: null });
    assert.deepEqual(ids(fs), ['shadowing-rule']);
    assert.match(fs[0].message, /^ip rule priority 100 from all lookup 100 comes before uplinkd's rules \(from priority 10000\) and table 100 has a default route \(default via 198\.51\.100\.1 dev wan1\)/);
    assert.match(fs[0].fix, /ip rule del priority 100, then add it again with a priority above 10999/);
  });

  test('rules that do not shadow: no default in their table, suppress_prefixlength, after the range, actions, a moved range', async () => {
    const tables = { 52: [{ dst: '100.64.0.0/10', dev: 'tailscale0' }], 100: [{ dst: 'default', gateway: '198.51.100.1', dev: 'wan1' }] };
    const rules = [
      ...STANDARD_RULES,
      { priority: 50, src: 'all', table: '52' },
      { priority: 60, src: 'all', table: '77' },
      { priority: 70, src: 'all', table: '100', suppress_prefixlen: 0 },
      { priority: 80, src: '198.18.0.0', srclen: 24, action: 'blackhole' },
      { priority: 90, src: 'all', goto: 20000 },
      { priority: 20000, src: 'all', table: '100' },
    ];
    assert.deepEqual(await findings({ machine: { rules, tables } }), []);
    const moved = [...STANDARD_RULES, { priority: 100, src: 'all', table: '100' }];
    assert.deepEqual(await findings({ machine: { rules: moved, tables }, config: labConfig('kernel:\n  rule_priority: 50\n') }), []);
  });
});

describe('tools and kernel features', () => {
  test('a missing tool: found, with its package', async () => {
    const fs = await findings({ path: fakePath(['nft', 'ip', 'conntrack']) });
    assert.deepEqual(ids(fs), ['missing-tool']);
    assert.match(fs[0].message, /^fping is not on PATH/);
    assert.equal(fs[0].fix, 'apt-get install fping');
    const none = await findings({ path: fakePath([]), config: null });
    assert.deepEqual(none.map((f) => f.fix), ['apt-get install nftables', 'apt-get install iproute2', 'apt-get install conntrack', 'apt-get install fping']);
  });

  test('fping is not needed when no uplink checks by icmp', async () => {
    const config = parseConfig(
      'lan: [lan0]\nuplinks:\n  isp1:\n    interface: wan1\n    check: {method: tcp, targets: [192.0.2.10], port: 80}\n  isp2:\n    interface: wan2\n    check: false\n', 'x.yaml');
    assert.ok(config.ok);
    assert.deepEqual(await findings({ path: fakePath(['nft', 'ip', 'conntrack']), config: config.config }), []);
  });

  test('nftables, conntrack or policy routing failing: found, each with its fix', async () => {
    const answers = {
      'nft list tables': { code: 1, stdout: '', stderr: 'Error: Could not process rule: Protocol not supported\n' },
      'conntrack -S': { code: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): Operation failed: Protocol not supported\n' },
      'ip -4 rule show': { code: 2, stdout: '', stderr: 'RTNETLINK answers: Address family not supported by protocol\n' },
    };
    const fs = await findings({ machine: { answers } });
    assert.deepEqual(ids(fs), ['kernel-nftables', 'kernel-conntrack', 'kernel-policy-routing']);
    assert.match(fs[0].message, /nft list tables: Error: Could not process rule: Protocol not supported \(exit 1\)/);
    assert.match(fs[0].fix, /modprobe nf_tables/);
    assert.match(fs[1].fix, /modprobe nf_conntrack_netlink/);
    assert.match(fs[2].fix, /CONFIG_IP_MULTIPLE_TABLES/);
  });

  test('not root: the fix says so instead of blaming the kernel', async () => {
    const answers = { 'nft list tables': { code: 1, stdout: '', stderr: 'Error: Could not process rule: Operation not permitted\n' } };
    const [f] = await findings({ machine: { answers } });
    assert.match(f.fix, /run uplinkd doctor as root/);
  });
});

describe('the command', () => {
  test('without a config: the machine-wide checks run, and it says the per-uplink ones were skipped', async () => {
    const root = fakeRoot({ 'etc/nftables.conf': 'flush ruleset\n' });
    const saved = process.env.UPLINKD_CONFIG;
    delete process.env.UPLINKD_CONFIG;
    try {
      const report = await runDoctor({ root }, fakeRunner({}), fakePath(ALL_TOOLS));
      assert.equal(report.lines[0], `no config (${join(root, 'etc/uplinkd/uplinkd.yaml')}): skipped per-uplink checks`);
      assert.deepEqual(ids(report.findings), ['nftables-flush']);
      assert.match(report.lines[1], /^nftables-flush: \/etc\/nftables\.conf:1: .*; fix: /);
    } finally {
      if (saved !== undefined) process.env.UPLINKD_CONFIG = saved;
    }
  });

  test('an invalid config is a finding; a valid one enables the per-uplink checks', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'bad.yaml'), 'uplinks:\n  isp1: {interface: wan1, weight: -1}\n');
    const bad = await runDoctor({ root: fakeRoot(), config: join(dir, 'bad.yaml') }, fakeRunner({}), fakePath(ALL_TOOLS));
    assert.deepEqual(ids(bad.findings), ['config']);
    assert.match(bad.findings[0].fix, /uplinkd check -c .*bad\.yaml/);
    writeFileSync(join(dir, 'good.yaml'), 'lan: [lan0]\nuplinks:\n  isp1: {interface: wan1}\n');
    const good = await runDoctor({ root: fakeRoot(), config: join(dir, 'good.yaml') }, fakeRunner({ main: [{ dst: 'default', dev: 'tun0' }] }), fakePath(ALL_TOOLS));
    assert.deepEqual(ids(good.findings), ['foreign-default']);
  });
});
