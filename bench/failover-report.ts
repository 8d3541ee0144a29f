// The failover benchmark's results and their report: bench/failover.ts
// measures and saves them in bench/results/failover.json; it writes the
// README's "Failover" section from them, and bench/index.ts its rows of the
// README's benchmark table and its part of docs/BENCHMARKS.md.
//
// The two setups (the LAN's connections through a router, a multihomed
// host's own) can be run apart (BENCH_FAILOVER_SETUPS): each keeps the date
// it was measured, and a setup not run keeps its last results.
//
// The router setup also fails isp1 for IPv6 alone (`upstream6`): the stream
// then goes to the IPv6 server, and each such trial records whether isp1's
// IPv4 stayed up meanwhile. Results saved before that mode existed have no
// such trials; their rows read "—".

import type { StatusEvent } from '../src/api/status.js';
import { percentile } from '../src/lab/measure.js';
import { describeMachine, table, type Machine, type PartResult, type SummaryRow } from './lib.js';

/**
 * The faults on isp1: `link` (carrier lost) and `upstream` (the ISP stops
 * forwarding) hit both families and are measured with IPv4 connections;
 * `upstream6` is `upstream` for IPv6 only (`lab fail --family ipv6`),
 * measured with IPv6 connections. Router setup only: the lab's host mode has
 * no neutral IPv6 source for the host's own connections.
 */
export const MODES = ['link', 'upstream', 'upstream6'] as const;
export type Mode = (typeof MODES)[number];
/** The family of the connections a mode is measured with, and of the events that time it. */
export const MODE_FAMILY: Record<Mode, 'ipv4' | 'ipv6'> = { link: 'ipv4', upstream: 'ipv4', upstream6: 'ipv6' };
/** The modes of the IPv4 stream: the whole run of the host setup, and the IPv4 rows. */
export const IPV4_MODES = ['link', 'upstream'] as const satisfies readonly Mode[];

/** Whose connections: the LAN's through the router, or a multihomed host's own. */
export const SETUPS = ['router', 'host'] as const;
export type Setup = (typeof SETUPS)[number];

export interface Trial {
  setup: Setup;
  mode: Mode;
  /** How long the stream ran before the fault (random). */
  offsetMs: number;
  failoverMs?: number;
  /** Fault until uplinkd's `down` event (its own clock, ms resolution). */
  detectMs?: number;
  /** Connections started after the fault, and how many of them failed. */
  opened: number;
  failed: number;
  failbackMs?: number;
  /** Heal until uplinkd's `up` event. */
  rejoinMs?: number;
  /** Connections started after the heal that failed (there should be none). */
  failedAfterHeal: number;
  /**
   * upstream6 only: isp1's `down` events of IPv4 during the trial, which
   * should be none (the fault is IPv6's alone), and whether every status read
   * meanwhile had isp1 up, both its top-level state and its IPv4.
   */
  ipv4DownEvents?: number;
  ipv4StayedUp?: boolean;
}

export interface Saturation {
  seconds: number;
  downEvents: StatusEvent[];
  maxLatencyMs: number;
  maxLoss: number;
  /** iperf3's own figures, Mbit/s: LAN side to internet, and back. */
  upMbps?: number;
  downMbps?: number;
  iperfError?: string;
}

export interface SetupResult {
  /** Where and when this setup was measured. */
  machine: Machine;
  durationS: number;
  trialsPerMode: number;
  /** The probe settings, described. */
  probes: string;
  streamEveryMs: number;
  streamTimeoutMs: number;
  trials: Trial[];
  /** Router setup only: false failovers under load. */
  saturation?: Saturation;
  /** Router setup only: the daemon's "kernel updated" times, ms. */
  kernelUpdateMs?: number[];
}

export interface FailoverData {
  setups: Partial<Record<Setup, SetupResult>>;
}

// ------------------------------------------------------------ statistics

export interface Summary {
  n: number;
  missing: number;
  p50: number;
  p95: number;
  min: number;
  max: number;
}

export function summarize(values: (number | undefined)[]): Summary | undefined {
  const measured = values.filter((v): v is number => v !== undefined);
  if (measured.length === 0) return undefined;
  return {
    n: measured.length, missing: values.length - measured.length,
    p50: percentile(measured, 50), p95: percentile(measured, 95), min: Math.min(...measured), max: Math.max(...measured),
  };
}

/** Nearest rank: p95 of n values is the ceil(0.95 n)-th smallest, which is the largest until n reaches 20. */
export const p95IsMax = (n: number): boolean => Math.ceil(0.95 * n) >= n;

