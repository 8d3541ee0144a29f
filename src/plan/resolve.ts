// The planner's first step: each configured uplink with what the kernel says
// about it (interface, address, gateway, health) and the share of new
// connections it gets now. Pure, like the rest of the planner; plan.ts and
// the builders (nft.ts, mptcp.ts) all start from this.

import type { Config, Uplink } from '../config/types.js';
import { balanceBuckets, marksFor, uplinkTable, type Marks } from '../ownership.js';
import type { Health, InterfaceFacts, KernelFacts } from './state.js';

export interface PlanInput {
  config: Config;
  facts: KernelFacts;
  /** Uplinks not listed are taken as up. */
  health?: Record<string, Health>;
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
  address?: string;
  prefixLen?: number;
  peer?: string;
  /** Next hop; undefined for point-to-point (`gateway: none`). */
  gateway?: string;
  /** Set when it cannot carry traffic whatever its health. */
  unusable?: string;
  /** Balancing buckets it gets now, out of balanceBuckets(config.balance). */
  buckets: number;
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
  /** See PlanInput.rotationStart. */
  rotationStart: number;
  /** The rules' cgroups that exist (KernelFacts.cgroups); pins on the others are left out until they do. */
  cgroups: NonNullable<KernelFacts['cgroups']>;
}

export function resolve({ config, facts, health = {}, weights, rotationStart = 0 }: PlanInput): PlanContext {
  const marks = marksFor(config.kernel.markMask);
  const uplinks = config.uplinks.map((uplink, index): ResolvedUplink => {
    const iface = facts.interfaces.find((i) => i.name === uplink.interface);
    const first = iface?.addresses[0];
    const gateway = resolveGateway(uplink, facts);
    const unusable = !iface
      ? `interface ${uplink.interface} does not exist`
      : !first
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
      address: first?.address,
      prefixLen: first?.prefixLen,
      peer: first?.peer,
      gateway,
      unusable,
      buckets: 0,
    };
  });
  const buckets = balancedWeights(uplinks.filter(canCarry), weights, balanceBuckets(config.balance));
  for (const u of uplinks) u.buckets = buckets.get(u) ?? 0;
  const localSource = config.lan.length === 0
    ? config.kernel.hostSource
    : config.lan.map((name) => facts.interfaces.find((i) => i.name === name)?.addresses[0]?.address).find((a) => a !== undefined);
  return { config, marks, uplinks, localSource, rotationStart, cgroups: facts.cgroups ?? [] };
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

