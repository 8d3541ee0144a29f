// `uplinkd run`: install (or adopt) the state, then keep the kernel in step
// with the uplinks' health and the kernel's own events. Every kernel change
// goes through one queue, so changes never interleave; a health verdict
// changes map elements only, never chains.

import { randomInt } from 'node:crypto';
import type net from 'node:net';
import type http from 'node:http';
import { serveHttp } from './api/http.js';
import { createMetrics } from './api/metrics.js';
import { serveControlSocket } from './api/socket.js';
import { formatDiagnostic, loadConfigFile } from './config/load.js';
import { diagnose } from './doctor/index.js';
import type { Config, Uplink } from './config/types.js';
import { HealthTracker, type Transition } from './health.js';
import { runHooks, type HookEvent } from './hooks.js';
import { leastLoadedWeights, RateEstimator, SAMPLE_MS, sharesMoved, STATUS_SAMPLE_MS } from './balance.js';
import { cgroupFacts, ruleCgroups, watchCgroups } from './kernel/cgroups.js';
import { converge, findDrift, RestoreBackoff, type ConvergeOptions, type DriftScope, type Installed } from './kernel/converge.js';
import { readFacts, readInterfaceCounters } from './kernel/facts.js';
import { startedRecently, systemRunner, type Runner } from './kernel/runner.js';
import { countConnections, deleteConnections, deleteUnansweredTcp, flushDynamicSet } from './kernel/update.js';
import { watchKernel, watchNftTable, type KernelWatcher } from './kernel/watch.js';
import type { Logger } from './log.js';
import { ROTATION_SLOTS } from './ownership.js';
import { plan } from './plan/plan.js';
import type { DesiredState, Health, InterfaceFacts, KernelFacts } from './plan/state.js';
import { createProber, type ProbeRound, type ProbeSubject, type Prober } from './probe/index.js';
import type { SelfHealingStatus, Status, StatusEvent, UplinkStatus } from './api/status.js';

const MAX_EVENTS = 100;
/**
 * The periodic drift check: every 5 s what raises no kernel event (sysctls,
 * MPTCP endpoints: no commands unless MPTCP is on), and every 6th time (30 s)
 * everything, the last resort under the monitors, which say when they may
 * have missed an event (kernel/watch.ts). See README "Self-healing".
 */
const DRIFT_CHECK_EVERY_MS = 5000;
const FULL_DRIFT_CHECK_EVERY = 6;

interface Tracked {
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

export class Daemon {
  private config: Config;
  private facts: KernelFacts = { interfaces: [], mainDefaultRoutes: [] };
  private tracked = new Map<string, Tracked>();
  private installed?: Installed;
  private events: StatusEvent[] = [];
  private kernelQueue: Promise<void> = Promise.resolve();
  private watchers: KernelWatcher[] = [];
  private driftTimer?: NodeJS.Timeout;
  /** A drift check is queued or running: further triggers join it. */
  private driftCheckQueued = false;
  /** What the queued drift check reads: `all` once any trigger asked for all. */
  private driftScope: DriftScope = 'all';
  private periodicChecks = 0;
  /** A restore waits out the back-off: further triggers wait with it. */
  private restoreTimer?: NodeJS.Timeout;
  private readonly backoff = new RestoreBackoff();
  private healing: Omit<SelfHealingStatus, 'backoff_ms'> = { restores: 0, by_cause: {}, last: null };
  private servers: (net.Server | http.Server)[] = [];
  private sampler?: NodeJS.Timeout;
  private metrics = createMetrics(() => this.status());
  private stopping = false;
  /** The last kernel operation's error, until one succeeds again. */
  private kernelError?: string;
  /** least-loaded: the weights the loop steers with; undefined until it first moves them. */
  private loadWeights?: Record<string, number>;
  private steering = false;
  /** least-loaded: uplinks judged full last time (hysteresis). */
  private fullUplinks = new Set<string>();
  /** least-loaded: where this instance's rotation begins (see PlanInput.rotationStart). */
  private readonly rotationStart = randomInt(ROTATION_SLOTS);

  constructor(private readonly configPath: string, config: Config, private readonly log: Logger, private readonly runner: Runner = systemRunner) {
    this.config = config;
  }

