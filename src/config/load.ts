// Reading the config file: YAML to positioned diagnostics and a validated
// Config. zod (schema.ts) checks each value where it stands; the checks here
// relate parts of the file to each other. Every error is reported, each at
// the line and column of the value it is about.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, isMap, isNode, isScalar, isSeq, parseDocument, type Document, type YAMLError } from 'yaml';
import type { ZodIssue } from 'zod';
import { DEFAULT_OWNERSHIP, MAX_UPLINKS, hex, uplinksThatFit } from '../ownership.js';
import { addressFamily } from './ipv6.js';
import { parseHttpUrl, parseIfname, parseIpAddress, parsePrefix, parseSourceAddress } from './net.js';
import {
  ConfigSchema,
  PROBE_METHODS,
  PROTOCOLS,
  RULE_NAME,
  defaultRuleName,
  parseMarkMask,
  yamlErrorMap,
  type IssueParams,
} from './schema.js';
import { readCgroups, type CgroupReading } from '../kernel/cgroups.js';
import { parseCgroupPath } from './process-keys.js';
import { didYouMean } from './suggest.js';
import type { Config } from './types.js';
import { ok } from './units.js';

export interface Diagnostic {
  file: string;
  line: number;
  col: number;
  message: string;
  severity: 'error' | 'warning';
}