export const PERCENTILES =
  'Percentiles are nearest-rank (src/lab/measure.ts percentile): p95 of n values is the ⌈0.95·n⌉-th smallest, a measured ' +
  'value, not interpolated; of 30 it is the 29th, and below 20 values it is the maximum.';

export const fmt = (v: number | undefined): string => (v === undefined ? '—' : `${Math.round(v)}`);

export function summaryLine(label: string, s: Summary | undefined): string {
  if (!s) return `${label.padEnd(22)} no measurement`;
  const missing = s.missing ? `  (${s.missing} trial(s) without a result)` : '';
  return `${label.padEnd(22)} n=${String(s.n).padEnd(3)} p50 ${fmt(s.p50).padStart(5)} ms  p95 ${fmt(s.p95).padStart(5)} ms  ` +
    `min ${fmt(s.min).padStart(5)} ms  max ${fmt(s.max).padStart(5)} ms${missing}${p95IsMax(s.n) ? '  (p95 = max: fewer than 20)' : ''}`;
}

const of = (r: SetupResult | undefined, mode: Mode | readonly Mode[], pick: (t: Trial) => number | undefined) =>
  (r?.trials ?? []).filter((t) => (typeof mode === 'string' ? t.mode === mode : mode.includes(t.mode))).map(pick);

/** The setup's upstream6 trials in which isp1's IPv4 stayed up (no IPv4 down event, every status read up), of how many. */
export function ipv4Kept(trials: readonly Trial[]): { kept: number; of: number } {
  const six = trials.filter((t) => t.mode === 'upstream6');
  return { kept: six.filter((t) => t.ipv4DownEvents === 0 && t.ipv4StayedUp === true).length, of: six.length };
}

/** The modes a setup was run with: the router setup all, the host setup the IPv4 ones. */
export const modesOf = (setup: Setup): readonly Mode[] => (setup === 'router' ? MODES : IPV4_MODES);

const when = (m: Machine) => `${m.date.slice(0, 16).replace('T', ' ')} UTC`;

// ------------------------------------------------------------ the README's "Failover" section

export function readmeSection(data: FailoverData): string {
  const { router, host } = data.setups;
  const row = (label: string, values: (number | undefined)[]) => {
    const s = summarize(values);
    return s ? `| ${label} | ${s.n}${s.missing ? ` (+${s.missing} without a result)` : ''} | ${fmt(s.p50)} ms | ${fmt(s.p95)} ms | ${fmt(s.max)} ms |`
      : `| ${label} | ${values.length} | — | — | — |`;
  };
  const any = router ?? host;
  const lines: string[] = [];
  if (!any) return 'Not measured yet: `npm run bench:failover`.';
  const dates = [router && `the router setup on ${when(router.machine)}`, host && `the host setup on ${when(host.machine)}`].filter(Boolean);
  lines.push(
    `Measured by \`npm run bench:failover\` (${dates.join(', ')}): ${any.machine.nproc} CPUs (${any.machine.model}), Linux ${any.machine.kernel}, in the lab,`,
    `with the default probe settings (${any.probes}).`,
    '',
    '| after a fault on isp1 | trials | p50 | p95 | max |',
    '| --- | --- | --- | --- | --- |',
    row('failover, `link` (carrier lost)', of(router, 'link', (t) => t.failoverMs)),
    row('failover, `upstream` (beyond the gateway)', of(router, 'upstream', (t) => t.failoverMs)),
    row('failover, `upstream6` (beyond the gateway, IPv6 only; IPv6 connections)', of(router, 'upstream6', (t) => t.failoverMs)),
    ...MODES.map((mode) => row(`failback after \`${mode}\` (heal → first connection via isp1)`, of(router, mode, (t) => t.failbackMs))),
    ...IPV4_MODES.map((mode) => row(`host mode, its own connections: failover, \`${mode}\``, of(host, mode, (t) => t.failoverMs))),
    '',
  );
  const kept = ipv4Kept(router?.trials ?? []);
  if (kept.of) {
    lines.push(`During the \`upstream6\` faults isp1's IPv4 stayed up in ${kept.kept} of ${kept.of} trials (no IPv4 \`down\` event, and isp1 and its IPv4 up in every status read).`, '');
  }
  const sat = router?.saturation;
  if (sat) {
    lines.push(`False failovers: ${sat.downEvents.length} \`down\` events during ${sat.seconds} s of iperf3 saturation (\`-P 4 --bidir\`) of the 10 mbit isp2` +
      ` (probe latency up to ${sat.maxLatencyMs.toFixed(0)} ms, loss up to ${(sat.maxLoss * 100).toFixed(0)}%).`, '');
  }
  lines.push(
    `Method: the LAN host (in host mode, the multihomed host itself) opens a new TCP connection to a server beyond the ISPs every ${any.streamEveryMs} ms, whatever the earlier ones are doing,` +
      ' each stamped with its start on the monotonic clock shared with the process that injects the fault at a random moment.' +
      ' Failover is the time from the fault to the start of the first connection after which every new connection succeeded,' +
      ` failback the time from the heal to the first new connection the far end saw from isp1's address.` +
      ' `link` and `upstream` fail both families and are measured with IPv4 connections (to 192.0.2.10);' +
      ' `upstream6` fails isp1 beyond the gateway for IPv6 alone (the ISP drops the IPv6 it would forward, IPv4 passes), the probes check both families' +
      ' (192.0.2.10 and 2001:db8:ffff::10), and the stream is IPv6 connections to http://[2001:db8:ffff::10]:8080/, failback counted at the first one seen from isp1\'s IPv6 address;' +
      ` it waits for isp1's IPv6 state (status \`families.ipv6\`), since the uplink as a whole stays up. ${PERCENTILES}`,
    '',
    'For comparison, the documented default detection times of other tools (their defaults, not measured here):' +
      ' mwan3 about 60 s, pfSense (dpinger) about 14 s, FortiGate SD-WAN about 2.5 s.',
  );
  return lines.join('\n');
}

