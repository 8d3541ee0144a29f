// The one nftables table uplinkd owns (family inet). It decides the uplink of
// each new connection, keeps it in the connection mark so every later packet
// in both directions follows it, and source-NATs to the uplink's address.
//
// Everything that changes with health or addresses is a set or map element
// (balance shares, pins' live uplinks, SNAT addresses), so the daemon can
// follow a verdict without reloading chains.

import { balanceBuckets, hex } from '../ownership.js';
import { compilePinStages, rulesOfFamily, stageDeclaration, stageElements, stageIsOwnOnly, stageKeyExpression, type PinStage } from './pins.js';
import { canBalance6, canCarry, canCarry6, rotationOrder, splitBuckets, uplinkAddresses, type PlanContext, type ResolvedUplink } from './resolve.js';
import type { Family, NftChain, NftSet, NftTable } from './state.js';
import type { PinRule } from '../config/types.js';

/**
 * The table, built in the order a new connection meets it: the hooks, the
 * restore of a known connection's mark, the pinning rules, their targets,
 * the balancing, the mark chains, and source NAT. The rendered table lists
 * the sets in that order, and the deciding chains the other way round, each
 * after the ones it jumps to; source NAT comes last.
 */
export function buildNftTable(ctx: PlanContext): NftTable {
  const b = tableContext(ctx);
  // Each family picks among its own live uplinks (its own health), by the same
  // marks: the IPv6 parts follow the IPv4 ones, in the same order.
  const perFamily = b.families.flatMap((f) => [...(f.family === 'ipv6' ? [routed6(b)] : []), pins(b, f), pinTargetParts(b, f), balancing(b, f)]);
  const deciding = [hooks(b), restore(b), ...perFamily, marking(b)];
  const leaving = sourceNat(b);
  return {
    family: 'inet', name: ctx.config.kernel.nftTable,
    sets: [...deciding, leaving].flatMap((p) => p.sets ?? []),
    chains: [...[...deciding].reverse(), leaving].flatMap((p) => p.chains ?? []),
  };
}

interface Part { sets?: NftSet[]; chains?: NftChain[] }

/**
 * What differs between the families when a new connection is given an
 * uplink: the names of the chains and maps (IPv6 ones end in 6), the address
 * expressions, the pins (a rule of one family's prefixes is that family's
 * only) and who may carry it (each family has its own health).
 */
interface FamilyView {
  family: 'ipv4' | 'ipv6';
  /** '' or '6', appended to the names of per-family chains and maps. */
  suffix: string;
  /** `ip` or `ip6`, for `… saddr`. */
  ip: string;
  addressType: string;
  /** The expression that draws a bucket for a new connection. */
  draw: string;
  /** Whether it may be given this family's new connections now, and how many buckets it has. */
  carries(u: ResolvedUplink): boolean;
  buckets(u: ResolvedUplink): number;
  /** The uplinks this family's balancing and sticky sets know (IPv6: those with IPv6 and some NAT). */
  balanced: ResolvedUplink[];
  targets: Map<string, PinTarget>;
  targetOf(rule: PinRule): string;
  stages: PinStage[];
  pick: string;
  /** The pick chain forwarded connections go to: without process rules, when there are any. */
  forwardedPick: string;
}

/** What every part of the table needs to know, computed once. */
interface TableContext extends PlanContext {
  routerMode: boolean;
  sticky: boolean;
  /** The mark bits uplinkd owns, and their complement: what a mark update keeps. */
  mask: string;
  keep: string;
  buckets: number;
  bucketMap: string;
  /** A bucket map's elements for these shares; `empty` when there are none. */
  elements(shares: BucketShare[], empty?: string): string[];
  /** IPv4, and IPv6 when the plan is dual stack. */
  families: FamilyView[];
}

const markChain = (u: ResolvedUplink) => `mark_${u.uplink.name}`;

