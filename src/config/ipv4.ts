// IPv4 arithmetic, the one place it is written: dotted quads to numbers and
// back, prefixes as inclusive numeric ranges, and ranges back to the shortest
// nft notation. The config's parsers (net.ts) check addresses with it and the
// planner computes with it.

/** Dotted-quad IPv4 to a 32-bit number, or undefined when it is not one; no leading zeros (inet_aton would read them as octal). */
export function ipv4ToNumber(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(part) || Number(part) > 255) return undefined;
    value = value * 256 + Number(part);
  }
  return value;
}

export function numberToIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
}

/** The netmask of a prefix length as a number: 24 -> 0xffffff00. */
export function prefixMask(length: number): number {
  return length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
}

/** An inclusive range of numbers: addresses here, ports too (src/plan/pins.ts). */
export interface Range { from: number; to: number }

/** The addresses of a prefix ("192.0.2.0/24"; a bare address is a /32), for an address the config has checked. */
export function prefixRange(cidr: string): Range {
  const [address, lengthText] = cidr.split('/');
  const length = lengthText === undefined ? 32 : Number(lengthText);
  const value = ipv4ToNumber(address);
  if (value === undefined) throw new Error(`${JSON.stringify(cidr)} is not an IPv4 prefix`);
  const from = (value & prefixMask(length)) >>> 0;
  return { from, to: from + 2 ** (32 - length) - 1 };
}

/** The network prefix an interface address sits in, e.g. 198.51.100.2/28 -> 198.51.100.0/28. */
export function networkOf(address: string, prefixLen: number): string {
  return `${numberToIpv4(prefixRange(`${address}/${prefixLen}`).from)}/${prefixLen}`;
}

/** Ranges merged into the fewest disjoint ranges, sorted. */
export function mergeRanges(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from);
  const merged: Range[] = [];
  for (const r of sorted) {
    const last = merged[merged.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else merged.push({ ...r });
  }
  return merged;
}

export function overlaps(a: Range, b: Range): boolean {
  return a.from <= b.to && b.from <= a.to;
}

/** nft notation of an address range: a single address, a prefix when it is one, else a-b. */
export function addressRangeText(r: Range): string {
  if (r.from === r.to) return numberToIpv4(r.from);
  const size = r.to - r.from + 1;
  const length = 32 - Math.log2(size);
  if (Number.isInteger(length) && r.from % size === 0) return `${numberToIpv4(r.from)}/${length}`;
  return `${numberToIpv4(r.from)}-${numberToIpv4(r.to)}`;
}
