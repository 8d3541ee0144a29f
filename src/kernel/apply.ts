// Installs a desired state and removes it. nftables changes in one atomic
// transaction that replaces only uplinkd's table; routes and rules in the
// owned tables and priorities converge: what is missing is added, what is
// stale is deleted, and what is already right is left alone, so a second
// apply changes nothing.

import type { KernelOwnership } from '../config/types.js';
import { FALLBACK_METRIC, HOST_SOURCE_LABEL, MAX_UPLINKS, RULE_RANGE } from '../ownership.js';
import { addressArgs, nftTransaction, routeArgs, ruleArgs, tableComment } from '../plan/render.js';
import type { DesiredState, IpRule, LocalAddress, Route } from '../plan/state.js';
import { applyMptcp, flushMptcp } from './mptcp.js';
import { mustRun, procSysctl, type Change, type Runner } from './runner.js';

// rtnetlink numbers as `ip -N` prints them.
const RTN_UNICAST = '1';
const RTN_UNREACHABLE = '7';
const RT_SCOPE_LINK = '253';
const FR_ACT_UNREACHABLE = '7';
const RT_TABLE_MAIN = 254;

export interface RouteJson {
  type?: string; dst: string; gateway?: string; dev?: string; prefsrc?: string; scope?: string; metric?: number; table?: string;
}
export interface RuleJson {
  priority: number; src?: string; srclen?: number; fwmark?: string; fwmask?: string; table?: string; action?: string;
  suppress_prefixlen?: number;
}

// Canonical forms: a desired item and the kernel's JSON of the same item
// print the same key, so "already there" is a string comparison.
// The table is part of the key: every uplink table holds the same
// `unreachable default`, and one must not stand in for another's.
function routeKey(r: { table: string; type: string; dst: string; via?: string; dev?: string; src?: string; scope?: string; metric?: number }): string {
  return [r.table, r.type, r.dst, r.via ?? '-', r.dev ?? '-', r.src ?? '-', r.scope === 'link' ? 'link' : '-', r.metric ?? 0].join(' ');
}

const desiredRouteKey = (r: Route) => routeKey({ ...r, table: String(r.table) });
const kernelRouteKey = (r: RouteJson) =>
  routeKey({ table: r.table ?? '-', type: r.type ?? 'unicast', dst: r.dst, via: r.gateway, dev: r.dev, src: r.prefsrc, scope: r.scope, metric: r.metric });

/** What the kernel tells routes apart by (table, destination, metric): `ip route replace` overwrites a route with the same. */
const routeIdentity = (table: string, dst: string, metric: number | undefined) => `${table} ${dst} ${metric ?? 0}`;

function ruleKey(r: { priority: number; from: string; mark: string; target: string; suppress?: number }): string {
  return [r.priority, r.from, r.mark, r.target, r.suppress ?? '-'].join(' ');
}

const desiredRuleKey = (r: IpRule) => ruleKey({
  priority: r.priority,
  from: r.from ? r.from.replace(/\/32$/, '') : 'all',
  mark: r.fwmark ? `${r.fwmark.value}/${r.fwmark.mask}` : '-',
  target: String(r.lookup === 'main' ? RT_TABLE_MAIN : r.lookup),
  suppress: r.suppressPrefixLength,
});

const kernelRuleKey = (r: RuleJson) => ruleKey({
  priority: r.priority,
  from: r.src === undefined || r.src === 'all' ? 'all' : r.srclen !== undefined && r.srclen !== 32 ? `${r.src}/${r.srclen}` : r.src,
  mark: r.fwmark ? `${Number(r.fwmark)}/${Number(r.fwmask ?? '0xffffffff')}` : '-',
  target: ruleAction(r) ?? r.table ?? '-',
  suppress: r.suppress_prefixlen,
});

/** A rule's non-lookup action by name (`ip -N` prints its number). */
function ruleAction(r: RuleJson): string | undefined {
  return r.action === FR_ACT_UNREACHABLE ? 'unreachable' : r.action;
}

/**
 * IPv4 routes of the given tables, in one dump of all tables (asking for a
 * table that does not exist yet is an error). `-N` prints numbers for tables,
 * types and scopes, so names in /etc/iproute2 cannot confuse the comparison.
 */
