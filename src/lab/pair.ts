// The router pair (`uplinkd lab up --pair`): two routers that are one to the
// LAN and to the ISPs, built from namespaces like the single lab (lab.ts).
//
//   lan (198.18.0.2, bridge eth0) ──lan0── r1 (.3) ──wan<k>── isp<k> (bridge eth0, gateway) ── inet
//                                 ──lan0── r2 (.4) ──wan<k>──
//                        r1 sync0 198.18.255.1/30 ── r2 sync0 198.18.255.2/30
//
// keepalived (VRRP) holds the LAN gateway 198.18.0.1 and each uplink's
// shared address (the single lab's router address on it) on the master;
// conntrackd (FTFW, over sync0) copies the connections to the backup, and the
// notify script commits them when it takes over. Both are configured from
// examples/pair/, the files an operator fills in by hand: one source of truth.
// IPv4 only: the routers' uplinkd configs say gateway6: off.
//
// Everything of a router lives in its namespace ul-<lab>-r1 / -r2 and its
// folder /run/uplinkd-lab/<lab>/r1 / r2 (configs, pid files, sockets, logs).
// `labFailRouter` is a power loss (links down, every process SIGKILLed),
// `labHealRouter` the reboot after it. `labDown` (lab.ts) removes it all.

import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { labPairConfig } from './lab-config.js';
import { startDaemon, type LabDaemon } from './lab-daemon.js';
import {
  checkUplinkCount, configure, describeInternet, fileTail, ispRuleset, isAlive, labDown, limitCapacities, loadLab, namespaceSysctls, refuseIfTaken, saveState, signalQuietly, STATE_ROOT,
  startServer, startServers, stateDirOf, veth, wireInternet, wireTransit, type LabState,
} from './lab.js';
import { inNamespace, ip, must, nft } from './run.js';
import { findTool } from './tools.js';
import {
  checkLabName, INTERNET, LAN, namespaceOf, PAIR_ROUTERS, PAIR_SYNC, PAIR_VRRP, pairRouterWiring, uplinkWiring,
  uplinkWiring6, type PairRouterName,
} from './topology.js';

export interface PairLabOptions {
  name: string;
  /** 1..8, default 2 */
  uplinks?: number;
  /** tc rates, one for all uplinks or one per uplink (as LabOptions.capacities) */
  capacities?: string[];
}

/** uplinkd in a router, started under the lab's control (lab-daemon.ts startDaemon with `node`). */
export interface LabPairDaemon {
  pid: number;
  configPath: string;
  /** Set by `labFailRouter` when it killed a running daemon: `labHealRouter` starts it again. */
  restartOnHeal?: boolean;
}

export interface LabPairRouter {
  name: PairRouterName;
  ns: string;
  /** /run/uplinkd-lab/<lab>/<name>: every file of this router. */
  dir: string;
  lanAddress: string;
  syncAddress: string;
  /** Its own address on uplink k at index k-1 (the VRRP addresses are the uplinks' `address`). */
  uplinkAddresses: string[];
  priority: number;
  /** uplinkd's config for this router: the same as the other's but for the control socket (see lab-config.ts labPairConfig). */
  configPath: string;
  keepalivedPid?: number;
  conntrackdPid?: number;
  daemon?: LabPairDaemon;
  /** Powered off by `labFailRouter`, until `labHealRouter`. */
  failed?: boolean;
}

export interface LabPair {
  routers: LabPairRouter[];
  /** The LAN's gateway as VRRP moves it: 198.18.0.1 (the single lab's router address). */
  lanVip: string;
  /** The addresses VRRP moves: the LAN gateway, then each uplink's `address`, as CIDR with their interfaces. */
  vips: { address: string; prefixLen: number; dev: string }[];
}

/** examples/pair/: the files the lab fills in and an operator fills in by hand. */
export const PAIR_EXAMPLES = fileURLToPath(new URL('../../examples/pair/', import.meta.url));

/** How long keepalived may take to make r1 master at `lab up`, or a healed router backup. */
const VRRP_WITHIN_MS = 10_000;
const CONNTRACKD_WITHIN_MS = 5_000;

