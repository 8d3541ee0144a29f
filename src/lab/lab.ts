// The lab: a whole multi-uplink network built out of network namespaces on one
// machine, for the demo, the integration tests and the benchmarks.
//
//   lan (198.18.0.2) ── router ──wan<k>── isp<k> ── inet (192.0.2.0/24, whoami, iperf3)
//
// Dual stack: every link also carries IPv6 (addresses in topology.ts), except
// point-to-point uplinks, which stay IPv4-only. Uplink 2 learns its IPv6
// address (SLAAC) and default route from a router advertisement sent by
// dnsmasq in isp2 (dhcp.ts raArgv), as on a typical consumer line.
//
// The router is set up the way a plain Linux router with DHCP uplinks is: one
// main-table default route per uplink and family (metric 100+k), forwarding
// on, and nothing else. No policy routing, marks or NAT: that is uplinkd's job, and
// the ISPs drop what leaks out unNATed, as real ones do. The lab installs what
// a DHCP client would; on uplinks chosen with `dhcp`, a real DHCP server and
// client do it (dhcp.ts).
//
// Everything lives in namespaces named ul-<lab>-<node> plus a state directory
// /run/uplinkd-lab/<lab>; `labDown` removes both, and a `labUp` that fails
// halfway removes what it had built.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClientResult } from './client.js';
import { labUpConfig } from './lab-config.js';
import {
  clientArgv, clientDir, clientMounts, DHCPCD_DB_DIR, dnsmasqArgv, installedLease, installedRa, LEASE_WITHIN_MS, leaseApplied,
  MOUNT_HOLDER_ARGV, RA_WITHIN_MS, raArgv, raDir, serverLeaseFile,
} from './dhcp.js';
import { runCommand, type CommandOptions, type CommandResult } from '../kernel/runner.js';
import type { LabPair } from './pair.js';
import { inNamespace, ip, labProgram, must, nft } from './run.js';
import {
  HOST_SOURCE,
  INTERNET, INTERNET6, LAN, LAN6, MAX_LAB_UPLINKS, RA_UPLINK, checkLabName, labNamespacePattern, namespaceOf, parseRate, subnetsAround,
  uplinkWiring, uplinkWiring6, type CustomerSubnet, type LabNode,
} from './topology.js';

export type { ClientResult } from './client.js';

export interface LabOptions {
  name: string;
  /** 1..8, default 2 */
  uplinks?: number;
  /** tc rates, one for all uplinks or one per uplink, e.g. ['20mbit', '10mbit'] */
  capacities?: string[];
  /**
   * Uplinks (1-based) addressed point-to-point, like PPPoE: a /32 with the
   * ISP as its peer and no gateway, every destination reached on the link.
   */
  pointToPoint?: number[];
  /**
   * Uplinks (1-based) whose router address, prefix and default route come
   * from a real DHCP server in the ISP (dnsmasq) and client on the router
   * (dhcpcd), instead of being configured by the lab.
   */
  dhcp?: number[];
  /**
   * A single multihomed machine instead of a router: no LAN host, and the
   * config has no `lan`, so the 'router' node is the host (host mode).
   */
  host?: boolean;
}

/** The processes of a DHCP uplink (see dhcp.ts). */
export interface LabDhcp {
  /** dnsmasq in the ISP; unset while stopped (`labDhcpStop`). */
  serverPid?: number;
  /** dhcpcd on the router's wan<k>; SIGHUP makes it rebind. */
  clientPid?: number;
  /** Holds the client's private mount namespace. */
  mountsPid?: number;
}

export type LabFault = 'link' | 'upstream' | `loss:${number}%`;

export type LabFamily = 'ipv4' | 'ipv6';
export const LAB_FAMILIES: readonly LabFamily[] = ['ipv4', 'ipv6'];

/** The router advertisements of the RA uplink (dnsmasq in the ISP, see dhcp.ts raArgv). */
export interface LabRa {
  /** dnsmasq sending them; unset while stopped. */
  serverPid?: number;
  /** The link-local address they come from: the router's IPv6 next hop (fe80::1, or fe80::3 after `labRaMove`). */
  router: string;
}

export interface LabUplink {
  /** isp<k> */
  name: string;
  /** wan<k> */
  routerIf: string;
  address: string;
  prefixLen: number;
  gateway: string;
  ispNs: string;
  capacity?: string;
  /** Peer-addressed (`gateway: none` in uplinkd's config). */
  pointToPoint?: boolean;
  /** The fault `labFail` put on it, until `labHeal`. */
  fault?: LabFault;
  /** The one family the fault hits (`lab fail --family`); absent: both. */
  faultFamily?: LabFamily;
  /** Addressed by real DHCP; address, prefixLen and gateway are what the lab's server leases. */
  dhcp?: LabDhcp;
  /** The router's global IPv6 address on the uplink (/64); absent on an IPv4-only (point-to-point) uplink. */
  address6?: string;
  /** Its IPv6 next hop: 2001:db8:k::1, or on the RA uplink the advertising router's link-local address. */
  gateway6?: string;
  /** Set on the RA uplink: address6 comes from SLAAC and the default route from the advertisement. */
  ra?: LabRa;
}

export interface LabState {
  name: string;
  stateDir: string;
  /** Built with `host` (LabOptions): there is no 'lan' node. */
  host?: boolean;
  /** Built by `labUpPair` (pair.ts): two routers r1 and r2 instead of one, IPv4 only. */
  pair?: LabPair;
  /** ns.router: in a pair, r1's (the node name 'router' is refused there: see namespaceOfNode). */
  ns: { lan: string; router: string; inet: string; isps: string[] };
  lanIf: 'lan0';
  lanAddress: '198.18.0.1';
  lanHost: '198.18.0.2';
  lanSources: string[];
  lanAddress6: string;
  lanHost6: string;
  lanSources6: string[];
  uplinks: LabUplink[];
  server: string;
  server6: string;
  whoamiPort: number;
  iperfPort: number;
  configPath: string;
  pids: number[];
}

export const STATE_ROOT = '/run/uplinkd-lab';

export function stateDirOf(name: string): string {
  return join(STATE_ROOT, name);
}

// ---------------------------------------------------------------- lab up

export async function labUp(opts: LabOptions): Promise<LabState> {
  const state = newLabState(opts);
  await refuseIfTaken(state.name);
  mkdirSync(STATE_ROOT, { recursive: true });
  mkdirSync(state.stateDir); // fails if another `lab up` of this name got here first
  try {
    await createNamespaces(state);
    if (!state.host) await wireLan(state);
    await wireInternet(state);
    for (let k = 1; k <= state.uplinks.length; k++) await wireUplink(state, k);
    await limitCapacities(state);
    await startDhcp(state);
    await startRa(state);
    writeFileSync(state.configPath, labUpConfig(state));
    await startServers(state);
    saveState(state);
    return state;
  } catch (err) {
    await labDown(state.name);
    throw err;
  }
}

