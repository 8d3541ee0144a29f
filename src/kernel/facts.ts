// Reads what the planner needs to know about the kernel, through `ip -j`, and
// the interfaces' byte counters the rate estimators sample.

import { readFileSync } from 'node:fs';
import type { InterfaceFacts, KernelFacts } from '../plan/state.js';
import { cgroupFacts } from './cgroups.js';
import { mustRun, procSysctl, type Runner } from './runner.js';

interface IpAddrJson {
  ifname: string;
  flags?: string[];
  addr_info?: {
    family: string; local: string; prefixlen: number; address?: string; scope?: string;
    // IPv6 only, each printed (as true) only when set.
    temporary?: boolean; tentative?: boolean; dadfailed?: boolean; deprecated?: boolean; preferred_life_time?: number;
  }[];
}

interface IpRouteJson {
  dst: string; gateway?: string; dev?: string; metric?: number;
  /** A multipath route (IPv6 ECMP siblings, e.g. `ip -6 route add default nexthop … nexthop …`): one hop each, no gateway/dev above. */
  nexthops?: { gateway?: string; dev?: string }[];
}

export function parseInterfaces(json: string): InterfaceFacts[] {
  return (JSON.parse(json) as IpAddrJson[]).map((link) => {
    const flags = link.flags ?? [];
    return {
      name: link.ifname,
      carrier: flags.includes('UP') && flags.includes('LOWER_UP'),
      pointToPoint: flags.includes('POINTOPOINT'),
      addresses: (link.addr_info ?? [])
        .filter((a) => a.family === 'inet')
        .map((a) => ({ address: a.local, prefixLen: a.prefixlen, ...(a.address && a.address !== a.local ? { peer: a.address } : {}) })),
      addresses6: usableAddresses6(link.addr_info ?? []),
    };
  });
}

/**
 * The global IPv6 addresses a socket may use as source now. Left out: other
 * scopes (link-local fe80::, ::1), tentative ones (DAD still running: the
 * kernel refuses to bind them), dadfailed ones (another host has it) and
 * deprecated ones (preferred lifetime over: the kernel stops picking them
 * for new connections; `ip` prints `deprecated` and preferred_life_time 0).
 * A temporary (privacy) address comes after the stable ones whatever the
 * kernel's order (it lists the newest first, so usually the temporary one):
 * routes and NAT keep to the address that does not change every day.
 */
function usableAddresses6(info: NonNullable<IpAddrJson['addr_info']>): NonNullable<InterfaceFacts['addresses6']> {
  const usable = info
    .filter((a) => a.family === 'inet6' && a.scope === 'global' && !a.tentative && !a.dadfailed && !a.deprecated && a.preferred_life_time !== 0)
    .map((a) => ({ address: a.local, prefixLen: a.prefixlen, ...(a.temporary ? { temporary: true } : {}) }));
  return [...usable.filter((a) => !a.temporary), ...usable.filter((a) => a.temporary)];
}

/** Default routes in `ip -j route show … default` output, one per next hop (a multipath route lists its hops under `nexthops`). */
export function parseDefaultRoutes(json: string): KernelFacts['mainDefaultRoutes'] {
  return (JSON.parse(json || '[]') as IpRouteJson[]).flatMap((r) => (r.nexthops ?? [{ gateway: r.gateway, dev: r.dev }])
    .filter((hop) => hop.dev)
    .map((hop) => ({ dev: hop.dev!, ...(hop.gateway ? { gateway: hop.gateway } : {}), metric: r.metric ?? 0 })));
}

/**
 * Whether the kernel has IPv6 at all: booted with ipv6.disable=1 it has no
 * /proc/sys/net/ipv6, and `ip -6` fails. Read through the runner's sysctl
 * access, so it costs no command.
 */
export function hasIpv6(runner: Runner): boolean {
  return (runner.sysctl ?? procSysctl).read('net/ipv6/conf/all/disable_ipv6') !== undefined;
}

