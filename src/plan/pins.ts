// Pinning rules compiled into a few verdict-map lookups, so that the cost of
// classifying a new connection does not grow with the number of rules.
//
// Consecutive rules that match on the same fields (their "shape") share one
// map keyed by the concatenation of those fields. First match wins across
// rules, so a rule joins the current stage only if none of its elements
// overlaps an element already there; otherwise it opens the next stage. Within
// a stage the elements are disjoint and their order cannot matter; across
// stages the file order is kept. 1000 source pins make one stage, one lookup.

import type { Rule } from '../config/types.js';
import { addressRangeText, mergeRanges, overlaps, prefixRange, type Range } from './ipv4.js';

interface FieldSpec {
  /** nft type in a map declaration. */
  type: string;
  /** nft expression that reads the field from a packet. */
  expr: string;
  /** Whether values are ranges (needs `flags interval`). */
  ranged: boolean;
  values(rule: Rule): FieldValue[];
}

/** One value of one field: a numeric range, or an exact word (protocol, interface). */
interface FieldValue { text: string; range?: Range }

const PROTOCOL_NUMBER = { tcp: 6, udp: 17, icmp: 1 } as const;

const addressValues = (prefixes: string[]): FieldValue[] =>
  mergeRanges(prefixes.map(prefixRange)).map((range) => ({ text: addressRangeText(range), range }));

const portValues = (ports: { from: number; to: number }[]): FieldValue[] =>
  mergeRanges(ports).map((range) => ({ text: range.from === range.to ? `${range.from}` : `${range.from}-${range.to}`, range }));

/** In key order: the order of fields in every map key. */
const FIELDS: FieldSpec[] = [
  { type: 'ipv4_addr', expr: 'ip saddr', ranged: true, values: (r) => addressValues(r.src) },
  { type: 'ipv4_addr', expr: 'ip daddr', ranged: true, values: (r) => addressValues(r.dst) },
  {
    type: 'inet_proto', expr: 'meta l4proto', ranged: false,
    values: (r) => (r.proto === 'any' ? [] : [{ text: r.proto, range: { from: PROTOCOL_NUMBER[r.proto], to: PROTOCOL_NUMBER[r.proto] } }]),
  },
  { type: 'inet_service', expr: 'th sport', ranged: true, values: (r) => portValues(r.sport) },
  { type: 'inet_service', expr: 'th dport', ranged: true, values: (r) => portValues(r.dport) },
  { type: 'ifname', expr: 'iifname', ranged: false, values: (r) => [...new Set(r.iif)].sort().map((name) => ({ text: `"${name}"` })) },
];

type Element = FieldValue[];

export interface PinStage {
  /** Map name, rules_1 … */
  name: string;
  /** Indexes into FIELDS of the fields this stage keys on; empty = matches every connection. */
  fields: number[];
  entries: { rule: Rule; elements: Element[] }[];
}

function valuesOverlap(a: FieldValue, b: FieldValue): boolean {
  return a.range && b.range ? overlaps(a.range, b.range) : a.text === b.text;
}

function elementsOverlap(a: Element, b: Element): boolean {
  return a.every((value, i) => valuesOverlap(value, b[i]));
}

function cartesian(lists: FieldValue[][]): Element[] {
  return lists.reduce<Element[]>((acc, list) => acc.flatMap((prefix) => list.map((v) => [...prefix, v])), [[]]);
}

export function compilePinStages(rules: Rule[]): PinStage[] {
  const stages: PinStage[] = [];
  for (const rule of rules) {
    const perField = FIELDS.map((f) => f.values(rule));
    const fields = perField.flatMap((values, i) => (values.length > 0 ? [i] : []));
    const elements = cartesian(fields.map((i) => perField[i]));
    const current = stages[stages.length - 1];
    const fits =
      current !== undefined &&
      current.fields.join() === fields.join() &&
      fields.length > 0 &&
      !current.entries.some((entry) => entry.elements.some((e) => elements.some((mine) => elementsOverlap(e, mine))));
    if (fits) current.entries.push({ rule, elements });
    else stages.push({ name: `rules_${stages.length + 1}`, fields, entries: [{ rule, elements }] });
  }
  return stages;
}

export function stageKeyExpression(stage: PinStage): string {
  return stage.fields.map((i) => FIELDS[i].expr).join(' . ');
}

export function stageDeclaration(stage: PinStage): { declaration: string; flags?: string[] } {
  const type = stage.fields.map((i) => FIELDS[i].type).join(' . ');
  const ranged = stage.fields.some((i) => FIELDS[i].ranged);
  return { declaration: `type ${type} : verdict`, flags: ranged ? ['interval'] : undefined };
}

export function elementKey(element: Element): string {
  return element.map((v) => v.text).join(' . ');
}
