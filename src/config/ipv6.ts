// IPv6 arithmetic, the counterpart of ipv4.ts: text to 128-bit numbers
// (BigInt) and back in the one canonical text of RFC 5952, prefixes as
// inclusive ranges, and ranges back to the shortest nft notation. The config's
// parsers (net.ts) check addresses with it and the planner computes with it.
//
// Canonical text matters beyond looks: `ip -j` and `nft -j` print addresses
// with inet_ntop, and the kernel edge compares what it reads with what the
// plan says as strings, so the plan must write every address the way they do.

import { ipv4ToNumber } from './ipv4.js';

export const IPV6_BITS = 128;
const ALL_ONES = (1n << 128n) - 1n;

/** An address or a reason it is not one, for messages. */
export type Ipv6Reading = { ok: true; value: bigint } | { ok: false; reason: string };

const bad = (reason: string): Ipv6Reading => ({ ok: false, reason });

/** 16-bit groups of one side of '::' (or of the whole address); the last may be a dotted quad, worth two groups. */
function groupsOf(text: string, mayEndInIpv4: boolean): number[] | string {
  if (text === '') return [];
  const parts = text.split(':');
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    const last = index === parts.length - 1;
    if (last && mayEndInIpv4 && part.includes('.')) {
      // The dotted quad is read as strictly as ipv4.ts reads any IPv4 address.
      const v4 = ipv4ToNumber(part);
      if (v4 === undefined) return `${JSON.stringify(part)} is not a dotted IPv4 address`;
      groups.push(v4 >>> 16, v4 & 0xffff);
    } else if (part === '') {
      return 'a group is empty (a single colon at the start or end, or ":::")';
    } else if (!/^[0-9A-Fa-f]+$/.test(part)) {
      return `${JSON.stringify(part)} is not a group of hex digits`;
    } else if (part.length > 4) {
      return `group ${JSON.stringify(part)} has more than 4 hex digits`;
    } else {
      groups.push(parseInt(part, 16));
    }
  }
  return groups;
}

/**
 * Reads IPv6 text as RFC 4291 writes it: eight groups of 1..4 hex digits, any
 * letter case, one '::' for one or more zero groups, optionally the last 32
 * bits as a dotted quad. A zone id (fe80::1%wan1) is not part of an address
 * and is refused here; the interface is always known from the uplink it
 * belongs to, so the config never needs one.
 */