export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.col}: ${d.severity === 'warning' ? 'warning: ' : ''}${d.message}`;
}

/** What the machine can tell about itself; `undefined` means it does not know this interface. */
export interface ConfigFacts {
  isPointToPoint?(ifname: string): boolean | undefined;
  /** Which of the rules' cgroups exist; the machine is asked when this is not given. */
  cgroups?(paths: string[]): CgroupReading;
}

export type ConfigResult =
  | { ok: true; config: Config; warnings: Diagnostic[] }
  | { ok: false; errors: Diagnostic[]; warnings: Diagnostic[] };

export const DEFAULT_CONFIG_PATH = '/etc/uplinkd/uplinkd.yaml';

/** `-c FILE`, else $UPLINKD_CONFIG, else the default path. */
export function resolveConfigPath(cliPath?: string): string {
  return cliPath || process.env.UPLINKD_CONFIG || DEFAULT_CONFIG_PATH;
}

export function loadConfigFile(file: string, facts?: ConfigFacts): ConfigResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const error: Diagnostic = { file, line: 1, col: 1, message: `cannot read the config: ${osReason(err)}`, severity: 'error' };
    return { ok: false, errors: [error], warnings: [] };
  }
  return parseConfig(text, file, facts);
}

/** "no such file or directory (ENOENT)" out of "ENOENT: no such file or directory, open 'x'": the path is already in the prefix. */
function osReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const match = /^([A-Z0-9]+): (.*?)(?:, \w+(?: '.*')?)?$/.exec(message);
  return match ? `${match[2]} (${match[1]})` : message;
}

export function parseConfig(text: string, file: string, facts: ConfigFacts = {}): ConfigResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const report = new Diagnostics(file, doc, lines);

  for (const problem of doc.warnings) report.atOffset('warning', problem.pos[0], yamlMessage(problem, text));
  // After a syntax error the tree is a guess; checking its values would only add noise.
  for (const problem of doc.errors) report.atOffset('error', problem.pos[0], yamlMessage(problem, text));
  if (doc.errors.length > 0) return report.result();

  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (err) {
    // e.g. an alias bomb: yaml refuses to expand it.
    report.atOffset('error', 0, `invalid YAML: ${err instanceof Error ? err.message : String(err)}`);
    return report.result();
  }
  if (raw === null || raw === undefined) {
    report.at('error', [], 'the config is empty; it needs at least an uplinks section');
    return report.result();
  }

  const parsed = ConfigSchema.safeParse(raw, { errorMap: yamlErrorMap });
  if (!parsed.success) {
    for (const issue of informativeIssues(parsed.error.issues)) {
      const params = issue.code === 'custom' ? (issue.params as IssueParams | undefined) : undefined;
      report.at('error', issue.path, issue.message, params?.at);
    }
  }
  checkRelations(raw, report, facts);
  return report.result(parsed.success ? { source: file, ...parsed.data } : undefined);
}

function yamlMessage(problem: YAMLError, text: string): string {
  if (problem.code === 'DUPLICATE_KEY') {
    // The error's range covers only the key's first character; the key runs to its colon.
    const key = /^[^:\n]*/.exec(text.slice(problem.pos[0]))?.[0].trim();
    return `duplicate key "${key}"`;
  }
  return `invalid YAML: ${problem.message}`;
}

/**
 * zod reports a value that fits no branch of a union (a prefix or a list of
 * them, `false` or a check) with every branch's complaint. The useful branch
 * is the one whose input had the right type, so its complaint is about what is
 * inside; if no branch got that far, the union's own "expected X or Y" stays.
 */
function informativeIssues(issues: readonly ZodIssue[]): ZodIssue[] {
  return issues.flatMap((issue) => {
    if (issue.code !== 'invalid_union') return [issue];
    const wrongTypeHere = (inner: ZodIssue) => inner.code === 'invalid_type' && inner.path.length === issue.path.length;
    const branch = issue.unionErrors.find((error) => !error.issues.every(wrongTypeHere));
    return branch ? informativeIssues(branch.issues) : [issue];
  });
}

// --- checks that relate values ------------------------------------------------

type Path = (string | number)[];
type Mapping = Record<string, unknown>;

const asMapping = (value: unknown): Mapping | undefined =>
  value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Mapping) : undefined;

/** A value that may be given alone or as a list, with the path of each item. */
function itemsOf(value: unknown, path: Path): [unknown, Path][] {
  return Array.isArray(value) ? value.map((item, index) => [item, [...path, index]]) : value === undefined ? [] : [[value, path]];
}

/**
 * Checks that relate one value to another. They read the raw YAML values,
 * skipping any that are themselves invalid (zod has reported those), so that
 * they run however broken the rest of the file is.
 */
function checkRelations(raw: unknown, report: Diagnostics, facts: ConfigFacts): void {
  const top = asMapping(raw);
  if (!top) return;
  const uplinks = asMapping(top.uplinks) ?? {};
  const count = Object.keys(uplinks).length;

  if (count === 0 && (top.uplinks === undefined || asMapping(top.uplinks))) {
    report.at('error', ['uplinks'], 'no uplinks: at least one is needed');
  }
  if (count > MAX_UPLINKS) {
    report.at('error', ['uplinks'], `uplinks: ${count} are configured; at most ${MAX_UPLINKS} fit the ip rule layout`);
  }
  const addressOwner = new Map<string, string>();
  for (const [name, body] of Object.entries(uplinks)) {
    const uplink = asMapping(body) ?? {};
    const address = parseSourceAddress(uplink.address);
    if (address.ok && address.value.kind === 'address') {
      const other = addressOwner.get(address.value.address);
      if (other !== undefined) {
        report.at('error', ['uplinks', name, 'address'], `address: ${address.value.address} is already the address of uplink ${other}`);
      }
      addressOwner.set(address.value.address, name);
      if (uplink.nat === 'masquerade') {
        report.at('warning', ['uplinks', name, 'nat'],
          `nat: masquerade takes the interface's primary address, not address ${address.value.address}; use nat: snat to NAT to it`);
      }
    }
    const check = asMapping(uplink.check);
    if (check) checkProbe(check, ['uplinks', name, 'check'], report, uplink.gateway6 === 'off' ? name : undefined);
    if (uplink.gateway6 === 'off' && uplink.nat6 !== undefined) {
      report.at('warning', ['uplinks', name, 'nat6'], `nat6: has no effect: gateway6: off says ${name} carries no IPv6`);
    }
  }
  if (top.sticky !== undefined && itemsOf(top.lan, ['lan']).length === 0) {
    report.at('warning', ['sticky'], 'sticky: applies to LAN sources; without lan it has no effect');
  }
  checkInterfaces(top, uplinks, report, facts);
  checkRules(top, uplinks, report);
  checkProcessKeys(top, report, facts);
  checkKernelRoom(asMapping(top.kernel) ?? {}, count, report);
}

/** Each interface belongs to one uplink or to the LAN: two owners would fight over its routes and its address. */
function checkInterfaces(top: Mapping, uplinks: Mapping, report: Diagnostics, facts: ConfigFacts): void {
  const owner = new Map<string, string>();
  for (const [name, body] of Object.entries(uplinks)) {
    const uplink = asMapping(body) ?? {};
    const ifname = parseIfname(uplink.interface);
    if (!ifname.ok) continue;
    const other = owner.get(ifname.value);
    if (other !== undefined) {
      report.at('error', ['uplinks', name, 'interface'], `interface: ${ifname.value} is already the interface of uplink ${other}`);
    } else {
      owner.set(ifname.value, name);
    }
    if (uplink.gateway === 'none' && facts.isPointToPoint?.(ifname.value) === false) {
      report.at(
        'warning',
        ['uplinks', name, 'gateway'],
        `gateway: none is for point-to-point links (ppp, tun), but ${ifname.value} is not one: ` +
          'every destination would have to answer ARP on it; use auto or the gateway address',
      );
    }
  }
  const lan = new Set<string>();
  for (const [item, path] of itemsOf(top.lan, ['lan'])) {
    const ifname = parseIfname(item);
    if (!ifname.ok) continue;
    const uplink = owner.get(ifname.value);
    if (uplink !== undefined) report.at('error', path, `lan: ${ifname.value} is also the interface of uplink ${uplink}`);
    else if (lan.has(ifname.value)) report.at('error', path, `lan: ${ifname.value} is listed twice`);
    lan.add(ifname.value);
  }
}

