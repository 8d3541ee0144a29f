// Installs a desired state and removes it. nftables changes in one atomic
// transaction that replaces only uplinkd's table; routes and rules in the
// owned tables and priorities converge: what is missing is added, what is
// stale is deleted, and what is already right is left alone, so a second
// apply changes nothing. Both families alike: IPv6 routes and rules are
// read, compared and removed with `ip -6` as IPv4 ones with `ip -4`, in the
// same table numbers and priority range (the kernel keeps each family's
// tables and rule list apart).

import type { KernelOwnership } from '../config/types.js';
import { FALLBACK_METRIC, HOST_SOURCE_LABEL, MAX_UPLINKS, RULE_RANGE } from '../ownership.js';
import { addressArgs, nftTransaction, routeArgs, ruleArgs, tableComment } from '../plan/render.js';
import type { DesiredState, Family, IpRule, LocalAddress, Route } from '../plan/state.js';
import { hasIpv6 } from './facts.js';
import { applyMptcp, flushMptcp } from './mptcp.js';
import { mustRun, procSysctl, type Change, type Runner } from './runner.js';

// rtnetlink numbers as `ip -N` prints them.
const RTN_UNICAST = '1';
const RTN_UNREACHABLE = '7';
const RT_SCOPE_LINK = '253';
const FR_ACT_UNREACHABLE = '7';
const RT_TABLE_MAIN = 254;
/** The metric the kernel gives an IPv6 route added without one (IP6_RT_PRIO_USER); IPv4's is 0. */
const IPV6_DEFAULT_METRIC = 1024;

/** As `ip -j` prints a route; `family` is added when read (kernel JSON does not say it). */
export interface RouteJson {
  type?: string; dst: string; gateway?: string; dev?: string; prefsrc?: string; scope?: string; metric?: number; table?: string;
  family?: Family;
}
/** As `ip -j` prints a rule; `family` is added when read. */
export interface RuleJson {
  priority: number; src?: string; srclen?: number; iif?: string; fwmark?: string; fwmask?: string; ipproto?: string; table?: string; action?: string;
  suppress_prefixlen?: number; family?: Family;
}

const familyOf = (item: { family?: string }): Family => (item.family === 'ipv6' ? 'ipv6' : 'ipv4');
/** `ip`'s option for a family: every command of the kernel edge names one. */
const ipFamily = (family: Family) => (family === 'ipv6' ? '-6' : '-4');
/** The metric a route gets when none is given. */
const metricOf = (family: Family, metric: number | undefined) => metric ?? (family === 'ipv6' ? IPV6_DEFAULT_METRIC : 0);
/** A source prefix as the kernel prints a rule's: a single address (/32, /128) without its length. */
const hostLength = (family: Family) => (family === 'ipv6' ? 128 : 32);

/** Whether a plan has anything of IPv6 to install: otherwise the kernel edge runs no `ip -6` but to find leftovers. */
export function plansIpv6(state: DesiredState): boolean {
  return state.routes.some((r) => r.family === 'ipv6') || state.rules.some((r) => r.family === 'ipv6');
}

// Canonical forms: a desired item and the kernel's JSON of the same item
// print the same key, so "already there" is a string comparison.
// The table is part of the key: every uplink table holds the same
// `unreachable default`, and one must not stand in for another's.
// The family is part of both keys: the same table number and priority hold
// an IPv4 and an IPv6 item that must not stand in for each other.
function routeKey(r: { family: Family; table: string; type: string; dst: string; via?: string; dev?: string; src?: string; scope?: string; metric?: number }): string {
  return [r.family, r.table, r.type, r.dst, r.via ?? '-', r.dev ?? '-', r.src ?? '-', r.scope === 'link' ? 'link' : '-', metricOf(r.family, r.metric)].join(' ');
}