function tableContext(ctx: PlanContext): TableContext {
  const { config, marks } = ctx;
  const routerMode = config.lan.length > 0;
  const buckets = balanceBuckets(config.balance);
  const rotates = config.balance === 'least-loaded';
  const families = [familyView(ctx, 'ipv4', routerMode)];
  if (ctx.dualStack) families.push(familyView(ctx, 'ipv6', routerMode));
  return {
    ...ctx,
    routerMode,
    sticky: routerMode && config.stickyMs !== undefined,
    mask: hex(marks.mask),
    keep: hex(~marks.mask >>> 0),
    buckets,
    // The key is a bucket number whatever picks it: nft 1.0.6 cannot list a
    // `typeof jhash …` map back, so hash maps are declared with numgen too.
    bucketMap: `typeof numgen ${rotates ? 'inc' : 'random'} mod ${buckets} : verdict`,
    elements: (shares, empty = 'goto blocked') => bucketElements(shares, buckets, empty, rotates ? ctx.rotationStart : undefined),
    families,
  };
}

function familyView(ctx: PlanContext, family: 'ipv4' | 'ipv6', routerMode: boolean): FamilyView {
  const v4 = family === 'ipv4';
  const suffix = v4 ? '' : '6';
  // Rules with the same `via` and `fallback` share one target: a map of the
  // live uplinks among `via`, which is all that changes with health. A rule
  // of one family's prefixes is that family's only (rulesOfFamily).
  const rules = rulesOfFamily(ctx.config.rules, family);
  const targets = pinTargets(rules, suffix);
  const stages = compilePinStages(rules, family);
  const pick = `pick${suffix}`;
  return {
    family, suffix,
    ip: v4 ? 'ip' : 'ip6',
    addressType: v4 ? 'ipv4_addr' : 'ipv6_addr',
    draw: pickExpression(ctx.config.balance, v4 ? 'ip' : 'ip6'),
    carries: v4 ? canCarry : canBalance6,
    buckets: (u) => (v4 ? u.buckets : u.ipv6?.buckets ?? 0),
    balanced: v4 ? ctx.uplinks : ctx.uplinks.filter((u) => u.ipv6 && u.uplink.nat6.mode !== 'none'),
    targets,
    targetOf: (rule) => (rule.via === 'main' ? 'mark_main' : targets.get(targetKey(rule))!.name),
    stages,
    pick,
    // Rules on the process (user, group, cgroup) need the local socket, which a
    // forwarded packet has not; `socket cgroupv2` would even look one up by the
    // packet's destination and find a local listener on that port. So forwarded
    // connections get a pick without those stages: the same order otherwise.
    forwardedPick: routerMode && stages.some(stageIsOwnOnly) ? `${pick}_forwarded` : pick,
  };
}

/**
 * What must never be marked, balanced or NATed: ICMPv6 neighbour discovery,
 * router advertisements and solicitations, redirects and MLD, which belong to
 * one link and answer for the interface they arrive on, and any traffic to or
 * from a link-local or multicast address.
 */
const LINK_LOCAL_EXEMPTION = [
  { text: 'icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect, mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report } return',
    why: 'neighbour discovery, router advertisements, redirects and MLD stay on their link: never marked or NATed' },
  { text: 'ip6 saddr fe80::/10 return' },
  { text: 'ip6 daddr { fe80::/10, ff00::/8 } return' },
];

/** Dual stack: each family goes to its own pick (the other family's address expressions never match it). */
function gotoPick(b: TableContext, chain: (f: FamilyView) => string): { text: string; why?: string }[] {
  if (b.families.length === 1) return [{ text: `goto ${chain(b.families[0])}` }];
  return [{ text: `meta nfproto ipv6 goto ${chain(b.families[1])}` }, { text: `goto ${chain(b.families[0])}` }];
}

