// Tracking: one HealthTracker and one prober per uplink and family. Probe
// rounds, carrier and the plan's "unusable" become up/down transitions of a
// family here; what a transition means for the kernel and the event log is
// the daemon's (daemon.ts onTransition), so this module never touches either.
//
// Each family of an uplink has its own health (README "Health tracking,
// failover and kernel events"): its own targets and rounds, and the plan's
// `unusable` of that family. Carrier
// loss takes both down, as a link carries both. An uplink's IPv6 exists when
// its gateway6 is not `off`, and counts (in the status, the events and the
// uplink's state) once the installed plan has its IPv6 side (UplinkSummary.ipv6):
// until some uplink has a global IPv6 address the plan is IPv4 only, and so
// is everything the daemon shows.

import type { Check, Config, Uplink } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Family, Health, InterfaceFacts, KernelFacts, UplinkSummary } from '../plan/state.js';
import { checksFamily, createProber, type ProbeRound, type ProbeSubject, type Prober } from '../probe/index.js';
import { ownAddress, sourceAddress6 } from '../plan/resolve.js';
import { RateEstimator } from './balance.js';
import { HealthTracker, type Transition, type UplinkState } from './health.js';

/** One family of one uplink: its health, its prober and its address. */
export interface FamilyTrack {
  family: Family;
  /** What probes it; undefined: not probed, up unless its link or the plan says otherwise (`check: false`, checksFamily). */
  check?: Check;
  tracker: HealthTracker;
  /** When its state last changed. */
  since: Date;
  prober?: Prober;
  /** What the prober was started with; a change restarts it. */
  proberKey?: string;
  /**
   * Rounds started before this (Date.now()) were sent from an address the
   * uplink no longer has (a DHCP renew, a new IPv6 prefix): they say nothing
   * about the uplink.
   */
  ignoreRoundsBefore: number;
  /** The uplink's first address of this family, as last noted. */
  address?: string;
}

export interface Tracked {
  uplink: Uplink;
  ipv4: FamilyTrack;
  /** Absent with `gateway6: off`. */
  ipv6?: FamilyTrack;
  /** The installed plan has this uplink's IPv6 side: its IPv6 health counts and is shown. */
  dualStack: boolean;
  /** The uplink's state (uplinkState), and when it last changed. */
  state: UplinkState;
  since: Date;
  carrier?: boolean;
  rates: RateEstimator;
}

/** Makes a family's prober (the real one; a fake in the unit tests). */
export type ProberFactory = (subject: ProbeSubject, check: Check, log: (msg: string) => void) => Prober;

const realProber: ProberFactory = (subject, check, log) => createProber(subject, check, { log });

/** The kernel's facts about the uplink's interface, if it exists. */
export function ifaceOf(facts: KernelFacts, t: Tracked): InterfaceFacts | undefined {
  return facts.interfaces.find((i) => i.name === t.uplink.interface);
}

/**
 * The uplink's address of `family` that probes are sent from, if it has one:
 * one the plan routes from (`ip rule from`): for IPv4 the interface's own
 * address, never a shared VRRP address that comes and goes (ownAddress); for
 * IPv6 the one the planner picks (sourceAddress6).
 */
export function probeAddress(t: Tracked, iface: InterfaceFacts | undefined, family: Family): string | undefined {
  return family === 'ipv4' ? ownAddress(t.uplink, iface)?.address : sourceAddress6(iface)?.address;
}

/** The families that count now: IPv4, and IPv6 once the plan has it. */
export function familiesOf(t: Tracked): FamilyTrack[] {
  return t.ipv6 && t.dualStack ? [t.ipv4, t.ipv6] : [t.ipv4];
}

/**
 * The uplink's state: up while any family that counts is up (it carries
 * something); else pending while any is pending; else down. IPv4 only: IPv4's.
 */
export function uplinkState(t: Tracked): UplinkState {
  const states = familiesOf(t).map((f) => f.tracker.state);
  return states.includes('up') ? 'up' : states.includes('pending') ? 'pending' : 'down';
}

function newFamily(family: Family, check: Check | undefined): FamilyTrack {
  const own = check && checksFamily(check, family) ? check : undefined;
  return { family, check: own, tracker: new HealthTracker(own), since: new Date(), ignoreRoundsBefore: 0 };
}

