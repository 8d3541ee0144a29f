// Data-plane overhead: what uplinkd's kernel state costs a forwarded packet,
// against a plain NAT router, on unshaped links (so the machine's CPU is the
// limit), for IPv4 and IPv6 in the same runs. Four systems, measured side by
// side, interleaved:
//   plain       no uplinkd: masquerade on wan1 (an nft table of our own per
//               family: NAT44, and NAT66 to wan1's IPv6 address), the main
//               table's default routes via wan1 (IPv4's and IPv6's, metric 101);
//   apply-1     `uplinkd apply` (the kernel state alone, no daemon), two
//               uplinks, one pinning rule: the data plane's own cost;
//   rules-1     `uplinkd run`, two uplinks, one pinning rule (matching nothing);
//   rules-1000  `uplinkd run`, two uplinks, 1000 pinning rules matching none of
//               the test traffic.
// Two tests, both from the LAN host to the internet server through the router:
//   tcp  iperf3 TCP, 10 s (after 1 s omitted): forwarding throughput;
//   udp  iperf3 UDP, 64-byte payloads, unlimited rate (-b 0), 5 s: packets
//        per second received by the server, and the loss.
// Each system runs both tests over IPv4 (192.0.2.10), then again over IPv6
// (iperf3 -6 from the LAN host's 2001:db8:ff00::2 to 2001:db8:ffff::10, the
// same iperf3 server, which listens on both families).

import type { LabState } from '../src/lab/lab.js';
import { startDaemon, uplinkdInRouter } from '../src/lab/lab-daemon.js';
import type { Family } from '../src/plan/state.js';
import {
  describeMachine, fmtSpread, forgetConnections, interrupt, iperf, labMust, labName, machine, pause, pinRules, say, spread,
  BENCH_START, stopDaemon, stopIfInterrupted, table, waitForFamilies, withLab, writeBenchConfig, type PartResult, type Spread, type SummaryRow,
} from './lib.js';

// Five: packets per second through a shared 2-core machine swing by a fifth from run to run.
const REPEATS = Math.max(1, Number(process.env.BENCH_REPEATS ?? 5));
const TCP_S = 10;
const TCP_OMIT_S = 1;
const UDP_S = 5;
const UDP_PAYLOAD = 64;
const TARGET = 0.95;

export const OVERHEAD_SYSTEMS = ['plain', 'apply-1', 'rules-1', 'rules-1000'] as const;
export type OverheadSystem = (typeof OVERHEAD_SYSTEMS)[number];

const FAMILY_LABEL: Record<Family, string> = { ipv4: 'IPv4', ipv6: 'IPv6' };

const LABEL: Record<OverheadSystem, string> = {
  plain: 'plain NAT router (no uplinkd)',
  'apply-1': 'uplinkd apply, 1 pinning rule, no daemon',
  'rules-1': 'uplinkd run, 1 pinning rule',
  'rules-1000': 'uplinkd run, 1000 pinning rules',
};

export const OVERHEAD_FAMILIES = ['ipv4', 'ipv6'] as const satisfies readonly Family[];

/** One family's figures of one run. */
export interface OverheadFigures {
  tcpGbps?: number;
  tcpError?: string;
  /** Packets per second the server received. */
  udpPps?: number;
  udpSentPps?: number;
  udpLossPercent?: number;
  udpError?: string;
}

/** IPv4's figures at the top level, as saved before IPv6 was measured; IPv6's under `ipv6` (absent in older results). */
export interface OverheadRun extends OverheadFigures {
  repeat: number;
  system: OverheadSystem;
  ipv6?: OverheadFigures;
}

const figuresOf = (run: OverheadRun, family: Family): OverheadFigures | undefined => (family === 'ipv4' ? run : run.ipv6);

export interface OverheadData {
  repeats: number;
  /** How the 1000 rules were compiled: the pin maps in uplinkd's nft table and their elements. */
  pinMaps?: { maps: number; elements: number };
  runs: OverheadRun[];
}

