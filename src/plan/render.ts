// The desired state as text a person can read and paste into a root shell:
// `sysctl`, `ip route`, `ip rule` and one `nft -f` transaction. The kernel
// edge installs the very same arguments and nft text.

import { createHash } from 'node:crypto';
import { MPTCP_ENDPOINT_IDS, hex } from '../ownership.js';
import type { DesiredState, IpRule, LocalAddress, MptcpEndpoint, MptcpState, NftSet, NftTable, Route } from './state.js';

export function addressArgs(a: LocalAddress, verb: 'replace' | 'del' = 'replace'): string[] {
  return ['address', verb, a.cidr, 'dev', a.dev, 'label', a.label, 'scope', a.scope];
}

/** `ip`'s family option for a route or rule: `-6` for IPv6, nothing for IPv4 (ip's default), so IPv4 plans read as before. */
export function familyArgs(item: Route | IpRule): string[] {
  return item.family === 'ipv6' ? ['-6'] : [];
}

export function routeArgs(route: Route, verb: 'replace' | 'del' = 'replace'): string[] {
  const args = ['route', verb];
  if (route.type === 'unreachable') args.push('unreachable');
  args.push(route.dst);
  if (route.via) args.push('via', route.via);
  if (route.dev) args.push('dev', route.dev);
  if (route.src) args.push('src', route.src);
  if (route.scope) args.push('scope', route.scope);
  if (route.metric !== undefined) args.push('metric', String(route.metric));
  args.push('table', String(route.table));
  return args;
}

export function ruleArgs(rule: IpRule): string[] {
  const args = ['rule', 'add', 'priority', String(rule.priority)];
  if (rule.from) args.push('from', rule.from);
  if (rule.iif) args.push('iif', rule.iif);
  if (rule.fwmark) args.push('fwmark', `${hex(rule.fwmark.value)}/${hex(rule.fwmark.mask)}`);
  if (rule.ipproto) args.push('ipproto', rule.ipproto);
  args.push('lookup', String(rule.lookup));
  if (rule.suppressPrefixLength !== undefined) args.push('suppress_prefixlength', String(rule.suppressPrefixLength));
  return args;
}

export function mptcpEndpointArgs(e: MptcpEndpoint): string[] {
  return ['mptcp', 'endpoint', 'add', e.address, 'id', String(e.id), 'subflow', ...(e.backup ? ['backup'] : []), 'dev', e.dev];
}

export function mptcpLimitsArgs(limits: { subflows: number; addAddrAccepted: number }): string[] {
  return ['mptcp', 'limits', 'set', 'subflow', String(limits.subflows), 'add_addr_accepted', String(limits.addAddrAccepted)];
}

function renderSet(set: NftSet): string[] {
  const kind = set.declaration.includes(' : ') ? 'map' : 'set';
  const lines = [`\t# ${set.why}`, `\t${kind} ${set.name} {`, `\t\t${set.declaration}`];
  if (set.flags) lines.push(`\t\tflags ${set.flags.join(',')}`);
  if (set.timeout) lines.push(`\t\ttimeout ${set.timeout}`);
  if (set.elements.length > 0) {
    lines.push(`\t\telements = {`, ...set.elements.map((e, i) => `\t\t\t${e}${i < set.elements.length - 1 ? ',' : ''}`), `\t\t}`);
  }
  lines.push('\t}');
  return lines;
}

function renderTableBody(table: NftTable): string[] {
  const lines: string[] = [];
  for (const set of table.sets) lines.push(...renderSet(set), '');
  for (const chain of table.chains) {
    lines.push(`\t# ${chain.why}`, `\tchain ${chain.name} {`);
    if (chain.hook) lines.push(`\t\t${chain.hook}`);
    for (const rule of chain.rules) {
      if (rule.why) lines.push(`\t\t# ${rule.why}`);
      lines.push(`\t\t${rule.text}`);
    }
    lines.push('\t}', '');
  }
  lines.pop();
  return lines;
}

