// `uplinkd explain`: which uplink a new connection would take now, and why
// (README "uplinkd explain"). Pure: it walks the planned state in the order a
// new connection meets the kernel (the ip rules' local routes first, then the
// nft table: split access, pins stage by stage, sticky, balancing) and reads
// every verdict from the planned maps themselves, so it cannot disagree with
// what was installed. The kernel edge supplies only the main table's routes
// and the live sticky entries.

import type { Config, PinRule, Protocol } from '../config/types.js';
import { ipv4ToNumber, prefixRange } from '../config/ipv4.js';
import { addressFamily, ipv6PrefixRange, ipv6ToBigInt, isLinkLocal, isMulticast } from '../config/ipv6.js';
import { nftJhash } from './jhash.js';
import { HASH_SEED, pinTargetOf, stickySetOf } from './nft.js';
import { compilePinStages, rulesOfFamily, stageIsOwnOnly, type PinStage } from './pins.js';
import type { DesiredState, Family, KernelFacts, UplinkSummary } from './state.js';

export interface Flow {
  src: string;
  dst: string;
  proto: Exclude<Protocol, 'any'>;
  sport?: number;
  dport?: number;
  /** The socket owner (uid) and its group (gid): the machine's own connections only. */
  uid?: number;
  gid?: number;
  /** The socket's cgroup (v2), relative to the hierarchy's root, as rules name it: system.slice/restic.service. */
  cgroup?: string;
}

export interface ExplainInput {
  config: Config;
  state: DesiredState;
  facts: KernelFacts;
  /** The main table's routes other than default ones (CIDR, both families): local routes come first. */
  mainRoutes: string[];
  /** Live sticky entries, by set name (sticky_isp1, sticky6_isp1); absent when not known (no daemon). */
  sticky?: Record<string, string[]>;
}

export type Decision = 'uplink' | 'main' | 'blocked' | 'local';
export type Stage = 'local' | 'local-route' | 'link-local' | 'no-ipv6' | 'bound-address' | 'routed-prefix' | 'pin' | 'sticky' | 'balance';

export interface Explanation {
  family: Family;
  /** forwarded: from the LAN through the router; own: the machine's own connection. */
  path: 'forwarded' | 'own';
  decision: Decision;
  /** The uplink, when the answer is one uplink. */
  uplink?: string;
  /** Where the answer is a draw (weighted, least-loaded): each uplink it may take, with its chance. */
  candidates?: { uplink: string; share: number }[];
  stage: Stage;
  /** The pinning rule that matched, and its stage map (rules_1 …). */
  rule?: string;
  stageMap?: string;
  balance: Config['balance'];
  /** `hash`: the bucket this address pair falls in, out of `buckets`. */
  bucket?: number;
  buckets?: number;
  /** The lowest tier with an uplink up in this family (the one balancing uses), or null when none is up. */
  tier: number | null;
  /** This family's uplinks that are up, in that tier, */
  up: string[];
  /** up in a higher tier (used when the tier in use has none up), */
  standby: string[];
  /** and down or unusable. */
  down: string[];
  /** Each step that decided, in order, as a sentence. */
  reasons: string[];
}

/**
 * The flow asked about cannot be (a usage error, exit 2): it names a process
 * user for a connection that no process of this machine makes.
 */
export class FlowError extends Error {}

const PROTOCOL_NUMBER: Record<Family, Record<Flow['proto'], number>> = {
  ipv4: { tcp: 6, udp: 17, icmp: 1 },
  ipv6: { tcp: 6, udp: 17, icmp: 58 },
};

/** An address as a number (IPv4) or bigint (IPv6), for range checks. */
function addressValue(address: string, family: Family): bigint {
  return family === 'ipv4' ? BigInt(ipv4ToNumber(address)!) : ipv6ToBigInt(address)!;
}

/** Whether a prefix (either family, as config/ipv4.ts and ipv6.ts read them) holds the address. */
function prefixContains(prefix: string, address: string): boolean {
  const family = addressFamily(prefix.split('/')[0]);
  if (family !== addressFamily(address)) return false;
  const range = family === 'ipv4' ? prefixRange(prefix) : ipv6PrefixRange(prefix);
  const value = addressValue(address, family);
  return value >= BigInt(range.from) && value <= BigInt(range.to);
}