function checkRules(top: Mapping, uplinks: Mapping, report: Diagnostics): void {
  const firstUse = new Map<string, number>();
  (Array.isArray(top.rules) ? top.rules : []).forEach((body, index) => {
    const rule = asMapping(body);
    if (!rule) return;

    const name = rule.name === undefined ? defaultRuleName(index) : rule.name;
    if (typeof name === 'string' && RULE_NAME.test(name)) {
      const earlier = firstUse.get(name);
      if (earlier === undefined) {
        firstUse.set(name, index);
      } else {
        // Point at a name the user wrote: this one, or the earlier one if this one is a default.
        const path = rule.name === undefined ? ['rules', earlier, 'name'] : ['rules', index, 'name'];
        report.at('error', path, `name: rule name "${name}" is used by rules ${earlier + 1} and ${index + 1}`);
      }
    }

    // Ports sit at the same offset only in tcp and udp headers; with any other protocol the match would read unrelated bytes.
    const proto = rule.proto ?? 'any';
    for (const key of ['sport', 'dport'] as const) {
      const ports = rule[key];
      const hasPorts = ports !== undefined && !(Array.isArray(ports) && ports.length === 0);
      if (hasPorts && isOneOf(proto, PROTOCOLS) && proto !== 'tcp' && proto !== 'udp') {
        report.at('error', ['rules', index, key], `${key}: a port match needs proto: tcp or udp (proto is ${proto}, which has no ports)`);
      }
    }

    checkRuleFamilies(rule, ['rules', index], report);

    for (const [via, path] of itemsOf(rule.via, ['rules', index, 'via'])) {
      if (typeof via === 'string' && via !== 'main' && !Object.hasOwn(uplinks, via)) {
        report.at('error', path, `via: there is no uplink named "${via}"${didYouMean(via, Object.keys(uplinks))}`);
      }
    }
  });
}

/** The families of a rule key's valid prefixes (invalid ones are zod's to report). */
function familiesOf(value: unknown): Set<'ipv4' | 'ipv6'> {
  return new Set(itemsOf(value, []).flatMap(([item]) => {
    const read = parsePrefix(item);
    return read.ok ? [addressFamily(read.value)] : [];
  }));
}

/** A connection is of one family: a rule whose src holds only one family and dst only the other could never match. */
function checkRuleFamilies(rule: Mapping, path: Path, report: Diagnostics): void {
  const [src, dst] = [familiesOf(rule.src), familiesOf(rule.dst)];
  if (src.size !== 1 || dst.size !== 1) return;
  const [srcFamily, dstFamily] = [[...src][0], [...dst][0]];
  if (srcFamily === dstFamily) return;
  const name = (family: string) => (family === 'ipv4' ? 'IPv4' : 'IPv6');
  report.at('error', [...path, 'dst'],
    `dst: only ${name(dstFamily)} prefixes, but src only ${name(srcFamily)} ones; a connection is of one family, so this rule could never match`);
}

const PROCESS_KEYS = ['user', 'group', 'cgroup'] as const;

/**
 * `user`, `group` and `cgroup` match the machine's own connections, which
 * arrive on no interface, so `iif` beside them could never match; and a
 * cgroup that does not exist (yet) is worth a warning: the rule is left out
 * until it appears, which is right for a service not started yet and a
 * silent no-op for a typing error.
 */
