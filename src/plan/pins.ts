// Pinning rules compiled into a few verdict-map lookups, so that the cost of
// classifying a new connection does not grow with the number of rules.
//
// Consecutive rules that match on the same fields (their "shape") share one
// map keyed by the concatenation of those fields. First match wins across
// rules, so a rule joins the current stage only if none of its elements
// overlaps an element already there; otherwise it opens the next stage. Within
// a stage the elements are disjoint and their order cannot matter; across
// stages the file order is kept. 1000 source pins make one stage, one lookup.
//
// The process behind a connection is a field like any other: `meta skuid`,
// `meta skgid`, and `socket cgroupv2 level N`, whose level is part of the
// expression, so cgroups at different depths are different fields (a rule
// naming both is split into one part per depth, placed one after the other).
// Those fields need the local socket, so their stages are "own": only the
// machine's own connections are looked up in them (nft.ts leaves them out of
// the forwarded path, where `socket` would look a socket up by the packet's
// destination and could find a local listener).
//
// A stage's shape comes from the config alone; which cgroups exist only
// decides which elements are written. So a cgroup that appears, goes or is
// created again changes elements, never chains: the daemon follows it with an
// element update. Each cgroup element carries the cgroup's id in its comment,
// because nft keeps the id and not the path: a recreated cgroup (new id) must
// change the element's text for the update to load it again.

import type { PinRule } from '../config/types.js';
import { cgroupLevel } from '../kernel/cgroups.js';
import { addressRangeText, mergeRanges, overlaps, prefixRange, type Range } from '../config/ipv4.js';
import { addressFamily, ipv6PrefixRange, ipv6RangeText, ipv6RangesOverlap, mergeIpv6Ranges, type Ipv6Range } from '../config/ipv6.js';
import type { CgroupFacts } from './state.js';

interface FieldSpec {
  /** nft type in a map declaration. */
  type: string;
  /** nft expression that reads the field from a packet. */
  expr: string;
  /** Whether values are ranges (needs `flags interval`). */
  ranged: boolean;
  /** Read from the local socket: only the machine's own connections have one. */
  own?: boolean;
  values(rule: PinRule): FieldValue[];
}

/**
 * One value of one field: a numeric range, or an exact word (protocol,
 * interface, cgroup path as configured). A cgroup's nft text depends on the
 * facts, so it is written when the elements are (see stageElements).
 */
interface FieldValue { text: string; range?: Range; range6?: Ipv6Range; cgroup?: string }

export type PinFamily = 'ipv4' | 'ipv6';

/** `icmp` in a rule means the family's own ICMP: ICMPv6 (58) in the IPv6 stages. */
const PROTOCOL = {
  ipv4: { tcp: ['tcp', 6], udp: ['udp', 17], icmp: ['icmp', 1] },
  ipv6: { tcp: ['tcp', 6], udp: ['udp', 17], icmp: ['ipv6-icmp', 58] },
} as const;

const addressValues = (prefixes: string[]): FieldValue[] =>
  mergeRanges(prefixes.map(prefixRange)).map((range) => ({ text: addressRangeText(range), range }));

const address6Values = (prefixes: string[]): FieldValue[] =>
  mergeIpv6Ranges(prefixes.map(ipv6PrefixRange)).map((range6) => ({ text: ipv6RangeText(range6), range6 }));

const portValues = (ports: { from: number; to: number }[]): FieldValue[] =>
  mergeRanges(ports).map((range) => ({ text: range.from === range.to ? `${range.from}` : `${range.from}-${range.to}`, range }));

const idValues = (ids: number[]): FieldValue[] => [...ids].sort((a, b) => a - b).map((id) => ({ text: `${id}`, range: { from: id, to: id } }));

