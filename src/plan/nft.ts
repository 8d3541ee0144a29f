// The one nftables table uplinkd owns (family inet). It decides the uplink of
// each new connection, keeps it in the connection mark so every later packet
// in both directions follows it, and source-NATs to the uplink's address.
//
// Everything that changes with health or addresses is a set or map element
// (balance shares, pins' live uplinks, SNAT addresses), so the daemon can
// follow a verdict without reloading chains.

import { balanceBuckets, hex } from '../ownership.js';
import { compilePinStages, rulesOfFamily, stageDeclaration, stageElements, stageIsOwnOnly, stageKeyExpression, type PinStage } from './pins.js';
import { canCarry, rotationOrder, splitBuckets, type PlanContext, type ResolvedUplink } from './resolve.js';
import type { NftChain, NftSet, NftTable } from './state.js';
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
  const deciding = [hooks(b), restore(b), pins(b), pinTargetParts(b), balancing(b), marking(b)];
  const leaving = sourceNat(b);
  return {
    family: 'inet', name: ctx.config.kernel.nftTable,
    sets: [...deciding, leaving].flatMap((p) => p.sets ?? []),
    chains: [...[...deciding].reverse(), leaving].flatMap((p) => p.chains ?? []),
  };
}

interface Part { sets?: NftSet[]; chains?: NftChain[] }

/** What every part of the table needs to know, computed once. */
interface TableContext extends PlanContext {
  routerMode: boolean;
  sticky: boolean;
  /** The mark bits uplinkd owns, and their complement: what a mark update keeps. */
  mask: string;
  keep: string;
  buckets: number;
  /** The expression that draws a bucket for a new connection. */
  draw: string;
  bucketMap: string;
  /** A bucket map's elements for these shares; `empty` when there are none. */
  elements(shares: BucketShare[], empty?: string): string[];
  targets: Map<string, PinTarget>;
  targetOf(rule: PinRule): string;
  stages: PinStage[];
  /** The pick chain forwarded connections go to: without process rules, when there are any. */
  forwardedPick: string;
}

const markChain = (u: ResolvedUplink) => `mark_${u.uplink.name}`;

function tableContext(ctx: PlanContext): TableContext {
  const { config, marks } = ctx;
  const routerMode = config.lan.length > 0;
  const buckets = balanceBuckets(config.balance);
  const rotates = config.balance === 'least-loaded';
  // Rules with the same `via` and `fallback` share one target: a map of the
  // live uplinks among `via`, which is all that changes with health.
  // IPv4 only for now (see `meta nfproto` in prerouting): rules of IPv6 prefixes alone are left out.
  const rules = rulesOfFamily(config.rules, 'ipv4');
  const targets = pinTargets(rules);
  const stages = compilePinStages(rules);
  return {
    ...ctx,
    routerMode,
    sticky: routerMode && config.stickyMs !== undefined,
    mask: hex(marks.mask),
    keep: hex(~marks.mask >>> 0),
    buckets,
    draw: pickExpression(config.balance),
    // The key is a bucket number whatever picks it: nft 1.0.6 cannot list a
    // `typeof jhash …` map back, so hash maps are declared with numgen too.
    bucketMap: `typeof numgen ${rotates ? 'inc' : 'random'} mod ${buckets} : verdict`,
    elements: (shares, empty = 'goto blocked') => bucketElements(shares, buckets, empty, rotates ? ctx.rotationStart : undefined),
    targets,
    targetOf: (rule) => (rule.via === 'main' ? 'mark_main' : targets.get(targetKey(rule))!.name),
    stages,
    // Rules on the process (user, group, cgroup) need the local socket, which a
    // forwarded packet has not; `socket cgroupv2` would even look one up by the
    // packet's destination and find a local listener on that port. So forwarded
    // connections get a pick without those stages: the same order otherwise.
    forwardedPick: routerMode && stages.some(stageIsOwnOnly) ? 'pick_forwarded' : 'pick',
  };
}

