// The lab itself, on the real kernel (run as root):
//   node --import tsx --test test/lab/lab.test.ts
// No uplinkd runs here: this checks the network the other lab tests stand on.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  isAlive, labClient, labCounters, labDown, labExec, labFail, labHeal, labRaMove, labRenumber, labUp, labWhoami, loadLab, type LabState,
} from '../../src/lab/lab.js';
import { uplinkdInRouter } from '../../src/lab/lab-daemon.js';
import { namespacesOf, processesWithEnv } from './harness.js';

const name = `t${process.pid % 100000}`;
let lab: LabState;

before(async () => {
  lab = await labUp({ name, uplinks: 2, capacities: ['20mbit', '10mbit'] });
});

after(async () => {
  await labDown(name);
  await labDown(`${name}-h`);
});

/** fping from a node; resolves true when every probe was answered. */
async function pings(node: string, ...args: string[]): Promise<boolean> {
  const { code } = await labExec(name, node, ['fping', '-q', '-t', '300', '-c', '3', '-p', '20', ...args]);
  return code === 0;
}

async function routerLink(ifname: string): Promise<string> {
  return (await labExec(name, 'router', ['ip', '-br', 'link', 'show', ifname])).stdout;
}

/**
 * One HTTP request from the router to the IPv6 whoami, bound to an uplink's
 * interface (so its own default route, whatever the metrics): the address the
 * far end saw, or undefined if it failed.
 */
async function whoami6Via(routerIf: string): Promise<string | undefined> {
  const r = await labExec(name, 'router', ['curl', '-s', '-m', '1', '--interface', routerIf, '-g', `http://[${lab.server6}]:${lab.whoamiPort}/`]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Running processes whose command line mentions `text`, e.g. the lab's state directory. */
function processesMentioning(text: string): number {
  return readdirSync('/proc').filter((pid) => /^\d+$/.test(pid) && isAlive(pid)).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text);
    } catch {
      return false; // gone meanwhile
    }
  }).length;
}

test('lab up builds every node with its addresses and a config', async () => {
  assert.deepEqual((await namespacesOf(name)).sort(), [lab.ns.inet, ...lab.ns.isps, lab.ns.lan, lab.ns.router].sort());
  assert.deepEqual(
    lab.uplinks.map((u) => [u.name, u.routerIf, u.address, u.gateway]),
    [['isp1', 'wan1', '198.51.100.2', '198.51.100.1'], ['isp2', 'wan2', '198.51.100.18', '198.51.100.17']],
  );
  const routes = (await labExec(name, 'router', ['ip', 'route', 'show', 'default'])).stdout;
  assert.match(routes, /default via 198\.51\.100\.1 dev wan1 metric 101/);
  assert.match(routes, /default via 198\.51\.100\.17 dev wan2 metric 102/);
  assert.deepEqual(
    lab.uplinks.map((u) => [u.address6, u.gateway6]),
    [['2001:db8:1::2', '2001:db8:1::1'], ['2001:db8:2::2', 'fe80::1']],
  );
  const routes6 = (await labExec(name, 'router', ['ip', '-6', 'route', 'show', 'default'])).stdout;
  assert.match(routes6, /default via 2001:db8:1::1 dev wan1 metric 101/);
  assert.match(routes6, /default via fe80::1 dev wan2 proto ra metric 102/);
  const lanAddresses = (await labExec(name, 'lan', ['ip', '-6', '-br', 'address', 'show', 'dev', 'eth0'])).stdout;
  for (const a of ['2001:db8:ff00::2/64', '2001:db8:ff00::100/64', '2001:db8:ff00::13f/64', '2001:db8:1:200::2/64', '2001:db8:2:200::2/64']) {
    assert.ok(lanAddresses.includes(a), `${a} on the LAN host: ${lanAddresses}`);
  }
  const source = (await labExec(name, 'lan', ['ip', '-6', 'route', 'get', lab.server6])).stdout;
  assert.match(source, /src 2001:db8:ff00::2 /, 'the LAN host\'s own address is its default IPv6 source');
  assert.deepEqual(loadLab(name), lab);
  const config = readFileSync(lab.configPath, 'utf8');
  assert.match(config, /interface: wan2/);
  assert.match(config, /gateway6: auto\n {4}nat6: snat/);
  assert.match(config, /targets: \[192\.0\.2\.10, 2001:db8:ffff::10\]/);
  const check = await uplinkdInRouter(lab, ['check', '-c', lab.configPath]);
  assert.equal(check.code, 0, `uplinkd check: ${check.stdout}${check.stderr}`);
});