/** Where packets enter: forwarded ones (prerouting) and the machine's own (output). */
function hooks(b: TableContext): Part {
  const { config, uplinks, routerMode, dualStack } = b;
  const sets: NftSet[] = [];
  if (routerMode) {
    sets.push({ name: 'lan_interfaces', declaration: 'type ifname', elements: config.lan.map(quote),
      why: 'connections from these interfaces are balanced' });
  }
  sets.push(
    { name: 'uplink_by_interface', declaration: 'type ifname : verdict',
      elements: uplinks.map((u) => `${quote(u.uplink.interface)} : goto ${markChain(u)}`),
      why: 'split access: a connection arriving on an uplink is answered through it' },
    { name: 'uplink_by_address', declaration: 'type ipv4_addr : verdict',
      elements: uplinks.filter((u) => !u.unusable).flatMap((u) => uplinkAddresses(u).map((a) => `${a} : goto ${markChain(u)}`)),
      why: "the machine's sockets bound to an uplink's address use that uplink" },
  );
  if (dualStack) {
    sets.push({ name: 'uplink_by_address6', declaration: 'type ipv6_addr : verdict',
      elements: uplinks.filter((u) => u.ipv6?.address && !u.ipv6.unusable).map((u) => `${u.ipv6!.address} : goto ${markChain(u)}`),
      why: "the machine's sockets bound to an uplink's IPv6 address use that uplink" });
  }
  // Both hooks start alike: a known connection takes its mark back and is
  // done; only new connections go on to be given an uplink (only IPv4 ones
  // while no uplink has IPv6; see PlanContext.dualStack).
  const onlyNewConnections = [
    ...endedConnections(b),
    { text: `ct mark & ${b.mask} vmap @restore`, why: 'a known connection keeps its uplink' },
    { text: 'ct state != new return' },
    ...(dualStack ? LINK_LOCAL_EXEMPTION : [{ text: 'meta nfproto != ipv4 return', why: 'no uplink carries IPv6 now (none has a global IPv6 address): IPv6 follows the main table' }]),
  ];
  // Never reset what is not known (README "Router pair"): a TCP packet that
  // opens nothing and that conntrack has not seen is a connection another
  // router (or a previous daemon) carried, whose state has not arrived yet.
  // The kernel would pick it up mid-stream as new and send it out by the
  // balancing, or answer it with a reset from the local stack; dropped, it
  // is retransmitted once the state is there.
  const neverReset = (from: string, why?: string) => ({ text: `iifname @${from} tcp flags & (fin | syn | rst | ack) != syn drop`, why });
  const chains: NftChain[] = [
    {
      name: 'prerouting', hook: 'type filter hook prerouting priority mangle; policy accept;',
      rules: [
        ...onlyNewConnections,
        neverReset('uplink_interfaces', 'a TCP packet that opens nothing and that conntrack does not know is dropped, never reset: it is retried once its state arrives'),
        ...(routerMode ? [neverReset('lan_interfaces')] : []),
        { text: 'iifname vmap @uplink_by_interface', why: 'arriving from an uplink: answered through it' },
        ...(routerMode
          ? [
            { text: 'iifname != @lan_interfaces return' },
            { text: 'fib daddr type local return', why: 'to the router itself: not balanced' },
            ...gotoPick(b, (f) => f.forwardedPick),
          ]
          : [{ text: 'return', why: 'host mode: nothing is forwarded' }]),
      ],
      why: 'connections forwarded by the router',
    },
    {
      name: 'output', hook: 'type route hook output priority mangle; policy accept;',
      rules: [
        ...onlyNewConnections,
        { text: 'fib daddr type local return', why: 'to the router itself' },
        { text: 'ip saddr vmap @uplink_by_address', why: 'bound to an uplink address: that uplink' },
        ...(dualStack ? [{ text: 'ip6 saddr vmap @uplink_by_address6' }] : []),
        ...gotoPick(b, (f) => f.pick).map((r, i) => (i === 0 ? { ...r, why: 'type route: a new mark reroutes the packet' } : r)),
      ],
      why: routerMode ? "the router's own connections" : "the machine's own connections",
    },
  ];
  return { sets, chains };
}

/** A known connection: its mark, both directions. */
function restore(b: TableContext): Part {
  const { uplinks, marks } = b;
  return {
    sets: [
      ...endedSets(b),
      { name: 'restore', declaration: 'type mark : verdict',
        elements: [...uplinks.map((u) => `${hex(u.mark)} : goto ${markChain(u)}`), `${hex(marks.bypass)} : goto mark_main`],
        why: "a known connection's packets, both directions, follow its mark" },
    ],
  };
}

/**
 * conntrack.flush_on_down: the marks of the uplinks whose family is down
 * (or unusable). Their TCP connections are kept in conntrack and each next
 * packet, from either end, is answered with a reset, so the client learns at
 * once that its connection is dead and reconnects through a live uplink.
 * Deleting the entries instead would turn that packet into an unknown one,
 * which the never-reset rule drops: the client would hang until its own
 * timeout. Other protocols' entries, and TCP attempts still unanswered, are
 * deleted (kernel/update.ts deleteConnections), so their next packet is a
 * new connection on a live uplink.
 */
