// Dual stack with `uplinkd run` in the lab (README "The lab", IPv6): weights,
// split access, every nat6 mode, pins, the router's own connections, failover
// of one family, and a gateway learnt from router advertisements that
// changes. Every assertion is what the far end saw (the address whoami
// reports), or the kernel table the daemon keeps:
//   node --import tsx --test test/lab/ipv6.test.ts
// It needs the daemon's IPv6 side: the kernel edge reading addresses6 and
// mainDefaultRoutes6, and health per family (status `families`).

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { labConfig, writeLabConfig, type LabUplinkConfig } from '../../src/lab/lab-config.js';
import { startDaemon, type LabDaemon } from '../../src/lab/lab-daemon.js';
import { labClient, labCounters, labDown, labExec, labFail, labRaMove, labUp, labWhoami, loadLab, type LabState } from '../../src/lab/lab.js';
import type { ClientResult } from '../../src/lab/client.js';
import { DEFAULT_OWNERSHIP, uplinkTable } from '../../src/ownership.js';
import { uplinkWiring6 } from '../../src/lab/topology.js';
import { assertShares, resetLab, uniqueLabName, waitFor } from './harness.js';

let lab: LabState;
let daemon: LabDaemon | undefined;
/** The router's IPv6 address on uplink 1 and 2: what the far end sees of a snat or masquerade connection. */
let wan1: string;
let wan2: string;

before(async () => {
  lab = await labUp({ name: uniqueLabName('v6'), uplinks: 2 });
  [wan1, wan2] = lab.uplinks.map((u) => u.address6!);
});
after(async () => {
  await daemon?.stop();
  await labDown(lab.name);
});
afterEach(async () => {
  lab = await resetLab(lab, daemon);
  daemon = undefined;
});

/** The status of one family of an uplink, as the daemon reports it (`families` in README "Status"). */
type FamilyState = { state?: string; address?: string; gateway?: string };
type WithFamilies = { name: string; families?: Record<'ipv4' | 'ipv6', FamilyState> };

async function familyStates(d: LabDaemon): Promise<Record<string, Record<string, string | undefined>>> {
  const status = await d.status();
  return Object.fromEntries(((status?.uplinks ?? []) as WithFamilies[]).map((u) =>
    [u.name, { ipv4: u.families?.ipv4.state, ipv6: u.families?.ipv6.state }]));
}

/**
 * Starts uplinkd with a config for these uplinks (checking both servers) and
 * waits until each uplink's IPv6 is up too, not only the uplink.
 */
async function run(uplinks: LabUplinkConfig[] = [{ k: 1 }, { k: 2 }], extra: { rules?: string; top?: string } = {}): Promise<string> {
  const yaml = labConfig(lab, { uplinks, checkTargets: [lab.server, lab.server6], api: { http: 'off' }, ...extra });
  const path = writeLabConfig(lab, 'ipv6.yaml', yaml);
  daemon = await startDaemon(lab, path);
  const d = daemon;
  const names = uplinks.map((u) => lab.uplinks[u.k - 1].name);
  const up = await waitFor(async () => {
    const states = await familyStates(d);
    return names.every((n) => states[n]?.ipv6 === 'up');
  }, 10_000);
  assert.ok(up, `IPv6 of ${names.join(', ')} not up within 10 s: ${JSON.stringify(await familyStates(d))}`);
  return path;
}

/** `count` new IPv6 HTTP connections from a node to the IPv6 whoami (or `dst`), the far end reporting the source it saw. */
function connections6(node: string, count: number, extra: string[] = [], dst = lab.server6): Promise<ClientResult> {
  return labClient(lab.name, node, ['http', '--dst', dst, '--count', String(count), '--concurrency', '16', '--timeout-ms', '1500', ...extra]);
}

test('IPv6 weights 3:1 give 75/25 over 800 new LAN connections, each NATed to its uplink\'s IPv6 address', async () => {
  await run([{ k: 1, weight: 3 }, { k: 2, weight: 1 }]);
  const r = await connections6('lan', 800);
  assert.equal(r.ok, 800, JSON.stringify(r.errors));
  assertShares(r, { [wan1]: 0.75, [wan2]: 0.25 }, {
    what: 'IPv6 by weight', unlike: [{ [wan1]: 0.5, [wan2]: 0.5 }, { [wan1]: 1 }, { [wan2]: 1 }],
  });
});

