// Reads what the planner needs to know about the kernel, through `ip -j`, and
// the interfaces' byte counters the rate estimators sample.

import { readFileSync } from 'node:fs';
import type { InterfaceFacts, KernelFacts } from '../plan/state.js';
import { cgroupFacts } from './cgroups.js';
import { mustRun, type Runner } from './runner.js';

interface IpAddrJson {
  ifname: string;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number; address?: string }[];
}

interface IpRouteJson { dst: string; gateway?: string; dev?: string; metric?: number }

export function parseInterfaces(json: string): InterfaceFacts[] {
  return (JSON.parse(json) as IpAddrJson[]).map((link) => {
    const flags = link.flags ?? [];
    return {
      name: link.ifname,
      carrier: flags.includes('UP') && flags.includes('LOWER_UP'),
      pointToPoint: flags.includes('POINTOPOINT'),
      addresses: (link.addr_info ?? [])
        .filter((a) => a.family === 'inet')
        .map((a) => ({ address: a.local, prefixLen: a.prefixlen, ...(a.address && a.address !== a.local ? { peer: a.address } : {}) })),
    };
  });
}

/** `cgroups`: the config's (ruleCgroups), whose existence and ids are read too. */
export async function readFacts(runner: Runner, cgroups: readonly string[] = []): Promise<KernelFacts> {
  const [addrs, routes] = await Promise.all([
    mustRun(runner, 'ip', ['-j', 'address', 'show']),
    mustRun(runner, 'ip', ['-j', '-4', 'route', 'show', 'table', 'main', 'default']),
  ]);
  return {
    interfaces: parseInterfaces(addrs),
    mainDefaultRoutes: (JSON.parse(routes) as IpRouteJson[])
      .filter((r) => r.dev)
      .map((r) => ({ dev: r.dev!, gateway: r.gateway, metric: r.metric ?? 0 })),
    ...(cgroups.length > 0 ? { cgroups: cgroupFacts(cgroups) } : {}),
  };
}

export interface InterfaceCounters { rxBytes: number; txBytes: number }

/**
 * /proc/net/dev, one line per interface of the reader's network namespace:
 * `  wan1: RX bytes packets errs drop fifo frame compressed multicast TX bytes ...`.
 */
export function parseNetDev(text: string): Map<string, InterfaceCounters> {
  const counters = new Map<string, InterfaceCounters>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const fields = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    if (fields.length < 9 || Number.isNaN(fields[0]) || Number.isNaN(fields[8])) continue;
    counters.set(line.slice(0, colon).trim(), { rxBytes: fields[0], txBytes: fields[8] });
  }
  return counters;
}

/** Byte counters of every interface, in one read (the rate sampler runs up to 10 times a second). */
export function readInterfaceCounters(): Map<string, InterfaceCounters> {
  try {
    return parseNetDev(readFileSync('/proc/net/dev', 'utf8'));
  } catch {
    return new Map();
  }
}
