// A lab uplink addressed by real DHCP (README "The lab"): dnsmasq in the ISP's
// namespace serves the one customer address of the current /28, and dhcpcd on
// the router's wan<k> configures address, prefix route and default route
// itself, as on a cable or LTE line. This module only computes the commands
// and reads what the client installed; lab.ts runs them and tracks the pids.
// The same for IPv6 router advertisements on the RA uplink: another dnsmasq
// in the ISP advertises the customer /64, and the router's own kernel takes
// its address (SLAAC) and default route from them.
//
// What keeps both off the host:
// - dnsmasq: no DNS (--port=0), no config file, no resolv.conf or hosts
//   reading, logging to stderr (the lab's log file), lease and pid file in the
//   lab's state directory.
// - dhcpcd: no hook script (/bin/true), so no resolv.conf, hostname or NTP
//   changes, and logging to a file instead of syslog. Its lease and run
//   directories are compiled in (/var/lib/dhcpcd, /run/dhcpcd), so it runs in
//   a private mount namespace of its own: the uplink's client directory in the
//   lab's state directory is bound over /var/lib/dhcpcd and a fresh tmpfs
//   covers /run. Both disappear with the namespace when the client stops.

import { join } from 'node:path';
import { numberToIpv4, prefixMask } from '../config/ipv4.js';
import { ip } from './run.js';
import type { CustomerSubnet } from './topology.js';

/**
 * The lease the lab's servers give: dnsmasq's minimum (it rounds anything
 * shorter up to two minutes). It bounds how long a lost lease takes to expire.
 */
export const LEASE_TIME = '2m';

/** How long `lab up`, `renumber` and `dhcp-start` wait for the client to apply a lease. */
export const LEASE_WITHIN_MS = 10_000;

/** dhcpcd's lease directory, compiled in; the lab binds its own directory over it. */
export const DHCPCD_DB_DIR = '/var/lib/dhcpcd';

/** Where one uplink's DHCP files live, inside the lab's state directory. */
export function dhcpDir(stateDir: string, uplink: string): string {
  return join(stateDir, `dhcp-${uplink}`);
}

/** The directory bound over /var/lib/dhcpcd in the client's mount namespace. */
export function clientDir(stateDir: string, uplink: string): string {
  return join(dhcpDir(stateDir, uplink), 'client');
}

export function serverLeaseFile(stateDir: string, uplink: string): string {
  return join(dhcpDir(stateDir, uplink), 'server.leases');
}

function netmask(prefixLen: number): string {
  return numberToIpv4(prefixMask(prefixLen));
}

/** dnsmasq in the foreground on the ISP's eth0, serving nothing of the host's (see the top of this file). */
const DNSMASQ_ON_ETH0 = [
  'dnsmasq',
  '--keep-in-foreground',
  '--conf-file=/dev/null',
  '--port=0', // DHCP or RA only: no DNS server, so nothing of the host's resolver is read or served
  '--no-resolv',
  '--no-hosts',
  '--interface=eth0',
  '--except-interface=lo',
  '--bind-interfaces',
];

/** dnsmasq in the foreground on the ISP's eth0, leasing exactly `subnet.address` with `subnet.gateway` as router. */
export function dnsmasqArgv(stateDir: string, uplink: string, subnet: CustomerSubnet): string[] {
  const dir = dhcpDir(stateDir, uplink);
  return [
    ...DNSMASQ_ON_ETH0,
    `--dhcp-range=${subnet.address},${subnet.address},${netmask(subnet.prefixLen)},${LEASE_TIME}`,
    `--dhcp-option=option:router,${subnet.gateway}`,
    // A client asking for an address of the other /28 (after a renumber) is
    // told NAK at once, instead of being ignored until its lease runs out.
    '--dhcp-authoritative',
    // dnsmasq pings an address before offering it, which costs 3 s; the lab's
    // one address is the customer's, so the ping can only delay.
    '--no-ping',
    `--dhcp-leasefile=${serverLeaseFile(stateDir, uplink)}`,
    `--pid-file=${join(dir, 'server.pid')}`,
    '--log-facility=-',
    '--log-dhcp',
  ];
}

/**
 * dhcpcd in the foreground for one interface, IPv4 only, installing its
 * default route with the lab's metric. No ARP probing or initial delay: the
 * lab's link has no one else on it, and both would only slow renumbers down.
 * SIGHUP makes it rebind at once (lab renumber, dhcp-start).
 */
export function dhcpcdArgv(ifname: string, metric: number): string[] {
  return [
    'dhcpcd',
    '--nobackground',
    '--ipv4only',
    '--config', '/dev/null',
    '--script', '/bin/true',
    '--logfile', join(DHCPCD_DB_DIR, 'dhcpcd.log'),
    '--quiet',
    '--metric', String(metric),
    '--noarp',
    '--noipv4ll',
    '--nodelay',
    '--timeout', '0', // keep trying for ever, as a router's client does
    ifname,
  ];
}

/** The holder of the client's private mount namespace: it only sleeps, so the namespace outlives each command. */
export const MOUNT_HOLDER_ARGV = ['unshare', '--mount', '--propagation', 'private', 'sleep', 'infinity'];

/**
 * The mounts that give dhcpcd its private directories, run into the holder's
 * mount namespace. `-n`: no /run/mount/utab entry (it would be written to the
 * host's /run before the tmpfs covers it).
 */