function checkProcessKeys(top: Mapping, report: Diagnostics, facts: ConfigFacts): void {
  const rules = (Array.isArray(top.rules) ? top.rules : []).map(asMapping);
  const cgroups: [string, Path][] = [];
  rules.forEach((rule, index) => {
    if (!rule) return;
    const keys = PROCESS_KEYS.filter((key) => itemsOf(rule[key], []).length > 0);
    if (keys.length > 0 && itemsOf(rule.iif, []).length > 0) {
      report.at('error', ['rules', index, 'iif'],
        `iif: ${keys.join(' and ')} match${keys.length === 1 ? 'es' : ''} the machine's own connections, which arrive on no interface, so with iif this rule could never match`);
    }
    for (const [item, path] of itemsOf(rule.cgroup, ['rules', index, 'cgroup'])) {
      const read = parseCgroupPath(item);
      if (read.ok) cgroups.push([read.value, path]);
    }
  });
  if (cgroups.length === 0) return;
  const reading = (facts.cgroups ?? readCgroups)(cgroups.map(([path]) => path));
  for (const [cgroup, path] of cgroups) {
    if (reading.mountPoint === undefined) {
      report.at('warning', path,
        'cgroup: no cgroup v2 hierarchy is mounted here (none in /proc/self/mountinfo; `ip netns exec` mounts a fresh /sys without one), so this rule cannot match');
    } else if (!reading.present.some((c) => c.path === cgroup)) {
      report.at('warning', path,
        `cgroup: ${cgroup} does not exist (yet): no ${join(reading.mountPoint, cgroup)}; the rule is left out until it does, and matches from then on`);
    }
  }
}

/** Routing table ids the kernel keeps for itself. */
const RESERVED_TABLES: Record<number, string> = { 0: 'unspec', 253: 'default', 254: 'main', 255: 'local' };
const LAST_TABLE_ID = 2 ** 32 - 1;

/** The owned mark field and routing tables must hold one slot per uplink. */
function checkKernelRoom(kernel: Mapping, count: number, report: Diagnostics): void {
  if (count === 0) return;

  const mask = kernel.mark_mask === undefined ? ok(DEFAULT_OWNERSHIP.markMask) : parseMarkMask(kernel.mark_mask);
  const fit = mask.ok ? uplinksThatFit(mask.value) : count;
  if (mask.ok && fit < count) {
    report.at(
      'error',
      ['kernel', 'mark_mask'],
      `mark_mask ${hex(mask.value)} holds ${fit} uplink${fit === 1 ? '' : 's'}, the config has ${count}; ` +
        `widen it (e.g. ${hex(DEFAULT_OWNERSHIP.markMask)})`,
    );
  }

  const base = kernel.table_base === undefined ? DEFAULT_OWNERSHIP.tableBase : kernel.table_base;
  if (typeof base !== 'number' || !Number.isInteger(base) || base < 0) return;
  const [first, last] = [base + 1, base + count];
  const which = kernel.table_base === undefined ? `the default table_base ${base}` : `table_base: ${base}`;
  const hits = Object.keys(RESERVED_TABLES)
    .map(Number)
    .filter((table) => table >= first && table <= last);
  if (hits.length > 0) {
    const named = hits.map((table) => `${table} (${RESERVED_TABLES[table]})`).join(', ');
    const highestBelow = 252 - count;
    const instead = highestBelow >= 0 ? `at most ${highestBelow} or at least 255` : 'at least 255';
    report.at(
      'error',
      ['kernel', 'table_base'],
      `${which} puts the uplink tables at ${first}..${last}, which include the kernel's ${named}; choose a table_base of ${instead}`,
    );
  } else if (last > LAST_TABLE_ID) {
    report.at('error', ['kernel', 'table_base'], `${which} puts the uplink tables at ${first}..${last}, past the largest table id ${LAST_TABLE_ID}`);
  }
}

/** The family an http target's URL names by address, if it does ([2001:db8::80] or 192.0.2.80); a host name could be either. */
function urlFamily(url: string): 'ipv4' | 'ipv6' | undefined {
  const host = new URL(url).hostname;
  if (host.startsWith('[')) return 'ipv6';
  return parseIpAddress(host).ok ? 'ipv4' : undefined;
}

/**
 * The parts of a health check that depend on its method. Each family's
 * targets judge that family alone, so the quorum is checked per family;
 * `noIpv6` names the uplink when it carries no IPv6 (gateway6: off).
 */