function endedSets({ config, uplinks, dualStack }: TableContext): NftSet[] {
  if (!config.conntrack.flushOnDown) return [];
  const ended = (carries: (u: ResolvedUplink) => boolean) => uplinks.filter((u) => !carries(u)).map((u) => hex(u.mark));
  return [
    { name: 'ended', declaration: 'type mark', elements: ended(canCarry),
      why: 'uplinks down now: their IPv4 TCP connections are answered with a reset (conntrack.flush_on_down)' },
    ...(dualStack ? [{ name: 'ended6', declaration: 'type mark', elements: ended((u) => u.ipv6 === undefined || canCarry6(u)),
      why: 'uplinks whose IPv6 is down now: their IPv6 TCP connections are answered with a reset' }] : []),
  ];
}

function endedConnections({ config, mask, dualStack }: TableContext): { text: string; why?: string }[] {
  if (!config.conntrack.flushOnDown) return [];
  // Not a reset itself: the reset this rule sends belongs to the same
  // connection and passes the output hook, where it must not be dropped.
  return [
    { text: `meta nfproto ipv4 tcp flags & rst == 0 ct mark & ${mask} @ended reject with tcp reset`,
      why: "a TCP connection of an uplink that went down: its next packet gets a reset, so its client reconnects through a live uplink" },
    ...(dualStack ? [{ text: `meta nfproto ipv6 tcp flags & rst == 0 ct mark & ${mask} @ended6 reject with tcp reset` }] : []),
  ];
}

/**
 * `nat6: none`: a LAN source in an uplink's routed prefix leaves by that
 * uplink, as split access would have it, before any pin or balancing; while
 * that uplink's IPv6 is down it is refused (no other ISP would pass it).
 */
function routed6(b: TableContext): Part {
  if (!b.config.uplinks.some((u) => u.nat6.mode === 'none')) return {};
  return {
    sets: [{ name: 'routed6', declaration: 'type ipv6_addr : verdict', flags: ['interval'],
      elements: b.uplinks.flatMap((u) => (u.ipv6?.routedPrefixes ?? []).map((p) => `${p} : goto ${canCarry6(u) ? markChain(u) : 'blocked'}`)),
      why: "nat6: none: a source in an uplink's routed prefix can only leave by that uplink; blocked while its IPv6 is down" }],
  };
}

/** The pinning rules, compiled into stages (pins.ts), first match wins. */
function pins(b: TableContext, f: FamilyView): Part {
  const sets: NftSet[] = [];
  for (const stage of f.stages) {
    // A rule that names no field matches every connection: a plain `goto` in pick, no map.
    if (stage.fields.length === 0) continue;
    const { elements, absent } = stageElements(stage, b.cgroups, (rule) => `goto ${f.targetOf(rule)}`);
    const leftOut = absent.map((a) => `${a.cgroup} (rule ${a.rule})`).join(', ');
    sets.push({
      name: stage.name, ...stageDeclaration(stage), elements,
      why: `pinning rules ${[...new Set(stage.entries.map((e) => e.rule.name))].join(', ')}` +
        (leftOut ? `; left out until the cgroup exists: ${leftOut}` : ''),
    });
  }
  const routed = f.family === 'ipv6' && b.config.uplinks.some((u) => u.nat6.mode === 'none')
    ? [{ text: 'ip6 saddr vmap @routed6', why: "a routed prefix's source: its own uplink" }]
    : [];
  const pickRules = (from: PinStage[]) => [
    ...routed,
    ...from.map((stage, i) => ({
      text: stage.fields.length > 0 ? `${stageKeyExpression(stage)} vmap @${stage.name}` : `goto ${f.targetOf(stage.entries[0].rule)}`,
      why: i === 0 ? 'pinning rules, first match wins' : undefined,
    })),
    { text: `goto balance${f.suffix}` },
  ];
  const of = f.family === 'ipv4' ? '' : ' IPv6';
  const chains: NftChain[] = [{ name: f.pick, rules: pickRules(f.stages), why: `the uplink of a new${of} connection` }];
  if (f.forwardedPick !== f.pick) {
    chains.push({ name: f.forwardedPick, rules: pickRules(f.stages.filter((s) => !stageIsOwnOnly(s))),
      why: `the uplink of a new forwarded${of} connection: ${f.pick} without the rules on user, group or cgroup, which only the router's own connections can match` });
  }
  return { sets, chains };
}