// ---------------------------------------------------------------- lab up --pair

export async function labUpPair(opts: PairLabOptions): Promise<LabState> {
  const state = newPairState(opts);
  const pair = state.pair!;
  // Both are needed; found before anything is built.
  findTool('keepalived');
  findTool('conntrackd');
  await refuseIfTaken(state.name);
  mkdirSync(STATE_ROOT, { recursive: true });
  mkdirSync(state.stateDir); // fails if another `lab up` of this name got here first
  try {
    for (const r of pair.routers) mkdirSync(r.dir);
    await createPairNamespaces(state);
    await wirePairLan(state);
    await wireSync(state);
    await wireInternet(state);
    for (let k = 1; k <= state.uplinks.length; k++) await wirePairUplink(state, k);
    await limitCapacities(state);
    for (const r of pair.routers) writeFileSync(r.configPath, labPairConfig(state, r));
    await startServers(state);
    saveState(state);
    // conntrackd first, so the notify script finds it on the first transition.
    for (const r of pair.routers) await startConntrackd(state, r);
    // r1 alone first, so it is master when r2 starts, whatever the timing of two simultaneous starts.
    await startKeepalived(state, pair.routers[0]);
    await waitForVrrp(state, pair.routers[0], 'MASTER');
    await startKeepalived(state, pair.routers[1]);
    await waitForVrrp(state, pair.routers[1], 'BACKUP');
    saveState(state);
    return state;
  } catch (err) {
    await labDown(state.name);
    throw err;
  }
}

/** Validates the options and computes the whole pair lab; touches nothing. */
function newPairState(opts: PairLabOptions): LabState {
  const name = checkLabName(opts.name);
  const { count, capacities } = checkUplinkCount(opts);
  const stateDir = stateDirOf(name);
  const isps = Array.from({ length: count }, (_, i) => namespaceOf(name, `isp${i + 1}`));
  const routers: LabPairRouter[] = ([0, 1] as const).map((i) => {
    const wiring = pairRouterWiring(i, count);
    const dir = join(stateDir, wiring.name);
    return {
      name: wiring.name, ns: namespaceOf(name, wiring.name), dir, lanAddress: wiring.lanAddress, syncAddress: wiring.syncAddress,
      uplinkAddresses: wiring.uplinkAddresses, priority: wiring.priority, configPath: join(dir, 'uplinkd.yaml'),
    };
  });
  const uplinks = isps.map((ispNs, i) => {
    const wiring = uplinkWiring(i + 1);
    const [first] = wiring.subnets;
    const capacity = capacities.length === 1 ? capacities[0] : capacities[i];
    // address: the VRRP address, the single lab's router address on this uplink.
    return { name: wiring.name, routerIf: wiring.routerIf, address: first.address, prefixLen: first.prefixLen, gateway: first.gateway, ispNs, capacity };
  });
  return {
    name,
    stateDir,
    pair: {
      routers,
      lanVip: LAN.routerAddress,
      vips: [
        { address: LAN.routerAddress, prefixLen: LAN.prefixLen, dev: LAN.routerIf },
        ...uplinks.map((u) => ({ address: u.address, prefixLen: u.prefixLen, dev: u.routerIf })),
      ],
    },
    ns: { lan: namespaceOf(name, 'lan'), router: routers[0].ns, inet: namespaceOf(name, 'inet'), isps },
    lanIf: LAN.routerIf,
    lanAddress: LAN.routerAddress,
    lanHost: LAN.host,
    lanSources: [...LAN.sources],
    // The pair is IPv4 only; the single lab's IPv6 fields stay for the type, unused.
    lanAddress6: '',
    lanHost6: '',
    lanSources6: [],
    uplinks,
    server: INTERNET.server,
    server6: '',
    whoamiPort: INTERNET.whoamiPort,
    iperfPort: INTERNET.iperfPort,
    configPath: routers[0].configPath,
    pids: [],
  };
}

function pairOf(state: LabState): LabPair {
  if (!state.pair) throw new Error(`lab ${state.name} is not a router pair (lab up --pair)`);
  return state.pair;
}