test('every node has its IPv6 sysctls set, not inherited', async () => {
  const sysctl = async (node: string, key: string) => (await labExec(name, node, ['sysctl', '-n', key])).stdout.trim();
  for (const node of ['router', 'isp1', 'isp2']) assert.equal(await sysctl(node, 'net.ipv6.conf.all.forwarding'), '1', node);
  for (const node of ['lan', 'inet']) assert.equal(await sysctl(node, 'net.ipv6.conf.all.forwarding'), '0', node);
  assert.equal(await sysctl('router', 'net.ipv6.conf.wan2.accept_ra'), '2');
  assert.equal(await sysctl('router', 'net.ipv6.conf.wan1.accept_ra'), '0');
  assert.equal(await sysctl('lan', 'net.ipv6.conf.eth0.accept_ra'), '0');
  assert.equal(await sysctl('router', 'net.ipv6.conf.wan1.accept_dad'), '0');
  assert.equal(await sysctl('isp1', 'net.ipv6.conf.eth0.dad_transmits'), '0');
});

test('the LAN host reaches the router', async () => {
  assert.ok(await pings('lan', lab.lanAddress));
});

test('whoami sees the address a connection left the router from', async () => {
  const wan1 = lab.uplinks[0].address;
  const r = await labClient(name, 'router', ['http', '--count', '20', '--sources', wan1]);
  assert.equal(r.ok, 20, JSON.stringify(r.errors));
  assert.deepEqual(r.seen, { [wan1]: 20 });
  assert.deepEqual(r.bySource, { [wan1]: { [wan1]: 20 } });
  const udp = await labClient(name, 'router', ['udp', '--count', '10', '--sources', wan1]);
  assert.deepEqual(udp.seen, { [wan1]: 10 });
});

test('the router reaches the IPv6 server through each uplink, from its own address there', async () => {
  for (const u of lab.uplinks) assert.equal(await whoami6Via(u.routerIf), u.address6, `through ${u.routerIf}`);
  // The lab's client, from a chosen IPv6 source (wan1's, the lowest-metric default route).
  const wan1 = lab.uplinks[0].address6!;
  const r = await labClient(name, 'router', ['http', '--dst', lab.server6, '--count', '20', '--sources', wan1]);
  assert.equal(r.ok, 20, JSON.stringify(r.errors));
  assert.deepEqual(r.bySource, { [wan1]: { [wan1]: 20 } });
  const udp = await labClient(name, 'router', ['udp', '--dst', lab.server6, '--count', '10', '--sources', wan1]);
  assert.deepEqual(udp.seen, { [wan1]: 10 });
});

test('a whoami runs on the router too, reachable from the internet', async () => {
  const pid = await labWhoami(name, 'router', 8081);
  assert.ok(loadLab(name).pids.includes(pid));
  const wan1 = lab.uplinks[0].address;
  const r = await labClient(name, 'inet', ['http', '--url', `http://${wan1}:8081/`, '--count', '5']);
  assert.deepEqual(r.seen, { [lab.server]: 5 });
  const udp = await labClient(name, 'inet', ['udp', '--host', wan1, '--port', '8081', '--count', '5']);
  assert.deepEqual(udp.seen, { [lab.server]: 5 });
  // Bound to one address, it answers UDP from that address whatever the route back.
  await labWhoami(name, 'router', 8082, wan1);
  const bound = await labClient(name, 'inet', ['udp', '--host', wan1, '--port', '8082', '--count', '5']);
  assert.deepEqual(bound.seen, { [lab.server]: 5 });
  // The first one takes IPv6 too, on the router's address of wan1.
  const six = await labClient(name, 'inet', ['http', '--dst', lab.uplinks[0].address6!, '--port', '8081', '--count', '5']);
  assert.deepEqual(six.seen, { [lab.server6]: 5 });
});

test('an ISP drops what leaks out unNATed, and counts it', async () => {
  const before = (await labCounters(name, 'isp1')).spoofed;
  // No uplinkd, so no NAT: the LAN host's own address goes out wan1 (the lowest metric) as is.
  assert.equal(await pings('lan', lab.server), false);
  assert.ok((await labCounters(name, 'isp1')).spoofed >= before + 3);
});