/** The number of uplinks (default 2) and their capacities, checked: one rate for all or one per uplink. */
export function checkUplinkCount(opts: { uplinks?: number; capacities?: string[] }): { count: number; capacities: string[] } {
  const count = opts.uplinks ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > MAX_LAB_UPLINKS) {
    throw new Error(`uplinks must be a whole number from 1 to ${MAX_LAB_UPLINKS}`);
  }
  const capacities = opts.capacities ?? [];
  if (capacities.length > 1 && capacities.length !== count) {
    throw new Error(`give one capacity for all uplinks or one per uplink (${count}), not ${capacities.length}`);
  }
  capacities.forEach(parseRate);
  return { count, capacities };
}

/** Validates the options and computes the whole lab; touches nothing. */
function newLabState(opts: LabOptions): LabState {
  const name = checkLabName(opts.name);
  const { count, capacities } = checkUplinkCount(opts);
  for (const [option, list] of [['point-to-point', opts.pointToPoint], ['dhcp', opts.dhcp]] as const) {
    for (const k of list ?? []) {
      if (!Number.isInteger(k) || k < 1 || k > count) throw new Error(`${option}: no uplink ${k} (uplinks are 1..${count})`);
    }
  }
  const both = opts.dhcp?.find((k) => opts.pointToPoint?.includes(k));
  if (both !== undefined) throw new Error(`uplink ${both} cannot be both point-to-point and DHCP: the lab's DHCP serves an Ethernet /28`);
  const stateDir = stateDirOf(name);
  const isps = Array.from({ length: count }, (_, i) => namespaceOf(name, `isp${i + 1}`));
  return {
    name,
    stateDir,
    ...(opts.host ? { host: true } : {}),
    ns: { lan: namespaceOf(name, 'lan'), router: namespaceOf(name, 'router'), inet: namespaceOf(name, 'inet'), isps },
    lanIf: LAN.routerIf,
    lanAddress: LAN.routerAddress,
    lanHost: LAN.host,
    lanSources: [...LAN.sources],
    lanAddress6: LAN6.routerAddress,
    lanHost6: LAN6.host,
    lanSources6: [...LAN6.sources],
    uplinks: isps.map((ispNs, i) => {
      const wiring = uplinkWiring(i + 1);
      const wiring6 = uplinkWiring6(i + 1);
      const [first] = wiring.subnets;
      const capacity = capacities.length === 1 ? capacities[0] : capacities[i];
      const pointToPoint = opts.pointToPoint?.includes(i + 1) ?? false;
      const dhcp = opts.dhcp?.includes(i + 1) ?? false;
      const ra = !pointToPoint && i + 1 === RA_UPLINK;
      // A point-to-point uplink stays IPv4-only: on a veth, "every destination
      // on the link" would need the ISP to proxy neighbour discovery for the
      // whole internet. Its config says gateway6: off.
      const v6 = pointToPoint ? {} : {
        address6: wiring6.address, gateway6: ra ? wiring6.gatewayLinkLocal : wiring6.gateway,
        ...(ra ? { ra: { router: wiring6.gatewayLinkLocal } } : {}),
      };
      return {
        name: wiring.name, routerIf: wiring.routerIf, address: first.address, prefixLen: pointToPoint ? 32 : first.prefixLen,
        gateway: first.gateway, ispNs, capacity, ...(pointToPoint ? { pointToPoint } : {}), ...(dhcp ? { dhcp: {} } : {}), ...v6,
      };
    }),
    server: INTERNET.server,
    server6: INTERNET6.server,
    whoamiPort: INTERNET.whoamiPort,
    iperfPort: INTERNET.iperfPort,
    configPath: join(stateDir, 'uplinkd.yaml'),
    pids: [],
  };
}

export async function refuseIfTaken(name: string): Promise<void> {
  if (existsSync(stateDirOf(name)) || (await labNamespaces(name)).length > 0) {
    throw new Error(`lab '${name}' already exists; remove it first with \`uplinkd lab --name ${name} down\``);
  }
}

function allNamespaces(state: LabState): string[] {
  return [...(state.host ? [] : [state.ns.lan]), state.ns.router, state.ns.inet, ...state.ns.isps];
}

async function createNamespaces(state: LabState): Promise<void> {
  for (const ns of allNamespaces(state)) {
    await must(['ip', 'netns', 'add', ns]);
    await ip(ns, 'link', 'set', 'lo', 'up');
    await inNamespace(ns, 'sysctl', '-q', '-e', '-w', ...sysctlsFor(ns, state));
  }
}

/**
 * A new namespace copies its IPv4 settings from the host's, so every one that
 * matters is set explicitly: the lab behaves the same on every machine.
 * Set before any link exists, so every interface inherits the `default` ones.
 */
function sysctlsFor(ns: string, state: LabState): string[] {
  const router = ns === state.ns.router;
  return namespaceSysctls({ forwards: router || state.ns.isps.includes(ns), router });
}

/**
 * The sysctls of a new namespace. A router filters by reverse path loosely,
 * as systemd-based distributions ship it; the other nodes not at all (the
 * ISPs filter explicitly, in nft).
 */
export function namespaceSysctls(node: { forwards: boolean; router: boolean }): string[] {
  const { forwards } = node;
  const rpFilter = node.router ? 2 : 0;
  const v6 = (key: string, value: number) => [`net.ipv6.conf.all.${key}=${value}`, `net.ipv6.conf.default.${key}=${value}`];
  return [
    `net.ipv4.ip_forward=${forwards ? 1 : 0}`,
    `net.ipv4.conf.all.rp_filter=${rpFilter}`,
    `net.ipv4.conf.default.rp_filter=${rpFilter}`,
    ...v6('disable_ipv6', 0),
    ...v6('forwarding', forwards ? 1 : 0),
    // Router advertisements are taken only where the lab says so (the RA uplink, wireUplink6).
    ...v6('accept_ra', 0),
    // No duplicate address detection: the lab's links have no one else on
    // them, and an address is usable at once instead of tentative for a second.
    ...v6('accept_dad', 0),
    ...v6('dad_transmits', 0),
    ...v6('use_tempaddr', 0),
    // Link-local addresses as the kernel makes them (EUI-64); the lab fixes
    // them itself where a test names them (ISP fe80::1, router fe80::2).
    'net.ipv6.conf.default.addr_gen_mode=0',
    // An ISP's eth0 taken down (`lab fail --mode link`) keeps its addresses, as IPv4 does.
    ...v6('keep_addr_on_down', 1),
  ];
}

/** A veth pair: ifA in nsA, its peer ifB in nsB. */
export async function veth(nsA: string, ifA: string, nsB: string, ifB: string): Promise<void> {
  await ip(nsA, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB);
}

/** Gives an interface its addresses (CIDR) and brings it up. */
export async function configure(ns: string, ifname: string, ...cidrs: string[]): Promise<void> {
  for (const cidr of cidrs) await ip(ns, 'address', 'add', cidr, 'dev', ifname);
  await ip(ns, 'link', 'set', ifname, 'up');
}