/** In key order: the order of fields in every map key. The cgroup fields, one per depth, follow (fieldsFor). */
function familyFields(family: PinFamily): FieldSpec[] {
  const [type, ip, values] = family === 'ipv4' ? ['ipv4_addr', 'ip', addressValues] as const : ['ipv6_addr', 'ip6', address6Values] as const;
  return [
    { type, expr: `${ip} saddr`, ranged: true, values: (r) => values(r.src) },
    { type, expr: `${ip} daddr`, ranged: true, values: (r) => values(r.dst) },
    {
      type: 'inet_proto', expr: 'meta l4proto', ranged: false,
      values: (r) => {
        if (r.proto === 'any') return [];
        const [text, number] = PROTOCOL[family][r.proto];
        return [{ text, range: { from: number, to: number } }];
      },
    },
    { type: 'inet_service', expr: 'th sport', ranged: true, values: (r) => portValues(r.sport) },
    { type: 'inet_service', expr: 'th dport', ranged: true, values: (r) => portValues(r.dport) },
    { type: 'ifname', expr: 'iifname', ranged: false, values: (r) => [...new Set(r.iif)].sort().map((name) => ({ text: `"${name}"` })) },
    { type: 'uid', expr: 'meta skuid', ranged: false, own: true, values: (r) => idValues(r.user) },
    { type: 'gid', expr: 'meta skgid', ranged: false, own: true, values: (r) => idValues(r.group) },
  ];
}

function cgroupField(level: number): FieldSpec {
  return {
    type: 'cgroupsv2', expr: `socket cgroupv2 level ${level}`, ranged: false, own: true,
    values: (r) => r.cgroup.filter((path) => cgroupLevel(path) === level).sort().map((path) => ({ text: path, cgroup: path })),
  };
}

/** The family's fields, and a cgroup field for each depth the rules' cgroups lie at. */
function fieldsFor(rules: PinRule[], family: PinFamily): FieldSpec[] {
  const levels = [...new Set(rules.flatMap((r) => r.cgroup.map(cgroupLevel)))].sort((a, b) => a - b);
  return [...familyFields(family), ...levels.map(cgroupField)];
}

type Element = FieldValue[];

export interface PinStage {
  /** Map name, rules_1 … (rules6_1 … for IPv6) */
  name: string;
  /** The fields this stage keys on, in key order; empty = matches every connection. */
  fields: FieldSpec[];
  /** In file order; a rule split by cgroup depth has one entry in each of its stages. */
  entries: { rule: PinRule; elements: Element[] }[];
}

function valuesOverlap(a: FieldValue, b: FieldValue): boolean {
  if (a.range6 && b.range6) return ipv6RangesOverlap(a.range6, b.range6);
  return a.range && b.range ? overlaps(a.range, b.range) : a.text === b.text;
}

function elementsOverlap(a: Element, b: Element): boolean {
  return a.every((value, i) => valuesOverlap(value, b[i]));
}

function cartesian(lists: FieldValue[][]): Element[] {
  return lists.reduce<Element[]>((acc, list) => acc.flatMap((prefix) => list.map((v) => [...prefix, v])), [[]]);
}

/**
 * A rule's values per field; a rule whose cgroups lie at more than one depth
 * becomes one part per depth (each part keeps the rule's other fields).
 */
function ruleParts(rule: PinRule, fields: FieldSpec[]): FieldValue[][][] {
  const perField = fields.map((f) => f.values(rule));
  const cgroupFields = fields.flatMap((f, i) => (f.type === 'cgroupsv2' && perField[i].length > 0 ? [i] : []));
  if (cgroupFields.length <= 1) return [perField];
  return cgroupFields.map((keep) => perField.map((values, i) => (cgroupFields.includes(i) && i !== keep ? [] : values)));
}

/**
 * The rules as one family sees them: src and dst cut to that family's
 * prefixes. A rule that named prefixes only of the other family in src or dst
 * cannot match this family and is left out; one that named none there still
 * matches any address.
 */
