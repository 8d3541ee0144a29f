// `uplinkd run`: install (or adopt) the state, then keep the kernel in step
// with the uplinks' health and the kernel's own events. Every kernel change
// goes through one queue, so changes never interleave; a health verdict
// changes map elements only, never chains.
//
// This class wires the parts together and owns what they share (the config
// and the kernel facts): tracking.ts turns probes and carrier into verdicts,
// converging.ts keeps the kernel at the plan and restores drift, steering.ts
// samples rates and steers least-loaded, events.ts records events and runs
// the hooks.

import type net from 'node:net';
import type http from 'node:http';
import { History, HISTORY_INTERVAL_MS } from '../api/history.js';
import { serveHttp } from '../api/http.js';
import { createMetrics, type Metrics } from '../api/metrics.js';
import { serveControlSocket } from '../api/socket.js';
import { formatDiagnostic, loadConfigFile } from '../config/load.js';
import { diagnose } from '../doctor/index.js';
import type { Config } from '../config/types.js';
import type { Transition } from './health.js';
import { cgroupFacts, ruleCgroups, watchCgroups } from '../kernel/cgroups.js';
import { readExplainFacts, readFacts } from '../kernel/facts.js';
import { startedRecently, systemRunner, type Runner } from '../kernel/runner.js';
import { countConnections, deleteConnections, flushDynamicSet } from '../kernel/update.js';
import { watchKernel, watchNftTable, type KernelWatcher } from '../kernel/watch.js';
import type { Logger } from '../log.js';
import { explain, stickySets, type Explanation, type Flow } from '../plan/explain.js';
import { plan } from '../plan/plan.js';
import { holdsAddress } from '../plan/resolve.js';
import { stickySetOf } from '../plan/nft.js';
import type { DesiredState, KernelFacts, UplinkSummary } from '../plan/state.js';
import { BYTE_COUNTERS, type FamilyStatus, type Status, type UplinkStatus } from '../api/status.js';
import { Converging } from './converging.js';
import { Events } from './events.js';
import { Steering } from './steering.js';
import { ifaceOf, probeAddress, Tracking, type FamilyTrack, type ProberFactory, type Tracked } from './tracking.js';

export class Daemon {
  private config: Config;
  private facts: KernelFacts = { interfaces: [], mainDefaultRoutes: [] };
  private readonly tracking: Tracking;
  private readonly events: Events;
  private readonly converging: Converging;
  private readonly steering: Steering;
  private watchers: KernelWatcher[] = [];
  private servers: (net.Server | http.Server)[] = [];
  private readonly metrics: Metrics;
  /** The status page's graphs (README "Status page"). */
  private readonly history = new History();
  private historyTimer?: NodeJS.Timeout;
  private stopping = false;

  constructor(
    private readonly configPath: string, config: Config, private readonly log: Logger, private readonly runner: Runner = systemRunner,
    /** The probers (a fake in the unit tests). */
    makeProber?: ProberFactory,
  ) {
    this.config = config;
    this.metrics = createMetrics(() => this.status());
    this.tracking = new Tracking(log, (t, family, transition) => this.onTransition(t, family, transition), makeProber);
    this.events = new Events(log, () => this.config.hooks, (name, family) => {
      const t = this.tracking.get(name);
      const f = t?.[family];
      return t && { interface: t.uplink.interface, address: f?.address ?? probeAddress(t, ifaceOf(this.facts, t), family), dualStack: t.dualStack };
    }, (event, uplink) => this.metrics.countEvent(event, uplink));
    this.converging = new Converging(runner, log, () => this.desired(), () => this.tracking.noteUnusable(this.planned()), this.metrics, this.events);
    this.steering = new Steering(log, () => this.config, this.tracking, () => this.planned(), (why) => this.converging.converge(why));
  }

  async start(): Promise<void> {
    this.facts = await readFacts(this.runner);
    this.tracking.track(this.config);
    this.tracking.noteCarrierAndAddresses(this.facts);
    await this.converging.converge('start');
    if (this.converging.kernelError) throw new Error(`installing the first state failed: ${this.converging.kernelError}`);
    // What `uplinkd doctor` reports, logged once after the first install (so the
    // rp_filter and rules uplinkd sets itself are in place and not reported).
    // Not awaited: it runs about ten commands and must not hold up readiness.
    void diagnose({ config: this.config, runner: this.runner }).then((findings) => {
      for (const f of findings) this.log.warn({ event: 'doctor', check: f.id, fix: f.fix }, `doctor: ${f.message}`);
    }, () => {});
    this.tracking.syncProbers(this.facts, this.converging.installed?.state.uplinks);
    const log = (m: string) => this.log.warn(m);
    this.watchers.push(
      watchKernel((what) => void this.onKernelChange(what), { log }),
      watchNftTable(this.config.kernel.nftTable, startedRecently, (what) => this.converging.checkDrift(`nft: ${what}`), { log }),
      watchCgroups(() => ruleCgroups(this.config), () => this.facts.cgroups, (what) => void this.onKernelChange(what)),
    );
    this.converging.startDriftChecks();
    this.steering.start();
    const status = () => this.status();
    this.servers.push(await serveControlSocket(this.config.api.socket, { status, explain: (flow) => this.explain(flow) }, this.log));
    if (this.config.api.http !== 'off') {
      this.servers.push(await serveHttp(this.config.api.http, { status, history: () => this.history.toJSON(), registry: this.metrics.registry }, this.log));
      // Only the page reads the history (api.http is not reloaded: the listener stays as started).
      const sample = () => void this.status({ countConnections: false }).then((s) => this.history.record(s), () => {});
      sample();
      this.historyTimer = setInterval(sample, HISTORY_INTERVAL_MS).unref();
    }
    this.log.info({ event: 'start', uplinks: this.config.uplinks.length },
      `running: ${this.config.uplinks.length} uplinks, balance ${this.config.balance}, config ${this.configPath}`);
  }