/** Each pin's `via`: its live uplinks by weight, or its fallback. */
function pinTargetParts(b: TableContext, f: FamilyView): Part {
  const sets: NftSet[] = [];
  const chains: NftChain[] = [];
  for (const target of f.targets.values()) {
    const live = b.uplinks.filter((u) => target.via.includes(u.uplink.name) && f.carries(u));
    const shares = splitBuckets(live.map((u) => u.uplink.weight), b.buckets);
    sets.push({
      name: target.name, declaration: b.bucketMap, flags: ['interval'],
      elements: b.elements(live.map((u, i) => ({ buckets: shares[i], target: `goto ${markChain(u)}` })),
        target.fallback === 'block' ? 'goto blocked' : `goto balance${f.suffix}`),
      why: `via ${target.via.join(', ')}, shared among those up; none up: ${target.fallback === 'block' ? 'blocked' : 'default balancing'} (rules ${target.rules.join(', ')})`,
    });
    chains.push({ name: target.name, rules: [{ text: `${f.draw} vmap @${target.name}` }], why: `rules ${target.rules.join(', ')}` });
  }
  return { sets, chains };
}

/** A new connection no pin claimed: by balance mode (and sticky sources). */
function balancing(b: TableContext, f: FamilyView): Part {
  const { config, sticky, buckets } = b;
  const uplinks = f.balanced;
  const { suffix, ip } = f;
  const of = f.family === 'ipv4' ? '' : ' IPv6';
  const rotates = config.balance === 'least-loaded';
  const balanceTarget = (u: ResolvedUplink) => (sticky ? `goto stick${suffix}_${u.uplink.name}` : `goto ${markChain(u)}`);
  const sets: NftSet[] = [{
    name: `balance${suffix}`, declaration: b.bucketMap, flags: ['interval'],
    elements: b.elements(uplinks.map((u) => ({ buckets: f.buckets(u), target: balanceTarget(u) }))),
    why: rotates
      ? `new${of} connections by least-loaded: dealt in turn over ${buckets} slots, each uplink's slots spread along the rotation by its share (lowest tier that is up)`
      : `new${of} connections by ${config.balance}: each uplink owns a share of ${buckets} buckets (lowest tier that is up, by weight)`,
  }];
  const chains: NftChain[] = [];
  const balance: NftChain = {
    name: `balance${suffix}`,
    rules: [
      ...(sticky
        ? uplinks.map((u, i) => ({ text: `iifname @lan_interfaces ${ip} saddr @sticky${suffix}_${u.uplink.name} goto ${markChain(u)}`,
          why: i === 0 ? 'sticky: a LAN source keeps the uplink of its last new connection (the daemon empties a down uplink\'s set)' : undefined }))
        : []),
      { text: `${f.draw} vmap @balance${suffix}` },
    ],
    why: `the uplink of a new${of} connection no pinning rule claimed`,
  };
  if (sticky) {
    for (const u of uplinks) {
      sets.push({ name: `sticky${suffix}_${u.uplink.name}`, declaration: `type ${f.addressType}`, flags: ['dynamic', 'timeout'],
        timeout: nftDuration(config.stickyMs!), elements: [],
        why: `LAN sources whose last new${of} connection went to ${u.uplink.name}` });
      chains.push({ name: `stick${suffix}_${u.uplink.name}`,
        rules: [{ text: `iifname @lan_interfaces update @sticky${suffix}_${u.uplink.name} { ${ip} saddr }` }, { text: `goto ${markChain(u)}` }],
        why: `remember that this LAN source went to ${u.uplink.name}` });
    }
  }
  return { sets, chains: [...chains, balance] };
}