test('over IPv6 too: the ISP drops and counts a LAN source that is not its customer\'s (BCP 38)', async () => {
  const lan6 = (source: string) => labClient(name, 'lan', ['http', '--dst', lab.server6, '--sources', source, '--count', '3', '--timeout-ms', '500']);
  const before = await labCounters(name, 'isp1');
  // No uplinkd, so no NAT66: the LAN's own prefix, and uplink 2's routed one, leave by wan1 (the lowest metric).
  for (const source of [lab.lanHost6, '2001:db8:2:200::2']) assert.equal((await lan6(source)).ok, 0, `${source} through isp1`);
  const after = await labCounters(name, 'isp1');
  assert.ok(after.spoofed6 >= before.spoofed6 + 6, `spoofed6 ${before.spoofed6} -> ${after.spoofed6}`);
  assert.equal(after.spoofed, before.spoofed, 'counted as IPv6');
  // A LAN address from isp1's own routed prefix is the customer's: it passes, and the answer comes back.
  const routed = await lan6('2001:db8:1:200::2');
  assert.deepEqual(routed.seen, { '2001:db8:1:200::2': 3 });
  assert.equal((await labCounters(name, 'isp1')).spoofed6, after.spoofed6);
});

test('uplink 2 learns its IPv6 address and default route from the ISP\'s router advertisements, and follows a new router', async () => {
  const addresses = JSON.parse((await labExec(name, 'router', ['ip', '-j', '-6', 'address', 'show', 'dev', 'wan2', 'scope', 'global'])).stdout) as
    { addr_info: { local: string; dynamic?: boolean; valid_life_time: number }[] }[];
  const slaac = addresses[0].addr_info.find((a) => a.local === '2001:db8:2::2');
  assert.ok(slaac?.dynamic && slaac.valid_life_time < 0xffffffff, `a SLAAC address with a lifetime: ${JSON.stringify(addresses)}`);
  assert.match((await labExec(name, 'router', ['ip', '-6', 'route', 'show', 'default', 'dev', 'wan2'])).stdout, /^default via fe80::1 proto ra metric 102 expires/);
  assert.match(readFileSync(join(lab.stateDir, 'ra-server-isp2.log'), 'utf8'), /RTR-ADVERT\(eth0\) 2001:db8:2::/);

  const moved = await labRaMove(name, 'isp2');
  try {
    assert.deepEqual([moved.from, moved.to], ['fe80::1', 'fe80::3']);
    const routes = (await labExec(name, 'router', ['ip', '-6', 'route', 'show', 'default', 'dev', 'wan2'])).stdout;
    assert.match(routes, /^default via fe80::3 proto ra metric 102/);
    assert.doesNotMatch(routes, /fe80::1 /, 'the old router said goodbye');
    assert.equal(loadLab(name).uplinks[1].gateway6, 'fe80::3');
    assert.equal(await whoami6Via('wan2'), '2001:db8:2::2');
  } finally {
    await labRaMove(name, 'isp2');
  }
  assert.equal(await whoami6Via('wan2'), '2001:db8:2::2');
});

test('capacity is a tbf on both directions of the uplink', async () => {
  const qdisc = (await labExec(name, 'isp2', ['tc', 'qdisc', 'show', 'dev', 'eth0'])).stdout;
  assert.match(qdisc, /tbf .*rate 10Mbit/);
  for (const [server, source] of [[lab.server, lab.uplinks[0].address], [lab.server6, lab.uplinks[0].address6!]]) {
    const r = await labExec(name, 'router', ['iperf3', '-c', server, '-B', source, '-t', '1', '-J']);
    assert.equal(r.code, 0, r.stdout);
    const mbps = JSON.parse(r.stdout).end.sum_received.bits_per_second / 1e6;
    assert.ok(mbps > 14 && mbps < 21, `${mbps} Mbit/s to ${server} through a 20mbit uplink`);
  }
});

test('upstream fail: the gateway still answers, nothing beyond it does', async () => {
  await labFail(name, 'isp1', 'upstream');
  try {
    assert.equal(loadLab(name).uplinks[0].fault, 'upstream');
    assert.equal(await pings('router', '-I', 'wan1', lab.server), false);
    assert.ok(await pings('router', '-I', 'wan1', lab.uplinks[0].gateway));
    assert.ok((await labCounters(name, 'isp1')).upstream >= 3);
    assert.ok(await pings('router', '-I', 'wan2', lab.server), 'the other uplink is untouched');
  } finally {
    await labHeal(name, 'isp1');
  }
  assert.equal(loadLab(name).uplinks[0].fault, undefined);
  assert.ok(await pings('router', '-I', 'wan1', lab.server));
});

