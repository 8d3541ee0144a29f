// A pretend kernel for the kernel edge (src/kernel/) without root: it
// implements the Runner, keeps routes, rules, addresses, nft tables, MPTCP
// endpoints and limits, and sysctls, answers the `ip -j … show` and `nft list`
// calls uplinkd makes from that state, and prints itself as sorted `ip`/`nft`
// lines so a test can compare whole kernel states.
//
// Each family has its own routes and rules, as in the kernel: the same table
// number or priority in IPv4 and IPv6 are two different things. IPv6 is
// answered as Linux 6.18 and iproute2 6.1 print it: a route added without a
// metric gets 1024, an `unreachable` is listed on `dev lo`, a rule's /128
// source without its length, and flushing a table with no IPv6 route fails.
// A kernel booted without IPv6 can be pretended (ipv6Missing).
//
// MPTCP is held as the kernel's path manager holds it and answered as
// iproute2 6.1 (Debian 12) prints it: at most 8 endpoints, ids and addresses
// unique, limits at most 8, `limits show` as text even with -j; and a kernel
// built without MPTCP can be pretended (mptcpMissing).
//
// It understands exactly the commands uplinkd runs (the argument shapes of
// src/plan/render.ts and src/kernel/*.ts) and fails loudly on anything else,
// so a new command shows up as a failing test, not as a silent no-op.

import type { CommandResult, Runner, SysctlAccess } from '../../src/kernel/runner.js';

// rtnetlink numbers, as `ip -N` prints them.
const RTN_UNREACHABLE = '7';
const RT_SCOPE_LINK = '253';
const RT_TABLE_MAIN = '254';
const RT_SCOPES: Record<string, number> = { global: 0, site: 200, link: 253, host: 254 };
/** IP6_RT_PRIO_USER: the metric of an IPv6 route added without one. */
const IPV6_DEFAULT_METRIC = 1024;

type Family = 'ipv4' | 'ipv6';

interface FakeRoute { table: string; type: 'unicast' | 'unreachable'; dst: string; via?: string; dev?: string; src?: string; scope?: 'link'; metric?: number }
interface FakeRule { priority: number; from?: string; iif?: string; fwmark?: string; ipproto?: number; table: string; suppress?: number }

/** Protocol numbers by the names uplinkd gives `ip rule … ipproto` (it may give the number too). */
const IPPROTOS: Record<string, number> = { 'ipv6-icmp': 58 };
const ipproto = (p: string) => IPPROTOS[p] ?? Number(p);
interface FakeAddress { dev: string; cidr: string; label: string; scope: string }
interface FakeSet { kind: 'set' | 'map'; name: string; head: string[]; elements: string[] }
interface FakeTable { comment: string; sets: FakeSet[]; chains: string[] }
/** `dev` is left out for an endpoint added without one (a signal endpoint, say). */
interface FakeEndpoint { id: number; address: string; dev?: string; flags: string[] }

/** The path manager's bounds (MPTCP_PM_ADDR_MAX in net/mptcp/pm_netlink.c): endpoints per namespace, and either limit. */
const MPTCP_MAX = 8;
/** The endpoint flags, in the order iproute2 prints them. */
const MPTCP_FLAGS = ['signal', 'subflow', 'backup', 'fullmesh'];

const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
const fail = (stderr: string): CommandResult => ({ code: 2, stdout: '', stderr });

/** Takes `--flag value` pairs off an argument list: { via: '1.2.3.4', dev: 'wan1', … }, plus the words left over. */
function options(args: string[], valued: string[]): { opts: Record<string, string>; rest: string[] } {
  const opts: Record<string, string> = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (valued.includes(args[i]) && i + 1 < args.length) opts[args[i]] = args[++i];
    else rest.push(args[i]);
  }
  return { opts, rest };
}