async function startSystem(lab: LabState, system: OverheadSystem, data: OverheadData): Promise<() => Promise<void>> {
  if (system === 'plain') {
    const wan1 = lab.uplinks[0].routerIf;
    // NAT66 in a table of its own, so the IPv4 one is what it always was. No
    // route to add: the lab's main table already sends IPv6 by wan1 (metric
    // 101, before the RA route of wan2), as a plain router's would.
    const masquerade = (family: 'ip' | 'ip6', table: string) =>
      `table ${family} ${table} {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "${wan1}" masquerade\n  }\n}\n`;
    await labMust(lab, 'router', ['nft', '-f', '-'], masquerade('ip', 'ulbench_plain'));
    await labMust(lab, 'router', ['nft', '-f', '-'], masquerade('ip6', 'ulbench_plain6'));
    return async () => {
      await labMust(lab, 'router', ['nft', 'delete', 'table', 'ip', 'ulbench_plain']);
      await labMust(lab, 'router', ['nft', 'delete', 'table', 'ip6', 'ulbench_plain6']);
      await forgetConnections(lab);
    };
  }
  // Both families probed, as a dual-stack router runs it (the lab's own config does the same).
  const checkTargets = [lab.server, lab.server6];
  const rules = system === 'rules-1000' ? pinRules(1000, lab.uplinks.map((u) => u.name)) : '  - {src: 10.255.255.1/32, via: isp2}\n';
  if (system === 'apply-1') {
    const config = writeBenchConfig(lab, { rules, checkTargets }, 'bench-apply.yaml');
    const r = await uplinkdInRouter(lab, ['apply', '-c', config]);
    if (r.code !== 0) throw new Error(`uplinkd apply failed: ${r.stderr.trim()}`);
    return async () => {
      await uplinkdInRouter(lab, ['flush', '-c', config]);
      await forgetConnections(lab);
    };
  }
  const d = await startDaemon(lab, writeBenchConfig(lab, { rules, checkTargets }), BENCH_START);
  // startDaemon waits for each uplink to be up, which it is with its first family: IPv6 is measured too.
  const names = lab.uplinks.map((u) => u.name);
  if (!(await waitForFamilies(d, names, ['ipv4', 'ipv6'], 'up', 10_000, interrupt.signal))) {
    await stopDaemon(lab, d);
    throw new Error(`${system}: the uplinks' IPv6 not up within 10 s`);
  }
  if (system === 'rules-1000' && !data.pinMaps) {
    const nft = JSON.parse(await labMust(lab, 'router', ['nft', '-j', 'list', 'table', 'inet', 'uplinkd'])) as
      { nftables: { map?: { name: string; elem?: unknown[] } }[] };
    const maps = nft.nftables.flatMap((x) => (x.map && /^rules_/.test(x.map.name) ? [x.map] : []));
    data.pinMaps = { maps: maps.length, elements: maps.reduce((a, m) => a + (m.elem?.length ?? 0), 0) };
  }
  return () => stopDaemon(lab, d);
}

/** iperf3 from the LAN host over one family: IPv4 as it always was; IPv6 with -6, from the LAN host's IPv6 address to the IPv6 server. */
function iperfFamily(lab: LabState, family: Family, args: string[], seconds: number) {
  return family === 'ipv4' ? iperf(lab, 'lan', args, seconds) : iperf(lab, 'lan', ['-6', '-B', lab.lanHost6, ...args], seconds, lab.server6);
}

async function measureTcp(lab: LabState, family: Family, run: OverheadFigures): Promise<void> {
  const r = await iperfFamily(lab, family, ['-p', String(lab.iperfPort), '-t', String(TCP_S), '-O', String(TCP_OMIT_S)], TCP_S + TCP_OMIT_S);
  const sum = r.json?.end.sum_received;
  if (r.error || !sum) run.tcpError = r.error ?? 'no result';
  else run.tcpGbps = sum.bits_per_second / 1e9;
}

async function measureUdp(lab: LabState, family: Family, run: OverheadFigures): Promise<void> {
  const r = await iperfFamily(lab, family, ['-p', String(lab.iperfPort), '-u', '-l', String(UDP_PAYLOAD), '-b', '0', '-t', String(UDP_S)], UDP_S);
  const received = r.json?.end.sum_received;
  const sent = r.json?.end.sum_sent;
  if (r.error || !received || !sent) {
    run.udpError = r.error ?? 'no result';
    return;
  }
  run.udpPps = received.bytes / UDP_PAYLOAD / received.seconds;
  run.udpSentPps = (sent.packets ?? sent.bytes / UDP_PAYLOAD) / sent.seconds;
  run.udpLossPercent = 100 * (1 - received.bytes / sent.bytes);
}

