// The lab's names and numbers, computed and never applied here: which
// namespace is which, and every address of every link. Only reserved
// documentation and benchmarking ranges are used (RFC 5737, RFC 2544, and
// 2001:db8::/32 of RFC 3849 for IPv6).
//
//   lan ──lan0── router ──wan1── isp1 ──isp1── inet (192.0.2.0/24 + servers)
//   198.18.0.0/24        ──wan2── isp2 ──isp2──
//                        198.51.100.0/28 per uplink    203.0.113.0/30 per ISP
//
// IPv6, k = uplink number (one hex digit):
//   lan 2001:db8:ff00::/64 ── router ── 2001:db8:k::/64 ── isp<k> ── 2001:db8:f:k::/64 ── inet (2001:db8:ffff::/48)
//   The ISP routes 2001:db8:k:100::/56 and 2001:db8:k:200::/56 to the router
//   and drops customer packets from outside 2001:db8:k::/48.

export const LAB_NAME = /^[a-z0-9][a-z0-9-]{0,11}$/;
export const MAX_LAB_UPLINKS = 8;

export const LAN = {
  routerIf: 'lan0',
  routerAddress: '198.18.0.1',
  host: '198.18.0.2',
  prefixLen: 24,
  /** Extra addresses on the LAN host, so tests can open connections from many sources. */
  sources: Array.from({ length: 64 }, (_, i) => `198.18.0.${100 + i}`),
} as const;

/**
 * `lab up --host`: the source uplinkd gives the machine's own unbound
 * connections (kernel.host_source), from the benchmarking range instead of
 * the link-local default, like every lab address.
 */
export const HOST_SOURCE = '198.18.1.1';

export const INTERNET = {
  /** Every address of this prefix is local to the inet namespace, so tests can pin by destination. */
  prefix: '192.0.2.0/24',
  server: '192.0.2.10',
  whoamiPort: 8080,
  iperfPort: 5201,
  /** Downloads whose every byte is checked (transfers.ts serve). */
  transfersPort: 8092,
} as const;

/** The LAN's IPv6 side (README "The lab": IPv6). */
export const LAN6 = {
  routerAddress: '2001:db8:ff00::1',
  host: '2001:db8:ff00::2',
  prefix: '2001:db8:ff00::/64',
  prefixLen: 64,
  /** Extra sources, like LAN.sources: 2001:db8:ff00::100..13f. */
  sources: Array.from({ length: 64 }, (_, i) => `2001:db8:ff00::${(0x100 + i).toString(16)}`),
} as const;

export const INTERNET6 = {
  /** Every address of this prefix is local to the inet namespace. */
  prefix: '2001:db8:ffff::/48',
  server: '2001:db8:ffff::10',
} as const;

/** The uplink whose IPv6 address and default route come from a router advertisement. */
export const RA_UPLINK = 2;

export interface UplinkWiring6 {
  /** The customer link 2001:db8:k::/64. */
  prefix: string;
  /** Its ISP side: 2001:db8:k::1, and fe80::1 as the link-local next hop. */
  gateway: string;
  gatewayLinkLocal: 'fe80::1';
  /** The router's side: 2001:db8:k::2 (static, or by SLAAC with the token ::2 on the RA uplink), link-local fe80::2. */
  address: string;
  routerLinkLocal: 'fe80::2';
  /** Everything of the customer's: the ISP drops customer packets from outside it (BCP 38). */
  customer: string;
  /**
   * Prefixes the ISP routes to the router (via fe80::2): the first holds
   * 2001:db8:k:100::/64, the nat6 prefix target; the second the LAN's routed
   * 2001:db8:k:200::/64, for nat6 none (it is not inside the first /56).
   */
  routed: [string, string];
  /** `nat6: prefix` maps the LAN's 2001:db8:ff00::/64 onto this. */
  prefixTarget: string;
  /** A LAN prefix from the routed space: router lan0 ::1, LAN host ::2 (for nat6 none). */
  routedLan: { prefix: string; router: string; host: string };
  /** The /64 between the ISP (eth1, ::2) and the internet (isp<k>, ::1). */
  transit: { ispAddress: string; inetAddress: string; prefixLen: 64 };
}

/** k is 1-based. */
export function uplinkWiring6(k: number): UplinkWiring6 {
  const p = `2001:db8:${k.toString(16)}`;
  return {
    prefix: `${p}::/64`,
    gateway: `${p}::1`,
    gatewayLinkLocal: 'fe80::1',
    address: `${p}::2`,
    routerLinkLocal: 'fe80::2',
    customer: `${p}::/48`,
    routed: [`${p}:100::/56`, `${p}:200::/56`],
    prefixTarget: `${p}:100::/64`,
    routedLan: { prefix: `${p}:200::/64`, router: `${p}:200::1`, host: `${p}:200::2` },
    transit: { ispAddress: `2001:db8:f:${k.toString(16)}::2`, inetAddress: `2001:db8:f:${k.toString(16)}::1`, prefixLen: 64 },
  };
}