async function wireLan(state: LabState): Promise<void> {
  const { lan, router } = state.ns;
  await veth(router, LAN.routerIf, lan, 'eth0');
  await configure(router, LAN.routerIf, `${LAN.routerAddress}/${LAN.prefixLen}`);
  await configure(lan, 'eth0', `${LAN.host}/${LAN.prefixLen}`);
  // The extra sources come after the host address, so that one stays primary
  // (the default source). In one batch: 64 `ip` runs would dominate `lab up`.
  const extra = LAN.sources.map((a) => `address add ${a}/${LAN.prefixLen} dev eth0\n`).join('');
  await must(['ip', '-n', lan, '-batch', '-'], { input: extra });
  await ip(lan, 'route', 'add', 'default', 'via', LAN.routerAddress);

  // IPv6: the LAN prefix, and for each IPv6 uplink a /64 of its routed
  // prefix (for nat6 none). The kernel lists the newest IPv6 address first
  // and prefers it among equals, so the host's own address goes in last to
  // be its default source.
  const routedLans = state.uplinks.flatMap((u, i) => (u.address6 ? [uplinkWiring6(i + 1).routedLan] : []));
  await configure(router, LAN.routerIf, `${LAN6.routerAddress}/${LAN6.prefixLen}`, ...routedLans.map((r) => `${r.router}/64`));
  const extra6 = [...LAN6.sources.map((a) => `${a}/${LAN6.prefixLen}`), ...routedLans.map((r) => `${r.host}/64`), `${LAN6.host}/${LAN6.prefixLen}`];
  await must(['ip', '-n', lan, '-batch', '-'], { input: extra6.map((cidr) => `address add ${cidr} dev eth0\n`).join('') });
  await ip(lan, '-6', 'route', 'add', 'default', 'via', LAN6.routerAddress);
}

/**
 * The whole of 192.0.2.0/24 is local to the inet namespace, so every address
 * in it answers and tests can pin traffic by destination. 192.0.2.10 is the
 * one real address, the source of its answers.
 */
export async function wireInternet(state: LabState): Promise<void> {
  await ip(state.ns.inet, 'address', 'add', `${INTERNET.server}/32`, 'dev', 'lo');
  await ip(state.ns.inet, 'route', 'add', 'local', INTERNET.prefix, 'dev', 'lo', 'table', 'local');
  // The same for IPv6: all of 2001:db8:ffff::/48, and the server 2001:db8:ffff::10.
  await ip(state.ns.inet, 'address', 'add', `${INTERNET6.server}/128`, 'dev', 'lo');
  await ip(state.ns.inet, '-6', 'route', 'add', 'local', INTERNET6.prefix, 'dev', 'lo', 'table', 'local');
}

async function wireUplink(state: LabState, k: number): Promise<void> {
  const { router, inet } = state.ns;
  const isp = state.ns.isps[k - 1];
  const { name, routerIf, metric, subnets } = uplinkWiring(k);
  const [first, second] = subnets;
  const w6 = uplinkWiring6(k);
  const u = state.uplinks[k - 1];

  // The customer link. The ISP holds the gateway of both customer subnets from
  // the start, like an access router serving many, so a renumber moves only
  // the customer and the ISP's anti-spoofing set.
  await veth(router, routerIf, isp, 'eth0');
  // Both ends get fixed link-local addresses (the ISP's is the RA uplink's next hop) instead of EUI-64 ones.
  await ip(router, 'link', 'set', routerIf, 'addrgenmode', 'none');
  await ip(isp, 'link', 'set', 'eth0', 'addrgenmode', 'none');
  const ispV6 = u.address6 ? [`${w6.gateway}/64`, `${w6.gatewayLinkLocal}/64`] : [];
  await configure(isp, 'eth0', `${first.gateway}/${first.prefixLen}`, `${second.gateway}/${second.prefixLen}`, ...ispV6);
  if (u.address6) await wireUplink6(state, k);
  if (u.pointToPoint) {
    // What pppd would install: the local address with the ISP as its peer,
    // and a default route on the link itself. On a veth the router then
    // ARPs for every destination, so the ISP answers for all it can route.
    await ip(router, 'address', 'add', first.address, 'peer', first.gateway, 'dev', routerIf);
    await ip(router, 'link', 'set', routerIf, 'up');
    await ip(router, 'route', 'add', 'default', 'dev', routerIf, 'metric', String(metric));
    await inNamespace(isp, 'sysctl', '-qw', 'net.ipv4.conf.eth0.proxy_arp=1');
  } else if (state.uplinks[k - 1].dhcp) {
    // Only the link: the DHCP client configures the rest (startDhcp).
    await ip(router, 'link', 'set', routerIf, 'up');
  } else {
    await configure(router, routerIf, `${first.address}/${first.prefixLen}`);
    // What the router's DHCP client would install for this uplink.
    await ip(router, 'route', 'add', 'default', 'via', first.gateway, 'dev', routerIf, 'metric', String(metric));
  }

  await wireTransit(state, k);
  // IPv6: the same, for everything of the customer's.
  await configure(isp, 'eth1', `${w6.transit.ispAddress}/${w6.transit.prefixLen}`);
  await configure(inet, name, `${w6.transit.inetAddress}/${w6.transit.prefixLen}`);
  await ip(isp, '-6', 'route', 'add', 'default', 'via', w6.transit.inetAddress);
  await ip(inet, '-6', 'route', 'add', w6.customer, 'via', w6.transit.ispAddress, 'src', INTERNET6.server);
  await routeDelegated(state, k);

  await nft(isp, ispRuleset(first.prefix, w6.customer, u.dhcp !== undefined));
}

/**
 * ISP k's own uplink into the internet, and the internet's way back to both
 * of the customer's subnets. Answers come from the server address, so a UDP
 * reply matches the request it answers.
 */
export async function wireTransit(state: LabState, k: number): Promise<void> {
  const isp = state.ns.isps[k - 1];
  const { inet } = state.ns;
  const { name, subnets, transit } = uplinkWiring(k);
  await veth(isp, 'eth1', inet, name);
  await configure(isp, 'eth1', `${transit.ispAddress}/${transit.prefixLen}`);
  await configure(inet, name, `${transit.inetAddress}/${transit.prefixLen}`);
  await ip(isp, 'route', 'add', 'default', 'via', transit.inetAddress);
  for (const s of subnets) await ip(inet, 'route', 'add', s.prefix, 'via', transit.ispAddress, 'src', INTERNET.server);
}

/**
 * The router's IPv6 on uplink k, before the link comes up: link-local
 * fe80::2, and either the static 2001:db8:k::2/64 with a main-table default
 * route via 2001:db8:k::1 (metric 100+k), or, on the RA uplink, what the
 * ISP's router advertisement gives (startRa): an address by SLAAC, made with
 * the token ::2 so it is 2001:db8:k::2 too, and a default route via fe80::1
 * with the same metric.
 */
async function wireUplink6(state: LabState, k: number): Promise<void> {
  const { router } = state.ns;
  const { routerIf, metric } = uplinkWiring(k);
  const w6 = uplinkWiring6(k);
  if (state.uplinks[k - 1].ra) {
    // accept_ra=2: with forwarding on, 1 would ignore the advertisement.
    await inNamespace(router, 'sysctl', '-q', '-w',
      `net.ipv6.conf.${routerIf}.accept_ra=2`, `net.ipv6.conf.${routerIf}.autoconf=1`,
      `net.ipv6.conf.${routerIf}.accept_ra_defrtr=1`, `net.ipv6.conf.${routerIf}.accept_ra_pinfo=1`,
      `net.ipv6.conf.${routerIf}.ra_defrtr_metric=${metric}`);
    await ip(router, 'token', 'set', '::2/64', 'dev', routerIf);
    await ip(router, 'address', 'add', `${w6.routerLinkLocal}/64`, 'dev', routerIf);
    return;
  }
  await ip(router, 'address', 'add', `${w6.routerLinkLocal}/64`, 'dev', routerIf);
  await ip(router, 'address', 'add', `${w6.address}/64`, 'dev', routerIf);
  await ip(router, 'link', 'set', routerIf, 'up');
  await ip(router, '-6', 'route', 'add', 'default', 'via', w6.gateway, 'dev', routerIf, 'metric', String(metric));
}