test('IPv6 split access: a service on the router answers through each uplink; a connection to a routed LAN address through the uplink it came in on', async () => {
  const routerPort = 8081;
  await labWhoami(lab.name, 'router', routerPort);
  await labWhoami(lab.name, 'lan', 8082);
  const reach = (address: string, port: number) =>
    labClient(lab.name, 'inet', ['http', '--dst', address, '--port', String(port), '--count', '10', '--timeout-ms', '1000']);
  const routedHost = uplinkWiring6(2).routedLan.host;
  // Without uplinkd the main table answers both by isp1, whose ISP drops uplink 2's sources.
  // Checked on servers of their own, stopped afterwards: their unanswered
  // connections would retransmit SYN-ACKs by isp1 for seconds, into the count below.
  const precheck = [await labWhoami(lab.name, 'router', routerPort + 10), await labWhoami(lab.name, 'lan', 8092)];
  assert.equal((await reach(wan2, routerPort + 10)).ok, 0, 'the lab must make asymmetric IPv6 replies fail');
  assert.equal((await reach(routedHost, 8092)).ok, 0, 'the lab must make asymmetric IPv6 replies fail');
  for (const pid of precheck) process.kill(pid, 'SIGKILL');
  await run();
  for (const address of [wan1, wan2]) {
    const r = await reach(address, routerPort);
    assert.deepEqual(r.seen, { [lab.server6]: 10 }, `router service via ${address}: ${JSON.stringify(r.errors)}`);
  }
  const before = (await labCounters(lab.name, 'isp1')).spoofed6;
  const forwarded = await reach(routedHost, 8082);
  assert.deepEqual(forwarded.seen, { [lab.server6]: 10 }, `in by isp2 to ${routedHost}: ${JSON.stringify(forwarded.errors)}`);
  assert.equal((await labCounters(lab.name, 'isp1')).spoofed6, before, 'no answer tried isp1');
});

test('nat6 masquerade: the far end sees each uplink\'s own IPv6 address', async () => {
  await run([{ k: 1, nat6: 'masquerade' }, { k: 2, nat6: 'masquerade' }]);
  const r = await connections6('lan', 200);
  assertShares(r, { [wan1]: 0.5, [wan2]: 0.5 }, { what: 'masquerade', unlike: [{ [wan1]: 1 }, { [wan2]: 1 }] });
});

test('nat6 prefix: the LAN prefix is mapped onto each uplink\'s routed /64, the host part kept', async () => {
  await run([{ k: 1, nat6: 'prefix' }, { k: 2, nat6: 'prefix' }]);
  const sources = lab.lanSources6.slice(0, 16);
  const r = await connections6('lan', 160, ['--sources', sources.join(',')]);
  assert.equal(r.ok, 160, JSON.stringify(r.errors));
  const used = new Set<string>();
  for (const source of sources) {
    const host = source.split('::')[1];
    const mapped = [`2001:db8:1:100::${host}`, `2001:db8:2:100::${host}`];
    for (const seen of Object.keys(r.bySource[source] ?? {})) {
      assert.ok(mapped.includes(seen), `${source} arrived as ${seen}, not as one of ${mapped.join(', ')}`);
      used.add(seen.split('::')[0]);
    }
  }
  assert.deepEqual([...used].sort(), ['2001:db8:1:100', '2001:db8:2:100'], 'both uplinks carry mapped connections');
});

test('nat6 none: a LAN host\'s routed source leaves by its own uplink, unNATed; other sources never take that uplink', async () => {
  // isp1 maps the LAN prefix (prefix mode claims it), so the none uplink's
  // routed prefix is read off the LAN as the one its address shares most with.
  await run([{ k: 1, nat6: 'prefix' }, { k: 2, nat6: 'none' }]);
  const routed = uplinkWiring6(2).routedLan.host;
  const own = await connections6('lan', 100, ['--sources', routed]);
  assert.deepEqual(own.seen, { [routed]: 100 }, JSON.stringify(own.errors));
  const source = lab.lanSources6[5];
  const other = await connections6('lan', 100, ['--sources', source]);
  const mapped = `2001:db8:1:100::${source.split('::')[1]}`;
  assert.deepEqual(other.seen, { [mapped]: 100 }, `a nat6: none uplink gets no other connections: ${JSON.stringify(other.errors)}`);
});