export function findRouter(state: LabState, router: string): LabPairRouter {
  const r = pairOf(state).routers.find((x) => x.name === router);
  if (!r) throw new Error(`no router '${router}' in lab ${state.name}: ${PAIR_ROUTERS.join(' or ')}`);
  return r;
}

function peerOf(state: LabState, r: LabPairRouter): LabPairRouter {
  return pairOf(state).routers.find((x) => x.name !== r.name)!;
}

/** The bridges: the LAN switch in the lan node, one segment per uplink in its ISP; br_netfilter must not see bridged frames. */
const BRIDGE_SYSCTLS = ['net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-arptables=0', 'net.bridge.bridge-nf-call-ip6tables=0'];

async function createPairNamespaces(state: LabState): Promise<void> {
  const routers = pairOf(state).routers.map((r) => r.ns);
  for (const ns of [state.ns.lan, ...routers, state.ns.inet, ...state.ns.isps]) {
    await must(['ip', 'netns', 'add', ns]);
    await ip(ns, 'link', 'set', 'lo', 'up');
    const router = routers.includes(ns);
    await inNamespace(ns, 'sysctl', '-q', '-e', '-w', ...namespaceSysctls({ forwards: router || state.ns.isps.includes(ns), router }), ...BRIDGE_SYSCTLS);
  }
}

/**
 * A switch: a bridge named eth0, so the LAN host and the ISPs keep the
 * single lab's interface name (the ISP's nft rules and `lab fail --mode link`
 * act on eth0), with one port per router, named after it.
 */
async function bridge(ns: string): Promise<void> {
  await ip(ns, 'link', 'add', 'eth0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0');
}

/** Router r's interface ifname, cabled to port r.name of the bridge eth0 in ns. */
async function cableToBridge(r: LabPairRouter, ifname: string, ns: string): Promise<void> {
  await veth(r.ns, ifname, ns, r.name);
  await ip(ns, 'link', 'set', r.name, 'master', 'eth0');
  await ip(ns, 'link', 'set', r.name, 'up');
}

async function wirePairLan(state: LabState): Promise<void> {
  const { lan } = state.ns;
  await bridge(lan);
  for (const r of pairOf(state).routers) {
    await cableToBridge(r, LAN.routerIf, lan);
    await configure(r.ns, LAN.routerIf, `${r.lanAddress}/${LAN.prefixLen}`);
  }
  await configure(lan, 'eth0', `${LAN.host}/${LAN.prefixLen}`);
  // As the single lab's LAN host: the extra sources after its own address, in one batch.
  const extra = LAN.sources.map((a) => `address add ${a}/${LAN.prefixLen} dev eth0\n`).join('');
  await must(['ip', '-n', lan, '-batch', '-'], { input: extra });
  await ip(lan, 'route', 'add', 'default', 'via', LAN.routerAddress);
}

async function wireSync(state: LabState): Promise<void> {
  const [r1, r2] = pairOf(state).routers;
  await veth(r1.ns, PAIR_SYNC.ifname, r2.ns, PAIR_SYNC.ifname);
  for (const r of [r1, r2]) await configure(r.ns, PAIR_SYNC.ifname, `${r.syncAddress}/${PAIR_SYNC.prefixLen}`);
}

/**
 * Uplink k: the ISP's customer segment is a bridge with both routers' wan<k>
 * on it and the gateways of both customer subnets, as in the single lab. Each
 * router has its own address (.3, .4) in the customer /28 and the main-table
 * default route a DHCP client would install; the VRRP address (.2) comes and
 * goes with keepalived.
 */
async function wirePairUplink(state: LabState, k: number): Promise<void> {
  const isp = state.ns.isps[k - 1];
  const { subnets } = uplinkWiring(k);
  const [first, second] = subnets;
  await bridge(isp);
  await configure(isp, 'eth0', `${first.gateway}/${first.prefixLen}`, `${second.gateway}/${second.prefixLen}`);
  for (const r of pairOf(state).routers) {
    await cableToBridge(r, uplinkWiring(k).routerIf, isp);
    await routerUplinkUp(state, r, k);
  }
  await wireTransit(state, k);
  // IPv4 only: the customer6 set of the ruleset matches nothing the pair sends.
  await nft(isp, ispRuleset(first.prefix, uplinkWiring6(k).customer, false));
}