async function listRoutes(runner: Runner, tables: number[]): Promise<RouteJson[]> {
  return routesOf(await mustRun(runner, 'ip', ['-j', '-N', '-4', 'route', 'show', 'table', 'all']), tables);
}

/** The routes of `tables` in `ip -j -N -4 route show table all` output. */
function routesOf(json: string, tables: number[]): RouteJson[] {
  const wanted = new Set(tables.map(String));
  return (JSON.parse(json || '[]') as RouteJson[])
    .filter((r) => r.table !== undefined && wanted.has(r.table))
    .map((r) => ({ ...r, type: r.type === undefined || r.type === RTN_UNICAST ? 'unicast' : r.type === RTN_UNREACHABLE ? 'unreachable' : r.type,
      scope: r.scope === RT_SCOPE_LINK ? 'link' : r.scope }));
}

async function listOwnedRules(runner: Runner, from: number, to: number): Promise<RuleJson[]> {
  return rulesOf(await mustRun(runner, 'ip', ['-j', '-N', '-4', 'rule', 'show']), from, to);
}

/** The rules from priority `from` to `to` in `ip -j -N -4 rule show` output. */
function rulesOf(json: string, from: number, to: number): RuleJson[] {
  return (JSON.parse(json || '[]') as RuleJson[]).filter((r) => r.priority >= from && r.priority <= to);
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

/**
 * The routes, rules and addresses routingDiff compares, from one `ip -batch`
 * (one process instead of three: the periodic drift check runs it). `ip -j`
 * prints each command's answer as one JSON line.
 */
async function readRouting(runner: Runner, tables: number[], ruleRange: { from: number; to: number }): Promise<{
  routes: RouteJson[]; rules: RuleJson[]; addresses: { key: string; del: string[] }[];
}> {
  const out = await mustRun(runner, 'ip', ['-j', '-N', '-4', '-batch', '-'], 'route show table all\nrule show\naddress show\n');
  const answers = out.split('\n').filter((line) => line.trim() !== '');
  if (answers.length !== 3) throw new Error(`ip -batch: expected 3 answers, got ${answers.length}`);
  return { routes: routesOf(answers[0], tables), rules: rulesOf(answers[1], ruleRange.from, ruleRange.to), addresses: ownedAddressesOf(answers[2]) };
}

const addressKey = (dev: string, cidr: string, scope: string) => `${dev} ${cidr} ${scope}`;
const desiredAddressKey = (a: LocalAddress) => addressKey(a.dev, a.cidr, a.scope);

function deleteRouteArgs(r: RouteJson): string[] {
  const args = ['route', 'del'];
  if (r.type && r.type !== 'unicast') args.push(r.type);
  args.push(r.dst);
  if (r.gateway) args.push('via', r.gateway);
  if (r.dev) args.push('dev', r.dev);
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
 */
export async function routingDiff(state: DesiredState, runner: Runner): Promise<{
  missingRoutes: Route[]; staleRoutes: RouteJson[]; missingRules: IpRule[]; staleRules: RuleJson[];
  missingAddresses: LocalAddress[]; staleAddresses: string[][];
}> {
  const { routes: inRange, rules, addresses } = await readRouting(runner, tablesIn(state.tableRange), state.ruleRange);
  const owned = new Set([...state.ownedTables.map(String), ...signedTables(inRange).map(String)]);
  const present = inRange.filter((r) => owned.has(r.table!));
  const presentAddressKeys = new Set(addresses.map((a) => a.key));
  const wantedAddressKeys = new Set(state.addresses.map(desiredAddressKey));
  const presentRouteKeys = new Set(present.map(kernelRouteKey));
  const wantedRouteKeys = new Set(state.routes.map(desiredRouteKey));
  const replacedIdentities = new Set(state.routes.map((r) => routeIdentity(String(r.table), r.dst, r.metric)));
  const presentRuleKeys = new Set(rules.map(kernelRuleKey));
  const wantedRuleKeys = new Set(state.rules.map(desiredRuleKey));
  return {
    missingRoutes: state.routes.filter((r) => !presentRouteKeys.has(desiredRouteKey(r))),
    // A stale route with a planned route's identity was overwritten in place
    // by that route's `replace`; deleting it afterwards would delete the new one.
    staleRoutes: present.filter((r) => !wantedRouteKeys.has(kernelRouteKey(r)) && !replacedIdentities.has(routeIdentity(r.table!, r.dst, r.metric))),
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

export async function applyState(state: DesiredState, runner: Runner, nftMode: NftMode = 'adopt'): Promise<ApplyResult> {
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
  const diff = await routingDiff(state, runner);
  for (const address of diff.missingAddresses) await ip('address', addressArgs(address));
  for (const route of diff.missingRoutes) await ip('route', ['-4', ...routeArgs(route)]);

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

  for (const rule of diff.missingRules) await ip('rule', ['-4', ...ruleArgs(rule)]);
  for (const rule of diff.staleRules) {
    await ip('stale rule', ['-4', 'rule', 'del', 'priority', String(rule.priority), ...staleRuleSelector(rule)]);
  }
  for (const route of diff.staleRoutes) await ip('stale route', ['-4', ...deleteRouteArgs(route)]);
  for (const args of diff.staleAddresses) await ip('stale address', args);
  // Last: the subflows a new endpoint opens need the split-access rules.
  changes.push(...await applyMptcp(state.mptcp, runner));
  return { changes, nftKept };
}

/** Enough of a stale rule to delete that one and not a twin at the same priority. */
function staleRuleSelector(r: RuleJson): string[] {
  const args: string[] = [];
  if (r.src && r.src !== 'all') args.push('from', r.srclen !== undefined ? `${r.src}/${r.srclen}` : r.src);
  if (r.fwmark) args.push('fwmark', `${r.fwmark}/${r.fwmask ?? '0xffffffff'}`);
  const action = ruleAction(r);
  if (action) args.push(action);
  else if (r.table) args.push('lookup', r.table);
  return args;
}

/**
 * uplinkd's routing tables: those in its range that carry its signature, the
 * catch-all `unreachable default` at FALLBACK_METRIC. A foreign table that
 * happens to sit in the range is left alone.
 */
async function uplinkdTables(own: KernelOwnership, runner: Runner): Promise<number[]> {
  return signedTables(await listRoutes(runner, tablesIn({ from: own.tableBase + 1, to: own.tableBase + MAX_UPLINKS })));
}

/** The tables among these routes' that carry uplinkd's signature. */
function signedTables(routes: RouteJson[]): number[] {
  const tables = routes
    .filter((r) => r.type === 'unreachable' && r.dst === 'default' && r.metric === FALLBACK_METRIC)
    .map((r) => Number(r.table));
  return [...new Set(tables)].sort((a, b) => a - b);
}

const tablesIn = ({ from, to }: { from: number; to: number }) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Removes everything uplinkd owns under `own`: its nft table, every rule in
 * its priority range, every route in its tables, every address with its
 * label and every MPTCP endpoint with an owned id. Needs no config: the
 * defaults name the same things the config does unless it changed them.
 */
export async function flushOwned(own: KernelOwnership, runner: Runner): Promise<Change[]> {
  const changes: Change[] = [];
  if ((await runner.run('nft', ['list', 'table', 'inet', own.nftTable])).code === 0) {
    await mustRun(runner, 'nft', ['delete', 'table', 'inet', own.nftTable]);
    changes.push({ what: 'nft', args: ['nft', 'delete', 'table', 'inet', own.nftTable] });
  }
  for (const rule of await listOwnedRules(runner, own.rulePriority, own.rulePriority + RULE_RANGE - 1)) {
    const args = ['-4', 'rule', 'del', 'priority', String(rule.priority), ...staleRuleSelector(rule)];
    await mustRun(runner, 'ip', args);
    changes.push({ what: 'rule', args: ['ip', ...args] });
  }
  for (const table of await uplinkdTables(own, runner)) {
    const args = ['-4', 'route', 'flush', 'table', String(table)];
    await mustRun(runner, 'ip', args);
    changes.push({ what: 'routes', args: ['ip', ...args] });
  }
  for (const { del } of await listOwnedAddresses(runner)) {
    await mustRun(runner, 'ip', del);
    changes.push({ what: 'address', args: ['ip', ...del] });
  }
  changes.push(...await flushMptcp(runner));
  return changes;
}