export class FakeKernel implements Runner {
  routes: FakeRoute[] = [];
  rules: FakeRule[] = [
    { priority: 0, table: '255' },
    { priority: 32766, table: RT_TABLE_MAIN },
    { priority: 32767, table: '253' },
  ];
  /** IPv6 routes: a list of their own, the same table numbers. */
  routes6: FakeRoute[] = [];
  /** IPv6 rules, as a fresh namespace has them (no `default` table rule in IPv6). */
  rules6: FakeRule[] = [
    { priority: 0, table: '255' },
    { priority: 32766, table: RT_TABLE_MAIN },
  ];
  /** Like a kernel booted with ipv6.disable=1: no /proc/sys/net/ipv6, and every `ip -6` fails. */
  ipv6Missing = false;
  addresses: FakeAddress[] = [{ dev: 'lo', cidr: '127.0.0.1/8', label: 'lo', scope: 'host' }];
  tables = new Map<string, FakeTable | string>();
  endpoints: FakeEndpoint[] = [];
  /** A fresh namespace's. */
  limits = { subflows: 2, addAddrAccepted: 0 };
  /** Like a kernel built without MPTCP: every `ip mptcp` fails, as genetlink knows no mptcp_pm family. */
  mptcpMissing = false;
  settings = new Map<string, string>();
  /** Every command that changed something, as `ip …`/`nft …` lines (nft input summarised). */
  changes: string[] = [];
  /** Every command run, listings and failures too, as `command args…` lines (input left out). */
  commands: string[] = [];
  /** How far mptcpChanges() has read `changes`. */
  private mptcpSeen = 0;

  readonly sysctl: SysctlAccess = {
    // /proc/sys/net/ipv6 exists exactly when the kernel has IPv6.
    read: (path) => (path.startsWith('net/ipv6/') && this.ipv6Missing ? undefined
      : this.settings.get(path) ?? (path === 'net/ipv6/conf/all/disable_ipv6' ? '0' : undefined)),
    write: (path, value) => {
      if (this.settings.get(path) !== value) this.changes.push(`sysctl ${path}=${value}`);
      this.settings.set(path, value);
    },
  };

  /** A table that is not uplinkd's, kept as text: the ownership guarantee says it stays byte for byte. */
  foreignTable(id: string, text: string): this {
    this.tables.set(id, text);
    return this;
  }

  async run(command: string, args: string[], input?: string): Promise<CommandResult> {
    const line = [command, ...args].join(' ');
    this.commands.push(line);
    const result = command === 'ip' ? this.ip(args, input) : command === 'nft' ? this.nft(args, input) : command === 'conntrack' ? this.conntrack(args)
      : command === 'sysctl' ? this.sysctlCommand(args) : undefined;
    if (!result) return fail(`fake kernel: unknown command: ${line}`);
    const mutating = !args.includes('-j') && !args.includes('show') && !(command === 'nft' && args[0] === 'list') && !(command === 'conntrack');
    if (result.code === 0 && mutating) this.changes.push(input !== undefined ? `${line} <<${input.split('\n')[0]}…` : line);
    return result;
  }

  // ------------------------------------------------------------------ ip

  private ip(args: string[], input?: string): CommandResult | undefined {
    const json = args[0] === '-j';
    const numeric = args.includes('-N');
    const family: Family = args.includes('-6') ? 'ipv6' : 'ipv4';
    const only = args.includes('-6') ? 'inet6' : args.includes('-4') ? 'inet' : undefined;
    const flags = ['-j', '-N', '-4', '-6'];
    if (family === 'ipv6' && this.ipv6Missing) return fail('RTNETLINK answers: Address family not supported by protocol');
    const words = args.filter((a) => !flags.includes(a));
    if (words[0] === '-batch' && words[1] === '-') return this.ipBatch(args.filter((a) => flags.includes(a)), input ?? '');
    const [object, verb, ...rest] = words;
    if (object === 'route') return json ? ok(JSON.stringify(this.routesOf(family).map((r) => routeJson(r, family)))) : this.route(family, verb, rest);
    if (object === 'rule') return json ? ok(JSON.stringify(this.rulesOf(family).map((r) => ruleJson(r, numeric)))) : this.rule(family, verb, rest);
    if (object === 'address') return json ? ok(JSON.stringify(this.addressJson(numeric, only))) : this.address(verb, rest);
    if (object === 'mptcp') return this.mptcp(json, verb, rest);
    return undefined;
  }

