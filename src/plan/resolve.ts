// The planner's first step: each configured uplink with what the kernel says
// about it (interface, address, gateway, health) and the share of new
// connections it gets now. Pure, like the rest of the planner; plan.ts and
// the builders (nft.ts, mptcp.ts) all start from this.

import type { Config, Uplink } from '../config/types.js';
import { balanceBuckets, marksFor, uplinkTable, type Marks } from '../ownership.js';
import { bigIntToIpv6, ipv6NetworkOf, ipv6PrefixRange, ipv6ToBigInt, isLinkLocal, isMulticast } from '../config/ipv6.js';
import type { Health, InterfaceFacts, KernelFacts } from './state.js';

export interface PlanInput {
  config: Config;
  facts: KernelFacts;
  /** IPv4 health. Uplinks not listed are taken as up. */
  health?: Record<string, Health>;
  /** IPv6 health, on its own: an uplink whose IPv6 is down keeps carrying IPv4. Uplinks not listed are taken as up. */
  health6?: Record<string, Health>;
  /**
   * Weights that replace the configured ones in the default balancing (not
   * in pins): what `balance: least-loaded` steers with.
   */
  weights?: Record<string, number>;
  /**
   * least-loaded: the slot of the rotation that `numgen inc` starts on (0
   * unless given). The counter restarts at every full apply, so a daemon
   * picks one at random when it starts: otherwise every restart would deal
   * the same first slots, and a burst that aliases with them would land the
   * same way each time.
   */
  rotationStart?: number;
}

/** An uplink with what the kernel says about it. */
export interface ResolvedUplink {
  uplink: Uplink;
  index: number;
  mark: number;
  table: number;
  health: Health;
  iface?: InterfaceFacts;
  /**
   * The source to NAT to and route from now: the configured `address` while
   * the interface holds it, else the interface's own address (the backup of
   * a router pair: its own connections still get replies).
   */
  address?: string;
  /** The interface's own address (ownAddress), which probes are sent from; prefixLen and peer are its. */
  ownAddress?: string;
  prefixLen?: number;
  peer?: string;
  /** The configured `address`, if not auto: a router pair's VRRP address. */
  sharedAddress?: string;
  /** Next hop; undefined for point-to-point (`gateway: none`). */
  gateway?: string;
  /** Set when it cannot carry traffic whatever its health. */
  unusable?: string;
  /** Balancing buckets it gets now, out of balanceBuckets(config.balance). */
  buckets: number;
  /** Its IPv6 side; undefined with `gateway6: off`. */
  ipv6?: ResolvedIpv6;
}

/** An uplink's IPv6 side, resolved like the IPv4 one but with its own health. */
export interface ResolvedIpv6 {
  health: Health;
  /** The global address to route from and NAT to (InterfaceFacts.addresses6: the first stable one). */
  address?: string;
  prefixLen?: number;
  /** Next hop, link-local allowed; undefined for point-to-point (`gateway6: none`). */
  gateway?: string;
  unusable?: string;
  /** Balancing buckets of IPv6 connections; always 0 with `nat6: none`. */
  buckets: number;
  /**
   * `nat6: none`: the LAN's IPv6 prefixes that belong to this uplink. A source
   * in one of them can leave by this uplink only (its ISP drops any other
   * source, BCP 38), so it decides the uplink as split access does.
   */
  routedPrefixes: string[];
}

export interface PlanContext {
  config: Config;
  marks: Marks;
  uplinks: ResolvedUplink[];
  /**
   * Source address of the machine's own unbound sockets: the LAN address in
   * router mode, kernel.host_source (on lo) in host mode. Neither is an
   * uplink's address, so the output hook can tell these sockets from those
   * bound to an uplink, balance them and NAT them to the uplink chosen.
   */
  localSource?: string;
  /**
   * Router mode: the IPv6 counterpart of localSource, the first global
   * IPv6 address of the LAN interfaces. Host mode has none: no address in
   * the config could serve as a neutral IPv6 source, so there the machine's
   * own IPv6 sockets keep the source the main table's route gives them.
   */
  localSource6?: string;
  /** See PlanInput.rotationStart. */
  rotationStart: number;
  /** The rules' cgroups that exist (KernelFacts.cgroups); pins on the others are left out until they do. */
  cgroups: NonNullable<KernelFacts['cgroups']>;
  /**
   * Whether IPv6 is planned at all: some uplink that carries IPv6 has a
   * global IPv6 address. Until one has, the plan is the IPv4-only one, and
   * the IPv6 sides change only elements and routes once it is planned.
   */
  dualStack: boolean;
}