function checkProbe(check: Mapping, path: Path, report: Diagnostics, noIpv6?: string): void {
  const method = check.method ?? 'icmp';
  if (!isOneOf(method, PROBE_METHODS)) return;
  const targets = itemsOf(check.targets, [...path, 'targets']);
  const perFamily = { ipv4: 0, ipv6: 0 };
  for (const [target, targetPath] of targets) {
    const read = method === 'http' ? parseHttpUrl(target) : parseIpAddress(target);
    if (typeof target === 'string' && !read.ok) report.at('error', targetPath, `targets: ${read.error}`);
    if (!read.ok) continue;
    const family = method === 'http' ? urlFamily(read.value) : addressFamily(read.value);
    if (family) perFamily[family] += 1;
    if (family === 'ipv6' && noIpv6 !== undefined) {
      report.at('error', targetPath, `targets: ${target} is an IPv6 target, but gateway6: off says ${noIpv6} carries no IPv6`);
    }
  }
  if (method === 'http' && targets.length === 0) {
    report.at('error', [...path, 'method'], 'method: an http check needs targets: one or more http(s) URLs');
  }
  // Harmless, but a sign of a misunderstanding (an example that shows both keys on an icmp check invites it).
  if (check.port !== undefined && method !== 'tcp' && method !== 'dns') {
    const why = method === 'http' ? "an http target's URL carries its port" : 'icmp has no ports';
    report.at('warning', [...path, 'port'], `port: ignored by ${method} checks (${why}); it applies to tcp and dns`);
  }
  if (check.query !== undefined && method !== 'dns') {
    report.at('warning', [...path, 'query'], `query: ignored by ${method} checks; it applies to dns`);
  }
  // No targets means one: the gateway.
  const targetCount = Math.max(1, targets.length);
  if (typeof check.quorum !== 'number') return;
  if (check.quorum > targetCount) {
    const what = targets.length === 0 ? 'the 1 target (the gateway, as no targets are given)' : `the ${targetCount} targets`;
    report.at('error', [...path, 'quorum'], `quorum: ${check.quorum} is more than ${what}`);
    return;
  }
  // With both families listed, each must reach the quorum on its own targets.
  // (A family with none listed is judged by its gateway alone.)
  if (perFamily.ipv4 === 0 || perFamily.ipv6 === 0) return;
  for (const [family, count] of [['IPv4', perFamily.ipv4], ['IPv6', perFamily.ipv6]] as const) {
    if (check.quorum > count) {
      report.at('error', [...path, 'quorum'],
        `quorum: ${check.quorum} is more than the ${count} ${family} target${count === 1 ? '' : 's'}; each family's targets judge that family on their own`);
    }
  }
}

const isOneOf = <T extends string>(value: unknown, options: readonly T[]): value is T => options.includes(value as T);

// --- positions -------------------------------------------------------------

/** Collects a config file's errors and warnings, each at its line and column in the YAML. */
class Diagnostics {
  private readonly errors: Diagnostic[] = [];
  private readonly warnings: Diagnostic[] = [];

  constructor(
    private readonly file: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /** A message about the value at `path` in the YAML (or its key). */
  at(severity: Diagnostic['severity'], path: readonly (string | number)[], message: string, where: 'key' | 'value' = 'value'): void {
    this.atOffset(severity, offsetOf(this.doc, path, where), message);
  }

  atOffset(severity: Diagnostic['severity'], offset: number, message: string): void {
    const { line, col } = this.lines.linePos(offset);
    const diagnostic: Diagnostic = { file: this.file, line: Math.max(1, line), col: Math.max(1, col), message, severity };
    (severity === 'error' ? this.errors : this.warnings).push(diagnostic);
  }

  result(config?: Config): ConfigResult {
    const byPosition = (a: Diagnostic, b: Diagnostic) => a.line - b.line || a.col - b.col;
    const warnings = [...this.warnings].sort(byPosition);
    if (config && this.errors.length === 0) return { ok: true, config, warnings };
    return { ok: false, errors: [...this.errors].sort(byPosition), warnings };
  }
}

/**
 * The source offset of the node at `path`. When the path leads to nothing (a
 * missing key), the deepest node on the way stands in: for an uplink's
 * missing `interface`, the uplink's own key; for a rule's missing `via`, the
 * rule's first line.
 */
function offsetOf(doc: Document, path: readonly (string | number)[], where: 'key' | 'value'): number {
  let node: unknown = doc.contents;
  let nearest = startOf(node) ?? 0;
  for (const [index, step] of path.entries()) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(step));
      if (!pair) return nearest;
      const keyStart = startOf(pair.key) ?? nearest;
      if (where === 'key' && index === path.length - 1) return keyStart;
      node = pair.value;
      // The key stands for an indented mapping below it, and for an empty value (`key:` and nothing).
      const empty = isScalar(node) && node.value === null && node.range?.[0] === node.range?.[1];
      const blockMapping = isMap(node) && !node.flow;
      nearest = empty || blockMapping ? keyStart : (startOf(node) ?? keyStart);
    } else if (isSeq(node) && typeof step === 'number' && step < node.items.length) {
      node = node.items[step];
      nearest = startOf(node) ?? nearest;
    } else {
      return nearest;
    }
  }
  return nearest;
}

function startOf(node: unknown): number | undefined {
  return isNode(node) ? node.range?.[0] : undefined;
}