/**
 * The ISP routes the customer's delegated prefixes to the router's
 * link-local address. `replace`: heal re-adds them, since an interface taken
 * down loses every route through it, and its link-local address too
 * (keep_addr_on_down keeps only the global ones).
 */
async function routeDelegated(state: LabState, k: number): Promise<void> {
  const u = state.uplinks[k - 1];
  if (!u.address6) return;
  const w6 = uplinkWiring6(k);
  await ip(u.ispNs, 'address', 'replace', `${u.ra?.router ?? w6.gatewayLinkLocal}/64`, 'dev', 'eth0');
  for (const prefix of w6.routed) {
    await ip(u.ispNs, '-6', 'route', 'replace', prefix, 'via', w6.routerLinkLocal, 'dev', 'eth0');
  }
}

/**
 * The ISP's filter. Packets from the customer whose source is not the
 * customer's subnet are dropped and counted (BCP 38), as real ISPs do: it is
 * what makes a router that forgot to NAT, or NATed to the wrong uplink's
 * address, fail visibly instead of working by accident in the lab.
 * Faults are rules in two chains of their own, which heal simply flushes.
 */
export function ispRuleset(customerPrefix: string, customerPrefix6: string, dhcp: boolean): string {
  // A DHCP client speaks from 0.0.0.0 until it has a lease (its DISCOVER, and
  // the REQUEST of a reboot or rebind); the ISP's own server is where it goes.
  const dhcpIn = dhcp ? '\n    iifname "eth0" ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept' : '';
  // IPv6 (counted apart, as spoofed6): link-local sources (neighbour and
  // router discovery) and :: (MLD before a link-local exists) never leave the
  // link, so only the rest must be the customer's.
  return `
table inet lab {
  counter spoofed {}
  counter spoofed6 {}
  counter upstream {}
  counter upstream6 {}
  counter loss {}
  counter loss6 {}
  set customer { type ipv4_addr; flags interval; elements = { ${customerPrefix} } }
  set customer6 { type ipv6_addr; flags interval; elements = { ${customerPrefix6} } }
  chain link_fault {}
  chain upstream_fault {}
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;${dhcpIn}
    iifname "eth0" ip saddr != @customer counter name "spoofed" drop
    iifname "eth0" ip6 saddr != @customer6 ip6 saddr != { ::, fe80::/10 } counter name "spoofed6" drop
    jump link_fault
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump upstream_fault
  }
}
`;
}

/**
 * tbf on both directions of each uplink: the router's wan<k> shapes the upload,
 * the ISP's eth0 the download.
 * burst: 10 ms worth of the rate, at least 16 KiB. The bucket must hold what
 * arrives between two timer ticks (4 ms at HZ=250) plus a few full-size
 * packets, or tbf caps below its rate.
 * latency 50 ms: the longest a packet queues, a modest modem buffer; TCP can
 * fill the pipe, and queueing does not blur the failover timings.
 */
function tbf(rate: string): string[] {
  const burstBytes = Math.max(16 * 1024, Math.ceil((parseRate(rate) / 8) * 0.01));
  return ['tbf', 'rate', rate, 'burst', String(burstBytes), 'latency', '50ms'];
}

export async function limitCapacities(state: LabState): Promise<void> {
  const routers = state.pair ? state.pair.routers.map((r) => r.ns) : [state.ns.router];
  for (const u of state.uplinks) {
    if (!u.capacity) continue;
    for (const router of routers) await must(['tc', '-n', router, 'qdisc', 'replace', 'dev', u.routerIf, 'root', ...tbf(u.capacity)]);
    await must(['tc', '-n', u.ispNs, 'qdisc', 'replace', 'dev', 'eth0', 'root', ...tbf(u.capacity)]);
  }
}

// ---------------------------------------------------------------- servers

export async function startServers(state: LabState): Promise<void> {
  const { inet } = state.ns;
  const whoami = [...labProgram('whoami'), '--port', String(state.whoamiPort)];
  const iperf = ['iperf3', '-s', '-p', String(state.iperfPort)];
  const transfers = [...labProgram('transfers'), 'serve', '--host', state.server, '--port', String(INTERNET.transfersPort)];
  await waitListening(state, [
    startServer(state, inet, 'whoami', whoami, [`tcp:${state.whoamiPort}`, `udp:${state.whoamiPort}`]),
    startServer(state, inet, 'iperf3', iperf, [`tcp:${state.iperfPort}`]),
    startServer(state, inet, 'transfers', transfers, [`tcp:${INTERNET.transfersPort}`]),
  ]);
}

/**
 * Starts another whoami (TCP and UDP on `port`) in any node, e.g. a service on
 * the router for split-access tests, and waits until it listens. Returns its
 * pid; `labDown` stops it with everything else. A UDP answer from a socket on
 * 0.0.0.0 leaves from the address the route back prefers, not necessarily the
 * one asked: on a multihomed node, give `host` to answer UDP from that address.
 * The default `::` answers both families.
 */
export async function labWhoami(name: string, node: LabNode | string, port: number, host = '::'): Promise<number> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`port ${port} is not a port`);
  const state = loadLab(name);
  const argv = [...labProgram('whoami'), '--port', String(port), '--host', host];
  const server = startServer(state, namespaceOfNode(state, node), `whoami-${node}-${port}`, argv, [`tcp:${port}`, `udp:${port}`]);
  saveState(state);
  await waitListening(state, [server]);
  return server.pid;
}

interface Server {
  label: string;
  ns: string;
  pid: number;
  child: ChildProcess;
  /** proto:port that must be listening */
  sockets: string[];
}

/** Starts a server in a namespace, detached so it outlives `lab up`, logging to <stateDir>/<label>.log. */
export function startServer(state: LabState, ns: string, label: string, argv: string[], sockets: string[]): Server {
  const log = openSync(join(state.stateDir, `${label}.log`), 'a');
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.on('error', () => {}); // seen by waitListening as an exit before listening
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${label}`);
  state.pids.push(child.pid);
  return { label, ns, pid: child.pid, child, sockets };
}

export async function waitListening(state: LabState, servers: Server[], timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let waiting = servers;
  for (;;) {
    const notYet: Server[] = [];
    for (const s of waiting) {
      const listening = await listeningSockets(s.ns);
      if (s.sockets.every((sock) => listening.has(sock))) continue;
      if (s.child.exitCode !== null || s.child.signalCode !== null) {
        throw new Error(`${s.label} exited before listening: ${logTail(state, s.label)}`);
      }
      notYet.push(s);
    }
    if (notYet.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${notYet.map((s) => s.label).join(', ')} not listening after ${timeoutMs} ms`);
    waiting = notYet;
    await sleep(50);
  }
}