/** Router r's own address on uplink k, the link up, and the default route its DHCP client would install (again after a heal). */
async function routerUplinkUp(state: LabState, r: LabPairRouter, k: number): Promise<void> {
  const { routerIf, metric, subnets } = uplinkWiring(k);
  await ip(r.ns, 'address', 'replace', `${r.uplinkAddresses[k - 1]}/${subnets[0].prefixLen}`, 'dev', routerIf);
  await ip(r.ns, 'link', 'set', routerIf, 'up');
  await ip(r.ns, 'route', 'replace', 'default', 'via', state.uplinks[k - 1].gateway, 'dev', routerIf, 'metric', String(metric));
}

// ---------------------------------------------------------------- keepalived and conntrackd

/** A file of examples/pair/ with every {{NAME}} replaced; a placeholder left unfilled is an error. */
export function fillTemplate(file: string, values: Record<string, string>): string {
  const text = readFileSync(join(PAIR_EXAMPLES, file), 'utf8').replace(/\{\{([A-Z_]+)\}\}/g, (whole, key: string) => {
    if (!(key in values)) throw new Error(`examples/pair/${file}: no value for ${whole}`);
    return values[key];
  });
  return text;
}

/** The files of a router's keepalived and conntrackd, all in its folder. */
export function pairFiles(r: LabPairRouter) {
  const at = (file: string) => join(r.dir, file);
  return {
    keepalivedConf: at('keepalived.conf'),
    keepalivedPid: at('keepalived.pid'),
    vrrpPid: at('keepalived-vrrp.pid'),
    checkersPid: at('keepalived-checkers.pid'),
    /** Its output: `-l` logs to the console. */
    keepalivedLog: at('keepalived.log'),
    conntrackdConf: at('conntrackd.conf'),
    conntrackdLock: at('conntrackd.lock'),
    conntrackdSocket: at('conntrackd.sock'),
    conntrackdLog: at('conntrackd.log'),
    /** What it prints (its own log is conntrackdLog). */
    conntrackdOutput: at('conntrackd-output.log'),
    notifyScript: at('notify.sh'),
    notifyLog: at('notify.log'),
    uplinkdLog: at('uplinkd.log'),
  };
}

/** The conntrackd config of router r: examples/pair/conntrackd.conf filled in. */
export function conntrackdConf(state: LabState, r: LabPairRouter): string {
  const f = pairFiles(r);
  const own = pairOf(state).routers.flatMap((x) => [x.lanAddress, x.syncAddress, ...x.uplinkAddresses]);
  return fillTemplate('conntrackd.conf', {
    SYNC_ADDRESS: r.syncAddress,
    PEER_SYNC_ADDRESS: peerOf(state, r).syncAddress,
    SYNC_INTERFACE: PAIR_SYNC.ifname,
    LOG_FILE: f.conntrackdLog,
    LOCK_FILE: f.conntrackdLock,
    SOCKET_PATH: f.conntrackdSocket,
    OWN_ADDRESSES: own.map((a) => `            IPv4_address ${a}`).join('\n'),
  });
}

/** The keepalived config of router r: examples/pair/keepalived.conf filled in. */
export function keepalivedConf(state: LabState, r: LabPairRouter): string {
  const f = pairFiles(r);
  const [lanVip, ...uplinkVips] = pairOf(state).vips;
  const notify = [f.notifyScript, '--conntrackd', findTool('conntrackd'), '--config', f.conntrackdConf, '--lock', f.conntrackdLock, '--log', f.notifyLog];
  return fillTemplate('keepalived.conf', {
    ROUTER_ID: `${state.name}-${r.name}`,
    PRIORITY: String(r.priority),
    LAN_INTERFACE: LAN.routerIf,
    VIRTUAL_ROUTER_ID: String(PAIR_VRRP.virtualRouterId),
    LAN_ADDRESS: r.lanAddress,
    PEER_LAN_ADDRESS: peerOf(state, r).lanAddress,
    LAN_VIRTUAL_IPADDRESS: `${lanVip.address}/${lanVip.prefixLen}`,
    UPLINK_VIRTUAL_IPADDRESSES: uplinkVips.map((v) => `        ${v.address}/${v.prefixLen} dev ${v.dev}`).join('\n'),
    NOTIFY_COMMAND: notify.join(' '),
  });
}