export function rulesOfFamily(rules: PinRule[], family: 'ipv4' | 'ipv6'): PinRule[] {
  return rules.flatMap((rule) => {
    const [src, dst] = [rule.src, rule.dst].map((prefixes) => prefixes.filter((p) => addressFamily(p) === family));
    if ((rule.src.length > 0 && src.length === 0) || (rule.dst.length > 0 && dst.length === 0)) return [];
    return [{ ...rule, src, dst }];
  });
}

/** The stages of one family's rules (rulesOfFamily); IPv6 stages key on ip6 addresses and are named rules6_N. */
export function compilePinStages(rules: PinRule[], family: PinFamily = 'ipv4'): PinStage[] {
  const allFields = fieldsFor(rules, family);
  const prefix = family === 'ipv4' ? 'rules' : 'rules6';
  const stages: PinStage[] = [];
  for (const rule of rules) {
    // A split rule's part that has the current stage's shape goes first, so it can join that stage.
    const parts = ruleParts(rule, allFields);
    const current = stages.at(-1);
    const joins = (perField: FieldValue[][]) => current !== undefined && shapeOf(allFields.filter((_, i) => perField[i].length > 0)) === shapeOf(current.fields);
    parts.sort((x, y) => Number(joins(y)) - Number(joins(x)));
    for (const perField of parts) {
      const used = perField.flatMap((values, i) => (values.length > 0 ? [i] : []));
      const fields = used.map((i) => allFields[i]);
      const elements = cartesian(used.map((i) => perField[i]));
      const current = stages[stages.length - 1];
      const fits =
        current !== undefined &&
        shapeOf(current.fields) === shapeOf(fields) &&
        fields.length > 0 &&
        !current.entries.some((entry) => entry.elements.some((e) => elements.some((mine) => elementsOverlap(e, mine))));
      if (fits) current.entries.push({ rule, elements });
      else stages.push({ name: `${prefix}_${stages.length + 1}`, fields, entries: [{ rule, elements }] });
    }
  }
  return stages;
}

const shapeOf = (fields: FieldSpec[]) => fields.map((f) => f.expr).join(' . ');

export function stageKeyExpression(stage: PinStage): string {
  return shapeOf(stage.fields);
}

/** Whether only the machine's own connections can match this stage: it reads the local socket. */
export function stageIsOwnOnly(stage: PinStage): boolean {
  return stage.fields.some((f) => f.own);
}

export function stageDeclaration(stage: PinStage): { declaration: string; flags?: string[] } {
  const type = stage.fields.map((f) => f.type).join(' . ');
  const ranged = stage.fields.some((f) => f.ranged);
  return { declaration: `type ${type} : verdict`, flags: ranged ? ['interval'] : undefined };
}

export interface StageElements {
  /** nft map elements, `key : verdict` (a cgroup element with ` comment "cgroup id N"` after its key). */
  elements: string[];
  /** The configured cgroups of this stage's rules that do not exist now, so their elements are left out. */
  absent: { rule: string; cgroup: string }[];
}

/** A stage's elements as nft text, each going to `target(rule)`; elements naming a cgroup that does not exist are left out. */
export function stageElements(stage: PinStage, cgroups: readonly CgroupFacts[], target: (rule: PinRule) => string): StageElements {
  const absent = new Map<string, { rule: string; cgroup: string }>();
  const elements = stage.entries.flatMap(({ rule, elements }) => elements.flatMap((element) => {
    const keys: string[] = [];
    let comment = '';
    for (const value of element) {
      if (value.cgroup === undefined) {
        keys.push(value.text);
        continue;
      }
      const found = cgroups.find((c) => c.path === value.cgroup);
      if (!found) {
        absent.set(`${rule.name} ${value.cgroup}`, { rule: rule.name, cgroup: value.cgroup });
        return [];
      }
      keys.push(`"${found.nftPath}"`);
      comment = ` comment "cgroup id ${found.id}"`;
    }
    return [`${keys.join(' . ')}${comment} : ${target(rule)}`];
  }));
  return { elements, absent: [...absent.values()] };
}