  /** `ip [-j -N -4] -batch -`: each line a command with the same options, answers one after the other; the first failure ends it, as without -force. */
  private ipBatch(options: string[], input: string): CommandResult | undefined {
    let stdout = '';
    for (const line of input.split('\n').filter((l) => l.trim())) {
      const result = this.ip([...options, ...line.trim().split(/\s+/)]);
      if (!result) return undefined;
      if (result.code !== 0) return { ...result, stdout: stdout + result.stdout };
      stdout += result.stdout + (options.includes('-j') ? '\n' : '');
    }
    return ok(stdout);
  }

  private routesOf(family: Family): FakeRoute[] {
    return family === 'ipv6' ? this.routes6 : this.routes;
  }

  private setRoutes(family: Family, routes: FakeRoute[]): void {
    if (family === 'ipv6') this.routes6 = routes;
    else this.routes = routes;
  }

  private rulesOf(family: Family): FakeRule[] {
    return family === 'ipv6' ? this.rules6 : this.rules;
  }

  private route(family: Family, verb: string, rest: string[]): CommandResult | undefined {
    if (verb === 'flush') {
      const { opts } = options(rest, ['table']);
      const kept = this.routesOf(family).filter((r) => r.table !== opts.table);
      if (family === 'ipv6' && kept.length === this.routes6.length) return fail('Error: ipv6: FIB table does not exist.\nFlush terminated');
      this.setRoutes(family, kept);
      return ok();
    }
    const unreachable = rest[0] === 'unreachable';
    const { opts, rest: words } = options(unreachable ? rest.slice(1) : rest, ['via', 'dev', 'src', 'scope', 'metric', 'table']);
    const route: FakeRoute = {
      table: opts.table ?? RT_TABLE_MAIN, type: unreachable ? 'unreachable' : 'unicast', dst: words[0],
      ...(opts.via ? { via: opts.via } : {}), ...(opts.dev ? { dev: opts.dev } : {}), ...(opts.src ? { src: opts.src } : {}),
      ...(opts.scope === 'link' ? { scope: 'link' as const } : {}),
      ...(opts.metric ? { metric: Number(opts.metric) } : family === 'ipv6' ? { metric: IPV6_DEFAULT_METRIC } : {}),
    };
    // The kernel identifies a route by table, destination and metric.
    const same = (r: FakeRoute) => r.table === route.table && r.dst === route.dst && (r.metric ?? 0) === (route.metric ?? 0);
    if (verb === 'replace') {
      if (route.src && !this.addresses.some((a) => a.cidr.split('/')[0] === route.src)) return fail('Error: Invalid prefsrc address.');
      if (family === 'ipv6' && route.via?.startsWith('fe80:') && !route.dev) return fail('Error: Gateway device not specified.');
      this.setRoutes(family, [...this.routesOf(family).filter((r) => !same(r)), route]);
      return ok();
    }
    if (verb === 'del') {
      // As fib_table_delete: a gateway, device or source given must match too.
      const routes = this.routesOf(family);
      const i = routes.findIndex((r) => same(r) && r.type === route.type &&
        (!route.via || r.via === route.via) && (!route.dev || r.dev === route.dev) && (!route.src || r.src === route.src));
      if (i < 0) return fail('RTNETLINK answers: No such process');
      routes.splice(i, 1);
      return ok();
    }
    return undefined;
  }

  private rule(family: Family, verb: string, rest: string[]): CommandResult | undefined {
    const { opts } = options(rest, ['priority', 'from', 'iif', 'fwmark', 'ipproto', 'lookup', 'suppress_prefixlength']);
    const table = opts.lookup === 'main' ? RT_TABLE_MAIN : opts.lookup;
    // The kernel keeps a single address's length (32, 128) to itself: it lists it bare.
    const host = family === 'ipv6' ? /\/128$/ : /\/32$/;
    const rules = this.rulesOf(family);
    if (verb === 'add') {
      rules.push({
        priority: Number(opts.priority), table: table!, ...(opts.from ? { from: opts.from.replace(host, '') } : {}),
        ...(opts.iif ? { iif: opts.iif } : {}), ...(opts.ipproto ? { ipproto: ipproto(opts.ipproto) } : {}),
        ...(opts.fwmark ? { fwmark: opts.fwmark } : {}), ...(opts.suppress_prefixlength ? { suppress: Number(opts.suppress_prefixlength) } : {}),
      });
      return ok();
    }
    if (verb === 'del') {
      const i = rules.findIndex((r) => r.priority === Number(opts.priority) &&
        (opts.from === undefined || r.from === opts.from.replace(host, '')) &&
        (opts.fwmark === undefined || sameMark(r.fwmark, opts.fwmark)) && (table === undefined || r.table === table) &&
        (opts.iif === undefined || r.iif === opts.iif) && (opts.ipproto === undefined || r.ipproto === ipproto(opts.ipproto)));
      if (i < 0) return fail('RTNETLINK answers: No such file or directory');
      rules.splice(i, 1);
      return ok();
    }
    return undefined;
  }