  async start(): Promise<void> {
    this.facts = await readFacts(this.runner);
    this.track(this.config);
    this.noteCarrierAndAddresses(false);
    await this.converge('start');
    if (this.kernelError) throw new Error(`installing the first state failed: ${this.kernelError}`);
    // What `uplinkd doctor` reports, logged once after the first install (so the
    // rp_filter and rules uplinkd sets itself are in place and not reported).
    // Not awaited: it runs about ten commands and must not hold up readiness.
    void diagnose({ config: this.config, runner: this.runner }).then((findings) => {
      for (const f of findings) this.log.warn({ event: 'doctor', check: f.id, fix: f.fix }, `doctor: ${f.message}`);
    }, () => {});
    this.syncProbers();
    const log = (m: string) => this.log.warn(m);
    this.watchers.push(
      watchKernel((what) => void this.onKernelChange(what), { log }),
      watchNftTable(this.config.kernel.nftTable, startedRecently, (what) => this.checkDrift(`nft: ${what}`), { log }),
      watchCgroups(() => ruleCgroups(this.config), () => this.facts.cgroups, (what) => void this.onKernelChange(what)),
    );
    this.driftTimer = setInterval(() => {
      this.checkDrift('periodic check', ++this.periodicChecks % FULL_DRIFT_CHECK_EVERY === 0 ? 'all' : 'unwatched');
    }, DRIFT_CHECK_EVERY_MS);
    this.startSampler();
    const status = () => this.status();
    this.servers.push(await serveControlSocket(this.config.api.socket, status, this.log));
    if (this.config.api.http !== 'off') this.servers.push(await serveHttp(this.config.api.http, status, this.metrics.registry, this.log));
    this.log.info({ event: 'start', uplinks: this.config.uplinks.length },
      `running: ${this.config.uplinks.length} uplinks, balance ${this.config.balance}, config ${this.configPath}`);
  }

  /** Stops tracking. The kernel state stays, so a restart is seamless. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const w of this.watchers) w.stop();
    clearInterval(this.driftTimer);
    clearTimeout(this.restoreTimer);
    if (this.sampler) clearInterval(this.sampler);
    await Promise.all([...this.tracked.values()].map((t) => t.prober?.stop()));
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    await this.kernelQueue;
    this.log.info({ event: 'stop' }, 'stopped tracking; kernel state left in place (`uplinkd flush` removes it)');
  }

  /** SIGHUP: a config with errors is logged and ignored; the old one goes on. */
  async reload(): Promise<void> {
    const result = loadConfigFile(this.configPath);
    if (!result.ok) {
      for (const e of result.errors) this.log.error({ event: 'reload-rejected' }, formatDiagnostic(e));
      const n = result.errors.length;
      this.log.error({ event: 'reload-rejected' }, `reload rejected: ${n} error${n === 1 ? '' : 's'}; still running on the previous config`);
      return;
    }
    for (const w of result.warnings) this.log.warn(formatDiagnostic(w));
    const previous = this.config;
    this.config = result.config;
    this.track(result.config);
    this.noteCarrierAndAddresses(false);
    await this.converge('reload');
    this.syncProbers();
    this.startSampler();
    this.record({ event: 'reload', reason: `config ${this.configPath} reloaded (${previous.uplinks.length} -> ${this.config.uplinks.length} uplinks)` });
  }

  // ------------------------------------------------------------ tracking

