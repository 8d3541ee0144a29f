// The lab: a whole multi-uplink network built out of network namespaces on one
// machine, for the demo, the integration tests and the benchmarks.
//
//   lan (198.18.0.2) ── router ──wan<k>── isp<k> ── inet (192.0.2.0/24, whoami, iperf3)
//
// The router is set up the way a plain Linux router with DHCP uplinks is: one
// main-table default route per uplink (metric 100+k), forwarding on, and
// nothing else. No policy routing, marks or NAT: that is uplinkd's job, and
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
  clientArgv, clientDir, clientMounts, DHCPCD_DB_DIR, dnsmasqArgv, installedLease, LEASE_WITHIN_MS, leaseApplied,
  MOUNT_HOLDER_ARGV, serverLeaseFile,
} from './dhcp.js';
import { runCommand, type CommandOptions, type CommandResult } from '../kernel/runner.js';
import { inNamespace, ip, labProgram, must, nft } from './run.js';
import {
  HOST_SOURCE,
  INTERNET, LAN, MAX_LAB_UPLINKS, checkLabName, labNamespacePattern, namespaceOf, parseRate, subnetsAround, uplinkWiring,
  type CustomerSubnet, type LabNode,
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
  /** Addressed by real DHCP; address, prefixLen and gateway are what the lab's server leases. */
  dhcp?: LabDhcp;
}

export interface LabState {
  name: string;
  stateDir: string;
  /** Built with `host` (LabOptions): there is no 'lan' node. */
  host?: boolean;
  ns: { lan: string; router: string; inet: string; isps: string[] };
  lanIf: 'lan0';
  lanAddress: '198.18.0.1';
  lanHost: '198.18.0.2';
  lanSources: string[];
  uplinks: LabUplink[];
  server: string;
  whoamiPort: number;
  iperfPort: number;
  configPath: string;
  pids: number[];
}

const STATE_ROOT = '/run/uplinkd-lab';

function stateDirOf(name: string): string {
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
    writeFileSync(state.configPath, labUpConfig(state));
    await startServers(state);
    saveState(state);
    return state;
  } catch (err) {
    await labDown(state.name);
    throw err;
  }
}

/** Validates the options and computes the whole lab; touches nothing. */
function newLabState(opts: LabOptions): LabState {
  const name = checkLabName(opts.name);
  const count = opts.uplinks ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > MAX_LAB_UPLINKS) {
    throw new Error(`uplinks must be a whole number from 1 to ${MAX_LAB_UPLINKS}`);
  }
  const capacities = opts.capacities ?? [];
  if (capacities.length > 1 && capacities.length !== count) {
    throw new Error(`give one capacity for all uplinks or one per uplink (${count}), not ${capacities.length}`);
  }
  capacities.forEach(parseRate);
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
    uplinks: isps.map((ispNs, i) => {
      const wiring = uplinkWiring(i + 1);
      const [first] = wiring.subnets;
      const capacity = capacities.length === 1 ? capacities[0] : capacities[i];
      const pointToPoint = opts.pointToPoint?.includes(i + 1) ?? false;
      const dhcp = opts.dhcp?.includes(i + 1) ?? false;
      return {
        name: wiring.name, routerIf: wiring.routerIf, address: first.address, prefixLen: pointToPoint ? 32 : first.prefixLen,
        gateway: first.gateway, ispNs, capacity, ...(pointToPoint ? { pointToPoint } : {}), ...(dhcp ? { dhcp: {} } : {}),
      };
    }),
    server: INTERNET.server,
    whoamiPort: INTERNET.whoamiPort,
    iperfPort: INTERNET.iperfPort,
    configPath: join(stateDir, 'uplinkd.yaml'),
    pids: [],
  };
}