/**
 * Starts one of router r's daemons, detached so it outlives the CLI (lab.ts
 * startServer), its output in `<router dir>/<output>.log`; returns its pid.
 */
function startInRouter(state: LabState, r: LabPairRouter, output: 'keepalived' | 'conntrackd-output', argv: string[]): number {
  return startServer(state, r.ns, `${r.name}/${output}`, argv, []).pid;
}

async function startConntrackd(state: LabState, r: LabPairRouter): Promise<void> {
  const f = pairFiles(r);
  writeFileSync(f.conntrackdConf, conntrackdConf(state, r));
  // A router that lost power left its lock (and socket) behind; conntrackd refuses to start over a lock.
  rmSync(f.conntrackdLock, { force: true });
  rmSync(f.conntrackdSocket, { force: true });
  r.conntrackdPid = startInRouter(state, r, 'conntrackd-output', [findTool('conntrackd'), '-C', f.conntrackdConf]);
  const deadline = Date.now() + CONNTRACKD_WITHIN_MS;
  for (;;) {
    // `-s` answers once its control socket is up.
    const stats = await conntrackdClient(state, r, ['-s']).catch(() => undefined);
    if (stats !== undefined) return;
    const failed = !isAlive(r.conntrackdPid) ? 'exited' : Date.now() > deadline ? `did not answer within ${CONNTRACKD_WITHIN_MS} ms` : undefined;
    if (failed) throw new Error(`${r.name}: conntrackd ${failed}: ${fileTail(f.conntrackdLog)} ${fileTail(f.conntrackdOutput)}`);
    await sleep(20);
  }
}

async function startKeepalived(state: LabState, r: LabPairRouter): Promise<void> {
  const f = pairFiles(r);
  writeFileSync(f.keepalivedConf, keepalivedConf(state, r));
  // A copy in the router's folder: keepalived's script security wants every
  // directory above the script root-owned and not writable by others, which a
  // checkout need not be. The same bytes as examples/pair/notify.sh.
  copyFileSync(join(PAIR_EXAMPLES, 'notify.sh'), f.notifyScript);
  // A reboot empties /run: keepalived refuses to start over its old pid files.
  for (const file of [f.keepalivedPid, f.vrrpPid, f.checkersPid]) rmSync(file, { force: true });
  // -n: no fork (the lab holds the pid); --vrrp: no health checkers; every
  // runtime file in the router's folder; logs to the console, which is the log file.
  r.keepalivedPid = startInRouter(state, r, 'keepalived', [
    findTool('keepalived'), '-n', '--vrrp', '-l', '-D', '-G', '-f', f.keepalivedConf, '-p', f.keepalivedPid, '-r', f.vrrpPid, '-c', f.checkersPid,
  ]);
}

/** The state keepalived last told the notify script (MASTER, BACKUP, FAULT, STOP), or undefined before the first. */
export function vrrpState(r: LabPairRouter): string | undefined {
  let text = '';
  try {
    text = readFileSync(pairFiles(r).notifyLog, 'utf8');
  } catch {
    return undefined;
  }
  const states = [...text.matchAll(/^\S+ (MASTER|BACKUP|FAULT|STOP): INSTANCE /gm)];
  return states.at(-1)?.[1];
}

/**
 * Waits until router r is in VRRP state `want`: for MASTER, once it holds
 * every VRRP address and its notify script has committed; for BACKUP, once
 * the script ran for it and r holds none of the addresses.
 */