export function readIpv6(text: string): Ipv6Reading {
  if (text.includes('%')) return bad(`a zone id (${text.slice(text.indexOf('%'))}) is not part of an address`);
  if (text.includes('/')) return bad('a prefix length is not part of an address');
  if (!text.includes(':')) return bad('an IPv6 address has colons');
  const halves = text.split('::');
  if (halves.length > 2) return bad('"::" may appear only once');
  let groups: number[];
  if (halves.length === 2) {
    const head = groupsOf(halves[0], false);
    const tail = groupsOf(halves[1], true);
    if (typeof head === 'string') return bad(head);
    if (typeof tail === 'string') return bad(tail);
    // "::" stands for at least one zero group (RFC 4291 2.2), so 7 groups around it is the most.
    if (head.length + tail.length > 7) return bad('too many groups: with "::" there are at most 7 others');
    groups = [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = groupsOf(text, true);
    if (typeof all === 'string') return bad(all);
    if (all.length > 8) return bad(`too many groups: ${all.length}, an address has 8`);
    if (all.length < 8) return bad(`too few groups: ${all.length} of 8, and no "::" to stand for the rest`);
    groups = all;
  }
  return { ok: true, value: groups.reduce((acc, group) => (acc << 16n) | BigInt(group), 0n) };
}

/** IPv6 text to a 128-bit number, or undefined when it is not an address (readIpv6 says why). */
export function ipv6ToBigInt(text: string): bigint | undefined {
  const read = readIpv6(text);
  return read.ok ? read.value : undefined;
}

const IPV4_MAPPED = 0xffffn << 32n;

/** ::ffff:0:0/96, an IPv4 address as an IPv6 socket sees it. */
export function isIpv4Mapped(value: bigint): boolean {
  return value >> 32n === 0xffffn;
}

/** fe80::/10: valid on one link only, so usable as a next hop with its interface, never as a source to NAT to. */
export function isLinkLocal(value: bigint): boolean {
  return value >> 118n === 0x3fan;
}

/** ff00::/8. */
export function isMulticast(value: bigint): boolean {
  return value >> 120n === 0xffn;
}

/**
 * RFC 5952 text: lowercase, no leading zeros, the longest run of two or more
 * zero groups (the first of equal runs) as '::', and an IPv4-mapped address
 * with its last 32 bits dotted (section 5), as inet_ntop prints them.
 */
export function bigIntToIpv6(value: bigint): string {
  if (isIpv4Mapped(value)) {
    const v4 = Number(value - IPV4_MAPPED);
    return `::ffff:${[24, 16, 8, 0].map((shift) => (v4 >>> shift) & 255).join('.')}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = { start: -1, length: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i += 1; continue; }
    let end = i;
    while (end < 8 && groups[end] === 0) end += 1;
    if (end - i > best.length) best = { start: i, length: end - i };
    i = end;
  }
  const hex = (list: number[]) => list.map((group) => group.toString(16)).join(':');
  if (best.length < 2) return hex(groups);
  return `${hex(groups.slice(0, best.start))}::${hex(groups.slice(best.start + best.length))}`;
}

/** The canonical text of an address, or undefined when it is not one. */
export function canonicalIpv6(text: string): string | undefined {
  const value = ipv6ToBigInt(text);
  return value === undefined ? undefined : bigIntToIpv6(value);
}

/** The netmask of a prefix length as a number: 64 -> ffff:ffff:ffff:ffff::. */
export function ipv6PrefixMask(length: number): bigint {
  return length === 0 ? 0n : (ALL_ONES << BigInt(IPV6_BITS - length)) & ALL_ONES;
}

/** An inclusive range of IPv6 addresses. */
export interface Ipv6Range { from: bigint; to: bigint }

/** The addresses of a prefix ("2001:db8::/32"; a bare address is a /128), for a prefix the config has checked. */
export function ipv6PrefixRange(cidr: string): Ipv6Range {
  const [address, lengthText] = cidr.split('/');
  const length = lengthText === undefined ? IPV6_BITS : Number(lengthText);
  const value = ipv6ToBigInt(address);
  if (value === undefined || !Number.isInteger(length) || length < 0 || length > IPV6_BITS) {
    throw new Error(`${JSON.stringify(cidr)} is not an IPv6 prefix`);
  }
  const from = value & ipv6PrefixMask(length);
  return { from, to: from | (ALL_ONES >> BigInt(length)) };
}

/** The network prefix an interface address sits in, e.g. 2001:db8:1::2/64 -> 2001:db8:1::/64. */
export function ipv6NetworkOf(address: string, prefixLen: number): string {
  return `${bigIntToIpv6(ipv6PrefixRange(`${address}/${prefixLen}`).from)}/${prefixLen}`;
}

/** Ranges merged into the fewest disjoint ranges, sorted. */
export function mergeIpv6Ranges(ranges: Ipv6Range[]): Ipv6Range[] {
  const sorted = [...ranges].sort((a, b) => (a.from < b.from ? -1 : a.from > b.from ? 1 : 0));
  const merged: Ipv6Range[] = [];
  for (const r of sorted) {
    const last = merged[merged.length - 1];
    if (last && r.from <= last.to + 1n) last.to = last.to > r.to ? last.to : r.to;
    else merged.push({ ...r });
  }
  return merged;
}

export function ipv6RangesOverlap(a: Ipv6Range, b: Ipv6Range): boolean {
  return a.from <= b.to && b.from <= a.to;
}

/** The prefix length of a range that is exactly one prefix, else undefined. */
function prefixLengthOf(r: Ipv6Range): number | undefined {
  const size = r.to - r.from + 1n;
  // A power of two has one bit set; a prefix also starts on a multiple of its size.
  if ((size & (size - 1n)) !== 0n || r.from % size !== 0n) return undefined;
  return IPV6_BITS - (size.toString(2).length - 1);
}

/** nft notation of an address range: a single address, a prefix when it is one, else a-b. */
export function ipv6RangeText(r: Ipv6Range): string {
  if (r.from === r.to) return bigIntToIpv6(r.from);
  const length = prefixLengthOf(r);
  if (length !== undefined) return `${bigIntToIpv6(r.from)}/${length}`;
  return `${bigIntToIpv6(r.from)}-${bigIntToIpv6(r.to)}`;
}

/** Which family an address or prefix that the config has checked belongs to: only IPv6 text has colons. */
export function addressFamily(text: string): 'ipv4' | 'ipv6' {
  return text.includes(':') ? 'ipv6' : 'ipv4';
}
