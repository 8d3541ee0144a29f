// Tracking: one HealthTracker and one prober per uplink. Probe rounds, carrier
// and the plan's "unusable" become up/down transitions here; what a transition
// means for the kernel and the event log is the daemon's (daemon.ts
// onTransition), so this module never touches either.

import type { Config, Uplink } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Health, InterfaceFacts, KernelFacts, UplinkSummary } from '../plan/state.js';
import { createProber, type ProbeRound, type ProbeSubject, type Prober } from '../probe/index.js';
import { RateEstimator } from './balance.js';
import { HealthTracker, type Transition } from './health.js';

export interface Tracked {
  uplink: Uplink;
  tracker: HealthTracker;
  since: Date;
  prober?: Prober;
  /** What the prober was started with; a change restarts it. */
  proberKey?: string;
  /**
   * Rounds started before this (Date.now()) were sent from an address the
   * uplink no longer has (a DHCP renew): they say nothing about the uplink.
   */
  ignoreRoundsBefore: number;
  address?: string;
  carrier?: boolean;
  rates: RateEstimator;
}

/** The kernel's facts about the uplink's interface, if it exists. */
export function ifaceOf(facts: KernelFacts, t: Tracked): InterfaceFacts | undefined {
  return facts.interfaces.find((i) => i.name === t.uplink.interface);
}

export class Tracking {
  private tracked = new Map<string, Tracked>();
  private stopping = false;

  constructor(
    private readonly log: Logger,
    /** Every transition, whatever caused it (a round, carrier, the plan). */
    private readonly onTransition: (t: Tracked, transition: Transition) => void,
  ) {}

  get(name: string): Tracked | undefined {
    return this.tracked.get(name);
  }

  /** In the config's order. */
  all(): IterableIterator<Tracked> {
    return this.tracked.values();
  }

  /** Trackers for the config's uplinks; an uplink whose check is unchanged keeps its state. */
  track(config: Config): void {
    const next = new Map<string, Tracked>();
    for (const uplink of config.uplinks) {
      const old = this.tracked.get(uplink.name);
      const sameCheck = old && JSON.stringify(old.uplink.check) === JSON.stringify(uplink.check) && old.uplink.interface === uplink.interface;
      if (old && sameCheck) {
        next.set(uplink.name, { ...old, uplink });
        continue;
      }
      void old?.prober?.stop();
      next.set(uplink.name, { uplink, tracker: new HealthTracker(uplink.check), since: new Date(), rates: new RateEstimator(), ignoreRoundsBefore: 0 });
    }
    for (const [name, old] of this.tracked) if (!next.has(name)) void old.prober?.stop();
    this.tracked = next;
  }

  /**
   * Starts, restarts or stops each prober to match the uplink's current
   * address. `planned` is the installed plan's uplinks (for the gateway).
   */
  syncProbers(facts: KernelFacts, planned: readonly UplinkSummary[] | undefined): void {
    for (const t of this.tracked.values()) {
      const address = ifaceOf(facts, t)?.addresses[0]?.address;
      const subject: ProbeSubject | undefined = t.uplink.check && address
        ? { uplink: t.uplink.name, device: t.uplink.interface, address, gateway: gatewayOf(facts, planned, t) }
        : undefined;
      const key = subject ? JSON.stringify(subject) : undefined;
      if (key === t.proberKey) continue;
      if (t.prober && subject) {
        t.prober.update(subject);
        t.ignoreRoundsBefore = Date.now();
      } else {
        void t.prober?.stop();
        t.prober = undefined;
        if (subject) {
          t.prober = createProber(subject, t.uplink.check!, { log: (m) => this.log.warn({ uplink: t.uplink.name }, m) });
          t.prober.start((round) => this.onRound(t.uplink.name, round));
        }
      }
      t.proberKey = key;
    }
  }

  /** What the plan takes each uplink to be: pending counts as up. */
  health(): Record<string, Health> {
    return Object.fromEntries([...this.tracked].map(([name, t]) => [name, t.tracker.state === 'down' ? 'down' : 'up']));
  }

  /**
   * Carrier loss takes an uplink down at once; an address change is reported
   * to `onAddress` (with the old address still in `t.address`), if given.
   */
  noteCarrierAndAddresses(facts: KernelFacts, onAddress?: (t: Tracked, address: string | undefined) => void): void {
    for (const t of this.tracked.values()) {
      const iface = ifaceOf(facts, t);
      const carrier = iface?.carrier ?? false;
      if (carrier !== t.carrier) {
        if (!carrier) {
          const transition = t.tracker.forceDown(iface ? `carrier lost on ${t.uplink.interface}` : `${t.uplink.interface} is gone`);
          if (transition) this.onTransition(t, transition);
        } else if (!t.uplink.check && t.carrier === false) {
          const transition = t.tracker.forceUp(`carrier back on ${t.uplink.interface}`);
          if (transition) this.onTransition(t, transition);
        }
        t.carrier = carrier;
      }
      const address = iface?.addresses[0]?.address;
      if (address !== t.address) {
        onAddress?.(t, address);
        t.address = address;
      }
    }
  }

  /**
   * An uplink the plan cannot use (its DHCP lease expired, so no address or
   * no default route; its interface gone) carries nothing: it is down, with
   * the plan's reason, so status, hooks and flush_on_down say so. Once it is
   * usable again its probes bring it back; without probes it is up at once.
   */
  noteUnusable(planned: readonly UplinkSummary[]): void {
    for (const u of planned) {
      const t = this.tracked.get(u.name);
      if (!t) continue;
      const transition = u.unusable
        ? t.tracker.forceDown(`unusable: ${u.unusable}`)
        : !t.uplink.check && t.carrier && t.tracker.state === 'down' ? t.tracker.forceUp(`${t.uplink.interface} usable again`) : undefined;
      if (transition) this.onTransition(t, transition);
    }
  }

  /** Stops every prober; rounds still in flight are ignored. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.tracked.values()].map((t) => t.prober?.stop()));
  }

  private onRound(name: string, round: ProbeRound): void {
    const t = this.tracked.get(name);
    if (!t || this.stopping || round.startedAt < t.ignoreRoundsBefore) return;
    const { verdict, transition } = t.tracker.feed(round);
    this.log.trace({ uplink: name, good: verdict.good, latency: verdict.latencyMs, loss: verdict.loss }, verdict.reason);
    if (transition) this.onTransition(t, transition);
  }
}

/** The default probe target: the gateway, or the peer of a point-to-point link. */
function gatewayOf(facts: KernelFacts, planned: readonly UplinkSummary[] | undefined, t: Tracked): string | undefined {
  return planned?.find((u) => u.name === t.uplink.name)?.gateway ?? ifaceOf(facts, t)?.addresses[0]?.peer;
}