/** proto:port of every listening TCP and bound UDP socket in a namespace. */
async function listeningSockets(ns: string): Promise<Set<string>> {
  const out = await inNamespace(ns, 'ss', '-H', '-l', '-n', '-t', '-u');
  const sockets = new Set<string>();
  for (const line of out.split('\n')) {
    const [proto, , , , local] = line.trim().split(/\s+/);
    const port = local?.split(':').pop();
    if (proto && port) sockets.add(`${proto}:${port}`);
  }
  return sockets;
}

/** The telling line of a server's log: its last error (a node stack trace ends in noise), else its last line. */
function logTail(state: LabState, label: string): string {
  return fileTail(join(state.stateDir, `${label}.log`));
}

export function fileTail(path: string): string {
  let lines: string[] = [];
  try {
    lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim());
  } catch {
    // no log at all
  }
  return lines.filter((l) => /error/i.test(l)).at(-1) ?? lines.at(-1) ?? '(no output)';
}

// ---------------------------------------------------------------- DHCP uplinks

/** When a lease was seen in place, in epoch ms. */
export interface LeaseSeen {
  /** The new address first on the interface. */
  addressAt: number;
  /** Address and default route both there. */
  appliedAt: number;
}

/** Starts server and client of every DHCP uplink, then waits until each has applied its lease. */
async function startDhcp(state: LabState): Promise<void> {
  const dhcp = state.uplinks.map((u, i) => ({ u, k: i + 1 })).filter(({ u }) => u.dhcp);
  if (dhcp.length === 0) return;
  if (!existsSync(DHCPCD_DB_DIR)) throw new Error(`dhcp: needs dhcpcd and its ${DHCPCD_DB_DIR} (Debian package dhcpcd-base)`);
  for (const { u, k } of dhcp) {
    mkdirSync(clientDir(state.stateDir, u.name), { recursive: true });
    await startDhcpServer(state, u, subnetsAround(k, u.address).current);
    await startDhcpClient(state, u, k);
  }
  await Promise.all(dhcp.map(({ u, k }) => waitForLease(state, u, k, subnetsAround(k, u.address).current)));
}

function dhcpOf(u: LabUplink): LabDhcp {
  if (!u.dhcp) throw new Error(`${u.name} is not a DHCP uplink (lab up --dhcp ${u.name})`);
  return u.dhcp;
}

async function startDhcpServer(state: LabState, u: LabUplink, subnet: CustomerSubnet): Promise<void> {
  const server = startServer(state, u.ispNs, `dhcp-server-${u.name}`, dnsmasqArgv(state.stateDir, u.name, subnet), ['udp:67']);
  dhcpOf(u).serverPid = server.pid;
  await waitListening(state, [server]);
}

async function stopDhcpServer(state: LabState, u: LabUplink): Promise<void> {
  await stopServerOf(state, dhcpOf(u));
}

/** Stops the server recorded in `holder.serverPid` (a DHCP or RA dnsmasq) and forgets it. */
async function stopServerOf(state: LabState, holder: { serverPid?: number }): Promise<void> {
  const pid = holder.serverPid;
  if (pid === undefined) return;
  await stopPid(pid);
  state.pids = state.pids.filter((p) => p !== pid);
  delete holder.serverPid;
}

/**
 * dhcpcd in a private mount namespace (see dhcp.ts): a holder process
 * creates it, the lab mounts the client's directories into it, and the
 * client is started inside it.
 */
async function startDhcpClient(state: LabState, u: LabUplink, k: number): Promise<void> {
  const { router } = state.ns;
  const holder = startServer(state, router, `dhcp-mounts-${u.name}`, MOUNT_HOLDER_ARGV, []);
  dhcpOf(u).mountsPid = holder.pid;
  // Once it runs `sleep`, unshare has made the namespace: mounts go there, not to the host.
  await waitUntil(() => readProc(holder.pid, 'comm') === 'sleep\n', 5000, () => {
    if (holder.child.exitCode !== null || holder.child.signalCode !== null) {
      throw new Error(`${u.name}: the DHCP client's mount namespace: ${logTail(state, holder.label)}`);
    }
  });
  for (const argv of clientMounts(holder.pid, state.stateDir, u.name)) await must(argv);
  const client = startServer(state, router, `dhcp-client-${u.name}`, clientArgv(holder.pid, u.routerIf, uplinkWiring(k).metric), []);
  dhcpOf(u).clientPid = client.pid;
}

/** Tells the client to rebind now: it asks for its lease again, and a NAK sends it looking for a new one. */
function rebind(u: LabUplink): void {
  const pid = dhcpOf(u).clientPid;
  if (pid === undefined || !isAlive(pid)) throw new Error(`${u.name}: the DHCP client is not running`);
  process.kill(pid, 'SIGHUP');
}

/** Waits until the client has applied the lease of `subnet`; throws, with both logs, after LEASE_WITHIN_MS. */
async function waitForLease(state: LabState, u: LabUplink, k: number, subnet: CustomerSubnet): Promise<LeaseSeen> {
  const metric = uplinkWiring(k).metric;
  const deadline = Date.now() + LEASE_WITHIN_MS;
  let addressAt: number | undefined;
  for (;;) {
    const now = Date.now();
    const installed = await installedLease(state.ns.router, u.routerIf);
    const seen = leaseApplied(installed, subnet, metric);
    addressAt = seen.address ? (addressAt ?? now) : undefined;
    if (seen.address && seen.route) return { addressAt: addressAt!, appliedAt: now };
    const clientPid = dhcpOf(u).clientPid;
    const failed = clientPid === undefined || !isAlive(clientPid) ? 'the DHCP client exited' : now > deadline ? `no lease within ${LEASE_WITHIN_MS} ms` : undefined;
    if (failed) {
      throw new Error(
        `${u.name}: ${failed}: wanted ${subnet.address}/${subnet.prefixLen} via ${subnet.gateway} metric ${metric} on ${u.routerIf}, ` +
          `it has ${JSON.stringify(installed)}\n  client: ${fileTail(join(clientDir(state.stateDir, u.name), 'dhcpcd.log'))} ` +
          `${logTail(state, `dhcp-client-${u.name}`)}\n  server: ${logTail(state, `dhcp-server-${u.name}`)}`,
      );
    }
    await sleep(20);
  }
}

// ---------------------------------------------------------------- the RA uplink

/** Starts the RA uplink's advertisements and waits until the router has its SLAAC address and default route. */
async function startRa(state: LabState): Promise<void> {
  const k = state.uplinks.findIndex((u) => u.ra) + 1;
  if (k === 0) return;
  const u = state.uplinks[k - 1];
  mkdirSync(raDir(state.stateDir, u.name), { recursive: true });
  await startRaServer(state, u, k);
  await waitForRa(state, u, k, raOf(u).router);
}

function raOf(u: LabUplink): LabRa {
  if (!u.ra) throw new Error(`${u.name} does not learn IPv6 from router advertisements (only isp${RA_UPLINK} does)`);
  return u.ra;
}

/** `routerLifetimeS` 0: the advertisement says "no longer a default router", as a router going away sends it. */
async function startRaServer(state: LabState, u: LabUplink, k: number, routerLifetimeS?: number): Promise<void> {
  const argv = raArgv(state.stateDir, u.name, uplinkWiring6(k).prefix, routerLifetimeS);
  // dnsmasq sends router advertisements from a raw ICMPv6 socket, which ss does not list: nothing to wait for here.
  const server = startServer(state, u.ispNs, `ra-server-${u.name}`, argv, []);
  raOf(u).serverPid = server.pid;
}