export type LabNode = 'lan' | 'router' | 'inet' | `isp${number}` | PairRouterName;

export function namespaceOf(lab: string, node: LabNode): string {
  return `ul-${lab}-${node}`;
}

/** Matches exactly the namespaces of one lab (and not those of a lab whose name merely starts alike). */
export function labNamespacePattern(lab: string): RegExp {
  return new RegExp(`^ul-${lab}-(lan|router|inet|isp[1-${MAX_LAB_UPLINKS}]|${PAIR_ROUTERS.join('|')})$`);
}

export function checkLabName(name: string): string {
  if (!LAB_NAME.test(name)) throw new Error(`lab name '${name}' must match ${LAB_NAME.source}`);
  return name;
}

/** One /28 handed to the customer by an ISP: the ISP's gateway is .1, the router's address .2. */
export interface CustomerSubnet {
  prefix: string;
  prefixLen: 28;
  gateway: string;
  address: string;
}

function customerSubnet(base: number): CustomerSubnet {
  return {
    prefix: `198.51.100.${base}/28`,
    prefixLen: 28,
    gateway: `198.51.100.${base + 1}`,
    address: `198.51.100.${base + 2}`,
  };
}

export interface UplinkWiring {
  /** isp<k> */
  name: string;
  /** wan<k>: the router's side of the veth to the ISP's eth0. */
  routerIf: string;
  /** The main-table metric a DHCP client would give this uplink's default route. */
  metric: number;
  /** The subnet the customer starts on, and the one a `renumber` moves it to (and back). */
  subnets: [CustomerSubnet, CustomerSubnet];
  /** The /30 between the ISP (eth1) and the internet (isp<k>). */
  transit: { ispAddress: string; inetAddress: string; prefixLen: 30 };
}

/** k is 1-based. */
export function uplinkWiring(k: number): UplinkWiring {
  return {
    name: `isp${k}`,
    routerIf: `wan${k}`,
    metric: 100 + k,
    subnets: [customerSubnet(16 * (k - 1)), customerSubnet(128 + 16 * (k - 1))],
    transit: { ispAddress: `203.0.113.${4 * (k - 1) + 2}`, inetAddress: `203.0.113.${4 * (k - 1) + 1}`, prefixLen: 30 },
  };
}

/** The customer subnet an address belongs to, and the other one (where a renumber goes next). */
export function subnetsAround(k: number, address: string): { current: CustomerSubnet; next: CustomerSubnet } {
  const [first, second] = uplinkWiring(k).subnets;
  return address === second.address ? { current: second, next: first } : { current: first, next: second };
}

const RATE = /^(\d+(?:\.\d+)?)(kbit|mbit|gbit)$/;
const RATE_UNIT = { kbit: 1e3, mbit: 1e6, gbit: 1e9 } as const;

/** A tc rate such as 20mbit, in bits per second; throws on anything else. */
export function parseRate(rate: string): number {
  const m = RATE.exec(rate);
  const bits = m ? Number(m[1]) * RATE_UNIT[m[2] as keyof typeof RATE_UNIT] : NaN;
  if (!(bits >= 8000 && bits <= 100e9)) throw new Error(`capacity '${rate}' must be a rate like 20mbit (8kbit..100gbit)`);
  return bits;
}

// ---------------------------------------------------------------- the router pair (lab up --pair)

/** The two routers of `lab up --pair`. */
export const PAIR_ROUTERS = ['r1', 'r2'] as const;
export type PairRouterName = (typeof PAIR_ROUTERS)[number];

/** The dedicated link conntrackd syncs over: sync0 on both routers, a /30 of the reserved 198.18.0.0/15. */
export const PAIR_SYNC = { ifname: 'sync0', prefixLen: 30, addresses: ['198.18.255.1', '198.18.255.2'] } as const;

/** keepalived's VRRP instance: the same virtual router on both routers. */
export const PAIR_VRRP = { virtualRouterId: 51, priorities: [150, 100] } as const;

export interface PairRouterWiring {
  name: PairRouterName;
  /** Its own address on the LAN (the gateway 198.18.0.1 is the VRRP address). */
  lanAddress: string;
  syncAddress: string;
  priority: number;
  /** Its own address on uplink k (index k-1), in the customer subnet next to the VRRP address. */
  uplinkAddresses: string[];
}

/**
 * Router i (0 for r1, 1 for r2) of a pair with `uplinks` uplinks: 198.18.0.3
 * and .4 on the LAN, .3 and .4 of each uplink's customer /28 (whose .2, the
 * single lab's router address, is the uplink's VRRP address), 198.18.255.1
 * and .2 on the sync link.
 */
export function pairRouterWiring(i: 0 | 1, uplinks: number): PairRouterWiring {
  return {
    name: PAIR_ROUTERS[i],
    lanAddress: `198.18.0.${3 + i}`,
    syncAddress: PAIR_SYNC.addresses[i],
    priority: PAIR_VRRP.priorities[i],
    uplinkAddresses: Array.from({ length: uplinks }, (_, k) => `198.51.100.${16 * k + 3 + i}`),
  };
}