async function waitForVrrp(state: LabState, r: LabPairRouter, want: 'MASTER' | 'BACKUP'): Promise<void> {
  const deadline = Date.now() + VRRP_WITHIN_MS;
  const notifyLog = pairFiles(r).notifyLog;
  for (;;) {
    const held = await heldVips(state, r);
    const log = existsSync(notifyLog) ? readFileSync(notifyLog, 'utf8') : '';
    const reached = want === 'MASTER'
      ? vrrpState(r) === 'MASTER' && log.trimEnd().endsWith('MASTER: committed') && held.length === pairOf(state).vips.length
      : vrrpState(r) === 'BACKUP' && held.length === 0;
    if (reached) return;
    const pid = r.keepalivedPid;
    const failed = pid === undefined || !isAlive(pid) ? 'keepalived exited' : Date.now() > deadline ? `not ${want} within ${VRRP_WITHIN_MS} ms` : undefined;
    if (failed) {
      throw new Error(`${r.name}: ${failed} (state ${vrrpState(r) ?? 'none'}, holds ${held.join(', ') || 'no VRRP address'}): ` +
        `${fileTail(pairFiles(r).keepalivedLog)}`);
    }
    await sleep(20);
  }
}

/** `conntrackd -C <r's config> ARGS` in router r; resolves with its stdout, rejects on a non-zero exit. */
export function conntrackdClient(state: LabState, r: LabPairRouter | string, args: string[]): Promise<string> {
  const router = typeof r === 'string' ? findRouter(state, r) : r;
  return inNamespace(router.ns, findTool('conntrackd'), '-C', pairFiles(router).conntrackdConf, ...args);
}

// ---------------------------------------------------------------- who holds the addresses

/** The VRRP addresses router r holds now (read with `ip -j address` in it). */
async function heldVips(state: LabState, r: LabPairRouter): Promise<string[]> {
  const out = await inNamespace(r.ns, 'ip', '-j', 'address', 'show');
  const held = (JSON.parse(out) as { ifname: string; addr_info?: { family: string; local: string; prefixlen: number }[] }[])
    .flatMap((link) => (link.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen} dev ${link.ifname}`));
  return pairOf(state).vips.map((v) => `${v.address}/${v.prefixLen} dev ${v.dev}`).filter((v) => held.includes(v));
}

/** Per router, the VRRP addresses it holds ("198.51.100.2/28 dev wan1"). */
export async function labPairAddresses(name: string): Promise<Record<PairRouterName, string[]>> {
  return heldByRouter(loadLab(name));
}

async function heldByRouter(state: LabState): Promise<Record<PairRouterName, string[]>> {
  const [r1, r2] = pairOf(state).routers;
  return { r1: await heldVips(state, r1), r2: await heldVips(state, r2) };
}

/** Which router holds every VRRP address; 'none' if no router holds any, 'split' if they are spread or incomplete. */
export async function labVipHolder(name: string): Promise<PairRouterName | 'none' | 'split'> {
  const state = loadLab(name);
  const held = await heldByRouter(state);
  const all = pairOf(state).vips.length;
  if (held.r1.length === 0 && held.r2.length === 0) return 'none';
  for (const r of PAIR_ROUTERS) if (held[r].length === all && held[r === 'r1' ? 'r2' : 'r1'].length === 0) return r;
  return 'split';
}

/**
 * Polls (every 5 ms) until `router` holds every VRRP address and the other
 * none; resolves with the ms from `sinceMs` (a Date.now(), e.g. labFailRouter's
 * downAt), or undefined after `withinMs`.
 */
export async function labWaitForVipHolder(name: string, router: PairRouterName, sinceMs: number, withinMs: number): Promise<number | undefined> {
  for (;;) {
    if ((await labVipHolder(name)) === router) return Date.now() - sinceMs;
    if (Date.now() - sinceMs > withinMs) return undefined;
    await sleep(5);
  }
}

// ---------------------------------------------------------------- power loss and reboot

/** The interfaces the lab gave a router: the LAN, the sync link, every uplink. */
function routerLinks(state: LabState): string[] {
  return [LAN.routerIf, PAIR_SYNC.ifname, ...state.uplinks.map((u) => u.routerIf)];
}

/**
 * A power loss of router r: every process in it (keepalived, conntrackd,
 * uplinkd, anything else) SIGKILLed, all of its links down, and what it held
 * in memory gone (clearVolatile). What ran
 * there is recorded: a daemon started under the lab's control is started
 * again by `labHealRouter`. Resolves with the moment the links went down
 * (Date.now()), from which a takeover is timed.
 */
export async function labFailRouter(name: string, router: string): Promise<{ router: LabPairRouter; downAt: number }> {
  const state = loadLab(name);
  const r = findRouter(state, router);
  if (r.failed) throw new Error(`${r.name} is failed already; heal it with \`uplinkd lab --name ${name} heal-router ${r.name}\``);
  if (r.daemon) r.daemon.restartOnHeal = isAlive(r.daemon.pid);
  // Everything frozen first: killed one by one, keepalived's VRRP child would
  // see its parent die and remove the addresses (and tell the notify script
  // STOP) before its own turn, which a power loss gives it no time for.
  const pids = await freezeAll(r.ns);
  // One batch: the links go down together.
  await must(['ip', '-n', r.ns, '-batch', '-'], { input: routerLinks(state).map((l) => `link set ${l} down\n`).join('') });
  const downAt = Date.now();
  for (const pid of pids) signalQuietly(pid, 'SIGKILL');
  for (let i = 0; i < 100 && pids.some(isAlive); i++) await sleep(20);
  await clearVolatile(state, r);
  delete r.keepalivedPid;
  delete r.conntrackdPid;
  state.pids = state.pids.filter((pid) => isAlive(pid));
  r.failed = true;
  saveState(state);
  return { router: r, downAt };
}