async function stopRaServer(state: LabState, u: LabUplink): Promise<void> {
  await stopServerOf(state, raOf(u));
}

/**
 * Waits until the router has the SLAAC address on the RA uplink and a
 * default route via `router` learnt from the advertisement (`proto ra`);
 * throws, naming what is there and the server's log, after RA_WITHIN_MS.
 */
async function waitForRa(state: LabState, u: LabUplink, k: number, router: string): Promise<void> {
  const want = uplinkWiring6(k).address;
  const deadline = Date.now() + RA_WITHIN_MS;
  for (;;) {
    const seen = await installedRa(state.ns.router, u.routerIf);
    const address = seen.addresses.find((a) => a.address === want && a.dynamic);
    if (address && seen.defaults.some((r) => r.gateway === router && r.protocol === 'ra')) {
      u.address6 = address.address;
      u.gateway6 = router;
      return;
    }
    const pid = raOf(u).serverPid;
    const failed = pid === undefined || !isAlive(pid) ? 'dnsmasq (router advertisements) exited' : Date.now() > deadline ? `no router advertisement applied within ${RA_WITHIN_MS} ms` : undefined;
    if (failed) {
      throw new Error(
        `${u.name}: ${failed}: wanted ${want}/64 by SLAAC and a default route via ${router} proto ra on ${u.routerIf}, ` +
          `it has ${JSON.stringify(seen)}\n  server: ${logTail(state, `ra-server-${u.name}`)}`,
      );
    }
    await sleep(20);
  }
}

/**
 * The ISP replaces the router on the RA uplink: the old one says goodbye
 * (an advertisement with router lifetime 0, so the router drops its default
 * route at once), then the new one advertises from another link-local
 * address (fe80::1 and fe80::3 in turn). Resolves with the new next hop once
 * the router has its default route via it.
 */
export async function labRaMove(name: string, uplink: string): Promise<{ uplink: LabUplink; from: string; to: string; tookMs: number }> {
  const state = loadLab(name);
  const { u, k } = findUplink(state, uplink);
  const ra = raOf(u);
  const from = ra.router;
  const to = from === 'fe80::1' ? 'fe80::3' : 'fe80::1';
  const startedAt = Date.now();
  try {
    await stopRaServer(state, u);
    await startRaServer(state, u, k, 0);
    await waitUntilAsync(async () => !(await installedRa(state.ns.router, u.routerIf)).defaults.some((r) => r.gateway === from), RA_WITHIN_MS,
      `${u.name}: the router kept its default route via ${from} after a goodbye advertisement`);
    await stopRaServer(state, u);
    await ip(u.ispNs, 'address', 'add', `${to}/64`, 'dev', 'eth0');
    await ip(u.ispNs, 'address', 'delete', `${from}/64`, 'dev', 'eth0');
    ra.router = to;
    await startRaServer(state, u, k);
    await waitForRa(state, u, k, to);
  } finally {
    saveState(state);
  }
  return { uplink: u, from, to, tookMs: Date.now() - startedAt };
}

/** Polls an async `ready` every 20 ms; throws `message` after timeoutMs. */
async function waitUntilAsync(ready: () => Promise<boolean>, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`${message} (${timeoutMs} ms)`);
    await sleep(20);
  }
}

/**
 * Renumber on a DHCP uplink: the server now leases the other /28 (restarted
 * on it, with its old leases forgotten), and the client is told to rebind.
 * The authoritative server NAKs the old address; the client drops it, flushing
 * address and routes, and takes the new lease.
 */
async function renumberThroughDhcp(state: LabState, u: LabUplink, k: number, current: CustomerSubnet, next: CustomerSubnet): Promise<LeaseSeen & { tookMs: number }> {
  if (dhcpOf(u).serverPid === undefined) throw new Error(`${u.name}: its DHCP server is stopped; start it first (lab dhcp-start ${u.name})`);
  await stopDhcpServer(state, u);
  rmSync(serverLeaseFile(state.stateDir, u.name), { force: true });
  await startDhcpServer(state, u, next);
  const toldAt = Date.now();
  rebind(u);
  const seen = await waitForLease(state, u, k, next);
  return { ...seen, tookMs: seen.appliedAt - toldAt };
}

/**
 * Stops an uplink's DHCP server, so its lease runs out. Resolves with the
 * seconds the lease has left (as the kernel counts them down on the address),
 * after which the client drops address and routes.
 */
export async function labDhcpStop(name: string, uplink: string): Promise<{ uplink: LabUplink; leaseLeftS?: number }> {
  const state = loadLab(name);
  const { u } = findUplink(state, uplink);
  try {
    await stopDhcpServer(state, u);
  } finally {
    saveState(state);
  }
  const { validSeconds } = await installedLease(state.ns.router, u.routerIf);
  return { uplink: u, leaseLeftS: validSeconds };
}

/**
 * Starts an uplink's DHCP server again and tells the client to rebind, as a
 * modem coming back does (otherwise the client's next DISCOVER may be up to a
 * minute away). Resolves once the client applied the lease again.
 */
export async function labDhcpStart(name: string, uplink: string): Promise<LabUplink & LeaseSeen & { tookMs: number }> {
  const state = loadLab(name);
  const { u, k } = findUplink(state, uplink);
  const running = dhcpOf(u).serverPid;
  if (running !== undefined && isAlive(running)) throw new Error(`${u.name}: its DHCP server is running already`);
  const { current } = subnetsAround(k, u.address);
  try {
    await stopDhcpServer(state, u); // forgets a server that died on its own
    await startDhcpServer(state, u, current);
  } finally {
    saveState(state);
  }
  const toldAt = Date.now();
  rebind(u);
  const seen = await waitForLease(state, u, k, current);
  return { ...u, ...seen, tookMs: seen.appliedAt - toldAt };
}

/** The server's leases: address and MAC of each, from its lease file. */
export function labDhcpLeases(name: string, uplink: string): { address: string; mac: string; expires: number }[] {
  const state = loadLab(name);
  const { u } = findUplink(state, uplink);
  dhcpOf(u);
  let text = '';
  try {
    text = readFileSync(serverLeaseFile(state.stateDir, u.name), 'utf8');
  } catch {
    return [];
  }
  // dnsmasq's format: expiry (epoch s), MAC, address, hostname, client id.
  return text.split('\n').filter(Boolean).map((line) => {
    const [expires, mac, address] = line.split(' ');
    return { address, mac, expires: Number(expires) };
  });
}

export async function stopPid(pid: number): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    if (!isAlive(pid)) return;
    signalQuietly(pid, signal);
    for (let i = 0; i < 40 && isAlive(pid); i++) await sleep(50);
  }
}