export async function runOverhead(): Promise<PartResult<OverheadData>> {
  const m = machine();
  const started = Date.now();
  say(`overhead: ${OVERHEAD_SYSTEMS.join(', ')} x ${REPEATS} repeats; IPv4 then IPv6, each TCP ${TCP_S} s, UDP ${UDP_PAYLOAD}-byte ${UDP_S} s`);
  const data: OverheadData = { repeats: REPEATS, runs: [] };
  await withLab({ name: labName('ov'), uplinks: 2 }, async (lab) => {
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      const order = OVERHEAD_SYSTEMS.map((_, i) => OVERHEAD_SYSTEMS[(i + repeat) % OVERHEAD_SYSTEMS.length]);
      for (const system of order) {
        stopIfInterrupted();
        const stop = await startSystem(lab, system, data);
        const run: OverheadRun = { repeat, system, ipv6: {} };
        try {
          // IPv4 first, as it was measured before IPv6 was; then the same over IPv6.
          for (const family of OVERHEAD_FAMILIES) {
            await pause(500);
            await measureTcp(lab, family, figuresOf(run, family)!);
            await pause(500);
            await measureUdp(lab, family, figuresOf(run, family)!);
          }
        } finally {
          await stop();
        }
        data.runs.push(run);
        for (const family of OVERHEAD_FAMILIES) {
          const f = figuresOf(run, family)!;
          say(`  repeat ${repeat + 1}/${REPEATS} ${system.padEnd(10)} ${FAMILY_LABEL[family]} TCP ${f.tcpGbps?.toFixed(2) ?? f.tcpError} Gbit/s, ` +
            `UDP ${f.udpPps ? `${Math.round(f.udpPps / 1000)} kpps received (${f.udpLossPercent!.toFixed(1)}% lost)` : f.udpError}`);
        }
      }
    }
  });
  return { part: 'overhead', machine: m, durationS: (Date.now() - started) / 1000, data };
}

// ------------------------------------------------------------ the report

/** Per repeat, the system's figure divided by plain's in the same repeat. */
function ratioSpread(data: OverheadData, system: OverheadSystem, pick: (r: OverheadRun) => number | undefined, against: OverheadSystem = 'plain'): Spread {
  const values: number[] = [];
  for (let repeat = 0; repeat < data.repeats; repeat++) {
    const base = data.runs.find((r) => r.repeat === repeat && r.system === against);
    const mine = data.runs.find((r) => r.repeat === repeat && r.system === system);
    const b = base && pick(base);
    const v = mine && pick(mine);
    if (b && v !== undefined) values.push(v / b);
  }
  return spread(values);
}

