// The probers: the part of the daemon that measures each uplink, and only
// that (as dpinger does). A prober sends a round of probes every interval,
// one per target, from the uplink's own address, and reports each round once
// every target has answered or its timeout has passed. Whether the uplink is
// up or down is decided elsewhere (daemon/health.ts), from these rounds.
//
// Why a probe leaves through its uplink even while that uplink is down:
// uplinkd installs `ip rule from <uplink address> lookup <uplink table>`, so a
// socket bound to the uplink's address is routed by that uplink's table
// whatever the balancing says. fping is, besides, bound to the device.
//
//   clock.ts      one round clock, one timer, for every prober in the process
//   scheduler.ts  one uplink's rounds on it: open, collect, close; in-order delivery (rounds.ts)
//   icmp.ts       one long-running fping per uplink, its output read once per round
//   tcp.ts, http.ts, dns.ts   one attempt per target and round (oneshot.ts)

import type { Check, ProbeMethod } from '../config/types.js';
import { sharedClock, type RoundClock } from './clock.js';
import { dnsProbe } from './dns.js';
import { httpProbe } from './http.js';
import { FpingDriver, spawnFping } from './icmp.js';
import { oneShotDriver, type Probe } from './oneshot.js';
import { RoundScheduler } from './scheduler.js';
import { tcpProbe } from './tcp.js';
import type { FileResult, ProbeDriver, Prober, ProbeSubject } from './types.js';

export type { ProbeRound, ProbeSubject, Prober, TargetResult } from './types.js';
export { checksFamily, probeTargets } from './targets.js';

const IN_PROCESS: Record<Exclude<ProbeMethod, 'icmp'>, Probe> = { tcp: tcpProbe, http: httpProbe, dns: dnsProbe };

/** A prober on `clock` (default: the one every prober of the process shares, so all wake together). */
export function createProber(subject: ProbeSubject, check: Check, opts: { log?: (msg: string) => void; clock?: RoundClock } = {}): Prober {
  const log = opts.log ?? (() => {});
  const clock = opts.clock ?? sharedClock;
  const driver = (report: FileResult): ProbeDriver =>
    check.method === 'icmp'
      ? new FpingDriver(check, report, log, spawnFping, clock.timers)
      : oneShotDriver(IN_PROCESS[check.method], check, report, () => clock.timers.now());
  return new RoundScheduler(subject, check, driver, clock);
}