/** Digest of the table's content, kept in its comment so an unchanged table is not reloaded. */
export function tableDigest(table: NftTable): string {
  return createHash('sha256').update(renderTableBody(table).join('\n')).digest('hex').slice(0, 16);
}

export function tableComment(table: NftTable): string {
  return `uplinkd plan ${tableDigest(table)}`;
}

/**
 * One nft transaction that replaces only uplinkd's table: create it if
 * missing (so the delete cannot fail), delete it, and declare it anew. nft
 * applies the file atomically: packets see the old table or the new one.
 */
export function nftTransaction(table: NftTable): string {
  const id = `${table.family} ${table.name}`;
  return [
    `table ${id}`,
    `delete table ${id}`,
    `table ${id} {`,
    `\tcomment "${tableComment(table)}"`,
    '',
    ...renderTableBody(table),
    '}',
    '',
  ].join('\n');
}

function shellWord(arg: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

export function renderPlan(state: DesiredState, title: string): string {
  const out: string[] = [`# uplinkd plan: ${title}`, '#'];
  for (const u of state.uplinks) {
    const where = u.unusable ? `unusable: ${u.unusable}` : `${u.address}${u.gateway ? ` via ${u.gateway}` : ' (point-to-point)'}`;
    out.push(`#   ${u.name} on ${u.interface}: ${u.health}, tier ${u.tier}, weight ${u.weight}, share ${u.share.toFixed(3)}, table ${u.table}, mark ${hex(u.mark)}; ${where}`);
    const v6 = u.ipv6;
    if (v6) {
      const where6 = v6.unusable ? `unusable: ${v6.unusable}` : `${v6.address}${v6.gateway ? ` via ${v6.gateway}` : ' (point-to-point)'}`;
      out.push(`#   ${' '.repeat(u.name.length)} IPv6: ${v6.health}, share ${v6.share.toFixed(3)}; ${where6}`);
    }
  }
  out.push('', '# Kernel settings');
  for (const s of state.sysctls) out.push(`# ${s.why}`, `sysctl -w ${s.key}=${s.value}`);
  if (state.addresses.length > 0) out.push('', '# Addresses');
  for (const a of state.addresses) out.push(`# ${a.why}`, ['ip', ...addressArgs(a)].map(shellWord).join(' '));
  out.push('', `# Routing tables ${state.ownedTables.join(', ')}: one per uplink`);
  for (const r of state.routes) out.push(`# ${r.why}`, ['ip', ...familyArgs(r), ...routeArgs(r)].map(shellWord).join(' '));
  out.push('', `# Rules, priorities ${state.ruleRange.from}-${state.ruleRange.to}`);
  for (const r of state.rules) out.push(`# ${r.why}`, ['ip', ...familyArgs(r), ...ruleArgs(r)].map(shellWord).join(' '));
  out.push('', `# nftables: one transaction replacing table ${state.nft.family} ${state.nft.name} only`);
  out.push("nft -f - <<'EOF'", nftTransaction(state.nft).trimEnd(), 'EOF', '');
  if (state.mptcp?.enabled) out.push(...renderMptcp(state.mptcp), '');
  return out.join('\n');
}

/** Last, as installed: the subflows an endpoint opens need the split-access rules above. */
function renderMptcp(mptcp: MptcpState): string[] {
  const { first, last } = MPTCP_ENDPOINT_IDS;
  const out = [`# MPTCP endpoints, ids ${first}-${last} (uplinkd's; endpoints with other ids are left alone)`];
  if (mptcp.limits) out.push(`# ${mptcp.limits.why}`, ['ip', ...mptcpLimitsArgs(mptcp.limits)].map(shellWord).join(' '));
  for (const e of mptcp.endpoints) out.push(`# ${e.why}`, ['ip', ...mptcpEndpointArgs(e)].map(shellWord).join(' '));
  for (const a of mptcp.absent) out.push(`# ${a.uplink}: no endpoint: ${a.why}`);
  return out;
}