/** Where packets enter: forwarded ones (prerouting) and the machine's own (output). */
function hooks(b: TableContext): Part {
  const { config, uplinks, routerMode } = b;
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
      elements: uplinks.filter((u) => u.address && !u.unusable).map((u) => `${u.address} : goto ${markChain(u)}`),
      why: "the machine's sockets bound to an uplink's address use that uplink" },
  );
  // Both hooks start alike: a known connection takes its mark back and is
  // done; only new IPv4 connections go on to be given an uplink.
  const onlyNewConnections = [
    { text: `ct mark & ${b.mask} vmap @restore`, why: 'a known connection keeps its uplink' },
    { text: 'ct state != new return' },
    { text: 'meta nfproto != ipv4 return', why: 'IPv4 only for now' },
  ];
  const chains: NftChain[] = [
    {
      name: 'prerouting', hook: 'type filter hook prerouting priority mangle; policy accept;',
      rules: [
        ...onlyNewConnections,
        { text: 'iifname vmap @uplink_by_interface', why: 'arriving from an uplink: answered through it' },
        ...(routerMode
          ? [
            { text: 'iifname != @lan_interfaces return' },
            { text: 'fib daddr type local return', why: 'to the router itself: not balanced' },
            { text: `goto ${b.forwardedPick}` },
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
        { text: 'goto pick', why: 'type route: a new mark reroutes the packet' },
      ],
      why: routerMode ? "the router's own connections" : "the machine's own connections",
    },
  ];
  return { sets, chains };
}

/** A known connection: its mark, both directions. */
function restore({ uplinks, marks }: TableContext): Part {
  return {
    sets: [{ name: 'restore', declaration: 'type mark : verdict',
      elements: [...uplinks.map((u) => `${hex(u.mark)} : goto ${markChain(u)}`), `${hex(marks.bypass)} : goto mark_main`],
      why: "a known connection's packets, both directions, follow its mark" }],
  };
}

/** The pinning rules, compiled into stages (pins.ts), first match wins. */
function pins(b: TableContext): Part {
  const sets: NftSet[] = [];
  for (const stage of b.stages) {
    // A rule that names no field matches every connection: a plain `goto` in pick, no map.
    if (stage.fields.length === 0) continue;
    const { elements, absent } = stageElements(stage, b.cgroups, (rule) => `goto ${b.targetOf(rule)}`);
    const leftOut = absent.map((a) => `${a.cgroup} (rule ${a.rule})`).join(', ');
    sets.push({
      name: stage.name, ...stageDeclaration(stage), elements,
      why: `pinning rules ${[...new Set(stage.entries.map((e) => e.rule.name))].join(', ')}` +
        (leftOut ? `; left out until the cgroup exists: ${leftOut}` : ''),
    });
  }
  const pickRules = (from: PinStage[]) => [
    ...from.map((stage, i) => ({
      text: stage.fields.length > 0 ? `${stageKeyExpression(stage)} vmap @${stage.name}` : `goto ${b.targetOf(stage.entries[0].rule)}`,
      why: i === 0 ? 'pinning rules, first match wins' : undefined,
    })),
    { text: 'goto balance' },
  ];
  const chains: NftChain[] = [{ name: 'pick', rules: pickRules(b.stages), why: 'the uplink of a new connection' }];
  if (b.forwardedPick !== 'pick') {
    chains.push({ name: b.forwardedPick, rules: pickRules(b.stages.filter((s) => !stageIsOwnOnly(s))),
      why: 'the uplink of a new forwarded connection: pick without the rules on user, group or cgroup, which only the router\'s own connections can match' });
  }
  return { sets, chains };
}

/** Each pin's `via`: its live uplinks by weight, or its fallback. */
function pinTargetParts(b: TableContext): Part {
  const sets: NftSet[] = [];
  const chains: NftChain[] = [];
  for (const target of b.targets.values()) {
    const live = b.uplinks.filter((u) => target.via.includes(u.uplink.name) && canCarry(u));
    const shares = splitBuckets(live.map((u) => u.uplink.weight), b.buckets);
    sets.push({
      name: target.name, declaration: b.bucketMap, flags: ['interval'],
      elements: b.elements(live.map((u, i) => ({ buckets: shares[i], target: `goto ${markChain(u)}` })),
        target.fallback === 'block' ? 'goto blocked' : 'goto balance'),
      why: `via ${target.via.join(', ')}, shared among those up; none up: ${target.fallback === 'block' ? 'blocked' : 'default balancing'} (rules ${target.rules.join(', ')})`,
    });
    chains.push({ name: target.name, rules: [{ text: `${b.draw} vmap @${target.name}` }], why: `rules ${target.rules.join(', ')}` });
  }
  return { sets, chains };
}

/** A new connection no pin claimed: by balance mode (and sticky sources). */
function balancing(b: TableContext): Part {
  const { config, uplinks, sticky, buckets } = b;
  const rotates = config.balance === 'least-loaded';
  const balanceTarget = (u: ResolvedUplink) => (sticky ? `goto stick_${u.uplink.name}` : `goto ${markChain(u)}`);
  const sets: NftSet[] = [{
    name: 'balance', declaration: b.bucketMap, flags: ['interval'],
    elements: b.elements(uplinks.map((u) => ({ buckets: u.buckets, target: balanceTarget(u) }))),
    why: rotates
      ? `new connections by least-loaded: dealt in turn over ${buckets} slots, each uplink's slots spread along the rotation by its share (lowest tier that is up)`
      : `new connections by ${config.balance}: each uplink owns a share of ${buckets} buckets (lowest tier that is up, by weight)`,
  }];
  const chains: NftChain[] = [];
  const balance: NftChain = {
    name: 'balance',
    rules: [
      ...(sticky
        ? uplinks.map((u) => ({ text: `iifname @lan_interfaces ip saddr @sticky_${u.uplink.name} goto ${markChain(u)}`,
          why: u.index === 0 ? 'sticky: a LAN source keeps the uplink of its last new connection (the daemon empties a down uplink\'s set)' : undefined }))
        : []),
      { text: `${b.draw} vmap @balance` },
    ],
    why: 'the uplink of a new connection no pinning rule claimed',
  };
  if (sticky) {
    for (const u of uplinks) {
      sets.push({ name: `sticky_${u.uplink.name}`, declaration: 'type ipv4_addr', flags: ['dynamic', 'timeout'],
        timeout: nftDuration(config.stickyMs!), elements: [],
        why: `LAN sources whose last new connection went to ${u.uplink.name}` });
      chains.push({ name: `stick_${u.uplink.name}`,
        rules: [{ text: `iifname @lan_interfaces update @sticky_${u.uplink.name} { ip saddr }` }, { text: `goto ${markChain(u)}` }],
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
function sourceNat({ config, uplinks, routerMode, mask, keep }: TableContext): Part {
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
    ],
    chains: [{
      name: 'postrouting', hook: 'type nat hook postrouting priority srcnat; policy accept;',
      rules: [
        { text: `ct mark & ${mask} != 0 iifname != @uplink_interfaces oifname != @uplink_interfaces ct mark set ct mark & ${keep}`,
          why: 'a local route won (LAN, VPN): not an uplink connection, so no uplink going down may flush it' },
        { text: 'oifname @masquerade_interfaces meta nfproto ipv4 masquerade', why: 'IPv4 only, like everything uplinkd does' },
        { text: 'snat ip to oifname map @snat_address', why: 'interfaces missing from the map are not matched' },
        ...(routerMode ? [] : [{ text: `ip saddr ${config.kernel.hostSource} masquerade`,
          why: 'host mode: the neutral source never leaves as it is, even by a route no uplink owns (via: main to a VPN)' }]),
      ],
      why: 'source NAT, first packet of each connection',
    }],
  };
}

interface PinTarget { name: string; via: string[]; fallback: 'any' | 'block'; rules: string[] }

const targetKey = (rule: PinRule) => `${rule.via}|${rule.fallback}`;

function pinTargets(rules: PinRule[]): Map<string, PinTarget> {
  const targets = new Map<string, PinTarget>();
  for (const rule of rules) {
    if (rule.via === 'main') continue;
    const key = targetKey(rule);
    const target = targets.get(key) ?? { name: `via_${targets.size + 1}`, via: rule.via, fallback: rule.fallback, rules: [] };
    target.rules.push(rule.name);
    targets.set(key, target);
  }
  return targets;
}

function pickExpression(balance: string): string {
  const buckets = balanceBuckets(balance);
  switch (balance) {
    case 'hash': return `jhash ip saddr . ip daddr mod ${buckets}`;
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

function quote(name: string): string {
  return `"${name}"`;
}

function nftDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
