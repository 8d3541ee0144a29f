// The planner: (config, kernel facts, uplink health) -> desired kernel state.
// Pure: no I/O, no clock, no randomness; the same input gives the same output.

import {
  FALLBACK_METRIC, HOST_SOURCE_LABEL, MAX_UPLINKS, RULE_OFFSET, RULE_RANGE,
  balanceBuckets, rulePriority, uplinkTable,
} from '../ownership.js';
import { networkOf } from '../config/ipv4.js';
import { ipv6NetworkOf } from '../config/ipv6.js';
import { mptcpState } from './mptcp.js';
import { buildNftTable } from './nft.js';
import { resolve, uplinkAddresses, type PlanContext, type PlanInput, type ResolvedUplink } from './resolve.js';
import type {
  DesiredState, IpRule, LocalAddress, Route, Sysctl, UplinkSummary,
} from './state.js';

export function plan(input: PlanInput): DesiredState {
  const ctx = resolve(input);
  const { config } = ctx;
  return {
    uplinks: ctx.uplinks.map((u) => summary(u, balanceBuckets(config.balance), ctx.dualStack)),
    sysctls: [...sysctls(ctx), ...sysctls6(ctx)],
    addresses: hostSourceAddress(ctx),
    routes: [
      ...ctx.uplinks.flatMap((u) => uplinkRoutes(u, ctx.localSource)),
      ...(ctx.dualStack ? ctx.uplinks.flatMap((u) => uplinkRoutes6(u, unboundSource6(ctx) && ctx.localSource6)) : []),
    ],
    ownedTables: ctx.uplinks.map((u) => u.table),
    tableRange: { from: uplinkTable(config.kernel, 0), to: uplinkTable(config.kernel, MAX_UPLINKS - 1) },
    rules: [...rules(ctx), ...(ctx.dualStack ? rules6(ctx) : [])],
    ruleRange: { from: config.kernel.rulePriority, to: config.kernel.rulePriority + RULE_RANGE - 1 },
    nft: buildNftTable(ctx),
    mptcp: mptcpState(ctx),
  };
}