// ------------------------------------------------------------ the suite's report (bench/index.ts)

const ROWS: { setup: Setup; mode: Mode | readonly Mode[]; pick: (t: Trial) => number | undefined; text: string }[] = [
  { setup: 'router', mode: 'link', pick: (t) => t.failoverMs, text: 'failover after carrier loss (`link`)' },
  { setup: 'router', mode: 'upstream', pick: (t) => t.failoverMs, text: 'failover after a fault beyond the gateway (`upstream`)' },
  { setup: 'router', mode: IPV4_MODES, pick: (t) => t.failbackMs, text: 'failback (heal → new connections use the uplink again)' },
  { setup: 'router', mode: 'upstream6', pick: (t) => t.failoverMs, text: 'IPv6: failover after an IPv6-only fault beyond the gateway (`upstream6`), IPv6 connections' },
  { setup: 'router', mode: 'upstream6', pick: (t) => t.failbackMs, text: 'IPv6: failback after `upstream6` (heal → new IPv6 connections use the uplink again)' },
  { setup: 'host', mode: 'link', pick: (t) => t.failoverMs, text: "host mode, the machine's own connections: failover after carrier loss" },
  { setup: 'host', mode: 'upstream', pick: (t) => t.failoverMs, text: "host mode, the machine's own connections: failover after a fault beyond the gateway" },
];