/**
 * The reboot after `labFailRouter`: links up, the DHCP clients' default
 * routes, conntrackd, keepalived (it comes back as BACKUP: nopreempt; MASTER
 * if the other router is failed too) and, if the lab's daemon was running
 * there at the power loss, uplinkd with the same config, detached and logging
 * to <router dir>/uplinkd.log, as a service would start at boot. Resolves
 * once keepalived is in that state and the daemon, if any, answers on its
 * socket; with the router and that daemon (this process's child, detached).
 */
export async function labHealRouter(name: string, router: string): Promise<{ router: LabPairRouter; daemon?: LabDaemon }> {
  const state = loadLab(name);
  const r = findRouter(state, router);
  if (!r.failed) throw new Error(`${r.name} is not failed (uplinkd lab fail-router ${r.name} first)`);
  await ip(r.ns, 'link', 'set', LAN.routerIf, 'up');
  await ip(r.ns, 'link', 'set', PAIR_SYNC.ifname, 'up');
  for (let k = 1; k <= state.uplinks.length; k++) await routerUplinkUp(state, r, k);
  // keepalived only once the peer is heard on the LAN: if its first adverts
  // were lost to a link still settling, it would take over as a second master.
  await waitPeerReachable(state, r);
  await startConntrackd(state, r);
  await startKeepalived(state, r);
  delete r.failed;
  saveState(state);
  // Backup beside a running peer; master if it is the only router up.
  await waitForVrrp(state, r, peerOf(state, r).failed ? 'MASTER' : 'BACKUP');
  if (!r.daemon?.restartOnHeal) return { router: r };
  // startDaemon records the new one in the lab's state.
  const daemon = await startDaemon(state, r.daemon.configPath, { node: r.name, logFile: pairFiles(r).uplinkdLog, upWithinMs: false });
  return { router: findRouter(loadLab(name), r.name), daemon };
}

/** SIGSTOPs every process in a namespace, until no new one appears (a child forked meanwhile); returns them all. */
async function freezeAll(ns: string): Promise<number[]> {
  const frozen = new Set<number>();
  for (;;) {
    const pids = (await must(['ip', 'netns', 'pids', ns])).split('\n').filter(Boolean).map(Number).filter((p) => !frozen.has(p));
    if (pids.length === 0) return [...frozen];
    for (const pid of pids) {
      signalQuietly(pid, 'SIGSTOP');
      frozen.add(pid);
    }
  }
}