export function resolve({ config, facts, health = {}, health6 = {}, weights, rotationStart = 0 }: PlanInput): PlanContext {
  const marks = marksFor(config.kernel.markMask);
  const uplinks = config.uplinks.map((uplink, index): ResolvedUplink => {
    const iface = facts.interfaces.find((i) => i.name === uplink.interface);
    const own = ownAddress(uplink, iface);
    const shared = sharedAddressOf(uplink);
    const gateway = resolveGateway(uplink, facts);
    const unusable = !iface
      ? `interface ${uplink.interface} does not exist`
      : !own
        ? `${uplink.interface} has no IPv4 address`
        : uplink.gateway.kind === 'auto' && !gateway
          ? `no default route on ${uplink.interface} in the main table (gateway: auto)`
          : undefined;
    return {
      uplink, index,
      mark: marks.uplink(index),
      table: uplinkTable(config.kernel, index),
      health: health[uplink.name] ?? 'up',
      iface,
      address: shared !== undefined && holdsAddress(uplink, iface) ? shared : own?.address,
      ownAddress: own?.address,
      prefixLen: own?.prefixLen,
      peer: own?.peer,
      ...(shared !== undefined ? { sharedAddress: shared } : {}),
      gateway,
      unusable,
      buckets: 0,
      ipv6: resolveIpv6(uplink, iface, facts, health6[uplink.name] ?? 'up'),
    };
  });
  const buckets = balancedWeights(uplinks.filter(canCarry), weights, balanceBuckets(config.balance));
  for (const u of uplinks) u.buckets = buckets.get(u) ?? 0;
  const buckets6 = balancedWeights(uplinks.filter(canBalance6), weights, balanceBuckets(config.balance));
  for (const u of uplinks) if (u.ipv6) u.ipv6.buckets = buckets6.get(u) ?? 0;
  assignRoutedPrefixes(config, facts, uplinks);
  const localSource = config.lan.length === 0
    ? config.kernel.hostSource
    : config.lan.map((name) => facts.interfaces.find((i) => i.name === name)?.addresses[0]?.address).find((a) => a !== undefined);
  const localSource6 = routerSource6(config, facts, uplinks);
  const dualStack = uplinks.some((u) => u.ipv6?.address !== undefined);
  return { config, marks, uplinks, localSource, localSource6, rotationStart, cgroups: facts.cgroups ?? [], dualStack };
}

/**
 * The source the router's own unbound IPv6 sockets take (PlanContext.localSource6):
 * a LAN address, so they are balanced and NATed like the LAN. Not one of a
 * routed prefix (`nat6: none`: it would pin them to that uplink), and
 * preferably one of the LAN's own prefixes rather than a provider's (which
 * lies in an uplink's /48 and changes when that provider renumbers); the
 * lowest of those, so the choice does not depend on the order the kernel
 * lists addresses in (newest first).
 */
function routerSource6(config: Config, facts: KernelFacts, uplinks: ResolvedUplink[]): string | undefined {
  const routed = uplinks.flatMap((u) => u.ipv6?.routedPrefixes ?? []).map((p) => ipv6PrefixRange(p));
  const uplinkAddresses = uplinks.flatMap((u) => (u.ipv6?.address ? [ipv6ToBigInt(u.ipv6.address)!] : []));
  const candidates = config.lan.flatMap((name) => facts.interfaces.find((i) => i.name === name)?.addresses6 ?? [])
    .filter((a) => !a.temporary)
    .map((a) => ipv6ToBigInt(a.address)!)
    .filter((value) => !routed.some((r) => value >= r.from && value <= r.to));
  const providers = (value: bigint) => uplinkAddresses.some((a) => commonLeadingBits(value, a) >= ROUTED_PREFIX_SHARED_BITS);
  const [best] = candidates.sort((a, b) => Number(providers(a)) - Number(providers(b)) || (a < b ? -1 : a > b ? 1 : 0));
  return best === undefined ? undefined : bigIntToIpv6(best);
}

/**
 * The interface's own IPv4 address: the first that is not the uplink's
 * configured `address` (a VRRP address comes and goes with mastership), or
 * that one if it is all there is. Probes leave from it, so a router pair's
 * backup judges its uplinks while it holds no shared address; the daemon's
 * probers use it too (daemon/tracking.ts).
 */
export function ownAddress(uplink: Uplink, iface: InterfaceFacts | undefined): InterfaceFacts['addresses'][number] | undefined {
  const addresses = iface?.addresses ?? [];
  const shared = sharedAddressOf(uplink);
  return addresses.find((a) => a.address !== shared) ?? addresses[0];
}