const desiredRouteKey = (r: Route) => routeKey({ ...r, family: familyOf(r), table: String(r.table) });
const kernelRouteKey = (r: RouteJson) => routeKey({
  family: familyOf(r), table: r.table ?? '-', type: r.type ?? 'unicast', dst: r.dst, via: r.gateway,
  // The kernel puts an IPv6 `unreachable` on lo (and prints `dev lo`) though it was added without a device.
  dev: familyOf(r) === 'ipv6' && r.type === 'unreachable' && r.dev === 'lo' ? undefined : r.dev,
  src: r.prefsrc, scope: r.scope, metric: r.metric,
});

/** What the kernel tells routes apart by (table, destination, metric): `ip route replace` overwrites a route with the same. */
const routeIdentity = (family: Family, table: string, dst: string, metric: number | undefined) => `${family} ${table} ${dst} ${metricOf(family, metric)}`;

function ruleKey(r: { family: Family; priority: number; from: string; iif?: string; mark: string; ipproto?: string; target: string; suppress?: number }): string {
  // iif and ipproto only where set, so IPv4 keys read as they always have.
  return [r.family, r.priority, r.from, ...(r.iif ? [`iif ${r.iif}`] : []), r.mark, ...(r.ipproto ? [`ipproto ${r.ipproto}`] : []),
    r.target, r.suppress ?? '-'].join(' ');
}

/** Protocol numbers of the names the planner uses: `ip -N` prints a rule's protocol as `ipproto-58`. */
const IPPROTO_NUMBERS: Record<string, number> = { 'ipv6-icmp': 58 };
const ipprotoNumber = (p: string | undefined) =>
  p === undefined ? undefined : String(IPPROTO_NUMBERS[p] ?? /^ipproto-(\d+)$/.exec(p)?.[1] ?? p);

const desiredRuleKey = (r: IpRule) => ruleKey({
  family: familyOf(r),
  priority: r.priority,
  from: r.from ? r.from.replace(new RegExp(`/${hostLength(familyOf(r))}$`), '') : 'all',
  iif: r.iif,
  mark: r.fwmark ? `${r.fwmark.value}/${r.fwmark.mask}` : '-',
  ipproto: ipprotoNumber(r.ipproto),
  target: String(r.lookup === 'main' ? RT_TABLE_MAIN : r.lookup),
  suppress: r.suppressPrefixLength,
});

const kernelRuleKey = (r: RuleJson) => ruleKey({
  family: familyOf(r),
  priority: r.priority,
  // `from all` for no source (IPv6 ::/0 too); a single address without its length (`from ::` is ::/128).
  from: r.src === undefined || r.src === 'all' ? 'all'
    : r.srclen !== undefined && r.srclen !== hostLength(familyOf(r)) ? `${r.src}/${r.srclen}` : r.src,
  iif: r.iif,
  mark: r.fwmark ? `${Number(r.fwmark)}/${Number(r.fwmask ?? '0xffffffff')}` : '-',
  ipproto: ipprotoNumber(r.ipproto),
  target: ruleAction(r) ?? r.table ?? '-',
  suppress: r.suppress_prefixlen,
});

/** A rule's non-lookup action by name (`ip -N` prints its number). */
function ruleAction(r: RuleJson): string | undefined {
  return r.action === FR_ACT_UNREACHABLE ? 'unreachable' : r.action;
}

/**
 * Routes of the given tables of one family, in one dump of all tables
 * (asking for a table that does not exist yet is an error). `-N` prints
 * numbers for tables, types and scopes, so names in /etc/iproute2 cannot
 * confuse the comparison.
 */
async function listRoutes(runner: Runner, family: Family, tables: number[]): Promise<RouteJson[]> {
  return routesOf(await mustRun(runner, 'ip', ['-j', '-N', ipFamily(family), 'route', 'show', 'table', 'all']), family, tables);
}

/**
 * The routes of `tables` in `ip -j -N -4|-6 route show table all` output.
 * Only what was added to those tables is there: the kernel keeps an
 * interface's fe80::/64, multicast and local routes in main and local.
 */