/**
 * What a power loss takes with it, which the lab's namespace would otherwise
 * keep: the VRRP addresses keepalived had no time to remove, the conntrack
 * table, and the nftables ruleset and policy rules uplinkd had installed.
 * (Routes need nothing: the kernel removed every one through the links that
 * went down.) What is configured at boot, the routers' own addresses, stays.
 */
async function clearVolatile(state: LabState, r: LabPairRouter): Promise<void> {
  for (const v of pairOf(state).vips) {
    await must(['ip', '-n', r.ns, 'address', 'delete', `${v.address}/${v.prefixLen}`, 'dev', v.dev]).catch(() => {}); // not held
  }
  await inNamespace(r.ns, 'conntrack', '-F').catch(() => {}); // an empty table is no error here
  await inNamespace(r.ns, 'nft', 'flush', 'ruleset');
  // `flush` keeps only the local rule (priority 0).
  await ip(r.ns, 'rule', 'flush');
  await ip(r.ns, 'rule', 'add', 'priority', '32766', 'from', 'all', 'lookup', 'main');
  await ip(r.ns, 'rule', 'add', 'priority', '32767', 'from', 'all', 'lookup', 'default');
}

async function waitPeerReachable(state: LabState, r: LabPairRouter): Promise<void> {
  const peer = peerOf(state, r);
  if (peer.failed) return;
  const deadline = Date.now() + 5000;
  while ((await must(['ip', 'netns', 'exec', r.ns, 'fping', '-q', '-t', '100', '-c', '1', peer.lanAddress]).then(() => true, () => false)) === false) {
    if (Date.now() > deadline) throw new Error(`${r.name}: ${peer.name} (${peer.lanAddress}) does not answer on the LAN after the heal`);
  }
}

// ---------------------------------------------------------------- describing it

export function describePair(state: LabState): string {
  const pair = pairOf(state);
  const cli = `uplinkd lab --name ${state.name}`;
  const last = state.lanSources[state.lanSources.length - 1];
  const routerLine = (r: LabPairRouter) => {
    const daemon = r.daemon && isAlive(r.daemon.pid) ? `, uplinkd pid ${r.daemon.pid}` : '';
    const vrrp = r.failed ? 'FAILED (powered off)' : `VRRP ${vrrpState(r) ?? 'starting'}, priority ${r.priority}`;
    return [
      `  ${r.name}      ${vrrp}${daemon}`,
      `          lan0 ${r.lanAddress}/${LAN.prefixLen}, sync0 ${r.syncAddress}/${PAIR_SYNC.prefixLen}, ` +
        r.uplinkAddresses.map((a, i) => `${state.uplinks[i].routerIf} ${a}`).join(', '),
      `          files and logs in ${r.dir}, uplinkd config ${r.configPath}`,
    ];
  };
  return [
    `lab ${state.name}: a router pair (keepalived VRRP, conntrackd FTFW) with ${state.uplinks.length} uplink(s), IPv4 only, namespaces ul-${state.name}-*`,
    `  lan     ${state.lanHost}/24 on the LAN switch eth0 (+ sources ${state.lanSources[0]}-${last.split('.')[3]}), default via ${pair.lanVip} (VRRP)`,
    ...pair.routers.flatMap(routerLine),
    `  VRRP    ${pair.vips.map((v) => `${v.address}/${v.prefixLen} ${v.dev}`).join(', ')} on the master`,
    ...state.uplinks.map((u, i) =>
      `  ${u.name}    ${u.address} (VRRP) via ${u.gateway} metric ${uplinkWiring(i + 1).metric}` + (u.capacity ? `, ${u.capacity}` : '') +
      (u.fault ? `, FAULT ${u.fault}` : '')),
    describeInternet(state),
    `  try     ${cli} exec lan -- curl -s http://${state.server}:${state.whoamiPort}/`,
    `          ${cli} exec r1 -- ip -br address   (the routers are r1 and r2; there is no 'router' node in a pair)`,
    `          ${cli} fail-router r1 | heal-router r1 | down`,
  ].join('\n');
}