  private address(verb: string, rest: string[]): CommandResult | undefined {
    const { opts, rest: words } = options(rest, ['dev', 'label', 'scope']);
    const cidr = words[0];
    const others = this.addresses.filter((a) => !(a.cidr === cidr && a.dev === opts.dev));
    if (verb === 'replace') {
      this.addresses = [...others, { dev: opts.dev, cidr, label: opts.label ?? opts.dev, scope: opts.scope ?? 'global' }];
      return ok();
    }
    if (verb === 'del') {
      if (others.length === this.addresses.length) return fail('RTNETLINK answers: Cannot assign requested address');
      this.addresses = others;
      // As the kernel does: routes that name a deleted address as their source go with it.
      const address = cidr.split('/')[0];
      this.routes = this.routes.filter((r) => r.src !== address);
      this.routes6 = this.routes6.filter((r) => r.src !== address);
      return ok();
    }
    return undefined;
  }

  /** `numeric` (-N): scopes as rtnetlink numbers, as `ip -N` prints them. `only`: one family's (-4, -6). An IPv6 address has no label. */
  private addressJson(numeric = false, only?: 'inet' | 'inet6') {
    const info = (a: FakeAddress) => {
      const family = a.cidr.includes(':') ? 'inet6' : 'inet';
      return {
        family, local: a.cidr.split('/')[0], prefixlen: Number(a.cidr.split('/')[1]), ...(family === 'inet' ? { label: a.label } : {}),
        scope: numeric ? String(RT_SCOPES[a.scope] ?? a.scope) : a.scope,
      };
    };
    const devs = [...new Set(this.addresses.map((a) => a.dev))];
    return devs.map((ifname) => ({
      ifname,
      addr_info: this.addresses.filter((a) => a.dev === ifname).map(info).filter((a) => !only || a.family === only),
    }));
  }

  private mptcp(json: boolean, verb: string, rest: string[]): CommandResult | undefined {
    if (this.mptcpMissing) return fail('Error: genl: can\'t resolve family "mptcp_pm"');
    const [action, ...more] = rest;
    if (verb === 'endpoint' && json && action === 'show') {
      // The kernel dumps endpoints by id; iproute2 6.1 prints each flag as `"subflow": true`, then dev.
      return ok(JSON.stringify([...this.endpoints].sort((a, b) => a.id - b.id).map((e) => ({
        address: e.address, id: e.id, ...Object.fromEntries(MPTCP_FLAGS.filter((f) => e.flags.includes(f)).map((f) => [f, true])),
        ...(e.dev !== undefined ? { dev: e.dev } : {}),
      }))));
    }
    // iproute2 6.1 prints the limits as text, with or without -j (src/kernel/mptcp.ts parseLimits reads both).
    if (verb === 'limits' && action === 'show') return ok(`add_addr_accepted ${this.limits.addAddrAccepted} subflows ${this.limits.subflows} \n`);
    if (verb === 'endpoint' && action === 'add') {
      const { opts, rest: [address, ...flags] } = options(more, ['id', 'dev']);
      if (!address || flags.some((f) => !MPTCP_FLAGS.includes(f))) return undefined;
      const id = opts.id !== undefined ? Number(opts.id) : this.freeEndpointId();
      if (this.endpoints.length >= MPTCP_MAX || this.endpoints.some((e) => e.id === id || e.address === address)) {
        return fail('Error: too many addresses or duplicate one: -17.');
      }
      this.endpoints.push({ id, address, ...(opts.dev !== undefined ? { dev: opts.dev } : {}), flags: [...flags].sort() });
      return ok();
    }
    if (verb === 'endpoint' && action === 'delete') {
      const { opts } = options(more, ['id']);
      const before = this.endpoints.length;
      this.endpoints = this.endpoints.filter((e) => e.id !== Number(opts.id));
      return before === this.endpoints.length ? fail('Error: address not found.') : ok();
    }
    if (verb === 'limits' && action === 'set') {
      // Either limit may be given alone; the other stays. One above the maximum rejects the whole set.
      const { opts } = options(more, ['subflow', 'add_addr_accepted']);
      const subflows = opts.subflow !== undefined ? Number(opts.subflow) : this.limits.subflows;
      const addAddrAccepted = opts.add_addr_accepted !== undefined ? Number(opts.add_addr_accepted) : this.limits.addAddrAccepted;
      if (subflows > MPTCP_MAX || addAddrAccepted > MPTCP_MAX) return fail(`Error: limit greater than maximum (${MPTCP_MAX}).`);
      this.limits = { subflows, addAddrAccepted };
      return ok();
    }
    return undefined;
  }