export function clientMounts(holderPid: number, stateDir: string, uplink: string): string[][] {
  const into = ['nsenter', '--target', String(holderPid), '--mount', '--'];
  return [
    [...into, 'mount', '-n', '--bind', clientDir(stateDir, uplink), DHCPCD_DB_DIR],
    [...into, 'mount', '-n', '-t', 'tmpfs', '-o', 'mode=0755,size=1m', 'uplinkd-lab', '/run'],
  ];
}

/** dhcpcd, started inside the holder's mount namespace (the network namespace is the router's already). */
export function clientArgv(holderPid: number, ifname: string, metric: number): string[] {
  return ['nsenter', '--target', String(holderPid), '--mount', '--', ...dhcpcdArgv(ifname, metric)];
}

export interface InstalledLease {
  /** Addresses on the interface, CIDR. */
  addresses: string[];
  /** The main-table default routes on the interface. */
  defaults: { gateway?: string; metric: number }[];
  /** Seconds the kernel keeps the address (the lease's remaining time), if dynamic. */
  validSeconds?: number;
}

/** What the DHCP client installed on `ifname` in namespace `ns`, as the kernel shows it. */
export async function installedLease(ns: string, ifname: string): Promise<InstalledLease> {
  const [addrs, routes] = await Promise.all([
    ip(ns, '-j', '-4', 'address', 'show', 'dev', ifname),
    ip(ns, '-j', '-4', 'route', 'show', 'table', 'main', 'default', 'dev', ifname),
  ]);
  type AddrJson = { addr_info?: { local: string; prefixlen: number; valid_life_time?: number }[] };
  const info = (JSON.parse(addrs) as AddrJson[]).flatMap((l) => l.addr_info ?? []);
  const valid = info.map((a) => a.valid_life_time).find((t) => t !== undefined && t < 0xffffffff);
  return {
    addresses: info.map((a) => `${a.local}/${a.prefixlen}`),
    defaults: (JSON.parse(routes) as { gateway?: string; metric?: number }[]).map((r) => ({ gateway: r.gateway, metric: r.metric ?? 0 })),
    ...(valid !== undefined ? { validSeconds: valid } : {}),
  };
}

/** The lease for `subnet` is in place: its address on the interface and its default route with `metric`. */
export function leaseApplied(installed: InstalledLease, subnet: CustomerSubnet, metric: number): { address: boolean; route: boolean } {
  return {
    address: installed.addresses.includes(`${subnet.address}/${subnet.prefixLen}`),
    route: installed.defaults.some((r) => r.gateway === subnet.gateway && r.metric === metric),
  };
}

// ------------------------------------------------------------ router advertisements (the RA uplink)

/** How long `lab up` and `ra-move` wait for the router to apply an advertisement. */
export const RA_WITHIN_MS = 5_000;

/**
 * Seconds between advertisements, and how long each makes the sender the
 * default router. Short, so a lost or changed router shows within a minute,
 * as in tests that follow it; dnsmasq sends a few at once when it starts.
 */
export const RA_INTERVAL_S = 3;
export const RA_ROUTER_LIFETIME_S = 60;

/** Where the RA server's files live, inside the lab's state directory. */
export function raDir(stateDir: string, uplink: string): string {
  return join(stateDir, `ra-${uplink}`);
}

/**
 * dnsmasq advertising `prefix` (a /64) on the ISP's eth0 for SLAAC
 * (`ra-only`: no DHCPv6), with itself (its link-local address) as the
 * default router for `routerLifetimeS`; 0 is the goodbye of a router going away.
 */
export function raArgv(stateDir: string, uplink: string, prefix: string, routerLifetimeS = RA_ROUTER_LIFETIME_S): string[] {
  const dir = raDir(stateDir, uplink);
  const [network, length] = prefix.split('/');
  return [
    ...DNSMASQ_ON_ETH0,
    '--enable-ra',
    `--dhcp-range=${network},ra-only,${length},10m`,
    `--ra-param=eth0,${RA_INTERVAL_S},${routerLifetimeS}`,
    `--dhcp-leasefile=${join(dir, 'leases')}`,
    `--pid-file=${join(dir, 'ra.pid')}`,
    '--log-facility=-',
  ];
}

export interface InstalledRa {
  /** Global IPv6 addresses on the interface; dynamic: with a lifetime, as SLAAC gives it. */
  addresses: { address: string; prefixLen: number; dynamic: boolean }[];
  /** The main-table IPv6 default routes on the interface, with the protocol that installed them (ra, static, ...). */
  defaults: { gateway?: string; protocol?: string; metric: number }[];
}

/** What the kernel took from router advertisements on `ifname` in namespace `ns` (and anything else of IPv6 there). */
export async function installedRa(ns: string, ifname: string): Promise<InstalledRa> {
  const [addrs, routes] = await Promise.all([
    ip(ns, '-j', '-6', 'address', 'show', 'dev', ifname, 'scope', 'global'),
    ip(ns, '-j', '-6', 'route', 'show', 'table', 'main', 'default', 'dev', ifname),
  ]);
  type AddrJson = { addr_info?: { local: string; prefixlen: number; dynamic?: boolean }[] };
  type RouteJson = { gateway?: string; protocol?: string; metric?: number };
  return {
    addresses: (JSON.parse(addrs) as AddrJson[]).flatMap((l) => l.addr_info ?? [])
      .map((a) => ({ address: a.local, prefixLen: a.prefixlen, dynamic: a.dynamic === true })),
    defaults: (JSON.parse(routes) as RouteJson[]).map((r) => ({ gateway: r.gateway, protocol: r.protocol, metric: r.metric ?? 0 })),
  };
}