function routesOf(json: string, family: Family, tables: number[]): RouteJson[] {
  const wanted = new Set(tables.map(String));
  return (JSON.parse(json || '[]') as RouteJson[])
    .filter((r) => r.table !== undefined && wanted.has(r.table))
    .map((r) => ({ ...r, type: r.type === undefined || r.type === RTN_UNICAST ? 'unicast' : r.type === RTN_UNREACHABLE ? 'unreachable' : r.type,
      scope: r.scope === RT_SCOPE_LINK ? 'link' : r.scope, ...(family === 'ipv6' ? { family } : {}) }));
}

async function listOwnedRules(runner: Runner, family: Family, from: number, to: number): Promise<RuleJson[]> {
  return rulesOf(await mustRun(runner, 'ip', ['-j', '-N', ipFamily(family), 'rule', 'show']), family, from, to);
}

/** The rules from priority `from` to `to` in `ip -j -N -4|-6 rule show` output. */
function rulesOf(json: string, family: Family, from: number, to: number): RuleJson[] {
  return (JSON.parse(json || '[]') as RuleJson[]).filter((r) => r.priority >= from && r.priority <= to)
    .map((r) => (family === 'ipv6' ? { ...r, family } : r));
}

/** The comment of uplinkd's nft table, or undefined when there is no such table. */
async function currentTableComment(runner: Runner, family: string, name: string): Promise<string | undefined> {
  const result = await runner.run('nft', ['list', 'table', family, name]);
  if (result.code !== 0) return undefined;
  return /^\s*comment "([^"]*)"/m.exec(result.stdout)?.[1] ?? '';
}

interface AddressJson { ifname: string; addr_info?: { family: string; local: string; prefixlen: number; label?: string; scope?: string }[] }

/** The addresses carrying uplinkd's label, wherever they are, as `ip address del` arguments. */
async function listOwnedAddresses(runner: Runner): Promise<{ key: string; del: string[] }[]> {
  return ownedAddressesOf(await mustRun(runner, 'ip', ['-j', '-4', 'address', 'show']));
}

/** rtnetlink scopes as `ip -N` prints them, by the names `ip` prints without it. */
const SCOPE_NAMES: Record<string, string> = { 0: 'global', 200: 'site', 253: 'link', 254: 'host', 255: 'nowhere' };

/** The addresses carrying uplinkd's label in `ip -j -4 address show` output, with or without `-N`. */
function ownedAddressesOf(json: string): { key: string; del: string[] }[] {
  return (JSON.parse(json || '[]') as AddressJson[]).flatMap((link) => (link.addr_info ?? [])
    .filter((a) => a.family === 'inet' && a.label === HOST_SOURCE_LABEL)
    .map((a) => ({
      key: addressKey(link.ifname, `${a.local}/${a.prefixlen}`, a.scope === undefined ? '-' : SCOPE_NAMES[a.scope] ?? a.scope),
      del: ['address', 'del', `${a.local}/${a.prefixlen}`, 'dev', link.ifname],
    })));
}

/** One `ip -j -N -4|-6 -batch -` of `commands`: each command's answer is one JSON line. */
async function batch(runner: Runner, family: Family, commands: string[]): Promise<string[]> {
  const out = await mustRun(runner, 'ip', ['-j', '-N', ipFamily(family), '-batch', '-'], commands.map((c) => `${c}\n`).join(''));
  const answers = out.split('\n').filter((line) => line.trim() !== '');
  if (answers.length !== commands.length) throw new Error(`ip -batch: expected ${commands.length} answers, got ${answers.length}`);
  return answers;
}

/**
 * The routes, rules and addresses routingDiff compares, from one `ip -batch`
 * per family (one process instead of three: the periodic drift check runs
 * it). `ipv6`: read the IPv6 side too (a second batch); it is skipped on a
 * kernel without IPv6, where `ip -6` fails.
 */