/** The decision, kept: the packet's and the connection's mark, or a refusal. */
function marking({ uplinks, marks, keep }: TableContext): Part {
  const setMark = (value: number) => [
    { text: `meta mark set meta mark & ${keep} | ${hex(value)}` },
    { text: `ct mark set ct mark & ${keep} | ${hex(value)}` },
  ];
  return {
    chains: [
      ...uplinks.map((u) => ({ name: markChain(u), rules: setMark(u.mark), why: `this connection uses ${u.uplink.name}` })),
      { name: 'mark_main', rules: setMark(marks.bypass), why: 'this connection is left to the main table' },
      {
        name: 'blocked',
        rules: [
          // Rejected here rather than by an `unreachable` route: the kernel
          // rate-limits the ICMP errors routing sends, so a client's third try
          // would hang. A TCP reset is never rate-limited.
          { text: 'meta l4proto tcp reject with tcp reset' },
          { text: 'reject with icmpx type host-unreachable' },
        ],
        why: 'no uplink may take this connection (all down, or a pin with fallback block): refuse it at once',
      },
    ],
  };
}

/** Leaving: source NAT to the uplink's address, on a connection's first packet. */
function sourceNat(b: TableContext): Part {
  const { config, uplinks, routerMode, mask, keep } = b;
  const nat6 = b.dualStack ? sourceNat6(b) : { sets: [], rules: [] };
  return {
    sets: [
      { name: 'uplink_interfaces', declaration: 'type ifname', elements: uplinks.map((u) => quote(u.uplink.interface)),
        why: 'where connections leave when an uplink carries them' },
      { name: 'snat_address', declaration: 'type ifname : ipv4_addr',
        elements: uplinks.filter((u) => u.uplink.nat === 'snat' && u.address && !u.unusable).map((u) => `${quote(u.uplink.interface)} : ${u.address}`),
        why: "source NAT to the uplink's current address" },
      { name: 'masquerade_interfaces', declaration: 'type ifname',
        elements: uplinks.filter((u) => u.uplink.nat === 'masquerade').map((u) => quote(u.uplink.interface)),
        why: 'uplinks with nat: masquerade' },
      ...nat6.sets,
    ],
    chains: [{
      name: 'postrouting', hook: 'type nat hook postrouting priority srcnat; policy accept;',
      rules: [
        { text: `ct mark & ${mask} != 0 iifname != @uplink_interfaces oifname != @uplink_interfaces ct mark set ct mark & ${keep}`,
          why: 'a local route won (LAN, VPN): not an uplink connection, so no uplink going down may flush it' },
        { text: 'oifname @masquerade_interfaces meta nfproto ipv4 masquerade',
          why: b.dualStack ? 'IPv4 only: nat6 decides for IPv6, below' : 'IPv4 only: no uplink carries IPv6 now' },
        { text: 'snat ip to oifname map @snat_address', why: 'interfaces missing from the map are not matched' },
        ...(routerMode ? [] : [{ text: `ip saddr ${config.kernel.hostSource} masquerade`,
          why: 'host mode: the neutral source never leaves as it is, even by a route no uplink owns (via: main to a VPN)' }]),
        ...nat6.rules,
      ],
      why: 'source NAT, first packet of each connection',
    }],
  };
}

/**
 * IPv6 source handling by `nat6`: `prefix` maps the LAN prefix onto the
 * uplink's 1:1, host part kept (the kernel's NETMAP, stateful: replies are
 * mapped back by conntrack); a source outside that prefix (the router's own,
 * another LAN prefix) falls through to snat to the uplink's address rather
 * than leaving unroutable. `none` NATs nothing: the source is already the
 * uplink's (map routed6).
 */
function sourceNat6({ uplinks }: TableContext): { sets: NftSet[]; rules: { text: string; why?: string }[] } {
  const prefixRules = uplinks.flatMap((u) => {
    const nat6 = u.uplink.nat6;
    return nat6.mode === 'prefix' && u.ipv6
      ? [{ text: `oifname ${quote(u.uplink.interface)} snat ip6 prefix to ip6 saddr map { ${nat6.lan} : ${nat6.uplink} }`,
        why: `${u.uplink.name}: ${nat6.lan} mapped onto ${nat6.uplink}, host part kept` }]
      : [];
  });
  return {
    sets: [
      { name: 'snat6_address', declaration: 'type ifname : ipv6_addr',
        elements: uplinks.filter((u) => (u.uplink.nat6.mode === 'snat' || u.uplink.nat6.mode === 'prefix') && u.ipv6?.address && !u.ipv6.unusable)
          .map((u) => `${quote(u.uplink.interface)} : ${u.ipv6!.address}`),
        why: "IPv6 source NAT to the uplink's current global address (nat6: snat, and prefix for sources outside its LAN prefix)" },
      { name: 'masquerade6_interfaces', declaration: 'type ifname',
        elements: uplinks.filter((u) => u.ipv6 && u.uplink.nat6.mode === 'masquerade').map((u) => quote(u.uplink.interface)),
        why: 'uplinks with nat6: masquerade' },
    ],
    rules: [
      ...LINK_LOCAL_EXEMPTION,
      ...prefixRules,
      { text: 'oifname @masquerade6_interfaces meta nfproto ipv6 masquerade' },
      { text: 'snat ip6 to oifname map @snat6_address', why: 'interfaces missing from the map (nat6: none) are not matched' },
    ],
  };
}