  /** The id an endpoint added without one gets: the lowest free. */
  private freeEndpointId(): number {
    for (let id = 1; id <= 255; id++) if (!this.endpoints.some((e) => e.id === id)) return id;
    return 0;
  }

  /** The endpoints as `ip mptcp endpoint show` lines, by id, flags sorted. */
  mptcpShow(): string[] {
    return [...this.endpoints].sort((a, b) => a.id - b.id)
      .map((e) => [e.address, 'id', e.id, ...e.flags, ...(e.dev !== undefined ? ['dev', e.dev] : [])].join(' '));
  }

  /** The `ip mptcp` changes made since the last call (listings and failed commands left out). */
  mptcpChanges(): string[] {
    const out = this.changes.slice(this.mptcpSeen).filter((c) => c.startsWith('ip mptcp '));
    this.mptcpSeen = this.changes.length;
    return out;
  }

  // ------------------------------------------------------------------ nft

  private nft(args: string[], input?: string): CommandResult | undefined {
    if (args[0] === '-f' && input !== undefined) return this.nftScript(input);
    if (args[0] === 'list' && args[1] === 'table') return this.listTable(`${args[2]} ${args[3]}`);
    if (args[0] === '-j' && args[1] === 'list' && args[2] === 'table') return this.listTableJson(`${args[3]} ${args[4]}`);
    if (args[0] === 'delete' && args[1] === 'table') {
      return this.tables.delete(`${args[2]} ${args[3]}`) ? ok() : fail('Error: No such file or directory');
    }
    if (args[0] === 'flush' && args[1] === 'set') {
      const set = this.ownTable(`${args[2]} ${args[3]}`)?.sets.find((s) => s.name === args[4]);
      if (!set) return fail('Error: No such file or directory');
      set.elements = [];
      return ok();
    }
    return undefined;
  }

  private ownTable(id: string): FakeTable | undefined {
    const t = this.tables.get(id);
    return typeof t === 'object' ? t : undefined;
  }

  /** nft -f applies a whole file or nothing: the script runs on a copy, which replaces the state only if every line worked. */
  private nftScript(script: string): CommandResult {
    const copy = new Map([...this.tables].map(([k, v]) => [k, typeof v === 'string' ? v : structuredClone(v)]));
    const lines = script.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      let m: RegExpExecArray | null;
      if (!line.trim()) continue;
      if ((m = /^table (\S+ \S+)$/.exec(line))) {
        if (!copy.has(m[1])) copy.set(m[1], { comment: '', sets: [], chains: [] });
      } else if ((m = /^delete table (\S+ \S+)$/.exec(line))) {
        if (!copy.delete(m[1])) return fail(`Error: No such file or directory: ${line}`);
      } else if ((m = /^table (\S+ \S+) \{$/.exec(line))) {
        const end = lines.indexOf('}', i);
        copy.set(m[1], parseTableBody(lines.slice(i + 1, end)));
        i = end;
      } else if ((m = /^flush (?:set|map) (\S+ \S+) (\S+)$/.exec(line))) {
        const set = (copy.get(m[1]) as FakeTable | undefined)?.sets?.find((s) => s.name === m![2]);
        if (!set) return fail(`Error: No such file or directory: ${line}`);
        set.elements = [];
      } else if ((m = /^add element (\S+ \S+) (\S+) \{ (.*) \}$/.exec(line))) {
        const set = (copy.get(m[1]) as FakeTable | undefined)?.sets?.find((s) => s.name === m![2]);
        if (!set) return fail(`Error: No such file or directory: ${line}`);
        set.elements.push(...m[3].split(', '));
      } else {
        return fail(`fake kernel: unknown nft line: ${line}`);
      }
    }
    this.tables = copy;
    return ok();
  }