async function readRouting(runner: Runner, tables: number[], ruleRange: { from: number; to: number }, ipv6: boolean): Promise<{
  routes: RouteJson[]; rules: RuleJson[]; addresses: { key: string; del: string[] }[];
}> {
  const [v4, v6] = await Promise.all([
    batch(runner, 'ipv4', ['route show table all', 'rule show', 'address show']),
    ipv6 && hasIpv6(runner) ? batch(runner, 'ipv6', ['route show table all', 'rule show']) : undefined,
  ]);
  return {
    routes: [...routesOf(v4[0], 'ipv4', tables), ...(v6 ? routesOf(v6[0], 'ipv6', tables) : [])],
    rules: [...rulesOf(v4[1], 'ipv4', ruleRange.from, ruleRange.to), ...(v6 ? rulesOf(v6[1], 'ipv6', ruleRange.from, ruleRange.to) : [])],
    addresses: ownedAddressesOf(v4[2]),
  };
}

const addressKey = (dev: string, cidr: string, scope: string) => `${dev} ${cidr} ${scope}`;
const desiredAddressKey = (a: LocalAddress) => addressKey(a.dev, a.cidr, a.scope);

function deleteRouteArgs(r: RouteJson): string[] {
  const args = [ipFamily(familyOf(r)), 'route', 'del'];
  if (r.type && r.type !== 'unicast') args.push(r.type);
  args.push(r.dst);
  if (r.gateway) args.push('via', r.gateway);
  // A link-local next hop needs its device; `dev lo` of an IPv6 unreachable is the kernel's.
  if (r.dev && !(familyOf(r) === 'ipv6' && r.type === 'unreachable')) args.push('dev', r.dev);
  // With its source, the kernel deletes only this route, never a twin that differs only there.
  if (r.prefsrc) args.push('src', r.prefsrc);
  if (r.metric !== undefined) args.push('metric', String(r.metric));
  args.push('table', r.table!);
  return args;
}

/**
 * What to do with the nft table:
 * - `adopt`: replace it unless it already carries this plan's digest (a
 *   restarted daemon, or a second `apply`, keeps the table and its counters);
 * - `replace`: replace it whatever it holds (it was found changed);
 * - `{ elements }`: run these element updates instead (see update.ts).
 */
export type NftMode = 'adopt' | 'replace' | { elements: string };

export interface ApplyResult {
  changes: Change[];
  /** Whether the nft table was kept as it was (adopted, or only its elements rewritten). */
  nftKept: boolean;
}

/**
 * The routes and rules that differ from the plan: what is missing and what is
 * stale in the owned tables and priority range. Empty lists mean in step.
 * `ipv6`: whether to read the IPv6 side; by default when the plan has any
 * (a check of an IPv4-only plan runs no `ip -6`), but an apply that may
 * follow an IPv6 plan (adoption, a plan that lost its IPv6) must, to remove
 * what that one left.
 */