const sharedAddressOf = (uplink: Uplink) => (uplink.address.kind === 'address' ? uplink.address.address : undefined);

/** Whether the interface holds the uplink's configured `address` now; with `auto`, whether it has any IPv4 address. */
export function holdsAddress(uplink: Uplink, iface: InterfaceFacts | undefined): boolean {
  const shared = sharedAddressOf(uplink);
  const addresses = iface?.addresses ?? [];
  return shared === undefined ? addresses.length > 0 : addresses.some((a) => a.address === shared);
}

/**
 * The uplink's IPv6 address to route from, NAT to and probe from: a global
 * one, and a stable one while there is one, since a temporary (privacy)
 * address changes every day or so. The daemon's probers use it too
 * (daemon/tracking.ts), so probes leave from the address `ip -6 rule from`
 * routes by its uplink.
 */
export function sourceAddress6(iface: InterfaceFacts | undefined): { address: string; prefixLen: number } | undefined {
  const usable = (iface?.addresses6 ?? []).filter((a) => {
    const value = ipv6ToBigInt(a.address);
    return value !== undefined && !isLinkLocal(value) && !isMulticast(value);
  });
  return usable.find((a) => !a.temporary) ?? usable[0];
}

function resolveIpv6(uplink: Uplink, iface: InterfaceFacts | undefined, facts: KernelFacts, health: Health): ResolvedIpv6 | undefined {
  if (uplink.gateway6.kind === 'off') return undefined;
  const chosen = sourceAddress6(iface);
  const gateway = resolveGateway6(uplink, facts);
  const unusable = !iface
    ? `interface ${uplink.interface} does not exist`
    : !chosen
      ? `${uplink.interface} has no global IPv6 address`
      : uplink.gateway6.kind === 'auto' && !gateway
        ? `no IPv6 default route on ${uplink.interface} in the main table (gateway6: auto)`
        : undefined;
  return { health, address: chosen?.address, prefixLen: chosen?.prefixLen, gateway, unusable, buckets: 0, routedPrefixes: [] };
}

function resolveGateway6(uplink: Uplink, facts: KernelFacts): string | undefined {
  switch (uplink.gateway6.kind) {
    case 'address': return uplink.gateway6.address;
    case 'none':
    case 'off': return undefined;
    case 'auto': {
      const routes = (facts.mainDefaultRoutes6 ?? [])
        .filter((r) => r.dev === uplink.interface && r.gateway)
        .sort((a, b) => a.metric - b.metric);
      return routes[0]?.gateway;
    }
  }
}

/**
 * How close a LAN prefix must lie to a `nat6: none` uplink's own address to be
 * taken as that uplink's routed (delegated) prefix: the same /48, the largest
 * block an ISP delegates to one site. A LAN prefix farther from every such
 * uplink (a ULA, or a prefix of the operator's own) is not routed by any: it
 * is NATed by the other uplinks, never sent out unNATed to an ISP that would
 * drop it.
 */
const ROUTED_PREFIX_SHARED_BITS = 48;

/**
 * `nat6: none`: which of the LAN's IPv6 prefixes each such uplink routes. The
 * config names none (a delegated prefix changes), so they are read off the
 * LAN interfaces: every LAN prefix that no `nat6: prefix` mapping claims goes
 * to the `nat6: none` uplink whose own address shares the most leading bits
 * with it (an ISP delegates from its own block), at least
 * ROUTED_PREFIX_SHARED_BITS, the first listed on a tie.
 */
function assignRoutedPrefixes(config: Config, facts: KernelFacts, uplinks: ResolvedUplink[]): void {
  const routed = uplinks.filter((u) => u.uplink.nat6.mode === 'none' && u.ipv6?.address !== undefined);
  if (routed.length === 0) return;
  const mapped = new Set(config.uplinks.flatMap((u) => (u.nat6.mode === 'prefix' ? [u.nat6.lan] : [])));
  const lanPrefixes = config.lan.flatMap((name) => (facts.interfaces.find((i) => i.name === name)?.addresses6 ?? [])
    .filter((a) => !isLinkLocal(ipv6ToBigInt(a.address) ?? 0n))
    .map((a) => ipv6NetworkOf(a.address, a.prefixLen)));
  for (const prefix of [...new Set(lanPrefixes)].filter((p) => !mapped.has(p))) {
    const network = ipv6ToBigInt(prefix.split('/')[0])!;
    const shared = (u: ResolvedUplink) => commonLeadingBits(network, ipv6ToBigInt(u.ipv6!.address!)!);
    const owner = routed.reduce((best, u) => (shared(u) > shared(best) ? u : best));
    if (shared(owner) >= ROUTED_PREFIX_SHARED_BITS) owner.ipv6!.routedPrefixes.push(prefix);
  }
}