  /** Stops tracking. The kernel state stays, so a restart is seamless. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.historyTimer);
    for (const w of this.watchers) w.stop();
    this.converging.stop();
    this.steering.stop();
    await this.tracking.stop();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    await this.converging.idle();
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
    this.tracking.track(result.config);
    this.tracking.noteCarrierAndAddresses(this.facts);
    await this.converging.converge('reload');
    this.tracking.syncProbers(this.facts, this.converging.installed?.state.uplinks);
    this.steering.start();
    this.events.record({ event: 'reload', reason: `config ${this.configPath} reloaded (${previous.uplinks.length} -> ${this.config.uplinks.length} uplinks)` });
  }

  /** The installed plan's uplinks (none before the first install). */
  private planned(): UplinkSummary[] {
    return this.converging.installed?.state.uplinks ?? [];
  }

  private desired(): DesiredState {
    const weights = this.steering.weights();
    // Cgroups are read again at every plan: nft cannot load one that went away since (a service stopped).
    this.facts = { ...this.facts, cgroups: cgroupFacts(ruleCgroups(this.config)) };
    // Each family its own verdicts: an uplink whose IPv6 is down keeps carrying IPv4, and the other way round.
    return plan({
      config: this.config, facts: this.facts, health: this.tracking.health(), health6: this.tracking.health6(), weights,
      rotationStart: this.steering.rotationStart,
    });
  }

  /**
   * One family of an uplink changed state: the kernel follows, and a family
   * that went down loses its sticky sources and (flush_on_down) its
   * connections; the other family's are left alone.
   */
  private onTransition(t: Tracked, f: FamilyTrack, transition: Transition): void {
    const at = performance.now();
    const { family } = f;
    const name = t.uplink.name;
    // IPv4 is labelled as such once the uplink's IPv6 counts too (README "Health
    // tracking, failover and kernel events"): an IPv4-only uplink reads as it always has.
    this.metrics.countTransition(name, t.uplink.interface, transition.to, family === 'ipv6' || t.dualStack ? family : undefined);
    const event = transition.to === 'down' ? 'down' : 'up';
    this.events.record({ event, uplink: name, family, reason: transition.reason });
    if (transition.from === 'pending' && transition.to === 'up') return; // pending already counted as up
    // Timed to the moment the new state is in the kernel (and, for `down`, the
    // connections are flushed), not to the read-back that follows.
    void this.converging.converge(`${name}${family === 'ipv6' ? ' IPv6' : ''} ${event}`, async (slotStartedAt) => {
      if (event === 'down') {
        const index = this.config.uplinks.indexOf(t.uplink);
        const mark = this.converging.installed!.state.uplinks[index].mark;
        const table = this.converging.installed!.state.nft;
        const sticky = stickySetOf(table, name, family);
        if (sticky) await flushDynamicSet(this.runner, table, sticky);
        if (this.config.conntrack.flushOnDown) {
          const deleted = await deleteConnections(this.runner, mark, this.config.kernel.markMask, family);
          const what = family === 'ipv6' ? 'IPv6 connections' : 'connections';
          this.log.info({ uplink: name, family, event: 'flush', deleted }, `${name}: ${deleted} ${what} flushed`);
        }
      }
      const now = performance.now();
      this.log.debug({ uplink: name, family, ms: now - at, kernelMs: now - slotStartedAt }, 'kernel updated');
    });
  }

  private async onKernelChange(what: string): Promise<void> {
    if (this.stopping) return;
    let facts: KernelFacts;
    try {
      facts = await readFacts(this.runner, ruleCgroups(this.config));
    } catch (err) {
      this.log.error(`reading kernel facts failed: ${err instanceof Error ? err.message : err}`);
      return;
    }
    await this.followFacts(facts, what);
    // A route or rule event may be someone deleting ours; an address flush
    // takes the routes that use it along.
    this.converging.checkDrift(`kernel event (${what})`);
  }

