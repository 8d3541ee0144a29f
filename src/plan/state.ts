// The desired kernel state as data: what the planner returns, what `plan`
// prints and what the kernel edge installs. Every item carries `why`, the
// sentence a reviewer would otherwise have to reconstruct from the mechanics.

/** What uplinkd knows about the kernel before planning. Read by kernel/facts.ts. */
export interface KernelFacts {
  interfaces: InterfaceFacts[];
  /** Default routes of the main table, for `gateway: auto`. */
  mainDefaultRoutes: { dev: string; gateway?: string; metric: number }[];
  /**
   * IPv6 default routes of the main table, for `gateway6: auto`: the one a
   * router advertisement installs has the router's link-local next hop
   * (fe80::1), which is reached on `dev`. Absent: none known.
   */
  mainDefaultRoutes6?: { dev: string; gateway?: string; metric: number }[];
  /**
   * The cgroups named by rules (`cgroup:`) that exist now; one that is not
   * listed is absent, and its rule is left out of the plan until it exists.
   */
  cgroups?: CgroupFacts[];
}

export interface CgroupFacts {
  /** As the config names it, relative to the cgroup v2 root: system.slice/restic.service. */
  path: string;
  /**
   * Its id (the inode of its directory), which nft keeps in place of the path:
   * a cgroup removed and created again (a service restart) has a new one.
   */
  id: number;
  /** Its path as nft 1.0.6 takes it, relative to /sys/fs/cgroup: `unified/…` on a hybrid layout. */
  nftPath: string;
}

export interface InterfaceFacts {
  name: string;
  /** Administratively up and carrier present (LOWER_UP). */
  carrier: boolean;
  pointToPoint: boolean;
  /** IPv4 addresses; `peer` set on point-to-point links. */
  addresses: { address: string; prefixLen: number; peer?: string }[];
  /**
   * Global IPv6 addresses fit to be a source: link-local, tentative (DAD not
   * done) and deprecated (preferred lifetime over) ones left out, stable ones
   * before temporary (privacy) ones, so the first is the one to NAT to and
   * route from. Absent: none known.
   */
  addresses6?: { address: string; prefixLen: number; temporary?: boolean }[];
}

export type Health = 'up' | 'down';

/** Which family a route or rule is for; IPv4 when absent, so IPv4-only plans read as they always have. */
export type Family = 'ipv4' | 'ipv6';

export interface Sysctl {
  /** Dotted name as `sysctl` shows it, e.g. net.ipv4.conf.wan1.rp_filter. */
  key: string;
  /** Path under /proc/sys: interface names may contain dots, so it is kept apart from `key`. */
  path: string;
  value: string;
  why: string;
}

export interface Route {
  /** IPv4 when absent. The same table number holds an uplink's IPv4 and IPv6 routes: the kernel keeps them apart. */
  family?: 'ipv6';
  table: number;
  type: 'unicast' | 'unreachable';
  /** 'default' or a CIDR prefix. */
  dst: string;
  via?: string;
  dev?: string;
  src?: string;
  scope?: 'link';
  metric?: number;
  why: string;
}

/** One `ip rule` (a pinning rule from the config is config/types.ts PinRule). */
export interface IpRule {
  /** IPv4 when absent. IPv6 rules take the same priorities: `ip -6 rule` is a list of its own. */
  family?: 'ipv6';
  priority: number;
  /** An address or prefix, or '0.0.0.0/32' for "a socket with no source address yet". */
  from?: string;
  /**
   * The incoming interface; `lo` is the machine's own packets. IPv6 needs it
   * where IPv4 has `from 0.0.0.0/32`: an IPv6 rule with a source never
   * matches a lookup made before the source is chosen (fib6_rule_match).
   */
  iif?: string;
  /** A protocol by name as iproute2 takes it, e.g. `ipv6-icmp`. */
  ipproto?: string;
  fwmark?: { value: number; mask: number };
  /** A table number, or 'main'. */
  lookup: number | 'main';
  suppressPrefixLength?: number;
  why: string;
}

/** An address uplinkd puts on an interface (host mode's neutral source on lo), found again by its label. */
export interface LocalAddress {
  dev: string;
  /** CIDR, e.g. 169.254.77.1/32. */
  cidr: string;
  label: string;
  scope: 'host';
  why: string;
}

/** One nftables set or map. Elements are kept as nft syntax, one string each. */
export interface NftSet {
  name: string;
  /** `type …` or `typeof …`, and for maps ` : value-type`. */
  declaration: string;
  flags?: string[];
  timeout?: string;
  elements: string[];
  why: string;
}

export interface NftChain {
  name: string;
  /** e.g. `type filter hook prerouting priority mangle; policy accept;` for base chains. */
  hook?: string;
  rules: { text: string; why?: string }[];
  why: string;
}

export interface NftTable {
  family: 'inet';
  name: string;
  sets: NftSet[];
  chains: NftChain[];
}

export interface UplinkSummary {
  name: string;
  index: number;
  interface: string;
  health: Health;
  /** Why it is not usable, if it is not (no interface, no address, no gateway). */
  unusable?: string;
  /** The source it NATs to now (ResolvedUplink.address). */
  address?: string;
  /** The configured `address`, if not auto. */
  sharedAddress?: string;
  gateway?: string;
  tier: number;
  weight: number;
  /** Fraction of new unpinned connections it receives now. */
  share: number;
  table: number;
  mark: number;
  /** The IPv6 side, when the plan is dual stack (PlanContext.dualStack) and the uplink carries IPv6 (gateway6 not off). */
  ipv6?: FamilySummary;
}

/** One family of an uplink: its own health, address, next hop and share. */
export interface FamilySummary {
  health: Health;
  unusable?: string;
  address?: string;
  gateway?: string;
  share: number;
}

export interface DesiredState {
  uplinks: UplinkSummary[];
  sysctls: Sysctl[];
  /** Addresses uplinkd owns (HOST_SOURCE_LABEL); any other address with that label is stale. */
  addresses: LocalAddress[];
  routes: Route[];
  /** Tables the state owns; routes in them that the state does not list are stale. */
  ownedTables: number[];
  /**
   * Where uplink tables may lie (table_base+1 ..): a table there that carries
   * uplinkd's signature but is no longer planned (an uplink removed by a
   * reload) is stale too, and emptied.
   */
  tableRange: { from: number; to: number };
  rules: IpRule[];
  /** The owned priority range, inclusive. */
  ruleRange: { from: number; to: number };
  nft: NftTable;
  /** MPTCP endpoints and limits (kernel/mptcp.ts); with `mptcp: off`, only the removal of endpoints left in the owned ids. */
  mptcp?: MptcpState;
}

/** An `ip mptcp endpoint` uplinkd owns: new subflows of every MPTCP connection may leave from its address. */
export interface MptcpEndpoint {
  /** In MPTCP_ENDPOINT_IDS, fixed per uplink, so an endpoint is only ever replaced when its address moves. */
  id: number;
  address: string;
  dev: string;
  /** A higher tier's: its subflows carry data only while no subflow of a lower tier is left. */
  backup: boolean;
  why: string;
}

export interface MptcpState {
  /** `mptcp: subflow`. Off, `endpoints` is empty and uplinkd only removes endpoints with its ids. */
  enabled: boolean;
  endpoints: MptcpEndpoint[];
  /** Uplinks without an endpoint now, and why, for the printed plan. */
  absent: { uplink: string; why: string }[];
  /** What the per-namespace limits must at least allow; raised to it, never lowered (kernel/mptcp.ts). */
  limits?: { subflows: number; addAddrAccepted: number; why: string };
}
