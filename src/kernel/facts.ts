// Reads what the planner needs to know about the kernel, through `ip -j`.

import type { InterfaceFacts, KernelFacts } from '../plan/state.js';
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

export async function readFacts(runner: Runner): Promise<KernelFacts> {
  const [addrs, routes] = await Promise.all([
    mustRun(runner, 'ip', ['-j', 'address', 'show']),
    mustRun(runner, 'ip', ['-j', '-4', 'route', 'show', 'table', 'main', 'default']),
  ]);
  return {
    interfaces: parseInterfaces(addrs),
    mainDefaultRoutes: (JSON.parse(routes) as IpRouteJson[])
      .filter((r) => r.dev)
      .map((r) => ({ dev: r.dev!, gateway: r.gateway, metric: r.metric ?? 0 })),
  };
}