  /** Trackers for the config's uplinks; an uplink whose check is unchanged keeps its state. */
  private track(config: Config): void {
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

  private iface(t: Tracked): InterfaceFacts | undefined {
    return this.facts.interfaces.find((i) => i.name === t.uplink.interface);
  }

  /** Starts, restarts or stops each prober to match the uplink's current address. */
  private syncProbers(): void {
    for (const t of this.tracked.values()) {
      const address = this.iface(t)?.addresses[0]?.address;
      const subject: ProbeSubject | undefined = t.uplink.check && address
        ? { uplink: t.uplink.name, device: t.uplink.interface, address, gateway: this.gatewayOf(t) }
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

  /** The default probe target: the gateway, or the peer of a point-to-point link. */
  private gatewayOf(t: Tracked): string | undefined {
    return this.installed?.state.uplinks.find((u) => u.name === t.uplink.name)?.gateway ?? this.iface(t)?.addresses[0]?.peer;
  }

  private onRound(name: string, round: ProbeRound): void {
    const t = this.tracked.get(name);
    if (!t || this.stopping || round.startedAt < t.ignoreRoundsBefore) return;
    const { verdict, transition } = t.tracker.feed(round);
    this.log.trace({ uplink: name, good: verdict.good, latency: verdict.latencyMs, loss: verdict.loss }, verdict.reason);
    if (transition) this.onTransition(t, transition);
  }

  private onTransition(t: Tracked, transition: Transition): void {
    const at = performance.now();
    t.since = new Date();
    this.metrics.countTransition(t.uplink.name, transition.to);
    const event = transition.to === 'down' ? 'down' : 'up';
    this.record({ event, uplink: t.uplink.name, reason: transition.reason });
    if (transition.from === 'pending' && transition.to === 'up') return; // pending already counted as up
    // Timed to the moment the new state is in the kernel (and, for `down`, the
    // connections are flushed), not to the read-back that follows.
    void this.converge(`${t.uplink.name} ${event}`, async (slotStartedAt) => {
      if (event === 'down') {
        const index = this.config.uplinks.indexOf(t.uplink);
        const mark = this.installed!.state.uplinks[index].mark;
        if (this.config.stickyMs !== undefined && this.config.lan.length > 0) {
          await flushDynamicSet(this.runner, this.installed!.state.nft, `sticky_${t.uplink.name}`);
        }
        if (this.config.conntrack.flushOnDown) {
          const deleted = await deleteConnections(this.runner, mark, this.config.kernel.markMask);
          this.log.info({ uplink: t.uplink.name, event: 'flush', deleted }, `${t.uplink.name}: ${deleted} connections flushed`);
        }
      }
      const now = performance.now();
      this.log.debug({ uplink: t.uplink.name, ms: now - at, kernelMs: now - slotStartedAt }, 'kernel updated');
    });
  }

  // ------------------------------------------------------------ kernel

  private health(): Record<string, Health> {
    return Object.fromEntries([...this.tracked].map(([name, t]) => [name, t.tracker.state === 'down' ? 'down' : 'up']));
  }

  private desired(): DesiredState {
    const weights = this.config.balance === 'least-loaded' ? this.loadWeights : undefined;
    // Cgroups are read again at every plan: nft cannot load one that went away since (a service stopped).
    this.facts = { ...this.facts, cgroups: cgroupFacts(ruleCgroups(this.config)) };
    return plan({ config: this.config, facts: this.facts, health: this.health(), weights, rotationStart: this.rotationStart });
  }

  /**
   * Runs `work` in the kernel queue, so kernel changes never interleave.
   * A failure is logged and kept for the watchdog until work succeeds again;
   * the returned promise never rejects.
   */
  private enqueue(why: string, work: () => Promise<void>): Promise<void> {
    const run = async () => {
      await work();
      this.kernelError = undefined;
    };
    this.kernelQueue = this.kernelQueue.then(run, run).catch((err) => {
      this.kernelError = err instanceof Error ? err.message : String(err);
      this.log.error({ why }, `kernel update failed (${why}): ${this.kernelError}`);
    });
    return this.kernelQueue;
  }

  /**
   * Brings the kernel to the plan for the current config, facts and health
   * (kernel/converge.ts decides how). `after` runs in the same queue slot,
   * once the new state is in (e.g. flushing a down uplink's connections once
   * new ones no longer go there).
   */
  private converge(why: string, after?: (slotStartedAt: number) => Promise<void>): Promise<void> {
    return this.enqueue(why, async () => {
      const slotStartedAt = performance.now();
      await this.install(why, { then: after && (() => after(slotStartedAt)) });
    });
  }

  /** Plans and installs, in the caller's queue slot; returns how many changes it made. */
  private async install(why: string, opts: ConvergeOptions): Promise<number> {
    const result = await converge(this.installed, this.desired(), this.runner, opts);
    this.installed = result.installed;
    this.noteUnusable();
    if (result.changes.length) this.log.info({ event: 'apply', why, changes: result.changes.length }, `${why}: ${result.changes.length} kernel changes`);
    for (const c of result.changes) this.log.debug({ event: 'change' }, `[#] ${c.args.join(' ')}`);
    if (result.fellBack) this.noteRestore([{ kind: 'update-failed', detail: `element update failed (${result.fellBack}); replaced the table` }], why, 0);
    return result.changes.length;
  }

  // ------------------------------------------------------------ self-healing

  /**
   * Looks for drift (kernel/converge.ts findDrift) soon, and restores what
   * someone else removed or changed. Triggers while a check is queued join
   * it; while a restore waits out the back-off, they wait with it.
   */
  private checkDrift(trigger: string, scope: DriftScope = 'all'): void {
    if (this.stopping || this.restoreTimer) return;
    if (this.driftCheckQueued) {
      if (scope === 'all') this.driftScope = 'all';
      return;
    }
    this.driftCheckQueued = true;
    this.driftScope = scope;
    const foundAt = performance.now();
    void this.enqueue(`drift check (${trigger})`, async () => {
      this.driftCheckQueued = false;
      if (!this.installed || this.stopping) return;
      const drift = await findDrift(this.installed, this.runner, this.driftScope);
      if (drift.length === 0) return;
      const delay = this.backoff.delayMs(Date.now());
      if (delay > 0) {
        this.log.warn({ event: 'backoff', drift: drift.map((d) => d.kind), delayMs: Math.round(delay) },
          `kernel state changed again (${describeDrift(drift)}); restoring in ${Math.round(delay)} ms (backing off)`);
        this.restoreTimer = setTimeout(() => {
          this.restoreTimer = undefined;
          this.checkDrift(trigger);
        }, delay);
        return;
      }
      const changes = await this.install(`restore (${trigger})`, { drift, then: async () => void (await deleteUnansweredTcp(this.runner)) });
      this.backoff.restored(Date.now());
      this.noteRestore(drift, trigger, performance.now() - foundAt, changes);
    });
  }

  private noteRestore(drift: { kind: string; detail: string }[], trigger: string, ms: number, changes?: number): void {
    const cause = drift.map((d) => d.kind).join('+');
    for (const d of drift) {
      this.healing.by_cause[d.kind] = (this.healing.by_cause[d.kind] ?? 0) + 1;
      this.metrics.countRestore(d.kind);
    }
    this.healing.restores++;
    this.healing.last = { at: new Date().toISOString(), cause, detail: describeDrift(drift), trigger, restore_ms: Math.round(ms * 10) / 10 };
    this.record({ event: 'restore', reason: `${describeDrift(drift)}; restored in ${Math.round(ms)} ms${changes ? ` (${changes} changes)` : ''}, noticed by ${trigger}` });
  }

  private async onKernelChange(what: string): Promise<void> {
    if (this.stopping) return;
    try {
      this.facts = await readFacts(this.runner, ruleCgroups(this.config));
    } catch (err) {
      this.log.error(`reading kernel facts failed: ${err instanceof Error ? err.message : err}`);
      return;
    }
    this.log.trace({ what }, 'kernel event');
    this.noteCarrierAndAddresses(true);
    await this.converge(`kernel event (${what})`);
    this.syncProbers();
    // A route or rule event may be someone deleting ours; an address flush
    // takes the routes that use it along.
    this.checkDrift(`kernel event (${what})`);
  }

  /** Carrier loss takes an uplink down at once; an address change is an event. */
  private noteCarrierAndAddresses(announce: boolean): void {
    for (const t of this.tracked.values()) {
      const iface = this.iface(t);
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
        if (announce) this.record({ event: 'address', uplink: t.uplink.name, reason: `${t.uplink.interface} address ${t.address ?? 'none'} -> ${address ?? 'none'}`, address });
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
  private noteUnusable(): void {
    for (const u of this.installed?.state.uplinks ?? []) {
      const t = this.tracked.get(u.name);
      if (!t) continue;
      const transition = u.unusable
        ? t.tracker.forceDown(`unusable: ${u.unusable}`)
        : !t.uplink.check && t.carrier && t.tracker.state === 'down' ? t.tracker.forceUp(`${t.uplink.interface} usable again`) : undefined;
      if (transition) this.onTransition(t, transition);
    }
  }

  /**
   * least-loaded needs fresh rates many times a second; otherwise the rates
   * only feed status and metrics, and once a second spares the CPU.
   */
  private startSampler(): void {
    if (this.sampler) clearInterval(this.sampler);
    this.sampler = setInterval(() => this.sampleRates(), this.config.balance === 'least-loaded' ? SAMPLE_MS : STATUS_SAMPLE_MS);
  }

  /** Reads each uplink's byte counters; with least-loaded, steers the balance map. */
  private sampleRates(): void {
    const atMs = performance.now();
    const counters = readInterfaceCounters();
    for (const t of this.tracked.values()) {
      const c = counters.get(t.uplink.interface);
      if (c) t.rates.update({ ...c, atMs });
    }
    if (this.config.balance === 'least-loaded') this.steer();
  }

  /** The least-loaded loop (see balance.ts): new weights only when a share moved past the deadband. */
  private steer(): void {
    const carriers = (this.installed?.state.uplinks ?? []).filter((u) => !u.unusable && u.health === 'up');
    if (carriers.length === 0) return;
    const loads = carriers.map((u) => {
      const t = this.tracked.get(u.name)!;
      return { rxBps: t.rates.rxBps, txBps: t.rates.txBps, peakRxBps: t.rates.peakRxBps, peakTxBps: t.rates.peakTxBps, capacity: t.uplink.capacity };
    });
    const { weights, full } = leastLoadedWeights(loads, carriers.map((u) => this.fullUplinks.has(u.name)));
    this.fullUplinks = new Set(carriers.filter((_, i) => full[i]).map((u) => u.name));
    const total = weights.reduce((a, b) => a + b, 0) || 1;
    const next = weights.map((w) => w / total);
    const installed = carriers.map((u) => u.share);
    if (!sharesMoved(installed, next) || this.steering) return;
    this.loadWeights = Object.fromEntries(carriers.map((u, i) => [u.name, weights[i]]));
    this.log.debug({ event: 'steer', shares: Object.fromEntries(carriers.map((u, i) => [u.name, Math.round(next[i] * 1000) / 1000])) },
      'least-loaded: new shares');
    this.steering = true;
    void this.converge('least-loaded').finally(() => (this.steering = false));
  }

  // ------------------------------------------------------------ reporting

  /**
   * For the service manager's watchdog (src/service/notify.ts): healthy while
   * the last kernel operation succeeded. The event loop's own health is
   * shown by the watchdog timer firing at all.
   */
  serviceHealth(): { healthy: boolean; summary: string } {
    const states = [...this.tracked.values()].map((t) => t.tracker.state);
    const up = states.filter((s) => s === 'up').length;
    const summary = `${up}/${states.length} uplinks up` + (this.kernelError ? `; kernel: ${this.kernelError}` : '');
    return { healthy: this.kernelError === undefined, summary };
  }

  private record(e: { event: StatusEvent['event']; uplink?: string; reason: string; address?: string }): void {
    const t = e.uplink ? this.tracked.get(e.uplink) : undefined;
    const entry: StatusEvent = { at: new Date().toISOString(), uplink: e.uplink ?? null, event: e.event, reason: e.reason };
    this.events.unshift(entry);
    this.events.length = Math.min(this.events.length, MAX_EVENTS);
    const level = e.event === 'down' ? 'warn' : 'info';
    this.log[level]({ event: e.event, uplink: e.uplink, reason: e.reason }, `${e.uplink ? `${e.uplink} ` : ''}${e.event}: ${e.reason}`);
    const hook: HookEvent = {
      event: e.event, uplink: e.uplink, interface: t?.uplink.interface,
      address: e.address ?? t?.address ?? (t && this.iface(t)?.addresses[0]?.address), reason: e.reason,
    };
    runHooks(this.config.hooks, hook, this.log);
  }

  async status(): Promise<Status> {
    const connections = await countConnections(this.runner, this.config.kernel.markMask).catch(() => new Map<number, number>());
    const uplinks = [...this.tracked.values()].map((t): UplinkStatus => {
      const planned = this.installed?.state.uplinks.find((u) => u.name === t.uplink.name);
      return {
        name: t.uplink.name,
        interface: t.uplink.interface,
        state: t.tracker.state,
        since: t.since.toISOString(),
        address: planned?.address ?? null,
        gateway: planned?.gateway ?? null,
        tier: t.uplink.tier,
        weight: t.uplink.weight,
        share: planned?.share ?? 0,
        latency_ms: t.tracker.latencyMs === undefined ? null : Math.round(t.tracker.latencyMs * 1000) / 1000,
        loss: Math.round(t.tracker.loss * 1000) / 1000,
        rx_bps: Math.round(t.rates.rxBps),
        tx_bps: Math.round(t.rates.txBps),
        connections: planned ? connections.get(planned.mark) ?? 0 : 0,
      };
    });
    return { uplinks, events: this.events, self_healing: { ...this.healing, backoff_ms: this.backoff.currentGapMs(Date.now()) } };
  }
}

function describeDrift(drift: { detail: string }[]): string {
  return drift.map((d) => d.detail).join('; ');
}