test('upstream fail of IPv6 only: IPv6 through that ISP stops, IPv4 still passes; heal restores it', async () => {
  const before = await labCounters(name, 'isp1');
  await labFail(name, 'isp1', 'upstream', 'ipv6');
  try {
    assert.deepEqual([loadLab(name).uplinks[0].fault, loadLab(name).uplinks[0].faultFamily], ['upstream', 'ipv6']);
    assert.equal(await whoami6Via('wan1'), undefined);
    assert.equal(await pings('router', '-6', '-I', 'wan1', lab.server6), false);
    assert.ok(await pings('router', '-6', '-I', 'wan1', lab.uplinks[0].gateway6!), 'the gateway still answers');
    assert.ok(await pings('router', '-I', 'wan1', lab.server), 'IPv4 through the same ISP passes');
    const r = await labClient(name, 'router', ['http', '--count', '5', '--sources', lab.uplinks[0].address]);
    assert.deepEqual(r.seen, { [lab.uplinks[0].address]: 5 });
    const during = await labCounters(name, 'isp1');
    assert.ok(during.upstream6 >= before.upstream6 + 3, `upstream6 ${before.upstream6} -> ${during.upstream6}`);
    assert.equal(during.upstream, before.upstream, 'no IPv4 packet dropped');
    assert.equal(await whoami6Via('wan2'), lab.uplinks[1].address6, 'the other uplink is untouched');
  } finally {
    await labHeal(name, 'isp1');
  }
  assert.equal(loadLab(name).uplinks[0].faultFamily, undefined);
  assert.equal(await whoami6Via('wan1'), lab.uplinks[0].address6);

  // And the other way round, with loss: all IPv4 lost, IPv6 untouched.
  await labFail(name, 'isp1', 'loss:100%', 'ipv4');
  try {
    assert.equal(await pings('router', '-I', 'wan1', lab.server), false);
    assert.equal(await whoami6Via('wan1'), lab.uplinks[0].address6);
  } finally {
    await labHeal(name, 'isp1');
  }
  await assert.rejects(labFail(name, 'isp1', 'link', 'ipv6'), /--family ipv6 does not go with --mode link: a link carries both families/);
  await assert.rejects(labFail(name, 'isp1', 'upstream', 'ipv5'), /family 'ipv5' must be ipv4 or ipv6/);
  assert.equal(loadLab(name).uplinks[0].fault, undefined, 'a refused fail changes nothing');
});

test('link fail: the router sees NO-CARRIER on the wan', async () => {
  await labFail(name, 'isp2', 'link');
  try {
    assert.match(await routerLink('wan2'), /NO-CARRIER/);
  } finally {
    await labHeal(name, 'isp2');
  }
  assert.match(await routerLink('wan2'), /LOWER_UP/);
  assert.ok(await pings('router', '-I', 'wan2', lab.server));
  // The ISP's eth0 came back with its link-local next hop and its routes to the LAN's routed prefix.
  assert.equal(await whoami6Via('wan2'), lab.uplinks[1].address6);
  assert.ok(await pings('isp2', '-6', '2001:db8:2:200::1'), 'isp2 routes 2001:db8:2:200::/56 to the router again');
});

test('loss fail drops that share of packets each way', async () => {
  await labFail(name, 'isp1', 'loss:100%');
  try {
    assert.equal(await pings('router', '-I', 'wan1', lab.server), false);
    assert.ok((await labCounters(name, 'isp1')).loss >= 3);
    await labFail(name, 'isp1', 'loss:50%'); // replaces the fault
    const r = await labExec(name, 'router', ['fping', '-q', '-I', 'wan1', '-t', '50', '-c', '200', '-p', '2', '-i', '1', lab.server]);
    const lost = Number(/\/(\d+)%/.exec(r.stderr)?.[1]);
    // Half of the requests, then half of the answers: 75% of round trips.
    assert.ok(lost > 60 && lost < 90, r.stderr);
  } finally {
    await labHeal(name, 'isp1');
  }
  assert.ok(await pings('router', '-I', 'wan1', lab.server));
});