export class Tracking {
  private tracked = new Map<string, Tracked>();
  private stopping = false;

  constructor(
    private readonly log: Logger,
    /** Every transition of a family that counts, whatever caused it (a round, carrier, the plan). */
    private readonly onTransition: (t: Tracked, family: FamilyTrack, transition: Transition) => void,
    private readonly makeProber: ProberFactory = realProber,
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
      const carriesIpv6 = uplink.gateway6.kind !== 'off';
      if (old && sameCheck) {
        const ipv6 = carriesIpv6 ? old.ipv6 ?? newFamily('ipv6', uplink.check) : undefined;
        if (!carriesIpv6) void old.ipv6?.prober?.stop();
        const t: Tracked = { ...old, uplink, ipv6, dualStack: old.dualStack && ipv6 !== undefined };
        t.state = uplinkState(t);
        next.set(uplink.name, t);
        continue;
      }
      if (old) for (const f of [old.ipv4, old.ipv6]) void f?.prober?.stop();
      const ipv4 = newFamily('ipv4', uplink.check);
      next.set(uplink.name, {
        uplink, ipv4, ipv6: carriesIpv6 ? newFamily('ipv6', uplink.check) : undefined, dualStack: false,
        state: ipv4.tracker.state, since: new Date(), rates: new RateEstimator(),
      });
    }
    for (const [name, old] of this.tracked) if (!next.has(name)) for (const f of [old.ipv4, old.ipv6]) void f?.prober?.stop();
    this.tracked = next;
  }

  /**
   * Starts, restarts or stops each family's prober to match the uplink's
   * current address of that family. `planned` is the installed plan's uplinks
   * (for the gateways).
   */
  syncProbers(facts: KernelFacts, planned: readonly UplinkSummary[] | undefined): void {
    for (const t of this.tracked.values()) {
      const summary = planned?.find((u) => u.name === t.uplink.name);
      const iface = ifaceOf(facts, t);
      // The IPv4 default target: the gateway, or the peer of a point-to-point link.
      this.syncProber(t, t.ipv4, iface, summary?.gateway ?? ownAddress(t.uplink, iface)?.peer);
      if (t.ipv6) this.syncProber(t, t.ipv6, iface, summary?.ipv6?.gateway);
    }
  }

  private syncProber(t: Tracked, f: FamilyTrack, iface: InterfaceFacts | undefined, gateway: string | undefined): void {
    const address = probeAddress(t, iface, f.family);
    const subject: ProbeSubject | undefined = f.check && address
      ? { uplink: t.uplink.name, device: t.uplink.interface, ...(f.family === 'ipv6' ? { family: f.family } : {}), address, gateway }
      : undefined;
    const key = subject ? JSON.stringify(subject) : undefined;
    if (key === f.proberKey) return;
    if (f.prober && subject) {
      f.prober.update(subject);
      f.ignoreRoundsBefore = Date.now();
    } else {
      void f.prober?.stop();
      f.prober = undefined;
      if (subject) {
        const fields = { uplink: t.uplink.name, ...(f.family === 'ipv6' ? { family: f.family } : {}) };
        const prober = this.makeProber(subject, f.check!, (m) => this.log.warn(fields, m));
        f.prober = prober;
        prober.start((round) => this.onRound(t.uplink.name, f.family, prober, round));
      }
    }
    f.proberKey = key;
  }

  /** What the plan takes each uplink's IPv4 to be: pending counts as up. */
  health(): Record<string, Health> {
    return Object.fromEntries([...this.tracked].map(([name, t]) => [name, asHealth(t.ipv4)]));
  }

  /** The same for IPv6, for the uplinks that carry it. */
  health6(): Record<string, Health> {
    return Object.fromEntries([...this.tracked].flatMap(([name, t]) => (t.ipv6 ? [[name, asHealth(t.ipv6)]] : [])));
  }

  /**
   * Carrier loss takes both families of an uplink down at once; an address
   * change of a family is reported to `onAddress` (with the old address still
   * in `f.address`), if given.
   */
  noteCarrierAndAddresses(facts: KernelFacts, onAddress?: (t: Tracked, family: FamilyTrack, address: string | undefined) => void): void {
    for (const t of this.tracked.values()) {
      const iface = ifaceOf(facts, t);
      const carrier = iface?.carrier ?? false;
      if (carrier !== t.carrier) {
        for (const f of familiesOf(t)) {
          if (!carrier) {
            this.moved(t, f, f.tracker.forceDown(iface ? `carrier lost on ${t.uplink.interface}` : `${t.uplink.interface} is gone`));
          } else if (!f.check && t.carrier === false) {
            this.moved(t, f, f.tracker.forceUp(`carrier back on ${t.uplink.interface}`));
          }
        }
        t.carrier = carrier;
      }
      for (const f of [t.ipv4, t.ipv6]) {
        if (!f) continue;
        const address = probeAddress(t, iface, f.family);
        if (address !== f.address) {
          onAddress?.(t, f, address);
          f.address = address;
        }
      }
    }
  }

  /**
   * A family the plan cannot use (the uplink's DHCP lease expired, so no
   * address or no default route; no global IPv6 address or no router
   * advertisement; its interface gone) carries nothing: it is down, with the
   * plan's reason, so status, hooks and flush_on_down say so. Once it is
   * usable again its probes bring it back; without probes it is up at once.
   * Runs after every install: it is also where an uplink's IPv6 comes to
   * count (the plan has it) or stops counting.
   */
  noteUnusable(planned: readonly UplinkSummary[]): void {
    for (const u of planned) {
      const t = this.tracked.get(u.name);
      if (!t) continue;
      this.noteFamilyUnusable(t, t.ipv4, u.unusable);
      if (t.ipv6) this.noteIpv6InPlan(t, t.ipv6, u);
    }
  }

  private noteIpv6InPlan(t: Tracked, f: FamilyTrack, u: UplinkSummary): void {
    if (!u.ipv6) {
      // The plan is IPv4 only again: no uplink has a global IPv6 address, this one included.
      if (t.dualStack) this.moved(t, f, f.tracker.forceDown(`unusable: ${t.uplink.interface} has no global IPv6 address`));
      t.dualStack = false;
      this.noteState(t);
      return;
    }
    if (!t.dualStack) {
      // IPv6 comes to count: its state starts afresh, from what is known now.
      f.tracker = new HealthTracker(f.check);
      f.since = new Date();
      t.dualStack = true;
      if (!t.carrier) this.moved(t, f, f.tracker.forceDown(`carrier lost on ${t.uplink.interface}`));
    }
    this.noteFamilyUnusable(t, f, u.ipv6.unusable);
    this.noteState(t);
  }

  private noteFamilyUnusable(t: Tracked, f: FamilyTrack, unusable: string | undefined): void {
    const transition = unusable
      ? f.tracker.forceDown(`unusable: ${unusable}`)
      : !f.check && t.carrier && f.tracker.state === 'down' ? f.tracker.forceUp(`${t.uplink.interface} usable again`) : undefined;
    this.moved(t, f, transition);
  }

  /** Stops every prober; rounds still in flight are ignored. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.tracked.values()].flatMap((t) => [t.ipv4.prober?.stop(), t.ipv6?.prober?.stop()]));
  }

  private onRound(name: string, family: Family, prober: Prober, round: ProbeRound): void {
    const t = this.tracked.get(name);
    const f = t?.[family];
    // A round of a prober since replaced (a reload) is not this family's.
    if (!t || !f || f.prober !== prober || this.stopping || round.startedAt < f.ignoreRoundsBefore) return;
    if (family === 'ipv6' && !t.dualStack) return;
    const { verdict, transition } = f.tracker.feed(round);
    const fields = { uplink: name, ...(family === 'ipv6' ? { family } : {}) };
    this.log.trace({ ...fields, good: verdict.good, latency: verdict.latencyMs, loss: verdict.loss }, verdict.reason);
    this.moved(t, f, transition);
  }

  /** A family's transition, if any: its time, the uplink's state, and the daemon told. */
  private moved(t: Tracked, f: FamilyTrack, transition: Transition | undefined): void {
    if (!transition) return;
    f.since = new Date();
    this.noteState(t);
    this.onTransition(t, f, transition);
  }

  private noteState(t: Tracked): void {
    const state = uplinkState(t);
    if (state === t.state) return;
    t.state = state;
    t.since = new Date();
  }
}

function asHealth(f: FamilyTrack): Health {
  return f.tracker.state === 'down' ? 'down' : 'up';
}