  private listTable(id: string): CommandResult {
    const t = this.tables.get(id);
    if (t === undefined) return fail('Error: No such file or directory');
    if (typeof t === 'string') return ok(t);
    return ok([`table ${id} {`, `\tcomment "${t.comment}"`, ...t.sets.flatMap(renderFakeSet), ...t.chains, '}'].join('\n') + '\n');
  }

  private listTableJson(id: string): CommandResult {
    const t = this.ownTable(id);
    if (!t) return fail('Error: No such file or directory');
    const [family, name] = id.split(' ');
    const items: unknown[] = [{ metainfo: { version: 'fake' } }, { table: { family, name, comment: t.comment } }];
    for (const s of t.sets) items.push({ [s.kind]: { family, name: s.name, table: name, head: s.head, elem: s.elements } });
    items.push({ chains: t.chains });
    return ok(JSON.stringify({ nftables: items }));
  }

  /** `sysctl -w a.b.c=v`, as `uplinkd plan` prints it: components with dots are written with slashes. */
  private sysctlCommand(args: string[]): CommandResult | undefined {
    if (args[0] !== '-w' || !args[1]?.includes('=')) return undefined;
    const [key, value] = args[1].split('=');
    this.sysctl.write(key.split('.').map((c) => c.replaceAll('/', '.')).join('/'), value);
    return ok();
  }

  // ------------------------------------------------------------------ conntrack