async function refuseIfTaken(name: string): Promise<void> {
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
 */
function sysctlsFor(ns: string, state: LabState): string[] {
  const forwards = ns === state.ns.router || state.ns.isps.includes(ns);
  // The router filters by reverse path loosely, as systemd-based distributions
  // ship it; the other nodes not at all (the ISPs filter explicitly, in nft).
  const rpFilter = ns === state.ns.router ? 2 : 0;
  return [
    `net.ipv4.ip_forward=${forwards ? 1 : 0}`,
    `net.ipv4.conf.all.rp_filter=${rpFilter}`,
    `net.ipv4.conf.default.rp_filter=${rpFilter}`,
    // IPv4 only: no router solicitations or DAD noise in captures and counters.
    'net.ipv6.conf.all.disable_ipv6=1',
    'net.ipv6.conf.default.disable_ipv6=1',
  ];
}

/** A veth pair: ifA in nsA, its peer ifB in nsB. */
async function veth(nsA: string, ifA: string, nsB: string, ifB: string): Promise<void> {
  await ip(nsA, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB);
}

/** Gives an interface its addresses (CIDR) and brings it up. */
async function configure(ns: string, ifname: string, ...cidrs: string[]): Promise<void> {
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
}

/**
 * The whole of 192.0.2.0/24 is local to the inet namespace, so every address
 * in it answers and tests can pin traffic by destination. 192.0.2.10 is the
 * one real address, the source of its answers.
 */
async function wireInternet(state: LabState): Promise<void> {
  await ip(state.ns.inet, 'address', 'add', `${INTERNET.server}/32`, 'dev', 'lo');
  await ip(state.ns.inet, 'route', 'add', 'local', INTERNET.prefix, 'dev', 'lo', 'table', 'local');
}

async function wireUplink(state: LabState, k: number): Promise<void> {
  const { router, inet } = state.ns;
  const isp = state.ns.isps[k - 1];
  const { name, routerIf, metric, subnets, transit } = uplinkWiring(k);
  const [first, second] = subnets;

  // The customer link. The ISP holds the gateway of both customer subnets from
  // the start, like an access router serving many, so a renumber moves only
  // the customer and the ISP's anti-spoofing set.
  await veth(router, routerIf, isp, 'eth0');
  await configure(isp, 'eth0', `${first.gateway}/${first.prefixLen}`, `${second.gateway}/${second.prefixLen}`);
  if (state.uplinks[k - 1].pointToPoint) {
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

  // The ISP's own uplink into the internet.
  await veth(isp, 'eth1', inet, name);
  await configure(isp, 'eth1', `${transit.ispAddress}/${transit.prefixLen}`);
  await configure(inet, name, `${transit.inetAddress}/${transit.prefixLen}`);
  await ip(isp, 'route', 'add', 'default', 'via', transit.inetAddress);
  // The way back to both customer subnets. Answers come from the server
  // address, so a UDP reply matches the request it answers.
  for (const s of subnets) await ip(inet, 'route', 'add', s.prefix, 'via', transit.ispAddress, 'src', INTERNET.server);

  await nft(isp, ispRuleset(first.prefix, state.uplinks[k - 1].dhcp !== undefined));
}

/**
 * The ISP's filter. Packets from the customer whose source is not the
 * customer's subnet are dropped and counted (BCP 38), as real ISPs do: it is
 * what makes a router that forgot to NAT, or NATed to the wrong uplink's
 * address, fail visibly instead of working by accident in the lab.
 * Faults are rules in two chains of their own, which heal simply flushes.
 */
function ispRuleset(customerPrefix: string, dhcp: boolean): string {
  // A DHCP client speaks from 0.0.0.0 until it has a lease (its DISCOVER, and
  // the REQUEST of a reboot or rebind); the ISP's own server is where it goes.
  const dhcpIn = dhcp ? '\n    iifname "eth0" ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept' : '';
  return `
table inet lab {
  counter spoofed {}
  counter upstream {}
  counter loss {}
  set customer { type ipv4_addr; flags interval; elements = { ${customerPrefix} } }
  chain link_fault {}
  chain upstream_fault {}
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;${dhcpIn}
    iifname "eth0" ip saddr != @customer counter name "spoofed" drop
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

async function limitCapacities(state: LabState): Promise<void> {
  for (const u of state.uplinks) {
    if (!u.capacity) continue;
    await must(['tc', '-n', state.ns.router, 'qdisc', 'replace', 'dev', u.routerIf, 'root', ...tbf(u.capacity)]);
    await must(['tc', '-n', u.ispNs, 'qdisc', 'replace', 'dev', 'eth0', 'root', ...tbf(u.capacity)]);
  }
}

// ---------------------------------------------------------------- servers

async function startServers(state: LabState): Promise<void> {
  const { inet } = state.ns;
  const whoami = [...labProgram('whoami'), '--port', String(state.whoamiPort)];
  const iperf = ['iperf3', '-s', '-p', String(state.iperfPort)];
  await waitListening(state, [
    startServer(state, inet, 'whoami', whoami, [`tcp:${state.whoamiPort}`, `udp:${state.whoamiPort}`]),
    startServer(state, inet, 'iperf3', iperf, [`tcp:${state.iperfPort}`]),
  ]);
}

/**
 * Starts another whoami (TCP and UDP on `port`) in any node, e.g. a service on
 * the router for split-access tests, and waits until it listens. Returns its
 * pid; `labDown` stops it with everything else. A UDP answer from a socket on
 * 0.0.0.0 leaves from the address the route back prefers, not necessarily the
 * one asked: on a multihomed node, give `host` to answer UDP from that address.
 */
export async function labWhoami(name: string, node: LabNode | string, port: number, host = '0.0.0.0'): Promise<number> {
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
function startServer(state: LabState, ns: string, label: string, argv: string[], sockets: string[]): Server {
  const log = openSync(join(state.stateDir, `${label}.log`), 'a');
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.on('error', () => {}); // seen by waitListening as an exit before listening
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${label}`);
  state.pids.push(child.pid);
  return { label, ns, pid: child.pid, child, sockets };
}

async function waitListening(state: LabState, servers: Server[], timeoutMs = 15000): Promise<void> {
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

function fileTail(path: string): string {
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
  const dhcp = dhcpOf(u);
  if (dhcp.serverPid === undefined) return;
  await stopPid(dhcp.serverPid);
  state.pids = state.pids.filter((p) => p !== dhcp.serverPid);
  delete dhcp.serverPid;
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

async function stopPid(pid: number): Promise<void> {
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

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
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

function saveState(state: LabState): void {
  const file = join(state.stateDir, 'state.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}

function namespaceOfNode(state: LabState, node: string): string {
  if (node === 'lan' && state.host) throw new Error(`lab ${state.name} is a multihomed host (lab up --host): it has no 'lan' node; its machine is 'router'`);
  if (node === 'lan' || node === 'router' || node === 'inet') return state.ns[node];
  const isp = /^isp([1-9])$/.exec(node);
  const ns = isp ? state.ns.isps[Number(isp[1]) - 1] : undefined;
  if (!ns) throw new Error(`no node '${node}' in lab ${state.name}: lan, router, inet or isp1..isp${state.ns.isps.length}`);
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

/** The ISP's counters, in packets: spoofed (anti-spoofing drops), upstream and loss (fault drops). */
export async function labCounters(name: string, uplink: string): Promise<Record<'spoofed' | 'upstream' | 'loss', number>> {
  const { u } = findUplink(loadLab(name), uplink);
  const out = await inNamespace(u.ispNs, 'nft', '-j', 'list', 'counters', 'table', 'inet', 'lab');
  const counters = { spoofed: 0, upstream: 0, loss: 0 };
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
 */
export async function labFail(name: string, uplink: string, mode: LabFault | string): Promise<void> {
  const state = loadLab(name);
  const { u } = findUplink(state, uplink);
  const fault = checkFault(mode);
  await clearFaults(u);
  if (fault === 'link') await ip(u.ispNs, 'link', 'set', 'eth0', 'down');
  else if (fault === 'upstream') await nft(u.ispNs, `add rule inet lab upstream_fault counter name "upstream" drop\n`);
  else {
    const basisPoints = Math.round(Number(fault.slice(5, -1)) * 100);
    const share = basisPoints < 10000 ? `numgen random mod 10000 < ${basisPoints} ` : '';
    await nft(u.ispNs, `add rule inet lab link_fault ${share}counter name "loss" drop\n`);
  }
  u.fault = fault;
  saveState(state);
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
  const { u } = findUplink(state, uplink);
  await clearFaults(u);
  delete u.fault;
  saveState(state);
}

async function clearFaults(u: LabUplink): Promise<void> {
  await ip(u.ispNs, 'link', 'set', 'eth0', 'up');
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
export function describeLab(state: LabState): string {
  const cli = `uplinkd lab --name ${state.name}`;
  const last = state.lanSources[state.lanSources.length - 1];
  const dhcpUplink = state.uplinks.find((u) => u.dhcp);
  return [
    `lab ${state.name}: ${state.uplinks.length} uplink(s), namespaces ul-${state.name}-*`,
    ...(state.host
      ? [`  router  a multihomed host (no LAN); uplinkd gives its unbound connections the source ${HOST_SOURCE} on lo`]
      : [`  lan     ${state.lanHost}/24 on eth0 (+ sources ${state.lanSources[0]}-${last.split('.')[3]}), default via ${state.lanAddress}`,
        `  router  ${state.lanIf} ${state.lanAddress}/24`]),
    ...state.uplinks.map((u, i) =>
      `          ${u.routerIf} ${u.address}/${u.prefixLen} via ${u.gateway} metric ${uplinkWiring(i + 1).metric} -> ${u.name}` +
      (u.capacity ? `, ${u.capacity}` : '') + (u.dhcp ? dhcpSummary(u) : '') + (u.fault ? `, FAULT ${u.fault}` : ''),
    ),
    `  inet    ${INTERNET.prefix}: whoami ${state.server}:${state.whoamiPort} (tcp, udp), iperf3 ${state.server}:${state.iperfPort}`,
    `  config  ${state.configPath}`,
    `  try     ${cli} exec ${state.host ? 'router' : 'lan'} -- curl -s http://${state.server}:${state.whoamiPort}/`,
    `          ${cli} fail isp1 --mode upstream | heal isp1 | renumber isp1 | down`,
    ...(dhcpUplink ? [`          ${cli} renumber ${dhcpUplink.name} | dhcp-stop ${dhcpUplink.name} | dhcp-start ${dhcpUplink.name}`] : []),
  ].join('\n');
}

function dhcpSummary(u: LabUplink): string {
  const server = u.dhcp?.serverPid === undefined ? 'server STOPPED, the lease runs out' : `leased by dnsmasq in ${u.name}`;
  return `, DHCP (${server}; dhcpcd on ${u.routerIf})`;
}
