// Routes and rules that decide before uplinkd's do. uplinkd's first rule
// (rule_priority+0) looks up the main table with `suppress_prefixlength 0`,
// which hides only default routes (README "What uplinkd installs"): any
// other main-table route wins over every uplink. That is what LAN and VPN
// routes need; a route covering a large part of the internet (a VPN client's
// 0.0.0.0/1 + 128.0.0.0/1) takes every connection away from balancing,
// pinning and failover. So does a rule before rule_priority that looks up a
// table with a default route. A plain router (one main-table default route
// per uplink, as the lab builds it) has neither.

import type { Config } from '../config/types.js';
import { RULE_RANGE } from '../ownership.js';
import { tryRun, type Finding, type MachineView } from './view.js';

export interface RouteJson {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
  metric?: number;
  nexthops?: { gateway?: string; dev?: string }[];
}

export interface RuleJson {
  priority: number;
  not?: null;
  src?: string;
  srclen?: number;
  dst?: string;
  dstlen?: number;
  fwmark?: string;
  fwmask?: string;
  iif?: string;
  oif?: string;
  table?: string;
  action?: string;
  goto?: number;
  suppress_prefixlen?: number;
}

/** Routes shorter than this (and longer than a default) cover a large part of the internet; a /8 is still an ordinary site or VPN route. */
const WIDE_PREFIX = 8;
/** Tables an ordinary rule set always looks up: local, main, default. */
const STANDARD_TABLES = new Set(['local', 'main', 'default', '255', '254', '253']);

function prefixLength(dst: string): number {
  if (dst === 'default') return 0;
  const slash = dst.indexOf('/');
  return slash < 0 ? 32 : Number(dst.slice(slash + 1));
}

/** `throw` sends the lookup on to the next rule: it decides nothing. */
const decides = (r: RouteJson) => r.type !== 'throw';

export function describeRoute(r: RouteJson): string {
  const hop = (h: { gateway?: string; dev?: string }) => `${h.gateway ? ` via ${h.gateway}` : ''}${h.dev ? ` dev ${h.dev}` : ''}`;
  const via = r.nexthops?.length ? r.nexthops.map((h) => ` nexthop${hop(h)}`).join('') : hop(r);
  return `${r.type && r.type !== 'unicast' ? `${r.type} ` : ''}${r.dst}${via}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
}

function describeRule(r: RuleJson): string {
  const parts = [`priority ${r.priority}`];
  if (r.not !== undefined) parts.push('not');
  parts.push(`from ${r.src ?? 'all'}${r.srclen !== undefined ? `/${r.srclen}` : ''}`);
  if (r.dst) parts.push(`to ${r.dst}${r.dstlen !== undefined ? `/${r.dstlen}` : ''}`);
  if (r.fwmark) parts.push(`fwmark ${r.fwmark}${r.fwmask ? `/${r.fwmask}` : ''}`);
  if (r.iif) parts.push(`iif ${r.iif}`);
  if (r.oif) parts.push(`oif ${r.oif}`);
  parts.push(`lookup ${r.table}`);
  return parts.join(' ');
}

async function readJson<T>(view: MachineView, args: string[]): Promise<T[] | undefined> {
  const r = await tryRun(view.runner, 'ip', args);
  if (r?.code !== 0) return undefined;
  try {
    return JSON.parse(r.stdout) as T[];
  } catch {
    return undefined;
  }
}

export const readMainRoutes = (view: MachineView) => readJson<RouteJson>(view, ['-j', '-4', 'route', 'show', 'table', 'main']);
export const readRules = (view: MachineView) => readJson<RuleJson>(view, ['-j', '-4', 'rule', 'show']);

export function checkWideRoutes(routes: RouteJson[], rulePriority: number): Finding[] {
  const wide = routes.filter((r) => decides(r) && prefixLength(r.dst) > 0 && prefixLength(r.dst) < WIDE_PREFIX);
  if (wide.length === 0) return [];
  return [{
    id: 'shadowing-route',
    message: `the main table has ${wide.map(describeRoute).join(', ')}: uplinkd's first rule (priority ${rulePriority}) hides only default routes, ` +
      `so these catch the connections they cover before balancing, pinning or failover`,
    fix: `delete them (${wide.map((r) => `ip route del ${r.dst}${r.type && r.type !== 'unicast' ? '' : r.dev ? ` dev ${r.dev}` : ''}`).join('; ')}); ` +
      `a VPN client installs these for "redirect-gateway def1": turn that off (OpenVPN: pull-filter ignore redirect-gateway) and route only the networks behind the VPN through it`,
  }];
}

/**
 * A main-table default route on an interface uplinkd does not know (neither
 * an uplink nor the LAN): traffic uplinkd hands to the main table (`via:
 * main` pins, unmarked traffic) leaves through it.
 */
export function checkForeignDefaults(routes: RouteJson[], config: Config): Finding[] {
  const known = new Set([...config.uplinks.map((u) => u.interface), ...config.lan]);
  return routes.filter((r) => r.dst === 'default' && (r.type ?? 'unicast') === 'unicast').flatMap((r) => {
    const devs = (r.nexthops?.length ? r.nexthops.map((h) => h.dev) : [r.dev]).filter((d): d is string => !!d);
    const foreign = devs.filter((d) => !known.has(d));
    if (foreign.length === 0) return [];
    return [{
      id: 'foreign-default',
      message: `the main table has a default route on ${foreign.join(', ')}, which is neither an uplink nor the LAN in ${config.source} (${describeRoute(r)}): ` +
        `traffic uplinkd leaves to the main table (via: main pins, the router's unmarked traffic) goes out there instead of an uplink`,
      fix: `ip route del ${describeRoute(r)}, or add ${foreign.join(', ')} to the config as an uplink`,
    }];
  });
}

/** Whether rules in uplinkd's own priority range are there: its state is installed. */
export function ownRulesPresent(rules: RuleJson[], rulePriority: number): boolean {
  return rules.some((r) => r.priority >= rulePriority && r.priority < rulePriority + RULE_RANGE);
}

/**
 * Rules before uplinkd's range that look up a table other than local, main
 * and default, where that table holds a default route: every packet the rule
 * matches is routed there. `suppress_prefixlength` (N >= 0) hides the
 * default route; goto, nop and the blackhole actions look nothing up.
 */
export async function checkForeignRules(view: MachineView, rules: RuleJson[], rulePriority: number): Promise<Finding[]> {
  const candidates = rules.filter((r) => r.priority < rulePriority && r.table !== undefined && !STANDARD_TABLES.has(r.table) &&
    r.action === undefined && r.goto === undefined && r.suppress_prefixlen === undefined);
  const findings: Finding[] = [];
  for (const rule of candidates) {
    const defaults = (await readJson<RouteJson>(view, ['-j', '-4', 'route', 'show', 'table', rule.table!, 'default']))?.filter(decides) ?? [];
    if (defaults.length === 0) continue;
    findings.push({
      id: 'shadowing-rule',
      message: `ip rule ${describeRule(rule)} comes before uplinkd's rules (from priority ${rulePriority}) and table ${rule.table} has a default route (${describeRoute(defaults[0])}): ` +
        `every packet it matches skips balancing, pinning and failover`,
      fix: `ip rule del priority ${rule.priority}, then add it again with a priority above ${rulePriority + RULE_RANGE - 1} or narrower selectors; ` +
        `or add suppress_prefixlength 0 to it if only its table's non-default routes matter`,
    });
  }
  return findings;
}