/** The address's bytes in network order, as nft's `ip saddr . ip daddr` concatenation holds them. */
function addressBytes(address: string, family: Family): number[] {
  const value = addressValue(address, family);
  const length = family === 'ipv4' ? 4 : 16;
  return Array.from({ length }, (_, i) => Number((value >> BigInt(8 * (length - 1 - i))) & 0xffn));
}

/** A bucket map's elements as planned: `0-32767 : goto mark_isp1`. */
interface BucketRun { from: number; to: number; target: string }

function bucketRuns(state: DesiredState, map: string): BucketRun[] {
  const set = state.nft.sets.find((s) => s.name === map);
  if (!set) throw new Error(`the plan has no map ${map}`);
  return set.elements.map((e) => {
    const m = /^(\d+)-(\d+) : goto (\S+)$/.exec(e);
    if (!m) throw new Error(`map ${map}: unexpected element ${e}`);
    return { from: Number(m[1]), to: Number(m[2]), target: m[3] };
  });
}

/** The uplink a chain name stands for: mark_isp1, stick_isp1, stick6_isp1. */
function uplinkOfChain(chain: string, uplinks: UplinkSummary[]): string | undefined {
  const name = /^(?:mark|stick6?)_(.+)$/.exec(chain)?.[1];
  return name !== undefined && name !== 'main' && uplinks.some((u) => u.name === name) ? name : undefined;
}

/** Whether the flow matches one field value of a pin stage element. */
function fieldMatches(expr: string, value: { text: string; range?: { from: number; to: number }; range6?: { from: bigint; to: bigint }; cgroup?: string },
  flow: Flow, family: Family, iif: string | undefined, cgroupsNow: ReadonlySet<string>): boolean {
  const inRange = (n: number | undefined) => n !== undefined && value.range !== undefined && n >= value.range.from && n <= value.range.to;
  const inAddressRange = (address: string) => {
    if (family === 'ipv6') return value.range6 !== undefined && addressValue(address, family) >= value.range6.from && addressValue(address, family) <= value.range6.to;
    return inRange(ipv4ToNumber(address));
  };
  if (expr.endsWith(' saddr')) return inAddressRange(flow.src);
  if (expr.endsWith(' daddr')) return inAddressRange(flow.dst);
  if (expr === 'meta l4proto') return inRange(PROTOCOL_NUMBER[family][flow.proto]);
  if (expr === 'th sport') return inRange(flow.sport);
  if (expr === 'th dport') return inRange(flow.dport);
  if (expr === 'iifname') return iif !== undefined && value.text === `"${iif}"`;
  if (expr === 'meta skuid') return inRange(flow.uid);
  if (expr === 'meta skgid') return inRange(flow.gid);
  // socket cgroupv2 level N: the socket's cgroup is the rule's cgroup or lies below it;
  // a cgroup that does not exist now has no element (pins.ts stageElements).
  if (expr.startsWith('socket cgroupv2')) {
    const ruleCgroup = value.cgroup;
    return flow.cgroup !== undefined && ruleCgroup !== undefined && cgroupsNow.has(ruleCgroup) &&
      (flow.cgroup === ruleCgroup || flow.cgroup.startsWith(`${ruleCgroup}/`));
  }
  return false;
}

function matchingRule(stage: PinStage, flow: Flow, family: Family, iif: string | undefined, cgroupsNow: ReadonlySet<string>): PinRule | undefined {
  if (stage.fields.length === 0) return stage.entries[0].rule;
  return stage.entries.find((entry) => entry.elements.some((element) =>
    element.every((value, i) => fieldMatches(stage.fields[i].expr, value, flow, family, iif, cgroupsNow))))?.rule;
}

/** `(uid 0, gid 0, cgroup system.slice/x.service)`: the process behind the machine's own connection, as far as given. */
function ownProcess(flow: Flow): string {
  const parts = [flow.uid !== undefined ? `uid ${flow.uid}` : '', flow.gid !== undefined ? `gid ${flow.gid}` : '', flow.cgroup !== undefined ? `cgroup ${flow.cgroup}` : ''].filter(Boolean);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}