test('renumber moves an uplink to its other /28 and back, like a DHCP renew', async () => {
  const moved = await labRenumber(name, 'isp2');
  assert.deepEqual([moved.address, moved.gateway], ['198.51.100.146', '198.51.100.145']);
  assert.equal(loadLab(name).uplinks[1].address, '198.51.100.146');
  const addresses = (await labExec(name, 'router', ['ip', '-br', 'address', 'show', 'wan2'])).stdout;
  assert.match(addresses, /198\.51\.100\.146\/28/);
  assert.doesNotMatch(addresses, /198\.51\.100\.18\//);
  const routes = (await labExec(name, 'router', ['ip', 'route', 'show', 'default'])).stdout;
  assert.match(routes, /default via 198\.51\.100\.145 dev wan2 metric 102/);
  assert.doesNotMatch(routes, /198\.51\.100\.17/);
  assert.ok(await pings('router', '-I', 'wan2', lab.server), 'the ISP accepts the new address');

  const back = await labRenumber(name, 'isp2');
  assert.equal(back.address, '198.51.100.18');
  assert.ok(await pings('router', '-I', 'wan2', lab.server));
});

test('lab up refuses a name that is taken; loadLab names what is missing', async () => {
  await assert.rejects(labUp({ name }), /already exists.*down/);
  assert.throws(() => loadLab('nosuchlab'), /no lab 'nosuchlab'/);
  assert.ok(await pings('lan', lab.lanAddress), 'the refused up left the lab alone');
});

test('a lab up that fails leaves nothing behind', async () => {
  const broken = `${name}-h`;
  await assert.rejects(labUp({ name: broken, capacities: ['fast'] }), /capacity 'fast'/);
  assert.deepEqual(await namespacesOf(broken), []);

  // Fail at the very end, with every namespace built and whoami running: an iperf3 that dies at once.
  const fakeBin = mkdtempSync(join(tmpdir(), 'lab-fake-'));
  writeFileSync(join(fakeBin, 'iperf3'), '#!/bin/sh\necho "no iperf3 today" >&2\nexit 1\n', { mode: 0o755 });
  const path = process.env.PATH;
  process.env.PATH = `${fakeBin}:${path}`;
  // Its servers inherit this, so they can be found after their namespace is gone.
  process.env.LAB_TEST_MARK = broken;
  try {
    await assert.rejects(labUp({ name: broken, uplinks: 3 }), /iperf3 exited before listening: no iperf3 today/);
  } finally {
    process.env.PATH = path;
    delete process.env.LAB_TEST_MARK;
  }
  assert.deepEqual(await namespacesOf(broken), []);
  assert.equal(existsSync(`/run/uplinkd-lab/${broken}`), false);
  assert.equal(processesWithEnv(`LAB_TEST_MARK=${broken}`), 0, 'its whoami was stopped');

  // An ISP that never advertises: lab up says so within a few seconds, and cleans up.
  rmSync(join(fakeBin, 'iperf3'));
  writeFileSync(join(fakeBin, 'dnsmasq'), '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
  process.env.PATH = `${fakeBin}:${path}`;
  const startedAt = Date.now();
  try {
    await assert.rejects(labUp({ name: broken }), /isp2: no router advertisement applied within 5000 ms: wanted 2001:db8:2::2\/64 by SLAAC/);
  } finally {
    process.env.PATH = path;
    rmSync(fakeBin, { recursive: true });
  }
  assert.ok(Date.now() - startedAt < 10_000, `gave up after ${Date.now() - startedAt} ms`);
  assert.deepEqual(await namespacesOf(broken), []);
});

test('lab down removes everything, and again is no error', async () => {
  const { pids, uplinks } = loadLab(name);
  const ra = uplinks[1].ra?.serverPid;
  assert.ok(ra !== undefined && isAlive(ra) && pids.includes(ra), 'the router advertisements run, recorded');
  assert.ok(processesMentioning(`--pid-file=${lab.stateDir}/`) >= 1, 'dnsmasq keeps its pid file in the lab\'s folder');
  await labDown(name);
  assert.deepEqual(await namespacesOf(name), []);
  assert.equal(existsSync(lab.stateDir), false);
  assert.deepEqual(pids.filter(isAlive), [], 'its servers were stopped');
  assert.equal(processesMentioning(`${lab.stateDir}/`), 0, 'no dnsmasq (nor anything else of the lab) is left');
  await labDown(name);
  assert.throws(() => loadLab(name), /no lab/);
});