export async function routingDiff(state: DesiredState, runner: Runner, ipv6 = plansIpv6(state)): Promise<{
  missingRoutes: Route[]; staleRoutes: RouteJson[]; missingRules: IpRule[]; staleRules: RuleJson[];
  missingAddresses: LocalAddress[]; staleAddresses: string[][];
}> {
  const { routes: inRange, rules, addresses } = await readRouting(runner, tablesIn(state.tableRange), state.ruleRange, ipv6 || plansIpv6(state));
  // A table is uplinkd's in a family when the plan owns it or it carries the signature in that family.
  const owned = new Set([
    ...state.ownedTables.flatMap((t) => [`ipv4 ${t}`, `ipv6 ${t}`]),
    ...(['ipv4', 'ipv6'] as const).flatMap((f) => signedTables(inRange.filter((r) => familyOf(r) === f)).map((t) => `${f} ${t}`)),
  ]);
  const present = inRange.filter((r) => owned.has(`${familyOf(r)} ${r.table}`));
  const presentAddressKeys = new Set(addresses.map((a) => a.key));
  const wantedAddressKeys = new Set(state.addresses.map(desiredAddressKey));
  const presentRouteKeys = new Set(present.map(kernelRouteKey));
  const wantedRouteKeys = new Set(state.routes.map(desiredRouteKey));
  const replacedIdentities = new Set(state.routes.map((r) => routeIdentity(familyOf(r), String(r.table), r.dst, r.metric)));
  const presentRuleKeys = new Set(rules.map(kernelRuleKey));
  const wantedRuleKeys = new Set(state.rules.map(desiredRuleKey));
  return {
    missingRoutes: state.routes.filter((r) => !presentRouteKeys.has(desiredRouteKey(r))),
    // A stale route with a planned route's identity was overwritten in place
    // by that route's `replace`; deleting it afterwards would delete the new one.
    staleRoutes: present.filter((r) => !wantedRouteKeys.has(kernelRouteKey(r)) && !replacedIdentities.has(routeIdentity(familyOf(r), r.table!, r.dst, r.metric))),
    missingRules: state.rules.filter((r) => !presentRuleKeys.has(desiredRuleKey(r))),
    staleRules: rules.filter((r) => !wantedRuleKeys.has(kernelRuleKey(r))),
    missingAddresses: state.addresses.filter((a) => !presentAddressKeys.has(desiredAddressKey(a))),
    staleAddresses: addresses.filter((a) => !wantedAddressKeys.has(a.key)).map((a) => a.del),
  };
}

/** The planned sysctls whose current value differs. */
export function sysctlDiff(state: DesiredState, runner: Runner): DesiredState['sysctls'] {
  const sysctl = runner.sysctl ?? procSysctl;
  return state.sysctls.filter((s) => sysctl.read(s.path) !== s.value);
}

/**
 * `ipv6`: read the IPv6 side even when this plan has none, to remove an
 * earlier plan's (see routingDiff). By default yes: an `uplinkd apply` knows
 * nothing of what was installed before it.
 */
export async function applyState(state: DesiredState, runner: Runner, nftMode: NftMode = 'adopt', ipv6 = true): Promise<ApplyResult> {
  const changes: Change[] = [];
  const ip = async (what: string, args: string[]) => {
    await mustRun(runner, 'ip', args);
    changes.push({ what, args: ['ip', ...args] });
  };

  for (const s of sysctlDiff(state, runner)) {
    (runner.sysctl ?? procSysctl).write(s.path, s.value);
    changes.push({ what: 'sysctl', args: ['sysctl', '-w', `${s.key}=${s.value}`] });
  }

  // Addresses before the routes that name them as source; routes before the
  // rules and marks that lead to them; stale ones last, so nothing is
  // without a route in between.
  const diff = await routingDiff(state, runner, ipv6);
  for (const address of diff.missingAddresses) await ip('address', addressArgs(address));
  for (const route of diff.missingRoutes) await ip('route', [ipFamily(familyOf(route)), ...routeArgs(route)]);

  let nftKept = true;
  if (typeof nftMode === 'object') {
    if (nftMode.elements) {
      await mustRun(runner, 'nft', ['-f', '-'], nftMode.elements);
      changes.push({ what: 'nft elements', args: ['nft', '-f', '-'] });
    }
  } else if (nftMode === 'replace' || (await currentTableComment(runner, state.nft.family, state.nft.name)) !== tableComment(state.nft)) {
    await mustRun(runner, 'nft', ['-f', '-'], nftTransaction(state.nft));
    changes.push({ what: 'nft', args: ['nft', '-f', '-'] });
    nftKept = false;
  }

  for (const rule of diff.missingRules) await ip('rule', [ipFamily(familyOf(rule)), ...ruleArgs(rule)]);
  for (const rule of diff.staleRules) await ip('stale rule', deleteRuleArgs(rule));
  for (const route of diff.staleRoutes) await ip('stale route', deleteRouteArgs(route));
  for (const args of diff.staleAddresses) await ip('stale address', args);
  // Last: the subflows a new endpoint opens need the split-access rules.
  changes.push(...await applyMptcp(state.mptcp, runner));
  return { changes, nftKept };
}

