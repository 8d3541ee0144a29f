// IPv4 arithmetic the planner needs: prefixes as inclusive numeric ranges,
// and back to the shortest nft notation.

export function toNumber(address: string): number {
  const parts = address.split('.').map(Number);
  return (((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0);
}

export function toAddress(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Range { from: number; to: number }

export function prefixRange(cidr: string): Range {
  const [address, lengthText] = cidr.split('/');
  const length = lengthText === undefined ? 32 : Number(lengthText);
  const size = 2 ** (32 - length);
  const from = Math.floor(toNumber(address) / size) * size;
  return { from, to: from + size - 1 };
}

/** The network prefix an interface address sits in, e.g. 198.51.100.2/28 -> 198.51.100.0/28. */
export function networkOf(address: string, prefixLen: number): string {
  return `${toAddress(prefixRange(`${address}/${prefixLen}`).from)}/${prefixLen}`;
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
  if (r.from === r.to) return toAddress(r.from);
  const size = r.to - r.from + 1;
  const length = 32 - Math.log2(size);
  if (Number.isInteger(length) && r.from % size === 0) return `${toAddress(r.from)}/${length}`;
  return `${toAddress(r.from)}-${toAddress(r.to)}`;
}
