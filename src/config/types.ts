// The validated, normalised configuration: every default filled in, every
// duration in milliseconds, every rate in bits per second. The planner and the
// daemon read only this shape, never raw YAML.

export type Gateway = { kind: 'address'; address: string } | { kind: 'auto' } | { kind: 'none' };
export type NatMode = 'snat' | 'masquerade' | 'none';
/**
 * The uplink's source address for NAT and split access. `auto`: the
 * interface's own (first) IPv4 address, followed. An address: one the
 * interface may not hold yet, such as the VRRP address a router pair shares
 * (README "Router pair"); while it is absent the interface's own address
 * stands in.
 */
export type SourceAddress = { kind: 'auto' } | { kind: 'address'; address: string };
/**
 * The IPv6 next hop. `none`: point-to-point (`default dev ppp0`). `off`: the
 * uplink carries no IPv6 at all. An address may be link-local (fe80::1, as a
 * router advertisement gives it): it is always reached on the uplink's own
 * interface, so it needs no zone.
 */
export type Gateway6 = { kind: 'address'; address: string } | { kind: 'auto' } | { kind: 'none' } | { kind: 'off' };
/**
 * IPv6 source handling. `prefix`: 1:1 mapping of the LAN prefix onto the
 * uplink's prefix of the same length (NPTv6 style, the host part kept); both
 * in canonical CIDR form.
 */
export type Nat6 =
  | { mode: 'snat' }
  | { mode: 'masquerade' }
  | { mode: 'none' }
  | { mode: 'prefix'; lan: string; uplink: string };
export type ProbeMethod = 'icmp' | 'tcp' | 'http' | 'dns';
export type BalanceMode = 'weighted' | 'hash' | 'least-loaded';
export type Protocol = 'tcp' | 'udp' | 'icmp' | 'any';

export interface Check {
  method: ProbeMethod;
  /**
   * IPv4 and IPv6 addresses mixed (IPv6 in canonical text), or URLs for http.
   * Each family's targets judge that family alone; a family with none here is
   * judged by its gateway. Empty means "the uplink's gateways", resolved at run time.
   */
  targets: string[];
  port: number;
  query: string;
  intervalMs: number;
  timeoutMs: number;
  downAfter: number;
  upAfter: number;
  quorum: number;
  maxLatencyMs?: number;
  /** A fraction, 0..1. */
  maxLoss?: number;
  window: number;
}

export interface Uplink {
  name: string;
  interface: string;
  gateway: Gateway;
  gateway6: Gateway6;
  weight: number;
  tier: number;
  nat: NatMode;
  address: SourceAddress;
  nat6: Nat6;
  /** bits per second */
  capacity?: { up?: number; down?: number };
  /** undefined when `check: false`: the uplink is always up. */
  check?: Check;
}

/** An inclusive range of ports. */
export interface PortRange { from: number; to: number }

/** One entry of the config's `rules`: matching traffic is pinned to an uplink (`via`). */
export interface PinRule {
  name: string;
  /**
   * Prefixes of either family in CIDR form (a bare address is normalised to
   * /32 or /128, IPv6 to canonical text). A rule whose src or dst holds only
   * one family's prefixes matches that family only (see src/plan/pins.ts rulesOfFamily).
   */
  src: string[];
  dst: string[];
  proto: Protocol;
  sport: PortRange[];
  dport: PortRange[];
  iif: string[];
  /**
   * The machine's own connections only, by the process that made them: the
   * socket owner's uids and gids (names resolved when the config is read),
   * and cgroup v2 paths relative to the hierarchy's root, without leading or
   * trailing slash (system.slice/restic.service), matching that cgroup and
   * every cgroup below it.
   */
  user: number[];
  group: number[];
  cgroup: string[];
  /** Uplink names, or the single word 'main'. */
  via: string[] | 'main';
  fallback: 'any' | 'block';
}

export interface KernelOwnership {
  nftTable: string;
  markMask: number;
  tableBase: number;
  rulePriority: number;
  /**
   * Host mode: the address uplinkd puts on `lo` (labelled lo:uplinkd) as the
   * source of the machine's own unbound connections, so they can be told
   * from sockets bound to an uplink address, balanced and NATed.
   */
  hostSource: string;
}

/** `mptcp: subflow`: every usable uplink's address is an MPTCP endpoint. */
export type MptcpMode = 'off' | 'subflow';

export interface Config {
  /** The file it was read from, for messages. */
  source: string;
  lan: string[];
  /** In file order; index i (0-based) gets mark value i+1 and table table_base+i+1. */
  uplinks: Uplink[];
  balance: BalanceMode;
  stickyMs?: number;
  rules: PinRule[];
  mptcp: MptcpMode;
  conntrack: { flushOnDown: boolean };
  hooks: string[];
  api: { socket: string; http: string | 'off' };
  kernel: KernelOwnership;
}
