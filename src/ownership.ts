// Everything uplinkd owns in the kernel, in one place: the mark values it
// writes inside `mark_mask`, the ip rule priorities inside
// [rule_priority, rule_priority+999], the routing table of each uplink, and
// the MPTCP endpoint ids. Nothing outside these ranges is ever created,
// changed or deleted.

import type { KernelOwnership } from './config/types.js';

export const DEFAULT_OWNERSHIP: KernelOwnership = {
  nftTable: 'uplinkd',
  markMask: 0x0000ff00,
  tableBase: 200,
  rulePriority: 10000,
  // Link-local, so never routed anywhere; only ever seen before source NAT.
  hostSource: '169.254.77.1',
};

/** The label of the host-mode source address on lo: how flush finds it with no config. */
export const HOST_SOURCE_LABEL = 'lo:uplinkd';

/**
 * `mptcp: subflow`: the MPTCP endpoint ids uplinkd owns, how flush finds its
 * endpoints with no config. Uplink i (0-based) gets id `last - i`; the kernel
 * holds at most 8 endpoints per namespace (MPTCP_PM_ADDR_MAX), so 8 ids.
 * At the top of 1..255 and handed out downwards because of how the kernel
 * numbers an endpoint added without an id: the first free id from the
 * highest one given so far, wrapping to 1 past 255. While uplink 1 holds 255,
 * such an endpoint wraps and lands low, outside this range. (When uplink 1 has
 * no endpoint the kernel may give one of these ids away: endpoints added by
 * hand should name an id below `first`; see README "MPTCP".)
 */
export const MPTCP_ENDPOINT_IDS = { first: 248, last: 255 } as const;

/** The endpoint id of uplink `index` (0-based), or undefined past the eighth. */
export function mptcpEndpointId(index: number): number | undefined {
  const id = MPTCP_ENDPOINT_IDS.last - index;
  return id >= MPTCP_ENDPOINT_IDS.first ? id : undefined;
}

/** The kernel's upper bound on both MPTCP limits (`ip mptcp limits set`). */
export const MPTCP_LIMIT_MAX = 8;

/** Size of the owned priority range: rules live in [rulePriority, rulePriority + RULE_RANGE - 1]. */
export const RULE_RANGE = 1000;

/**
 * Offsets of each ip rule inside the owned priority range. Order is meaning:
 * the kernel walks rules by ascending priority and the first that yields a
 * route wins.
 */
export const RULE_OFFSET = {
  /** Main table without its default routes: LAN, connected, VPN and static routes win over any uplink. */
  localRoutesFirst: 0,
  /** Connections a pinning rule sent to `via: main`: the main table decides, default route included. */
  bypassToMain: 10,
  /** Traffic from uplink i's own address leaves by uplink i (split access); +i. */
  fromUplinkAddress: 100,
  /** Connections marked for uplink i; +i. */
  uplinkMark: 300,
  /**
   * IPv6, router mode: the router's own ICMPv6 follows the main table, before
   * unboundLocalSource would give it the LAN source (an error about a packet
   * that came in on an uplink goes back out there; from a LAN address its ISP
   * would drop it).
   */
  ownIcmp6ToMain: 590,
  /** The router's own unbound sockets pick a neutral source address, so they can be balanced and NATed. */
  unboundLocalSource: 600,
} as const;

/** The highest uplink count the rule layout leaves room for. */
export const MAX_UPLINKS = RULE_OFFSET.uplinkMark - RULE_OFFSET.fromUplinkAddress - 1;

/**
 * Metric of the catch-all `unreachable default` in each uplink table
 * (0xff002000, the value the kernel's VRF documentation uses): far above any
 * real route's, so it only answers when the uplink's own default route is
 * missing, and a marked packet never falls through to another table. It also
 * marks a table as uplinkd's for `flush`.
 */
export const FALLBACK_METRIC = 4278198272;

/** Buckets of the balancing hash or random number: shares are whole buckets of this many. */
export const BALANCE_BUCKETS = 65536;

/**
 * Slots of the least-loaded rotation (`numgen inc`): new connections are
 * dealt in turn over this many slots, spread by share (plan.ts,
 * rotationOrder), so shares are whole 89ths. Small, because every run of
 * slots is a map element the loop rewrites; fine enough, because the loop
 * only moves shares by 5% or more. A Fibonacci number, so that the
 * golden-ratio order wraps around without a seam.
 */
export const ROTATION_SLOTS = 89;

/** How many buckets the shares of this balancing mode are counted in. */
export function balanceBuckets(balance: string): number {
  return balance === 'least-loaded' ? ROTATION_SLOTS : BALANCE_BUCKETS;
}

/** The mark field: the run of set bits in the mask. */
export interface MarkField {
  mask: number;
  shift: number;
  /** The largest value the field holds. */
  max: number;
}

export function markField(mask: number): MarkField | undefined {
  if (mask <= 0 || mask > 0xffffffff) return undefined;
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  const max = mask >>> shift;
  // Contiguous bits only: max must be 2^k - 1.
  if ((max & (max + 1)) !== 0) return undefined;
  return { mask, shift, max };
}

/** Mark values reserved beyond the uplinks' 1..N: the bypass to the main table. */
const RESERVED_VALUES = 1;

/** How many uplinks a mask has room for, or 0 if the mask is not one contiguous run of bits. */
export function uplinksThatFit(mask: number): number {
  const field = markField(mask);
  return field ? Math.max(0, field.max - RESERVED_VALUES) : 0;
}

export interface Marks {
  mask: number;
  /** The mark of uplink i (0-based index in config order). */
  uplink(index: number): number;
  /** `via: main`: leave the decision to the main table. */
  bypass: number;
}

export function marksFor(mask: number): Marks {
  const field = markField(mask);
  if (!field) throw new Error(`mark mask 0x${mask.toString(16)} is not one run of contiguous bits`);
  return {
    mask,
    uplink: (index) => (index + 1) << field.shift >>> 0,
    bypass: (field.max << field.shift) >>> 0,
  };
}

export function uplinkTable(own: KernelOwnership, index: number): number {
  return own.tableBase + index + 1;
}

export function rulePriority(own: KernelOwnership, offset: number, index = 0): number {
  return own.rulePriority + offset + index;
}

export function hex(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}