/** `ip -4|-6 rule del` of a rule as read: enough of it to delete that one and not a twin at the same priority. */
function deleteRuleArgs(r: RuleJson): string[] {
  const args = [ipFamily(familyOf(r)), 'rule', 'del', 'priority', String(r.priority)];
  if (r.src && r.src !== 'all') args.push('from', r.srclen !== undefined ? `${r.src}/${r.srclen}` : r.src);
  if (r.iif) args.push('iif', r.iif);
  if (r.fwmark) args.push('fwmark', `${r.fwmark}/${r.fwmask ?? '0xffffffff'}`);
  if (r.ipproto) args.push('ipproto', ipprotoNumber(r.ipproto)!);
  const action = ruleAction(r);
  if (action) args.push(action);
  else if (r.table) args.push('lookup', r.table);
  return args;
}

/**
 * uplinkd's routing tables of one family: those in its range that carry its
 * signature in that family, the catch-all `unreachable default` at
 * FALLBACK_METRIC. A foreign table that happens to sit in the range is left
 * alone, and so is the other family's side of an uplinkd table number.
 */
async function uplinkdTables(own: KernelOwnership, runner: Runner, family: Family): Promise<number[]> {
  return signedTables(await listRoutes(runner, family, tablesIn({ from: own.tableBase + 1, to: own.tableBase + MAX_UPLINKS })));
}

/** The tables among these routes' (of one family) that carry uplinkd's signature. */
function signedTables(routes: RouteJson[]): number[] {
  const tables = routes
    .filter((r) => r.type === 'unreachable' && r.dst === 'default' && r.metric === FALLBACK_METRIC)
    .map((r) => Number(r.table));
  return [...new Set(tables)].sort((a, b) => a - b);
}

const tablesIn = ({ from, to }: { from: number; to: number }) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Removes everything uplinkd owns under `own`: its nft table, every rule in
 * its priority range and every route in its tables, of both families (IPv6
 * unless the kernel has none), every address with its label and every MPTCP
 * endpoint with an owned id. Needs no config: the defaults name the same
 * things the config does unless it changed them.
 */
export async function flushOwned(own: KernelOwnership, runner: Runner): Promise<Change[]> {
  const changes: Change[] = [];
  if ((await runner.run('nft', ['list', 'table', 'inet', own.nftTable])).code === 0) {
    await mustRun(runner, 'nft', ['delete', 'table', 'inet', own.nftTable]);
    changes.push({ what: 'nft', args: ['nft', 'delete', 'table', 'inet', own.nftTable] });
  }
  const families: Family[] = hasIpv6(runner) ? ['ipv4', 'ipv6'] : ['ipv4'];
  for (const family of families) {
    for (const rule of await listOwnedRules(runner, family, own.rulePriority, own.rulePriority + RULE_RANGE - 1)) {
      const args = deleteRuleArgs(rule);
      await mustRun(runner, 'ip', args);
      changes.push({ what: 'rule', args: ['ip', ...args] });
    }
  }
  for (const family of families) {
    for (const table of await uplinkdTables(own, runner, family)) {
      const args = [ipFamily(family), 'route', 'flush', 'table', String(table)];
      await mustRun(runner, 'ip', args);
      changes.push({ what: 'routes', args: ['ip', ...args] });
    }
  }
  for (const { del } of await listOwnedAddresses(runner)) {
    await mustRun(runner, 'ip', del);
    changes.push({ what: 'address', args: ['ip', ...del] });
  }
  changes.push(...await flushMptcp(runner));
  return changes;
}
