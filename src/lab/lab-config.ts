// The uplinkd config for a lab, written in one place: the one `uplinkd lab up`
// leaves in the lab's folder (labUpConfig), and the ones the tests and the
// benchmarks write for what they measure, each from the same options.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabState } from './lab.js';
import type { LabPairRouter } from './pair.js';
import { HOST_SOURCE, LAN6, uplinkWiring6 } from './topology.js';

/**
 * An uplink's nat6 in the lab: the config's modes, with `prefix` mapping the
 * LAN's 2001:db8:ff00::/64 onto the uplink's routed 2001:db8:k:100::/64.
 */
export type LabNat6 = 'snat' | 'masquerade' | 'prefix' | 'none';

/** One of the lab's uplinks in the config. */
export interface LabUplinkConfig {
  /** Which uplink of the lab, 1-based. */
  k: number;
  gateway?: 'auto' | 'none';
  /** auto, none, off or an address, e.g. the ISP's static 2001:db8:k::1 (uplinkWiring6(k).gateway). */
  gateway6?: string;
  nat6?: LabNat6;
  weight?: number;
  /** A tc rate for both directions, e.g. 20mbit. */
  capacity?: string;
  /** Its check's targets (else LabConfigOptions.checkTargets, else uplinkd's default). */
  targets?: string[];
}

export interface LabConfigOptions {
  /** The uplinks to configure; default every uplink of the lab, with its interface only. */
  uplinks?: LabUplinkConfig[];
  /** Check targets of every uplink that names none of its own. */
  checkTargets?: string[];
  /** More YAML for an uplink, indented by four spaces, from its name and 1-based number. */
  uplink?: (name: string, k: number) => string;
  /** `balance:`, e.g. hash or least-loaded. */
  balance?: string;
  /** The items of `rules:`, YAML indented by two spaces. */
  rules?: string;
  /**
   * An api section: the control socket in the lab's folder (a file name,
   * default uplinkd.sock), never the machine's /run/uplinkd, and the HTTP
   * listener, "off" or HOST:PORT. Without it the config has none.
   */
  api?: { socket?: string; http: string };
  /** Top-level YAML appended as it is. */
  top?: string;
  /** Comment lines at the top. */
  comment?: string[];
}

/** An uplinkd config for a lab: its LAN (none on a multihomed host), the uplinks asked for, and what opts add. */
export function labConfig(lab: LabState, opts: LabConfigOptions = {}): string {
  const lines = (opts.comment ?? []).map((line) => `# ${line}`);
  if (!lab.host) lines.push(`lan: [${lab.lanIf}]`);
  lines.push('uplinks:');
  const specs: LabUplinkConfig[] = opts.uplinks ?? lab.uplinks.map((_, i) => ({ k: i + 1 }));
  for (const spec of specs) {
    const u = lab.uplinks[spec.k - 1];
    if (!u) throw new Error(`lab ${lab.name} has no uplink ${spec.k}`);
    lines.push(`  ${u.name}:`, `    interface: ${u.routerIf}`);
    if (spec.gateway) lines.push(`    gateway: ${spec.gateway}`);
    if (spec.gateway6) lines.push(`    gateway6: ${spec.gateway6}`);
    if (spec.nat6) lines.push(`    nat6: ${nat6Yaml(spec.nat6, spec.k)}`);
    if (spec.weight !== undefined) lines.push(`    weight: ${spec.weight}`);
    if (spec.capacity) lines.push(`    capacity: {up: ${spec.capacity}, down: ${spec.capacity}}`);
    const targets = spec.targets ?? opts.checkTargets;
    if (targets) lines.push(`    check: {targets: [${targets.join(', ')}]}`);
    const extra = opts.uplink?.(u.name, spec.k).trimEnd();
    if (extra) lines.push(extra);
  }
  // A multihomed host (lab up --host) has no LAN, and its neutral source comes from the lab's ranges.
  if (lab.host) lines.push('kernel:', `  host_source: ${HOST_SOURCE}`);
  if (opts.balance) lines.push(`balance: ${opts.balance}`);
  if (opts.rules) lines.push('rules:', opts.rules.trimEnd());
  if (opts.api) {
    const http = opts.api.http === 'off' ? '"off"' : opts.api.http;
    lines.push('api:', `  socket: ${join(lab.stateDir, opts.api.socket ?? 'uplinkd.sock')}`, `  http: ${http}`);
  }
  return `${lines.join('\n')}\n${opts.top ?? ''}`;
}

function nat6Yaml(nat6: LabNat6, k: number): string {
  return nat6 === 'prefix' ? `{prefix: {lan: ${LAN6.prefix}, uplink: ${uplinkWiring6(k).prefixTarget}}}` : nat6;
}

/**
 * The config `uplinkd lab up` writes to the lab's configPath: every uplink as
 * the lab built it, probing the lab's server in each family it carries.
 * gateway6 is auto everywhere, as gateway is: the router's main table holds
 * each uplink's IPv6 default route (static via 2001:db8:k::1, or from the RA
 * via fe80::1), as a router's own clients install them. A point-to-point
 * uplink carries no IPv6 in the lab: gateway6 off.
 */
export function labUpConfig(lab: LabState): string {
  return labConfig(lab, {
    comment: [
      `uplinkd config for lab ${lab.name}, written by \`uplinkd lab up\`.`,
      `Run uplinkd in the router: uplinkd lab --name ${lab.name} exec router -- uplinkd run -c ${lab.configPath}`,
    ],
    uplinks: lab.uplinks.map((u, i) => ({
      k: i + 1, gateway: u.pointToPoint ? 'none' : 'auto', gateway6: u.address6 ? 'auto' : 'off', ...(u.address6 ? { nat6: 'snat' as const } : {}),
      weight: 1, capacity: u.capacity, targets: u.address6 ? [lab.server, lab.server6] : [lab.server],
    })),
    api: { http: 'off' },
  });
}

/**
 * The config of uplinkd in router r of a pair (lab up --pair). Both routers
 * run the same config: each uplink's `address` is its VRRP address (the single
 * lab's router address on it), which uplinkd SNATs to while the router holds
 * it; gateway6 off, as the pair is IPv4 only. Only the control socket differs,
 * because the lab's two routers share one file system: <lab>/r1/uplinkd.sock
 * and <lab>/r2/uplinkd.sock, as /run/uplinkd/uplinkd.sock on two machines.
 */
export function labPairConfig(lab: LabState, r: LabPairRouter): string {
  return labConfig(lab, {
    comment: [
      `uplinkd config for ${r.name} of the router pair ${lab.name}, written by \`uplinkd lab up --pair\`; the other router's differs only in api.socket.`,
      `Run uplinkd in it: uplinkd lab --name ${lab.name} exec ${r.name} -- uplinkd run -c ${r.configPath}`,
    ],
    uplinks: lab.uplinks.map((u, i) => ({ k: i + 1, gateway: 'auto', gateway6: 'off', weight: 1, capacity: u.capacity, targets: [lab.server] })),
    uplink: (_name, k) => `    address: ${lab.uplinks[k - 1].address}`,
    api: { socket: `${r.name}/uplinkd.sock`, http: 'off' },
  });
}

/** Writes a config into the lab's folder and returns its path. */
export function writeLabConfig(lab: LabState, fileName: string, yaml: string): string {
  const path = join(lab.stateDir, fileName);
  writeFileSync(path, yaml);
  return path;
}
