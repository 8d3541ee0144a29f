// The programs uplinkd runs, and the kernel features behind them.

import type { Config } from '../config/types.js';
import { isOwnedEndpoint, parseEndpoints } from '../kernel/mptcp.js';
import { MPTCP_ENDPOINT_IDS } from '../ownership.js';
import { complaint, findTool, tryRun, type Finding, type MachineView } from './view.js';

interface Tool { command: string; pkg: string; use: string; needed(config?: Config): boolean }

const TOOLS: Tool[] = [
  { command: 'nft', pkg: 'nftables', use: 'it installs its table with it', needed: () => true },
  { command: 'ip', pkg: 'iproute2', use: 'it installs its rules and routes and follows kernel events with it', needed: () => true },
  { command: 'conntrack', pkg: 'conntrack', use: 'status counts connections and flush_on_down deletes them with it', needed: () => true },
  {
    command: 'fping', pkg: 'fping', use: 'its icmp checks probe with it',
    // Without a config the default check (icmp) is what uplinkd would use.
    needed: (config) => !config || config.uplinks.some((u) => u.check?.method === 'icmp'),
  },
];

export function checkTools(view: MachineView): { findings: Finding[]; present: Set<string> } {
  const findings: Finding[] = [];
  const present = new Set<string>();
  for (const tool of TOOLS) {
    if (findTool(view.path, tool.command)) {
      present.add(tool.command);
    } else if (tool.needed(view.config)) {
      findings.push({
        id: 'missing-tool',
        message: `${tool.command} is not on PATH (${view.path}): ${tool.use}`,
        fix: `apt-get install ${tool.pkg}`,
      });
    }
  }
  return { findings, present };
}

/** Run as root: otherwise the netfilter commands fail for want of CAP_NET_ADMIN, not for want of a feature. */
function kernelFix(result: { stderr: string } | undefined, feature: string): string {
  return /not permitted/i.test(result?.stderr ?? '') ? 'run uplinkd doctor as root (uplinkd needs CAP_NET_ADMIN)' : feature;
}

/**
 * Each feature is tried with the command uplinkd itself relies on. Connection
 * tracking is tried through netlink (`conntrack -S`, cheap on any table size;
 * `-L` would dump every entry), since that is what `conntrack -L`/`-D` use;
 * /proc/net/nf_conntrack would only show that the module is loaded.
 */
export async function checkKernelFeatures(view: MachineView, present: Set<string>): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (present.has('nft')) {
    const r = await tryRun(view.runner, 'nft', ['list', 'tables']);
    if (r?.code !== 0) {
      findings.push({
        id: 'kernel-nftables',
        message: `nftables is not usable: nft list tables: ${complaint(r)}`,
        fix: kernelFix(r, 'modprobe nf_tables (a kernel with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET)'),
      });
    }
  }
  if (present.has('conntrack')) {
    const r = await tryRun(view.runner, 'conntrack', ['-S']);
    if (r?.code !== 0) {
      findings.push({
        id: 'kernel-conntrack',
        message: `connection tracking is not usable over netlink: conntrack -S: ${complaint(r)}`,
        fix: kernelFix(r, 'modprobe nf_conntrack_netlink (a kernel with CONFIG_NF_CONNTRACK and CONFIG_NF_CT_NETLINK)'),
      });
    }
  }
  if (present.has('ip') && view.config?.mptcp === 'subflow') findings.push(...(await checkMptcp(view)));
  if (present.has('ip')) {
    const r = await tryRun(view.runner, 'ip', ['-4', 'rule', 'show']);
    if (r?.code !== 0) {
      findings.push({
        id: 'kernel-policy-routing',
        message: `policy routing is not usable: ip -4 rule show: ${complaint(r)}`,
        fix: 'a kernel with CONFIG_IP_MULTIPLE_TABLES (policy routing)',
      });
    }
  }
  return findings;
}

/** Endpoint ids uplinkd takes for `mptcp: subflow` (src/ownership.ts): someone else's there would be treated as uplinkd's. */
async function checkMptcp(view: MachineView): Promise<Finding[]> {
  const r = await tryRun(view.runner, 'ip', ['-j', 'mptcp', 'endpoint', 'show']);
  if (r?.code !== 0) {
    return [{
      id: 'kernel-mptcp',
      message: `mptcp: subflow, but MPTCP endpoints cannot be read: ip mptcp endpoint show: ${complaint(r)}`,
      fix: kernelFix(r, 'a kernel with CONFIG_MPTCP (5.6 or newer) and sysctl net.mptcp.enabled=1, or mptcp: off'),
    }];
  }
  const foreign = parseEndpoints(r.stdout).filter((e) => isOwnedEndpoint(e) && !view.config!.uplinks.some((u) => u.interface === e.dev));
  return foreign.map((e) => ({
    id: 'mptcp-endpoint-id',
    message: `MPTCP endpoint ${e.address} (dev ${e.dev ?? '?'}) has id ${e.id}, in the ids uplinkd owns (${MPTCP_ENDPOINT_IDS.first}-${MPTCP_ENDPOINT_IDS.last}): uplinkd would replace or delete it`,
    fix: `ip mptcp endpoint delete id ${e.id}; add it again with an id below ${MPTCP_ENDPOINT_IDS.first}`,
  }));
}