/** `cgroups`: the config's (ruleCgroups), whose existence and ids are read too. */
export async function readFacts(runner: Runner, cgroups: readonly string[] = []): Promise<KernelFacts> {
  // One `ip -j address show` answers for both families.
  const [addrs, routes, routes6] = await Promise.all([
    mustRun(runner, 'ip', ['-j', 'address', 'show']),
    mustRun(runner, 'ip', ['-j', '-4', 'route', 'show', 'table', 'main', 'default']),
    hasIpv6(runner) ? mustRun(runner, 'ip', ['-j', '-6', 'route', 'show', 'table', 'main', 'default']) : '[]',
  ]);
  return {
    interfaces: parseInterfaces(addrs),
    mainDefaultRoutes: parseDefaultRoutes(routes),
    mainDefaultRoutes6: parseDefaultRoutes(routes6),
    ...(cgroups.length > 0 ? { cgroups: cgroupFacts(cgroups) } : {}),
  };
}

export interface InterfaceCounters { rxBytes: number; txBytes: number }

/**
 * /proc/net/dev, one line per interface of the reader's network namespace:
 * `  wan1: RX bytes packets errs drop fifo frame compressed multicast TX bytes ...`.
 */
export function parseNetDev(text: string): Map<string, InterfaceCounters> {
  const counters = new Map<string, InterfaceCounters>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const fields = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    if (fields.length < 9 || Number.isNaN(fields[0]) || Number.isNaN(fields[8])) continue;
    counters.set(line.slice(0, colon).trim(), { rxBytes: fields[0], txBytes: fields[8] });
  }
  return counters;
}

/** Byte counters of every interface, in one read (the rate sampler runs up to 10 times a second). */
export function readInterfaceCounters(): Map<string, InterfaceCounters> {
  try {
    return parseNetDev(readFileSync('/proc/net/dev', 'utf8'));
  } catch {
    return new Map();
  }
}

/**
 * The main table's routes other than default ones, both families, as CIDR:
 * what the local-routes-first rule finds before any uplink (`uplinkd explain`).
 */
export async function readMainRoutes(runner: Runner): Promise<string[]> {
  const families: ['-4' | '-6', number][] = [['-4', 32], ...(hasIpv6(runner) ? [['-6', 128] as ['-6', number]] : [])];
  const lists = await Promise.all(families.map(async ([flag, bits]) =>
    (JSON.parse(await mustRun(runner, 'ip', ['-j', flag, 'route', 'show', 'table', 'main'])) as IpRouteJson[])
      .filter((r) => r.dst !== 'default')
      .map((r) => (r.dst.includes('/') ? r.dst : `${r.dst}/${bits}`))));
  return lists.flat();
}

interface NftSetJson { nftables: { set?: { name: string; elem?: (string | { elem: { val: string } })[] } }[] }

/** The addresses in one of uplinkd's sets (a sticky set): `nft -j list set`. */
export async function readSetAddresses(runner: Runner, table: string, set: string): Promise<string[]> {
  const json = JSON.parse(await mustRun(runner, 'nft', ['-j', 'list', 'set', 'inet', table, set])) as NftSetJson;
  return json.nftables.flatMap((item) => item.set?.elem ?? []).map((e) => (typeof e === 'string' ? e : e.elem.val));
}

/**
 * What `uplinkd explain` needs of the kernel beside the plan: the main
 * table's routes, and for a running daemon the entries of its sticky sets
 * (`stickySets`; absent: not known).
 */
export async function readExplainFacts(runner: Runner, table: string, stickySets?: string[]): Promise<{ mainRoutes: string[]; sticky?: Record<string, string[]> }> {
  const mainRoutes = await readMainRoutes(runner);
  if (!stickySets) return { mainRoutes };
  const entries = await Promise.all(stickySets.map(async (name) => [name, await readSetAddresses(runner, table, name)] as const));
  return { mainRoutes, sticky: Object.fromEntries(entries) };
}