  /** Carrier, addresses and the plan follow the kernel's facts as just read (the unit tests give them here). */
  private async followFacts(facts: KernelFacts, what: string): Promise<void> {
    this.noteSharedAddresses(this.facts, facts);
    this.facts = facts;
    this.log.trace({ what }, 'kernel event');
    // An address of either family changed (a DHCP renew; SLAAC, a new prefix, deprecation): its prober restarts at syncProbers.
    this.tracking.noteCarrierAndAddresses(this.facts, (t, f, address) => this.events.record({
      event: 'address', uplink: t.uplink.name, family: f.family, address,
      reason: `${t.uplink.interface} ${f.family === 'ipv6' ? 'IPv6 address' : 'address'} ${f.address ?? 'none'} -> ${address ?? 'none'}`,
    }));
    await this.converging.converge(`kernel event (${what})`);
    this.tracking.syncProbers(this.facts, this.converging.installed?.state.uplinks);
  }

  /**
   * A configured `address` arriving on or leaving its interface (keepalived
   * making this router the uplink's master or backup) is an address event,
   * so hooks and the log say when this router took an uplink over.
   */
  private noteSharedAddresses(before: KernelFacts, after: KernelFacts): void {
    for (const t of this.tracking.all()) {
      if (t.uplink.address.kind !== 'address') continue;
      const [held, holds] = [before, after].map((facts) => holdsAddress(t.uplink, ifaceOf(facts, t)));
      if (held === holds) continue;
      const { address } = t.uplink.address;
      this.events.record({
        event: 'address', uplink: t.uplink.name, family: 'ipv4', address,
        reason: `${t.uplink.interface} ${holds ? 'took' : 'gave up'} address ${address} (${holds ? 'master' : 'backup'} for ${t.uplink.name})`,
      });
    }
  }

  /**
   * For the service manager's watchdog (src/service/notify.ts): healthy while
   * the last kernel operation succeeded. The event loop's own health is
   * shown by the watchdog timer firing at all.
   */
  serviceHealth(): { healthy: boolean; summary: string } {
    const states = [...this.tracking.all()].map((t) => t.state);
    const up = states.filter((s) => s === 'up').length;
    const kernelError = this.converging.kernelError;
    const summary = `${up}/${states.length} uplinks up` + (kernelError ? `; kernel: ${kernelError}` : '');
    return { healthy: kernelError === undefined, summary };
  }

  /** `uplinkd explain` against what is installed now: real health, shares and sticky entries. */
  async explain(flow: Flow): Promise<Explanation> {
    const state = this.converging.installed?.state;
    if (!state) throw new Error('nothing installed yet');
    const kernel = await readExplainFacts(this.runner, this.config.kernel.nftTable, stickySets(state));
    return explain({ config: this.config, state, facts: this.facts, ...kernel }, flow);
  }

  /** `countConnections: false` (the history sampler): connections left at 0, sparing a listing of the whole conntrack table. */
  async status({ countConnections: count = true } = {}): Promise<Status> {
    const connections = count
      ? await countConnections(this.runner, this.config.kernel.markMask).catch(() => new Map<number, number>())
      : new Map<number, number>();
    const uplinks = [...this.tracking.all()].map((t): UplinkStatus => {
      const planned = this.converging.installed?.state.uplinks.find((u) => u.name === t.uplink.name);
      const ipv4 = familyStatus(t.ipv4, planned?.address, planned?.gateway);
      return {
        name: t.uplink.name,
        interface: t.uplink.interface,
        state: t.state,
        since: t.since.toISOString(),
        address: planned?.sharedAddress ?? planned?.address ?? null,
        holds_address: holdsAddress(t.uplink, ifaceOf(this.facts, t)),
        gateway: planned?.gateway ?? null,
        tier: t.uplink.tier,
        weight: t.uplink.weight,
        share: planned?.share ?? 0,
        latency_ms: ipv4.latency_ms,
        loss: ipv4.loss,
        rx_bps: Math.round(t.rates.rxBps),
        tx_bps: Math.round(t.rates.txBps),
        // Both families: one mark per uplink, and `conntrack -L` lists both.
        connections: planned ? connections.get(planned.mark) ?? 0 : 0,
        ...(t.rates.latest ? { [BYTE_COUNTERS]: t.rates.latest } : {}),
        ...(t.ipv6 && t.dualStack ? { families: { ipv4, ipv6: familyStatus(t.ipv6, planned?.ipv6?.address, planned?.ipv6?.gateway) } } : {}),
      };
    });
    return { uplinks, events: this.events.recent, self_healing: this.converging.selfHealing() };
  }
}

function familyStatus(f: FamilyTrack, address: string | undefined, gateway: string | undefined): FamilyStatus {
  return {
    state: f.tracker.state,
    since: f.since.toISOString(),
    address: address ?? null,
    gateway: gateway ?? null,
    latency_ms: f.tracker.latencyMs === undefined ? null : Math.round(f.tracker.latencyMs * 1000) / 1000,
    loss: Math.round(f.tracker.loss * 1000) / 1000,
  };
}
