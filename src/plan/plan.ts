// The planner: (config, kernel facts, uplink health) -> desired kernel state.
// Pure: no I/O, no clock, no randomness; the same input gives the same output.

import type { Config, Uplink } from '../config/types.js';
import {
  FALLBACK_METRIC, HOST_SOURCE_LABEL, MAX_UPLINKS, RULE_OFFSET, RULE_RANGE,
  balanceBuckets, marksFor, rulePriority, uplinkTable, type Marks,
} from '../ownership.js';
import { networkOf } from './ipv4.js';
import { mptcpState } from './mptcp.js';
import { buildNftTable } from './nft.js';
import type {
  DesiredState, Health, InterfaceFacts, KernelFacts, LocalAddress, Route, Rule, Sysctl, UplinkSummary,
} from './state.js';

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

export function plan(input: PlanInput): DesiredState {
  const ctx = resolve(input);
  const { config } = ctx;
  return {
    uplinks: ctx.uplinks.map((u) => summary(u, balanceBuckets(config.balance))),
    sysctls: sysctls(ctx),
    addresses: hostSourceAddress(ctx),
    routes: ctx.uplinks.flatMap((u) => uplinkRoutes(u, ctx.localSource)),
    ownedTables: ctx.uplinks.map((u) => u.table),
    tableRange: { from: uplinkTable(config.kernel, 0), to: uplinkTable(config.kernel, MAX_UPLINKS - 1) },
    rules: rules(ctx),
    ruleRange: { from: config.kernel.rulePriority, to: config.kernel.rulePriority + RULE_RANGE - 1 },
    nft: buildNftTable(ctx),
    mptcp: mptcpState(ctx),
  };
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

function summary(u: ResolvedUplink, total: number): UplinkSummary {
  return {
    name: u.uplink.name,
    index: u.index,
    interface: u.uplink.interface,
    health: u.health,
    unusable: u.unusable,
    address: u.address,
    gateway: u.gateway,
    tier: u.uplink.tier,
    weight: u.uplink.weight,
    share: Math.round((u.buckets / total) * 1000) / 1000,
    table: u.table,
    mark: u.mark,
  };
}

/** Host mode: the neutral source on lo (see PlanContext.localSource). Scope host: the kernel never picks it by itself. */
function hostSourceAddress({ config }: PlanContext): LocalAddress[] {
  if (config.lan.length > 0) return [];
  return [{ dev: 'lo', cidr: `${config.kernel.hostSource}/32`, label: HOST_SOURCE_LABEL, scope: 'host',
    why: "the source of the machine's own unbound connections until they are NATed to the uplink chosen: it is no uplink's address, so they can be balanced" }];
}

function sysctl(key: string[], value: string, why: string): Sysctl {
  // `sysctl` writes dots inside a component (eth0.100) as slashes.
  return { key: key.map((k) => k.replaceAll('.', '/')).join('.'), path: key.join('/'), value, why };
}

function sysctls({ config, uplinks }: PlanContext): Sysctl[] {
  const out: Sysctl[] = [];
  if (config.lan.length > 0) {
    out.push(sysctl(['net', 'ipv4', 'ip_forward'], '1', 'a router forwards the LAN to its uplinks'));
  }
  for (const u of uplinks.filter((x) => x.iface)) {
    const conf = ['net', 'ipv4', 'conf', u.uplink.interface];
    out.push(sysctl([...conf, 'rp_filter'], '2',
      `loose reverse-path check: replies of a connection balanced onto ${u.uplink.name} arrive where the main table would not send them`));
    out.push(sysctl([...conf, 'src_valid_mark'], '1',
      `the reverse-path check of packets on ${u.uplink.name} honours their connection's mark`));
  }
  return out;
}

/**
 * One table per uplink, as in the LARTC split-access recipe: its connected
 * network, its default route, and a catch-all unreachable so a packet meant
 * for this uplink never leaks out another when the uplink's route is gone.
 */
function uplinkRoutes(u: ResolvedUplink, localSource: string | undefined): Route[] {
  const { table } = u;
  const dev = u.uplink.interface;
  const routes: Route[] = [];
  if (!u.unusable && u.address && u.prefixLen !== undefined) {
    const connected = u.peer ?? (u.prefixLen < 32 ? networkOf(u.address, u.prefixLen) : undefined);
    if (connected) {
      routes.push({ table, type: 'unicast', dst: connected, dev, src: u.address, scope: 'link',
        why: `${u.uplink.name}'s own network is reached directly on ${dev}` });
    }
    routes.push({
      table, type: 'unicast', dst: 'default', via: u.gateway, dev,
      // Unbound sockets get the neutral source (PlanContext.localSource).
      src: localSource ?? u.address,
      why: `${u.uplink.name}'s way out`,
    });
  }
  routes.push({ table, type: 'unreachable', dst: 'default', metric: FALLBACK_METRIC,
    why: `without ${u.uplink.name}'s own route, its traffic fails here instead of leaking out another uplink` });
  return routes;
}

function rules({ config, marks, uplinks, localSource }: PlanContext): Rule[] {
  const own = config.kernel;
  const at = (offset: number, index = 0) => rulePriority(own, offset, index);
  const out: Rule[] = [
    { priority: at(RULE_OFFSET.localRoutesFirst), lookup: 'main', suppressPrefixLength: 0,
      why: 'local routes first: LAN, connected, VPN and static routes of the main table win; its default routes do not' },
    { priority: at(RULE_OFFSET.bypassToMain), fwmark: { value: marks.bypass, mask: marks.mask }, lookup: 'main',
      why: 'connections pinned to `via: main`: the main table decides, default route included' },
  ];
  for (const u of uplinks) {
    if (u.address && !u.unusable) {
      out.push({ priority: at(RULE_OFFSET.fromUplinkAddress, u.index + 1), from: u.address, lookup: u.table,
        why: `split access: traffic from ${u.uplink.name}'s address leaves by ${u.uplink.name}` });
    }
  }
  for (const u of uplinks) {
    out.push({ priority: at(RULE_OFFSET.uplinkMark, u.index + 1), fwmark: { value: u.mark, mask: marks.mask }, lookup: u.table,
      why: `connections marked for ${u.uplink.name}` });
  }
  const sourceTable = uplinks.find((u) => !u.unusable);
  if (localSource && sourceTable) {
    out.push({ priority: at(RULE_OFFSET.unboundLocalSource), from: '0.0.0.0/32', lookup: sourceTable.table,
      why: config.lan.length > 0
        ? `the router's unbound sockets take the LAN address ${localSource} as source, so they are balanced like the LAN and NATed to the uplink chosen`
        : `the machine's unbound sockets take ${localSource} (on lo) as source, so they are balanced and NATed to the uplink chosen` });
  }
  return out;
}