export function renderOverhead(result: PartResult<OverheadData>): { markdown: string; rows: SummaryRow[] } {
  const { data } = result;
  const tcp = (family: Family) => (r: OverheadRun) => figuresOf(r, family)?.tcpGbps;
  const pps = (family: Family) => (r: OverheadRun) => figuresOf(r, family)?.udpPps;
  const raw = (s: OverheadSystem, pick: (r: OverheadRun) => number | undefined) =>
    spread(data.runs.filter((r) => r.system === s).map(pick).filter((v): v is number => v !== undefined));
  // Results saved before IPv6 was measured have IPv4's figures only.
  const families = OVERHEAD_FAMILIES.filter((f) => f === 'ipv4' || data.runs.some((r) => r.ipv6));
  const summary = (family: Family) => table(['system', 'TCP Gbit/s', 'TCP ÷ plain', 'UDP kpps received', 'UDP ÷ plain', 'UDP loss'],
    OVERHEAD_SYSTEMS.map((s) => [
      LABEL[s], fmtSpread(raw(s, tcp(family)), 2), s === 'plain' ? '1' : fmtSpread(ratioSpread(data, s, tcp(family)), 3),
      fmtSpread(raw(s, (r) => { const v = pps(family)(r); return v === undefined ? undefined : v / 1000; }), 0),
      s === 'plain' ? '1' : fmtSpread(ratioSpread(data, s, pps(family)), 3),
      fmtSpread(raw(s, (r) => figuresOf(r, family)?.udpLossPercent), 1, '%'),
    ]));
  const runCells = (f: OverheadFigures | undefined) => f === undefined ? ['—', '—', '—', '—'] : [
    f.tcpGbps?.toFixed(3) ?? `error: ${f.tcpError}`,
    f.udpSentPps ? (f.udpSentPps / 1000).toFixed(1) : `error: ${f.udpError}`, f.udpPps ? (f.udpPps / 1000).toFixed(1) : '—',
    f.udpLossPercent !== undefined ? `${f.udpLossPercent.toFixed(2)}%` : '—',
  ];
  const out: string[] = [
    `Measured ${describeMachine(result.machine)}; took ${Math.round(result.durationS)} s.`,
    '',
    '**Method.** One lab with two unshaped uplinks, so the CPU is the limit (all namespaces share the machine\'s cores: the',
    'sender, the router, the ISPs and the receiver compete for them, which is why absolute figures are far below real NICs).',
    `From the LAN host to the internet server through the router: iperf3 TCP for ${TCP_S} s (after ${TCP_OMIT_S} s omitted), then`,
    `iperf3 UDP with ${UDP_PAYLOAD}-byte payloads at unlimited rate (\`-b 0\`) for ${UDP_S} s, counting what the server received.`,
    'Systems: **plain** = no uplinkd, masquerade on wan1 and the main table\'s default route; **apply-1** = `uplinkd apply` with',
    '1 pinning rule and no daemon (the kernel state alone, so its ratio is the data plane\'s own cost); **rules-1** and **rules-1000** =',
    '`uplinkd run` (the daemon, with its probes) on both uplinks, weighted, with 1 pinning rule or 1000 pinning rules that match',
    `none of the test traffic (400 source prefixes, 400 destinations, 200 source+destination+port combinations)${data.pinMaps ?
      `; the 1000 rules compile to ${data.pinMaps.maps} nft maps with ${data.pinMaps.elements} elements in all` : ''}.`,
    `Repeated ${data.repeats} times, interleaved (the order rotates each repeat); a ratio is taken against plain in the same repeat,`,
    'then the median and min–max of those ratios are given.',
    ...(families.includes('ipv6') ? [
      '',
      '**IPv6**, in the same runs: with each system in place, after the IPv4 tests, the same two tests over IPv6 (`iperf3 -6`,',
      'from the LAN host\'s 2001:db8:ff00::2 to 2001:db8:ffff::10, the same iperf3 server). **plain** adds NAT66: masquerade on',
      'wan1 in an `ip6` table of its own, the main table\'s IPv6 default route (via wan1, metric 101) unchanged. The uplinkd systems',
      'NAT66 to each uplink\'s address (`nat6: snat`, the default) and probe both families (192.0.2.10 and 2001:db8:ffff::10);',
      'their pinning rules are all IPv4, so IPv6 meets no rule map. A ratio is IPv6 against plain\'s IPv6 in the same repeat.',
    ] : []),
    '',
    'Only a connection\'s first packet is classified (balance map, pin maps); every later packet of an established connection,',
    'in both directions, takes one verdict-map lookup on its ct mark (`ct mark & 0x0000ff00 vmap @restore`) and is done. So the',
    'number of rules can only matter for new connections, and a bulk transfer does not see it: the rules-1000 line shows that the',
    'bulk figures do not fall, not what the rules cost. That is measured in new connections per second (part "Connections").',
    '',
    ...families.flatMap((f) => [...(families.length > 1 ? [`${FAMILY_LABEL[f]}:`, ''] : []), summary(f), '']),
    '<details><summary>Every run</summary>',
    '',
    table(['repeat', 'system', ...families.flatMap((f) => {
      const tag = families.length > 1 ? `${FAMILY_LABEL[f]} ` : '';
      return [`${tag}TCP Gbit/s`, `${tag}UDP sent kpps`, `${tag}UDP received kpps`, `${tag}UDP loss`];
    })], data.runs.map((r) => [r.repeat + 1, r.system, ...families.flatMap((f) => runCells(figuresOf(r, f)))])),
    '',
    '</details>',
    '',
  ];
  const rows: SummaryRow[] = [];
  for (const family of families) {
    const six = family === 'ipv6';
    const against = six ? 'plain NAT66 router' : 'plain NAT router';
    const tag = six ? ', IPv6' : '';
    for (const s of ['apply-1', 'rules-1', 'rules-1000'] as const) {
      const t = ratioSpread(data, s, tcp(family));
      rows.push({ measurement: `forwarding throughput (TCP${tag}), ${LABEL[s]} ÷ ${against}`, value: fmtSpread(t, 2), target: `≥ ${TARGET}`, met: t.n ? t.median >= TARGET : undefined });
    }
    for (const s of ['apply-1', 'rules-1', 'rules-1000'] as const) {
      const p = ratioSpread(data, s, pps(family));
      rows.push({ measurement: `packets per second (UDP, 64 B${tag}), ${LABEL[s]} ÷ ${against}`, value: fmtSpread(p, 2), target: `≥ ${TARGET}`, met: p.n ? p.median >= TARGET : undefined });
    }
  }
  // No "1000 rules ÷ 1 rule" row here: these are long flows, and only a
  // connection's first packet meets the rules, so that ratio could not fall.
  // What rules cost shows in new connections per second (bench/connections.ts).
  return { markdown: out.join('\n'), rows };
}