function commonLeadingBits(a: bigint, b: bigint): number {
  const differing = a ^ b;
  return differing === 0n ? 128 : 128 - differing.toString(2).length;
}

/** Usable and its IPv6 up: its IPv6 may carry new connections. */
export function canCarry6(u: ResolvedUplink): boolean {
  return u.ipv6 !== undefined && !u.ipv6.unusable && u.ipv6.health === 'up';
}

/**
 * May be given balanced (and pinned) IPv6 connections. Not with `nat6: none`:
 * there a source leaves unchanged, and only sources of its own routed
 * prefixes would pass the ISP's filter; those are sent to it before pins and
 * balancing (nft.ts, map routed6).
 */
export function canBalance6(u: ResolvedUplink): boolean {
  return canCarry6(u) && u.uplink.nat6.mode !== 'none';
}

function resolveGateway(uplink: Uplink, facts: KernelFacts): string | undefined {
  switch (uplink.gateway.kind) {
    case 'address': return uplink.gateway.address;
    case 'none': return undefined;
    case 'auto': {
      const routes = facts.mainDefaultRoutes
        .filter((r) => r.dev === uplink.interface && r.gateway)
        .sort((a, b) => a.metric - b.metric);
      return routes[0]?.gateway;
    }
  }
}

/**
 * The IPv4 addresses that are the uplink's: its own, and its configured
 * `address` whether held now or not (a router pair's VRRP address), so
 * split access and bound sockets follow it the moment it arrives.
 */
export function uplinkAddresses(u: ResolvedUplink): string[] {
  return [...new Set([u.ownAddress, u.sharedAddress].filter((a): a is string => a !== undefined))];
}

/** Usable and up: it may be given new connections. */
export function canCarry(u: ResolvedUplink): boolean {
  return !u.unusable && u.health === 'up';
}

/**
 * Buckets per uplink: only the lowest tier that has an uplink able to carry
 * traffic is used, shared by weight. Largest remainder, so the buckets always
 * add up to `total` and ties go to the uplink listed first.
 */
export function balancedWeights(carriers: ResolvedUplink[], override: Record<string, number> | undefined, total: number): Map<ResolvedUplink, number> {
  const result = new Map<ResolvedUplink, number>();
  if (carriers.length === 0) return result;
  const activeTier = Math.min(...carriers.map((u) => u.uplink.tier));
  const active = carriers.filter((u) => u.uplink.tier === activeTier);
  const steered = active.map((u) => override?.[u.uplink.name] ?? u.uplink.weight);
  const configured = active.map((u) => u.uplink.weight);
  const shares = splitBuckets(steered.some((w) => w > 0) ? steered : configured, total);
  active.forEach((u, i) => result.set(u, shares[i]));
  return result;
}

export function splitBuckets(weights: number[], total: number): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (w * total) / sum);
  const whole = exact.map(Math.floor);
  let left = total - whole.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((e, i) => ({ i, r: e - whole[i] })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of byRemainder) {
    if (left-- <= 0) break;
    whole[i]++;
  }
  return whole;
}

/** The golden ratio's fractional part: its multiples fall as evenly over [0, 1) as any sequence can. */
const GOLDEN = (Math.sqrt(5) - 1) / 2;

/**
 * The order in which a rotation deals its slots: slots[i] turns for uplink i.
 * Turn t lies at t × golden ratio (mod 1), and the uplinks own consecutive
 * stretches of [0, 1) by share. Consecutive turns land far apart, so any
 * run of n turns gives each uplink n × its share give or take two, and so
 * does every second turn: connections that come in pairs (a control and a
 * data connection, a DNS query and its connection) do not alias with the
 * order, as they would with a plain interleave (1,2,1,2,… puts every data
 * connection on one uplink). `start`: the turn slot 0 deals.
 */
export function rotationOrder(slots: number[], start = 0): number[] {
  const total = slots.reduce((a, b) => a + b, 0);
  const owners = slots.flatMap((s, i) => Array<number>(s).fill(i));
  const turnsAlong = Array.from({ length: total }, (_, t) => t).sort((a, b) => ((a * GOLDEN) % 1) - ((b * GOLDEN) % 1));
  const order = Array<number>(total);
  turnsAlong.forEach((turn, position) => (order[turn] = owners[position]));
  // Slot k deals turn start + k: the same order, begun elsewhere.
  return order.map((_, k) => order[(start + k) % total]);
}