export function renderFailover(result: PartResult<FailoverData>): { markdown: string; rows: SummaryRow[] } {
  const { setups } = result.data ?? {};
  const rows: SummaryRow[] = [];
  if (!setups) {
    // Results saved before the setups were kept apart: not comparable.
    for (const r of ROWS) rows.push({ measurement: r.text, value: 'not measured', target: '—' });
    return { markdown: 'Saved in an older format; run `npm run bench -- --only failover`.', rows };
  }
  for (const r of ROWS) {
    const s = setups[r.setup];
    const sum = summarize(of(s, r.mode, r.pick));
    rows.push({
      measurement: `${r.text}, p50 / p95 of ${sum?.n ?? 0} trials`, value: sum ? `${fmt(sum.p50)} ms / ${fmt(sum.p95)} ms` : 'not measured', target: '—',
      ...(s ? { measured: s.machine } : {}),
    });
  }
  const kept = ipv4Kept(setups.router?.trials ?? []);
  if (kept.of) {
    rows.push({
      measurement: 'IPv6-only faults (`upstream6`) in which isp1\'s IPv4 stayed up (no IPv4 down event)', value: `${kept.kept} of ${kept.of}`,
      target: 'all', met: kept.kept === kept.of, measured: setups.router!.machine,
    });
  }
  const sat = setups.router?.saturation;
  if (sat) {
    rows.push({
      measurement: 'false failovers while saturating an uplink', value: String(sat.downEvents.length), target: '0', met: sat.downEvents.length === 0,
      measured: setups.router!.machine,
    });
  }
  const out: string[] = [
    'Measured by `npm run bench:failover` (bench/failover.ts), run as part of the suite or on its own. A new connection from the',
    'LAN (or, in host mode, from the host itself) every 10 ms, a fault on isp1 at a random moment; failover = fault until every',
    'new connection succeeds, failback = heal until new connections use the healed uplink again. `link` and `upstream` fail',
    'both families and are measured with IPv4 connections; `upstream6` fails isp1 beyond the gateway for IPv6 only, with',
    'probes of both families, and is measured with IPv6 connections to [2001:db8:ffff::10]:8080 (failback: the first one seen',
    'from isp1\'s IPv6 address), timed by isp1\'s IPv6 state and events; each such trial also records whether isp1\'s IPv4',
    'stayed up (no IPv4 `down` event, isp1 and its IPv4 up in every status read). ' + PERCENTILES,
    'Its figures are also in the README\'s "Failover" section, which it writes itself.',
    '',
  ];
  for (const setup of SETUPS) {
    const s = setups[setup];
    out.push(`### ${setup === 'router' ? 'Router: the LAN\'s connections' : 'Multihomed host: its own connections'}`, '');
    if (!s) {
      out.push(`Not measured yet (\`BENCH_FAILOVER_SETUPS=${setup} npm run bench:failover\`).`, '');
      continue;
    }
    out.push(`Measured ${describeMachine(s.machine)}; took ${Math.round(s.durationS)} s; ${s.trialsPerMode} trials per fault, interleaved; probes: ${s.probes}.`, '');
    const line = (label: string, sum: Summary | undefined) =>
      [label, sum?.n ?? 0, sum ? `${fmt(sum.p50)} ms` : '—', sum ? `${fmt(sum.p95)} ms` : '—', sum ? `${fmt(sum.min)} ms` : '—', sum ? `${fmt(sum.max)} ms` : '—'];
    const modes = modesOf(setup);
    out.push(table(['figure', 'n', 'p50', 'p95', 'min', 'max'], [
      ...modes.map((m) => line(`failover, ${m}`, summarize(of(s, m, (t) => t.failoverMs)))),
      ...modes.map((m) => line(`detect (fault → down event), ${m}`, summarize(of(s, m, (t) => t.detectMs)))),
      ...modes.map((m) => line(`failback, ${m}`, summarize(of(s, m, (t) => t.failbackMs)))),
      ...modes.map((m) => line(`rejoin (heal → up event), ${m}`, summarize(of(s, m, (t) => t.rejoinMs)))),
      ...(s.kernelUpdateMs?.length ? [line('kernel update (daemon log: transition → kernel updated)', summarize(s.kernelUpdateMs))] : []),
    ]), '');
    if (s.saturation) {
      const sat2 = s.saturation;
      out.push(`Saturation: ${sat2.seconds} s of iperf3 -P 4 --bidir bound to isp2's address, through its 10 mbit tbf: ` +
        `${sat2.iperfError ?? `${sat2.upMbps?.toFixed(1)} Mbit/s up, ${sat2.downMbps?.toFixed(1)} Mbit/s down`}; ` +
        `${sat2.downEvents.length} false failovers (down events); isp2 probes up to ${sat2.maxLatencyMs.toFixed(1)} ms, loss up to ${(sat2.maxLoss * 100).toFixed(0)}%.`, '');
    }
    const kept2 = ipv4Kept(s.trials);
    if (kept2.of) out.push(`IPv4 during the IPv6-only faults (\`upstream6\`): isp1's IPv4 stayed up in ${kept2.kept} of ${kept2.of} trials.`, '');
    out.push('<details><summary>Every trial</summary>', '');
    out.push(table(['trial', 'mode', 'offset ms', 'failover ms', 'detect ms', 'failed/opened', 'failback ms', 'rejoin ms', 'failed after heal', 'IPv4 kept'],
      s.trials.map((t, i) => [i + 1, t.mode, fmt(t.offsetMs), fmt(t.failoverMs), fmt(t.detectMs), `${t.failed}/${t.opened}`, fmt(t.failbackMs), fmt(t.rejoinMs), t.failedAfterHeal,
        ipv4KeptText(t)])));
    out.push('', '</details>', '');
  }
  return { markdown: out.join('\n'), rows };
}

/** upstream6 trials: whether isp1's IPv4 stayed up; '—' for the modes that fail both families. */
export function ipv4KeptText(t: Trial): string {
  if (t.mode !== 'upstream6') return '—';
  return t.ipv4DownEvents === 0 && t.ipv4StayedUp ? 'yes' : `**no** (${t.ipv4DownEvents ?? '?'} IPv4 down events${t.ipv4StayedUp === false ? ', seen down' : ''})`;
}