/** The process keys the stages match on that the flow does not give: user, group, cgroup. */
function processFieldsUnknown(stages: PinStage[], flow: Flow): string[] {
  const exprs = new Set(stages.flatMap((s) => s.fields.map((f) => f.expr)));
  return [
    ...(exprs.has('meta skuid') && flow.uid === undefined ? ['user'] : []),
    ...(exprs.has('meta skgid') && flow.gid === undefined ? ['group'] : []),
    ...([...exprs].some((e) => e.startsWith('socket cgroupv2')) && flow.cgroup === undefined ? ['cgroup'] : []),
  ];
}

const percent = (share: number) => `${(share * 100).toFixed(1)}%`;

export function explain({ config, state, facts, mainRoutes, sticky }: ExplainInput, flow: Flow): Explanation {
  const family = addressFamily(flow.dst);
  const routerMode = config.lan.length > 0;
  const ownAddresses = facts.interfaces.flatMap((i) => [...i.addresses.map((a) => a.address), ...(i.addresses6 ?? []).map((a) => a.address)]);
  const isOwn = (address: string) => ownAddresses.includes(address) || (family === 'ipv4' ? prefixContains('127.0.0.0/8', address) : address === '::1') ||
    (!routerMode && address === config.kernel.hostSource);
  const path: Explanation['path'] = !routerMode || isOwn(flow.src) ? 'own' : 'forwarded';
  if (path === 'forwarded' && (flow.uid !== undefined || flow.gid !== undefined || flow.cgroup !== undefined)) {
    const option = flow.cgroup !== undefined && flow.uid === undefined ? '--cgroup' : '--user';
    throw new FlowError(`${option} names a process of this machine, but ${flow.src} is not one of its addresses: a forwarded connection has no local process`);
  }
  const lanInterface = path === 'forwarded'
    ? facts.interfaces.find((i) => config.lan.includes(i.name) && [...i.addresses, ...(i.addresses6 ?? [])].some((a) => prefixContains(`${a.address}/${a.prefixLen}`, flow.src)))?.name ?? config.lan[0]
    : undefined;

  const carries = (u: UplinkSummary) => (family === 'ipv4' ? u.health === 'up' && !u.unusable : u.ipv6 !== undefined && u.ipv6.health === 'up' && !u.ipv6.unusable);
  const familyOf = (u: UplinkSummary) => (family === 'ipv4' ? u : u.ipv6);
  const planned = state.uplinks.filter((u) => familyOf(u) !== undefined);
  const up = planned.filter(carries);
  const tier = up.length > 0 ? Math.min(...up.map((u) => u.tier)) : null;
  const reasons: string[] = [];
  reasons.push(path === 'forwarded'
    ? `a new ${family} connection forwarded from the LAN (${lanInterface})`
    : `a new ${family} connection of this machine${ownProcess(flow)}`);
  const names = (list: UplinkSummary[]) => list.map((u) => u.name);
  const inTier = up.filter((u) => u.tier === tier);
  const standby = up.filter((u) => u.tier !== tier);
  const down = planned.filter((u) => !carries(u));
  reasons.push(tier === null
    ? `no uplink carries ${family} now (down: ${names(planned).join(', ') || 'none planned'})`
    : `tier ${tier} in use: ${names(inTier).join(', ')} up` +
      (standby.length > 0 ? `; standby in a higher tier: ${names(standby).join(', ')}` : '') +
      (down.length > 0 ? `; down: ${names(down).join(', ')}` : ''));
  const answer = (decision: Decision, stage: Stage, why: string, extra: Partial<Explanation> = {}): Explanation => {
    reasons.push(why);
    return {
      decision, ...(extra.uplink ? { uplink: extra.uplink } : {}), ...(extra.candidates ? { candidates: extra.candidates } : {}), stage, ...extra,
      family, path, balance: config.balance, tier, up: names(inTier), standby: names(standby), down: names(down), reasons,
    };
  };

  // Routing decisions before the nft table: to this machine, or a route in the main table.
  if (isOwn(flow.dst)) return answer('local', 'local', `${flow.dst} is an address of this machine: delivered locally, no uplink`);
  const localRoute = mainRoutes.filter((r) => prefixContains(r, flow.dst)).sort((a, b) => Number(b.split('/')[1] ?? 128) - Number(a.split('/')[1] ?? 128))[0];
  if (localRoute) {
    return answer('main', 'local-route', `the main table has the route ${localRoute}: local routes come before any uplink (ip rule ${config.kernel.rulePriority}, suppress_prefixlength 0)`);
  }
  if (family === 'ipv6') {
    const src = ipv6ToBigInt(flow.src)!;
    const dst = ipv6ToBigInt(flow.dst)!;
    if (isLinkLocal(src) || isLinkLocal(dst) || isMulticast(dst)) return answer('main', 'link-local', 'link-local or multicast: stays on its link, never given an uplink');
    if (!state.nft.sets.some((s) => s.name === 'balance6')) {
      return answer('main', 'no-ipv6', 'no uplink has a global IPv6 address now: IPv6 follows the main table');
    }
  }
  const chainVerdict = (target: string, stage: Stage, why: string, extra: Partial<Explanation> = {}): Explanation | undefined => {
    if (target === 'blocked') return answer('blocked', stage, `${why}: refused at once (TCP reset, ICMP unreachable)`, extra);
    if (target === 'mark_main') return answer('main', stage, `${why}: left to the main table`, extra);
    const uplink = uplinkOfChain(target, state.uplinks);
    return uplink ? answer('uplink', stage, `${why}: ${uplink}`, { uplink, ...extra }) : undefined;
  };

  // Split access: a socket bound to an uplink's address keeps that uplink.
  if (path === 'own') {
    const bound = state.uplinks.find((u) => familyOf(u)?.address === flow.src);
    if (bound) return answer('uplink', 'bound-address', `${flow.src} is ${bound.name}'s address: a socket bound to it uses ${bound.name} (split access)`, { uplink: bound.name });
  }
  // nat6: none — a routed prefix's source leaves by its own uplink only.
  const routed = family === 'ipv6' ? state.nft.sets.find((s) => s.name === 'routed6') : undefined;
  for (const element of routed?.elements ?? []) {
    const [prefix, target] = element.split(' : goto ');
    if (prefixContains(prefix, flow.src)) return chainVerdict(target, 'routed-prefix', `${flow.src} is in ${prefix}, a prefix routed to this uplink (nat6: none)`)!;
  }

  const key = [...addressBytes(flow.src, family), ...addressBytes(flow.dst, family)];
  /** A bucket map's answer: `hash` the exact bucket, else the shares of its targets. */
  const draw = (map: string, stage: Stage, why: string, extra: Partial<Explanation>): Explanation | 'balance' => {
    const runs = bucketRuns(state, map);
    const buckets = Math.max(...runs.map((r) => r.to)) + 1;
    const fallback = runs.length === 1 && !uplinkOfChain(runs[0].target, state.uplinks) ? runs[0].target : undefined;
    if (fallback === 'balance' || fallback === 'balance6') {
      reasons.push(`${why}: none of its uplinks is up, and its fallback is any: balanced`);
      return 'balance';
    }
    if (fallback) return chainVerdict(fallback, stage, `${why}: none of its uplinks is up`, extra)!;
    if (config.balance === 'hash') {
      const bucket = nftJhash(new Uint8Array(key), buckets, HASH_SEED);
      const run = runs.find((r) => bucket >= r.from && bucket <= r.to)!;
      return chainVerdict(run.target, stage, `${why}; hash of ${flow.src} . ${flow.dst} is bucket ${bucket} of ${buckets}`, { ...extra, bucket, buckets })!;
    }
    const shares = new Map<string, number>();
    for (const r of runs) {
      const uplink = uplinkOfChain(r.target, state.uplinks)!;
      shares.set(uplink, (shares.get(uplink) ?? 0) + (r.to - r.from + 1) / buckets);
    }
    const candidates = [...shares].map(([uplink, share]) => ({ uplink, share: Math.round(share * 1000) / 1000 }));
    const how = config.balance === 'least-loaded' ? 'dealt in turn by the shares the least-loaded steering installed' : 'drawn at random by share';
    if (candidates.length === 1) return answer('uplink', stage, `${why}: ${candidates[0].uplink}, the only one up`, { ...extra, uplink: candidates[0].uplink, candidates });
    return answer('uplink', stage, `${why}: ${how}, ${candidates.map((c) => `${c.uplink} ${percent(c.share)}`).join(', ')}`, { ...extra, candidates });
  };

  // Pinning rules, first match wins; forwarded connections skip the process stages.
  const rules = rulesOfFamily(config.rules, family);
  const stages = compilePinStages(rules, family).filter((s) => path === 'own' || !stageIsOwnOnly(s));
  const cgroupsNow = new Set((facts.cgroups ?? []).map((c) => c.path));
  // Without the process, its rules cannot match: say so rather than let them pass silently.
  const unjudged = path === 'own' ? processFieldsUnknown(stages, flow) : [];
  if (unjudged.length > 0) reasons.push(`rules by ${unjudged.join(' or ')} were not matched: give ${unjudged.map((f) => (f === 'cgroup' ? '--cgroup' : '--user')).filter((o, i, all) => all.indexOf(o) === i).join(' and ')} for them`);
  for (const stage of stages) {
    const rule = matchingRule(stage, flow, family, lanInterface, cgroupsNow);
    if (!rule) continue;
    const target = pinTargetOf(rules, family, rule);
    const extra = { rule: rule.name, stageMap: stage.fields.length > 0 ? stage.name : undefined };
    const why = `pinning rule "${rule.name}" matches (${stage.fields.length > 0 ? `map ${stage.name}` : 'every connection'})`;
    if (target === 'mark_main') return answer('main', 'pin', `${why}: via main, the main table decides`, extra);
    const pinned = draw(target, 'pin', `${why}; via ${(rule.via as string[]).join(', ')}`, extra);
    if (pinned !== 'balance') return pinned;
    break;
  }
  if (stages.length > 0 && !reasons.some((r) => r.startsWith('pinning rule'))) reasons.push('no pinning rule matches');

  // Sticky: a LAN source keeps the uplink of its last new connection.
  const suffix = family === 'ipv4' ? '' : '6';
  if (path === 'forwarded' && config.stickyMs !== undefined) {
    if (sticky === undefined) reasons.push('sticky: the live entries are known only to a running daemon');
    for (const u of state.uplinks) {
      const set = stickySetOf(state.nft, u.name, family);
      if (set && sticky?.[set]?.includes(flow.src)) {
        return answer('uplink', 'sticky', `sticky: ${flow.src} has an entry in ${set}, its last new connection went to ${u.name}`, { uplink: u.name });
      }
    }
    if (sticky !== undefined) reasons.push(`sticky: ${flow.src} has no entry; its next new connection is balanced, and it keeps that uplink`);
  }
  return draw(`balance${suffix}`, 'balance', `balanced (${config.balance})`, {}) as Explanation;
}

/** The planned sticky sets, both families, whose live entries a running daemon reads for explain. */
export function stickySets(state: DesiredState): string[] {
  return state.uplinks.flatMap((u) => (['ipv4', 'ipv6'] as const).map((family) => stickySetOf(state.nft, u.name, family)))
    .filter((set): set is string => set !== undefined);
}

/** The answer as the lines `uplinkd explain` prints. */
export function formatExplanation(flow: Flow, e: Explanation, source: string): string {
  const port = flow.dport !== undefined ? `/${flow.dport}` : '';
  const verdict = e.decision === 'uplink'
    ? (e.uplink ?? `one of ${e.candidates!.map((c) => `${c.uplink} (${percent(c.share)})`).join(', ')}`)
    : e.decision === 'main' ? 'main (the main table decides)' : e.decision === 'blocked' ? 'blocked (refused at once)' : 'local (this machine)';
  return [`${flow.src} -> ${flow.dst} ${flow.proto}${port}: ${verdict}`, ...e.reasons.map((r) => `  - ${r}`), `  (answered from ${source})`, ''].join('\n');
}