test('IPv6 pins by source prefix and by port; an IPv6 pin leaves IPv4 balanced', async () => {
  const otherPort = 8081;
  await labWhoami(lab.name, 'inet', otherPort);
  const rules = `  - { name: v6-source, src: 2001:db8:ff00::100/126, via: isp2 }
  - { name: v6-port, dst: 2001:db8:ffff::/48, proto: tcp, dport: ${otherPort}, via: isp1 }
`;
  await run(undefined, { rules });
  const pinned = await connections6('lan', 100, ['--sources', lab.lanSources6.slice(0, 4).join(',')]);
  assert.deepEqual(pinned.seen, { [wan2]: 100 }, JSON.stringify(pinned.errors));
  const unpinned = await connections6('lan', 100, ['--sources', lab.lanSources6.slice(4, 8).join(',')]);
  assertShares(unpinned, { [wan1]: 0.5, [wan2]: 0.5 }, { what: 'sources outside the pin', unlike: [{ [wan2]: 1 }] });
  const byPort = await labClient(lab.name, 'lan', ['http', '--dst', lab.server6, '--port', String(otherPort), '--count', '100', '--concurrency', '16']);
  assert.deepEqual(byPort.seen, { [wan1]: 100 }, JSON.stringify(byPort.errors));
  const ipv4 = await labClient(lab.name, 'lan', ['http', '--count', '100', '--concurrency', '16', '--sources', lab.lanSources.slice(0, 4).join(',')]);
  const [v4a, v4b] = lab.uplinks.map((u) => u.address);
  assertShares(ipv4, { [v4a]: 0.5, [v4b]: 0.5 }, { what: 'IPv4 from the IPv4 twins of the pinned sources', unlike: [{ [v4b]: 1 }] });
});

test('the router\'s own IPv6 connections are balanced; bound to an uplink\'s address they use that uplink', async () => {
  await run();
  const unbound = await connections6('router', 200);
  assertShares(unbound, { [wan1]: 0.5, [wan2]: 0.5 }, { what: "the router's unbound IPv6 connections", unlike: [{ [wan1]: 1 }, { [wan2]: 1 }] });
  for (const address of [wan1, wan2]) {
    const bound = await connections6('router', 50, ['--sources', address]);
    assert.deepEqual(bound.seen, { [address]: 50 }, JSON.stringify(bound.errors));
  }
});

test('IPv6 failover: isp1 failed for IPv6 only takes its IPv6 down, new IPv6 connections use isp2, IPv4 on isp1 is untouched', async () => {
  await run();
  const faultAt = Date.now();
  await labFail(lab.name, 'isp1', 'upstream', 'ipv6');
  const d = daemon!;
  const down = await waitFor(async () => (await familyStates(d)).isp1?.ipv6 === 'down', 10_000);
  assert.ok(down, `isp1's IPv6 not down within 10 s: ${JSON.stringify(await familyStates(d))}`);
  assert.equal((await familyStates(d)).isp1.ipv4, 'up', 'isp1 IPv4 stays up');
  let failoverMs: number | undefined;
  while (Date.now() < faultAt + 10_000 && failoverMs === undefined) {
    const tryAt = Date.now();
    const batch = await labClient(lab.name, 'lan', ['http', '--dst', lab.server6, '--count', '10', '--concurrency', '10', '--timeout-ms', '300']);
    if (batch.ok === 10 && Object.keys(batch.seen).every((a) => a === wan2)) failoverMs = tryAt - faultAt;
  }
  console.log(`# IPv6 failover (upstream, ipv6 only): ${failoverMs} ms`);
  assert.ok(failoverMs !== undefined, 'new IPv6 connections never all succeeded through isp2 within 10 s');
  // The bound IPv4 has for an upstream fault (test/lab/daemon.test.ts), the client's start-up included.
  assert.ok(failoverMs <= 1500, `IPv6 failover took ${failoverMs} ms`);
  const six = await connections6('lan', 100);
  assert.deepEqual(six.seen, { [wan2]: 100 }, JSON.stringify(six.errors));
  const four = await labClient(lab.name, 'lan', ['http', '--count', '200', '--concurrency', '16']);
  const [v4a, v4b] = lab.uplinks.map((u) => u.address);
  assertShares(four, { [v4a]: 0.5, [v4b]: 0.5 }, { what: 'IPv4 with isp1 failed for IPv6 only', unlike: [{ [v4b]: 1 }] });
});