interface PinTarget { name: string; via: string[]; fallback: 'any' | 'block'; rules: string[] }

const targetKey = (rule: PinRule) => `${rule.via}|${rule.fallback}`;

/** The bucket map a pinning rule of this family jumps to (via_N, via6_N), or mark_main for `via: main`. */
export function pinTargetOf(rules: PinRule[], family: Family, rule: PinRule): string {
  if (rule.via === 'main') return 'mark_main';
  return pinTargets(rules, family === 'ipv4' ? '' : '6').get(targetKey(rule))!.name;
}

function pinTargets(rules: PinRule[], suffix: string): Map<string, PinTarget> {
  const targets = new Map<string, PinTarget>();
  for (const rule of rules) {
    if (rule.via === 'main') continue;
    const key = targetKey(rule);
    const target = targets.get(key) ?? { name: `via${suffix}_${targets.size + 1}`, via: rule.via, fallback: rule.fallback, rules: [] };
    target.rules.push(rule.name);
    targets.set(key, target);
  }
  return targets;
}

/**
 * The seed of `balance: hash` ("uplk"). Without one the kernel draws a random
 * seed each time the table is loaded, so a restart or a full converge would
 * move address pairs to other uplinks; with it a pair keeps its uplink across
 * reloads, and `uplinkd explain` can compute its bucket (src/plan/jhash.ts).
 */
export const HASH_SEED = 0x75706c6b;

function pickExpression(balance: string, ip: string): string {
  const buckets = balanceBuckets(balance);
  switch (balance) {
    case 'hash': return `jhash ${ip} saddr . ${ip} daddr mod ${buckets} seed ${hex(HASH_SEED)}`;
    // In turn rather than at random: connections that start together (a
    // browser's burst, a download manager's segments) are spread by share
    // before any of them has a measurable rate. The daemon steers the shares.
    case 'least-loaded': return `numgen inc mod ${buckets}`;
    default: return `numgen random mod ${buckets}`;
  }
}

interface BucketShare { buckets: number; target: string }

/**
 * A bucket map's elements; with no share at all, everything goes to `empty`.
 * Shares are contiguous ranges, or with a rotation (begun at `rotationStart`)
 * spread along it (rotationOrder), where each run of one target is one element.
 */
function bucketElements(shares: BucketShare[], total: number, empty: string, rotationStart: number | undefined): string[] {
  const nonEmpty = shares.filter((s) => s.buckets > 0);
  if (nonEmpty.length === 0) return [`0-${total - 1} : ${empty}`];
  const runs: { start: number; end: number; target: string }[] = [];
  if (rotationStart !== undefined) {
    for (const [turn, i] of rotationOrder(nonEmpty.map((s) => s.buckets), rotationStart).entries()) {
      const last = runs.at(-1);
      if (last?.target === nonEmpty[i].target) last.end = turn;
      else runs.push({ start: turn, end: turn, target: nonEmpty[i].target });
    }
  } else {
    let start = 0;
    for (const { buckets, target } of nonEmpty) {
      runs.push({ start, end: start + buckets - 1, target });
      start += buckets;
    }
  }
  return runs.map((r) => `${r.start}-${r.end} : ${r.target}`);
}

/**
 * The sticky set of one family of an uplink in a planned table, which the
 * daemon empties when that family goes down; none without `sticky`, or when
 * that family is not planned.
 */
export function stickySetOf(table: NftTable, uplink: string, family: Family): string | undefined {
  const name = family === 'ipv6' ? `sticky6_${uplink}` : `sticky_${uplink}`;
  return table.sets.some((s) => s.name === name) ? name : undefined;
}

function quote(name: string): string {
  return `"${name}"`;
}

function nftDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