  private conntrack(args: string[]): CommandResult | undefined {
    if (args[0] === '-D') return { code: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n' };
    if (args[0] === '-L') return ok();
    return undefined;
  }

  // ------------------------------------------------------------------ the whole state

  /** Everything, as sorted lines: two kernels print the same exactly when they hold the same. */
  print(): string {
    const route = (r: FakeRoute, family = 'ip') => [`${family} route`, r.type === 'unreachable' ? 'unreachable' : '', r.dst, r.via && `via ${r.via}`, r.dev && `dev ${r.dev}`,
      r.src && `src ${r.src}`, r.scope && `scope ${r.scope}`, r.metric !== undefined && `metric ${r.metric}`, `table ${r.table}`].filter(Boolean).join(' ');
    const rule = (r: FakeRule, family = 'ip') => [`${family} rule`, `priority ${String(r.priority).padStart(5, '0')}`, r.from && `from ${r.from}`,
      r.iif && `iif ${r.iif}`, r.fwmark && `fwmark ${r.fwmark}`, r.ipproto !== undefined && `ipproto ${r.ipproto}`,
      `lookup ${r.table}`, r.suppress !== undefined && `suppress_prefixlength ${r.suppress}`].filter(Boolean).join(' ');
    const lines = [
      ...this.addresses.map((a) => `ip address ${a.cidr} dev ${a.dev} label ${a.label} scope ${a.scope}`),
      ...this.routes.map((r) => route(r)),
      ...this.rules.map((r) => rule(r)),
      ...this.routes6.map((r) => route(r, 'ip -6')),
      ...this.rules6.map((r) => rule(r, 'ip -6')),
      ...this.mptcpShow().map((e) => `ip mptcp endpoint ${e}`),
      `ip mptcp limits subflow ${this.limits.subflows} add_addr_accepted ${this.limits.addAddrAccepted}`,
      ...[...this.settings].map(([k, v]) => `sysctl ${k}=${v}`),
    ].sort();
    for (const [id, t] of [...this.tables].sort(([a], [b]) => a.localeCompare(b))) {
      if (typeof t === 'string') lines.push(`nft ${id}: ${t}`);
      else {
        lines.push(`nft ${id} comment ${t.comment}`);
        for (const s of t.sets) lines.push(`nft ${id} ${s.kind} ${s.name} ${s.head.join('; ')} = { ${[...s.elements].sort().join(', ')} }`);
        lines.push(...t.chains.map((c) => `nft ${id} ${c}`));
      }
    }
    return lines.join('\n') + '\n';
  }
}

function sameMark(a: string | undefined, b: string): boolean {
  const n = (m: string) => m.split('/').map(Number).join('/');
  return a !== undefined && n(a) === n(b);
}

function routeJson(r: FakeRoute, family: Family) {
  // An IPv6 unreachable route lives on lo; the kernel says so.
  const dev = r.dev ?? (family === 'ipv6' && r.type === 'unreachable' ? 'lo' : undefined);
  return {
    ...(r.type === 'unreachable' ? { type: RTN_UNREACHABLE } : {}), dst: r.dst, ...(r.via ? { gateway: r.via } : {}), ...(dev ? { dev } : {}),
    ...(r.src ? { prefsrc: r.src } : {}), ...(r.scope ? { scope: RT_SCOPE_LINK } : {}), ...(r.metric !== undefined ? { metric: r.metric } : {}),
    // IPv6 routes also say `pref medium`; main's IPv6 routes are listed without their table.
    ...(family === 'ipv6' ? { pref: 'medium' } : {}), ...(family === 'ipv6' && r.table === RT_TABLE_MAIN ? {} : { table: r.table }),
  };
}

/** `numeric` (-N): a protocol as `ipproto-58`, as iproute2 6.1 prints it; by name without. */
function ruleJson(r: FakeRule, numeric: boolean) {
  const [mark, mask] = (r.fwmark ?? '').split('/');
  const [src, len] = (r.from ?? '').split('/');
  const protoName = Object.entries(IPPROTOS).find(([, n]) => n === r.ipproto)?.[0];
  return {
    priority: r.priority, src: r.from ? src : 'all', ...(len ? { srclen: Number(len) } : {}), ...(r.iif ? { iif: r.iif } : {}),
    ...(r.fwmark ? { fwmark: mark, fwmask: mask } : {}),
    ...(r.ipproto !== undefined ? { ipproto: numeric || !protoName ? `ipproto-${r.ipproto}` : protoName } : {}), table: r.table, ...(r.suppress !== undefined ? { suppress_prefixlen: r.suppress } : {}),
  };
}

/** The body of `table … { … }` as uplinkd renders it (src/plan/render.ts): sets with their elements, chains as their rule lines. */
function parseTableBody(body: string[]): FakeTable {
  const table: FakeTable = { comment: '', sets: [], chains: [] };
  let set: FakeSet | undefined;
  let inElements = false;
  let chain: string | undefined;
  for (const raw of body) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let m: RegExpExecArray | null;
    if ((m = /^comment "(.*)"$/.exec(line)) && !set && !chain) table.comment = m[1];
    else if ((m = /^(set|map) (\S+) \{$/.exec(line))) table.sets.push((set = { kind: m[1] as 'set' | 'map', name: m[2], head: [], elements: [] }));
    else if ((m = /^chain (\S+) \{$/.exec(line))) chain = m[1];
    else if (set && line === 'elements = {') inElements = true;
    else if (set && inElements && line === '}') inElements = false;
    else if (set && inElements) set.elements.push(line.replace(/,$/, ''));
    else if (set && line === '}') set = undefined;
    else if (set) set.head.push(line);
    else if (chain && line === '}') chain = undefined;
    else if (chain) table.chains.push(`chain ${chain}: ${line}`);
  }
  return table;
}

function renderFakeSet(s: FakeSet): string[] {
  return [`\t${s.kind} ${s.name} {`, ...s.head.map((h) => `\t\t${h}`), `\t\telements = { ${s.elements.join(', ')} }`, '\t}'];
}

/** What `ip -j` prints for an empty kernel: `[]`, once per command of an `ip -batch -`. */
export function jsonAnswers(args: string[], input?: string): string {
  if (!args.includes('-batch')) return '[]';
  return (input ?? '').split('\n').filter((l) => l.trim()).map(() => '[]\n').join('');
}