test('the gateway learnt from router advertisements is followed when the ISP\'s router changes', async () => {
  // Pinned to isp2, so every connection needs uplink 2's IPv6 next hop.
  await run(undefined, { rules: '  - { name: via-ra, src: 2001:db8:ff00::100, via: isp2 }\n' });
  const table = String(uplinkTable(DEFAULT_OWNERSHIP, 1));
  const route = async () => (await labExec(lab.name, 'router', ['ip', '-6', 'route', 'show', 'table', table, 'default'])).stdout;
  assert.match(await route(), /via fe80::1 dev wan2/);
  const source = ['--sources', lab.lanSources6[0]];
  assert.deepEqual((await connections6('lan', 20, source)).seen, { [wan2]: 20 });

  const moved = await labRaMove(lab.name, 'isp2');
  assert.equal(moved.to, 'fe80::3');
  // labRaMove returns once the new router's route is in the main table: from there, uplinkd's table follows within 1 s.
  const movedAt = Date.now();
  const followed = await waitFor(async () => /via fe80::3 dev wan2/.test(await route()), 5000);
  const followMs = Date.now() - movedAt;
  console.log(`# RA router change: uplinkd's table followed ${followMs} ms after the main table had the new route`);
  assert.ok(followed && followMs <= 1000, `uplinkd's table ${table} did not follow the new router within 1 s (${followMs} ms): ${await route()}`);
  assert.doesNotMatch(await route(), /fe80::1/);
  // Between the old router's goodbye and the new one's first advertisement
  // wan2 had no IPv6 default route, so its IPv6 was rightly taken down; its
  // probes through the new router bring it back.
  const back = await waitFor(async () => (await familyStates(daemon!)).isp2?.ipv6 === 'up', 10_000);
  assert.ok(back, `isp2's IPv6 not back up through the new router: ${JSON.stringify(await familyStates(daemon!))}`);
  const after = await connections6('lan', 50, source);
  assert.deepEqual(after.seen, { [wan2]: 50 }, JSON.stringify(after.errors));
  assert.equal(loadLab(lab.name).uplinks[1].gateway6, 'fe80::3');
  await labRaMove(lab.name, 'isp2'); // back to fe80::1 for whatever runs next
});

test('IPv6 address changes are followed within 1 s: a new address, then that address deprecated', async () => {
  const router = (...argv: string[]) => labExec(lab.name, 'router', argv);
  const fresh = '2001:db8:1::3';
  const isp1Only = ['--sources', lab.lanSources6[0]];
  await run(undefined, { rules: `  - { name: to-isp1, src: ${lab.lanSources6[0]}, via: isp1 }\n` });
  assert.deepEqual((await connections6('lan', 10, isp1Only)).seen, { [wan1]: 10 });
  /** Milliseconds from `changedAt` to the start of the first batch whose connections all left from `address`. */
  const followed = async (address: string, changedAt: number): Promise<number | undefined> => {
    while (Date.now() < changedAt + 5000) {
      const tryAt = Date.now();
      const batch = await connections6('lan', 5, [...isp1Only, '--timeout-ms', '300']);
      if (batch.ok === 5 && Object.keys(batch.seen).every((a) => a === address)) return tryAt - changedAt;
    }
    return undefined;
  };
  try {
    // The kernel lists the newest address first; uplinkd takes the first stable one.
    assert.equal((await router('ip', '-6', 'address', 'add', `${fresh}/64`, 'dev', 'wan1', 'nodad')).code, 0);
    const added = await followed(fresh, Date.now());
    console.log(`# new IPv6 address: the first batch that saw only it started ${added} ms after the change`);
    assert.ok(added !== undefined && added <= 1000, `new connections left from ${fresh} only after ${added} ms`);
    // Deprecated (preferred lifetime over, as when a prefix is withdrawn): no longer a source for new connections.
    assert.equal((await router('ip', '-6', 'address', 'change', `${fresh}/64`, 'dev', 'wan1', 'preferred_lft', '0')).code, 0);
    const deprecated = await followed(wan1, Date.now());
    console.log(`# deprecated IPv6 address: the first batch that left from the other started ${deprecated} ms after the change`);
    assert.ok(deprecated !== undefined && deprecated <= 1000, `new connections left from ${wan1} again only after ${deprecated} ms`);
    const events = (await daemon!.status())?.events.filter((e) => e.event === 'address' && e.uplink === 'isp1').map((e) => e.reason);
    assert.deepEqual(events, [`wan1 IPv6 address ${fresh} -> ${wan1}`, `wan1 IPv6 address ${wan1} -> ${fresh}`]);
  } finally {
    await router('ip', '-6', 'address', 'del', `${fresh}/64`, 'dev', 'wan1');
  }
});