function summary(u: ResolvedUplink, total: number, dualStack: boolean): UplinkSummary {
  const v6 = u.ipv6;
  return {
    name: u.uplink.name,
    index: u.index,
    interface: u.uplink.interface,
    health: u.health,
    unusable: u.unusable,
    address: u.address,
    ...(u.sharedAddress !== undefined ? { sharedAddress: u.sharedAddress } : {}),
    gateway: u.gateway,
    tier: u.uplink.tier,
    weight: u.uplink.weight,
    share: Math.round((u.buckets / total) * 1000) / 1000,
    table: u.table,
    mark: u.mark,
    ...(dualStack && v6
      ? { ipv6: { health: v6.health, unusable: v6.unusable, address: v6.address, gateway: v6.gateway, share: Math.round((v6.buckets / total) * 1000) / 1000 } }
      : {}),
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
 * Router mode with IPv6: forwarding on. Forwarding makes the kernel ignore
 * router advertisements on an interface with accept_ra=1, and with them the
 * SLAAC address and the RA-learned default route (`gateway6: auto`), so every
 * uplink carrying IPv6 gets accept_ra=2 first, before forwarding is turned on.
 */
function sysctls6({ config, uplinks, dualStack }: PlanContext): Sysctl[] {
  if (!dualStack || config.lan.length === 0) return [];
  const out: Sysctl[] = [];
  for (const u of uplinks.filter((x) => x.iface && x.ipv6)) {
    out.push(sysctl(['net', 'ipv6', 'conf', u.uplink.interface, 'accept_ra'], '2',
      `${u.uplink.name} keeps its SLAAC address and router-advertised default route once forwarding is on (set before it)`));
  }
  out.push(sysctl(['net', 'ipv6', 'conf', 'all', 'forwarding'], '1', 'a router forwards the LAN\'s IPv6 to its uplinks'));
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
  if (!u.unusable && u.address && u.ownAddress && u.prefixLen !== undefined) {
    const connected = u.peer ?? (u.prefixLen < 32 ? networkOf(u.ownAddress, u.prefixLen) : undefined);
    if (connected) {
      routes.push({ table, type: 'unicast', dst: connected, dev, src: u.ownAddress, scope: 'link',
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

/**
 * The IPv6 routes of an uplink's table: the same table number as its IPv4
 * routes (the kernel keeps the families apart), and the same three kinds. The
 * next hop may be link-local (an RA's fe80::1): `dev` says where it lies. No
 * scope: IPv6 routes have none. `localSource6`: the source of the router's
 * unbound sockets on the default route (see unboundSource6).
 */
function uplinkRoutes6(u: ResolvedUplink, localSource6: string | undefined): Route[] {
  const v6 = u.ipv6;
  if (!v6) return [];
  const { table } = u;
  const dev = u.uplink.interface;
  const routes: Route[] = [];
  if (!v6.unusable && v6.address && v6.prefixLen !== undefined) {
    if (v6.prefixLen < 128) {
      routes.push({ family: 'ipv6', table, type: 'unicast', dst: ipv6NetworkOf(v6.address, v6.prefixLen), dev, src: v6.address,
        why: `${u.uplink.name}'s own IPv6 prefix is reached directly on ${dev}` });
    }
    routes.push({ family: 'ipv6', table, type: 'unicast', dst: 'default', via: v6.gateway, dev,
      // Unbound sockets get the LAN source (unboundSource6), but where it would leave untranslated (nat6: none).
      src: (u.uplink.nat6.mode !== 'none' ? localSource6 : undefined) ?? v6.address,
      why: `${u.uplink.name}'s IPv6 way out` });
  }
  routes.push({ family: 'ipv6', table, type: 'unreachable', dst: 'default', metric: FALLBACK_METRIC,
    why: `without ${u.uplink.name}'s own IPv6 route, its IPv6 traffic fails here instead of leaking out another uplink` });
  return routes;
}

/**
 * Router mode: the table the router's own unbound IPv6 sockets are sent to
 * first, so that they take the LAN address (localSource6) as source and are
 * balanced and NATed like the LAN's connections: the first uplink whose IPv6
 * is usable and NATed (a `nat6: none` ISP would drop a LAN source outside its
 * routed prefix). Undefined in host mode (no neutral IPv6 source, see
 * PlanContext.localSource6) or without a LAN IPv6 address.
 */
function unboundSource6({ config, uplinks, localSource6 }: PlanContext): ResolvedUplink | undefined {
  if (config.lan.length === 0 || !localSource6) return undefined;
  return uplinks.find((u) => u.ipv6?.address && !u.ipv6.unusable && u.uplink.nat6.mode !== 'none');
}

/**
 * The IPv6 rules, at the IPv4 rules' priorities (`ip -6 rule` is a list of
 * its own). The router's unbound sockets: IPv4's `from 0.0.0.0/32` has no
 * IPv6 twin (an IPv6 rule with a source never matches a lookup made before
 * the source is chosen), so the rule matches the router's own packets
 * (`iif lo`) that no earlier rule decided; ICMPv6 is left to the main table
 * before it (RULE_OFFSET.ownIcmp6ToMain).
 */
function rules6(ctx: PlanContext): IpRule[] {
  const { config, marks, uplinks } = ctx;
  const own = config.kernel;
  const at = (offset: number, index = 0) => rulePriority(own, offset, index);
  const out: IpRule[] = [
    { family: 'ipv6', priority: at(RULE_OFFSET.localRoutesFirst), lookup: 'main', suppressPrefixLength: 0,
      why: 'local IPv6 routes first: LAN, connected, VPN and static routes of the main table win; its default routes do not' },
    { family: 'ipv6', priority: at(RULE_OFFSET.bypassToMain), fwmark: { value: marks.bypass, mask: marks.mask }, lookup: 'main',
      why: 'IPv6 connections pinned to `via: main`: the main table decides, default route included' },
  ];
  for (const u of uplinks) {
    const v6 = u.ipv6;
    if (!v6?.address || v6.unusable) continue;
    out.push({ family: 'ipv6', priority: at(RULE_OFFSET.fromUplinkAddress, u.index + 1), from: v6.address, lookup: u.table,
      why: `split access: traffic from ${u.uplink.name}'s IPv6 address leaves by ${u.uplink.name}` });
    for (const prefix of v6.routedPrefixes) {
      out.push({ family: 'ipv6', priority: at(RULE_OFFSET.fromUplinkAddress, u.index + 1), from: prefix, lookup: u.table,
        why: `nat6: none: ${prefix} is ${u.uplink.name}'s routed prefix, so its sources leave by ${u.uplink.name} only` });
    }
  }
  for (const u of uplinks.filter((x) => x.ipv6)) {
    out.push({ family: 'ipv6', priority: at(RULE_OFFSET.uplinkMark, u.index + 1), fwmark: { value: u.mark, mask: marks.mask }, lookup: u.table,
      why: `IPv6 connections marked for ${u.uplink.name}: the same mark as its IPv4 ones` });
  }
  const sourceTable = unboundSource6(ctx);
  if (sourceTable) {
    out.push({ family: 'ipv6', priority: at(RULE_OFFSET.ownIcmp6ToMain), iif: 'lo', ipproto: 'ipv6-icmp', lookup: 'main',
      why: "the router's own ICMPv6 follows the main table: an error goes back out the uplink its packet came in on, from that uplink's address" });
    out.push({ family: 'ipv6', priority: at(RULE_OFFSET.unboundLocalSource), iif: 'lo', lookup: sourceTable.table,
      why: `the router's unbound IPv6 sockets take the LAN address ${ctx.localSource6} as source, so they are balanced like the LAN and NATed to the uplink chosen` });
  }
  return out;
}

function rules({ config, marks, uplinks, localSource }: PlanContext): IpRule[] {
  const own = config.kernel;
  const at = (offset: number, index = 0) => rulePriority(own, offset, index);
  const out: IpRule[] = [
    { priority: at(RULE_OFFSET.localRoutesFirst), lookup: 'main', suppressPrefixLength: 0,
      why: 'local routes first: LAN, connected, VPN and static routes of the main table win; its default routes do not' },
    { priority: at(RULE_OFFSET.bypassToMain), fwmark: { value: marks.bypass, mask: marks.mask }, lookup: 'main',
      why: 'connections pinned to `via: main`: the main table decides, default route included' },
  ];
  for (const u of uplinks) {
    if (u.unusable) continue;
    for (const from of uplinkAddresses(u)) {
      out.push({ priority: at(RULE_OFFSET.fromUplinkAddress, u.index + 1), from, lookup: u.table,
        why: from === u.sharedAddress
          ? `split access: traffic from ${u.uplink.name}'s address ${from} (held while this router is its master) leaves by ${u.uplink.name}`
          : `split access: traffic from ${u.uplink.name}'s address leaves by ${u.uplink.name}` });
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