function readProc(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** Polls `ready` every 10 ms; `check` may throw to give up early. */
async function waitUntil(ready: () => boolean, timeoutMs: number, check: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    check();
    if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms`);
    await sleep(10);
  }
}

// ---------------------------------------------------------------- lab down

/** Removes the lab, or whatever part of it exists; a lab that is not there is no error. */
export async function labDown(name: string): Promise<void> {
  checkLabName(name);
  const namespaces = await labNamespaces(name);
  // A namespace only really goes away once nothing runs in it; this also
  // covers the recorded server pids, and anything `lab exec` left behind.
  await stopProcessesIn(namespaces);
  for (const ns of namespaces) await must(['ip', 'netns', 'delete', ns]);
  rmSync(stateDirOf(name), { recursive: true, force: true });
  try {
    rmdirSync(STATE_ROOT); // the last lab out turns off the light
  } catch {
    // other labs still up, or already gone
  }
}

async function labNamespaces(name: string): Promise<string[]> {
  const pattern = labNamespacePattern(name);
  const out = await must(['ip', 'netns', 'list']);
  return out.split('\n').map((line) => line.split(' ')[0]).filter((ns) => pattern.test(ns));
}

async function stopProcessesIn(namespaces: string[]): Promise<void> {
  const pids: number[] = [];
  for (const ns of namespaces) {
    const out = await must(['ip', 'netns', 'pids', ns]);
    pids.push(...out.split('\n').filter(Boolean).map(Number));
  }
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const alive = pids.filter(isAlive);
    if (alive.length === 0) return;
    for (const pid of alive) signalQuietly(pid, signal);
    for (let i = 0; i < 40 && pids.some(isAlive); i++) await sleep(50);
  }
}

export function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Running, and not merely a zombie waiting for its parent. */
export function isAlive(pid: number | string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- state

export function loadLab(name: string): LabState {
  checkLabName(name);
  const file = join(stateDirOf(name), 'state.json');
  if (!existsSync(file)) throw new Error(`no lab '${name}' (start one with \`uplinkd lab --name ${name} up\`)`);
  return JSON.parse(readFileSync(file, 'utf8')) as LabState;
}

/** Adds a process to the lab's record, read afresh so a concurrent change to the state is kept; `lab down` stops it. */
export function labRecordPid(name: string, pid: number): void {
  const state = loadLab(name);
  state.pids.push(pid);
  saveState(state);
}

export function saveState(state: LabState): void {
  const file = join(state.stateDir, 'state.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}

export function namespaceOfNode(state: LabState, node: string): string {
  if (state.pair) {
    const router = state.pair.routers.find((r) => r.name === node);
    if (router) return router.ns;
    if (node === 'router') throw new Error(`lab ${state.name} is a router pair (lab up --pair): name a router, r1 or r2`);
  }
  if (node === 'lan' && state.host) throw new Error(`lab ${state.name} is a multihomed host (lab up --host): it has no 'lan' node; its machine is 'router'`);
  if (node === 'lan' || node === 'router' || node === 'inet') return state.ns[node];
  const isp = /^isp([1-9])$/.exec(node);
  const ns = isp ? state.ns.isps[Number(isp[1]) - 1] : undefined;
  const routers = state.pair ? state.pair.routers.map((r) => r.name).join(', ') : 'router';
  if (!ns) throw new Error(`no node '${node}' in lab ${state.name}: lan, ${routers}, inet or isp1..isp${state.ns.isps.length}`);
  return ns;
}

function findUplink(state: LabState, uplink: string): { u: LabUplink; k: number } {
  const i = state.uplinks.findIndex((u) => u.name === uplink || u.routerIf === uplink);
  if (i < 0) throw new Error(`no uplink '${uplink}' in lab ${state.name}: ${state.uplinks.map((u) => u.name).join(', ')}`);
  return { u: state.uplinks[i], k: i + 1 };
}

// ---------------------------------------------------------------- using the lab

/** Runs argv inside a node of the lab: lan, router, inet, isp1..N. Resolves whatever the exit code. */
export async function labExec(name: string, node: LabNode | string, argv: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const ns = namespaceOfNode(loadLab(name), node);
  return runCommand(['ip', 'netns', 'exec', ns, ...argv], opts);
}

/** Runs the lab's traffic client (see client.ts) in a node and returns its tally. */
export async function labClient(name: string, node: LabNode | string, args: string[], opts: CommandOptions = {}): Promise<ClientResult> {
  const r = await labExec(name, node, [...labProgram('client'), ...args], opts);
  if (r.code !== 0) throw new Error(`client ${args.join(' ')} in ${node} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as ClientResult;
}

export type LabCounter = 'spoofed' | 'upstream' | 'loss' | 'spoofed6' | 'upstream6' | 'loss6';

/**
 * The ISP's counters, in packets: spoofed (anti-spoofing drops), upstream and
 * loss (fault drops), for IPv4; the same with a 6 for IPv6.
 */
export async function labCounters(name: string, uplink: string): Promise<Record<LabCounter, number>> {
  const { u } = findUplink(loadLab(name), uplink);
  const out = await inNamespace(u.ispNs, 'nft', '-j', 'list', 'counters', 'table', 'inet', 'lab');
  const counters = { spoofed: 0, upstream: 0, loss: 0, spoofed6: 0, upstream6: 0, loss6: 0 };
  for (const item of (JSON.parse(out) as { nftables: { counter?: { name: string; packets: number } }[] }).nftables) {
    if (item.counter && item.counter.name in counters) counters[item.counter.name as keyof typeof counters] = item.counter.packets;
  }
  return counters;
}

/**
 * Breaks an uplink, one fault at a time:
 * - link: the ISP's side of the cable goes down; the router's wan<k> loses carrier.
 * - upstream: the ISP stops forwarding; its gateway address still answers pings.
 * - loss:N%: the ISP drops N% of the packets it receives, in both directions
 *   (nft numgen: this kernel has no netem).
 * `family` limits upstream and loss to IPv4 or IPv6 (rules matching only that
 * family, counted in upstream/loss or upstream6/loss6); default both. A link
 * carries both, so it cannot fail for one.
 */
export async function labFail(name: string, uplink: string, mode: LabFault | string, family?: LabFamily | string): Promise<void> {
  const state = loadLab(name);
  const { u, k } = findUplink(state, uplink);
  const fault = checkFault(mode);
  const only = family === undefined ? undefined : checkFamily(family);
  if (fault === 'link' && only) throw new Error(`--family ${only} does not go with --mode link: a link carries both families; fail upstream or loss:N% for one`);
  const families = only ? [only] : LAB_FAMILIES;
  await clearFaults(state, k);
  if (fault === 'link') await ip(u.ispNs, 'link', 'set', 'eth0', 'down');
  else if (fault === 'upstream') {
    await nft(u.ispNs, families.map((f) => `add rule inet lab upstream_fault meta nfproto ${f} counter name "${counterOf('upstream', f)}" drop\n`).join(''));
  } else {
    const basisPoints = Math.round(Number(fault.slice(5, -1)) * 100);
    const share = basisPoints < 10000 ? `numgen random mod 10000 < ${basisPoints} ` : '';
    // Neighbour and router discovery pass, as ARP (which no inet hook sees)
    // does for IPv4: the loss is of traffic, not of the neighbours.
    const nd = 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } return\n';
    await nft(u.ispNs, (families.includes('ipv6') ? `add rule inet lab link_fault ${nd}` : '') +
      families.map((f) => `add rule inet lab link_fault meta nfproto ${f} ${share}counter name "${counterOf('loss', f)}" drop\n`).join(''));
  }
  u.fault = fault;
  if (only) u.faultFamily = only;
  else delete u.faultFamily;
  saveState(state);
}

function counterOf(what: 'upstream' | 'loss', family: LabFamily): LabCounter {
  return family === 'ipv4' ? what : `${what}6`;
}

function checkFamily(family: string): LabFamily {
  if (family === 'ipv4' || family === 'ipv6') return family;
  throw new Error(`family '${family}' must be ipv4 or ipv6 (or left out: both)`);
}

function checkFault(mode: string): LabFault {
  if (mode === 'link' || mode === 'upstream') return mode;
  const loss = /^loss:(\d+(?:\.\d+)?)%$/.exec(mode);
  if (loss && Number(loss[1]) > 0 && Number(loss[1]) <= 100) return mode as LabFault;
  throw new Error(`fault mode '${mode}' must be link, upstream or loss:N% (0 < N <= 100)`);
}

/** Undoes any fault, whichever it was. */
export async function labHeal(name: string, uplink: string): Promise<void> {
  const state = loadLab(name);
  const { u, k } = findUplink(state, uplink);
  await clearFaults(state, k);
  delete u.fault;
  delete u.faultFamily;
  saveState(state);
}

async function clearFaults(state: LabState, k: number): Promise<void> {
  const u = state.uplinks[k - 1];
  await ip(u.ispNs, 'link', 'set', 'eth0', 'up');
  await routeDelegated(state, k);
  await nft(u.ispNs, 'flush chain inet lab link_fault\nflush chain inet lab upstream_fault\n');
}

/** A renumbered uplink, and how long the move took. */
export type LabRenumbered = LabUplink & LeaseSeen & {
  /** From telling the client to rebind (by hand: the first change) until address and default route were in place. */
  tookMs: number;
};

/**
 * A DHCP renew that brings a new lease: the uplink moves to its other /28
 * (198.51.100.128+16(k-1)/28), and back on the next renumber. The ISP accepts
 * the new subnet before the move and forgets the old one after it.
 * On a DHCP uplink the real server and client do it (renumberThroughDhcp).
 * Otherwise it is done as a DHCP client does it: add the new address, move the
 * default route (same metric), drop the old address.
 */
export async function labRenumber(name: string, uplink: string): Promise<LabRenumbered> {
  const state = loadLab(name);
  const { u, k } = findUplink(state, uplink);
  if (u.pointToPoint) throw new Error(`${u.name} is point-to-point; renumber models a DHCP renew on an Ethernet uplink`);
  if (state.pair) throw new Error(`lab ${state.name} is a router pair: its uplinks' addresses are VRRP addresses, which a DHCP renew does not move`);
  const { current, next } = subnetsAround(k, u.address);
  await nft(u.ispNs, `add element inet lab customer { ${next.prefix} }\n`);
  let moved: LeaseSeen & { tookMs: number };
  if (u.dhcp) {
    try {
      moved = await renumberThroughDhcp(state, u, k, current, next);
    } finally {
      saveState(state); // the server's new pid, also when the client failed to follow
    }
  } else {
    const startedAt = Date.now();
    const metric = String(uplinkWiring(k).metric);
    await ip(state.ns.router, 'address', 'add', `${next.address}/${next.prefixLen}`, 'dev', u.routerIf);
    const addressAt = Date.now();
    await ip(state.ns.router, 'route', 'replace', 'default', 'via', next.gateway, 'dev', u.routerIf, 'metric', metric);
    await ip(state.ns.router, 'address', 'delete', `${current.address}/${current.prefixLen}`, 'dev', u.routerIf);
    moved = { addressAt, appliedAt: Date.now(), tookMs: Date.now() - startedAt };
  }
  await nft(u.ispNs, `delete element inet lab customer { ${current.prefix} }\n`);
  Object.assign(u, { address: next.address, gateway: next.gateway, prefixLen: next.prefixLen });
  saveState(state);
  return { ...u, ...moved };
}

/** A short human summary: addresses, servers, how to get in. */
/** The internet node's line of a lab's summary: its servers. */
export function describeInternet(state: LabState): string {
  return `  inet    ${INTERNET.prefix}: whoami ${state.server}:${state.whoamiPort} (tcp, udp), iperf3 ${state.server}:${state.iperfPort}, ` +
    `transfers ${state.server}:${INTERNET.transfersPort}`;
}

export function describeLab(state: LabState): string {
  const cli = `uplinkd lab --name ${state.name}`;
  const last = state.lanSources[state.lanSources.length - 1];
  const dhcpUplink = state.uplinks.find((u) => u.dhcp);
  return [
    `lab ${state.name}: ${state.uplinks.length} uplink(s), namespaces ul-${state.name}-*`,
    ...(state.host
      ? [`  router  a multihomed host (no LAN); uplinkd gives its unbound connections the source ${HOST_SOURCE} on lo`]
      : [`  lan     ${state.lanHost}/24 on eth0 (+ sources ${state.lanSources[0]}-${last.split('.')[3]}), default via ${state.lanAddress}`,
        `          ${state.lanHost6}/64 (+ sources ${state.lanSources6[0]}-${state.lanSources6.at(-1)!.split(':').pop()}` +
          ` and 2001:db8:k:200::2/64 per IPv6 uplink), default via ${state.lanAddress6}`,
        `  router  ${state.lanIf} ${state.lanAddress}/24, ${state.lanAddress6}/64 (+ 2001:db8:k:200::1/64)`]),
    ...state.uplinks.map((u, i) =>
      `          ${u.routerIf} ${u.address}/${u.prefixLen} via ${u.gateway} metric ${uplinkWiring(i + 1).metric} -> ${u.name}` +
      (u.capacity ? `, ${u.capacity}` : '') + (u.dhcp ? dhcpSummary(u) : '') +
      (u.fault ? `, FAULT ${u.fault}${u.faultFamily ? ` (${u.faultFamily} only)` : ''}` : '') +
      `\n            ${u.address6 ? `${u.address6}/64 via ${u.gateway6}${u.ra ? raSummary(u) : ''}` : 'no IPv6 (point-to-point)'}`,
    ),
    describeInternet(state),
    `          ${INTERNET6.prefix}: whoami and iperf3 on [${state.server6}] too`,
    `  config  ${state.configPath}`,
    `  try     ${cli} exec ${state.host ? 'router' : 'lan'} -- curl -s http://${state.server}:${state.whoamiPort}/`,
    `          ${cli} fail isp1 --mode upstream [--family ipv6] | heal isp1 | renumber isp1 | down`,
    ...(dhcpUplink ? [`          ${cli} renumber ${dhcpUplink.name} | dhcp-stop ${dhcpUplink.name} | dhcp-start ${dhcpUplink.name}`] : []),
  ].join('\n');
}

function raSummary(u: LabUplink): string {
  return u.ra?.serverPid === undefined ? ' (router advertisements STOPPED)' : ` (SLAAC and default route from dnsmasq's router advertisements in ${u.name})`;
}

function dhcpSummary(u: LabUplink): string {
  const server = u.dhcp?.serverPid === undefined ? 'server STOPPED, the lease runs out' : `leased by dnsmasq in ${u.name}`;
  return `, DHCP (${server}; dhcpcd on ${u.routerIf})`;
}
