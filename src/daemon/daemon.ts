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
import { serveHttp } from '../api/http.js';
import { createMetrics, type Metrics } from '../api/metrics.js';
import { serveControlSocket } from '../api/socket.js';
import { formatDiagnostic, loadConfigFile } from '../config/load.js';
import { diagnose } from '../doctor/index.js';
import type { Config } from '../config/types.js';
import type { Transition } from './health.js';
import { cgroupFacts, ruleCgroups, watchCgroups } from '../kernel/cgroups.js';
import { readFacts } from '../kernel/facts.js';
import { startedRecently, systemRunner, type Runner } from '../kernel/runner.js';
import { countConnections, deleteConnections, flushDynamicSet } from '../kernel/update.js';
import { watchKernel, watchNftTable, type KernelWatcher } from '../kernel/watch.js';
import type { Logger } from '../log.js';
import { plan } from '../plan/plan.js';
import { stickySetsOf } from '../plan/nft.js';
import type { DesiredState, KernelFacts, UplinkSummary } from '../plan/state.js';
import type { Status, UplinkStatus } from '../api/status.js';
import { Converging } from './converging.js';
import { Events } from './events.js';
import { Steering } from './steering.js';
import { ifaceOf, Tracking, type Tracked } from './tracking.js';

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
  private stopping = false;

  constructor(private readonly configPath: string, config: Config, private readonly log: Logger, private readonly runner: Runner = systemRunner) {
    this.config = config;
    this.metrics = createMetrics(() => this.status());
    this.tracking = new Tracking(log, (t, transition) => this.onTransition(t, transition));
    this.events = new Events(log, () => this.config.hooks, (name) => {
      const t = this.tracking.get(name);
      return t && { interface: t.uplink.interface, address: t.address ?? ifaceOf(this.facts, t)?.addresses[0]?.address };
    });
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
    this.servers.push(await serveControlSocket(this.config.api.socket, status, this.log));
    if (this.config.api.http !== 'off') this.servers.push(await serveHttp(this.config.api.http, status, this.metrics.registry, this.log));
    this.log.info({ event: 'start', uplinks: this.config.uplinks.length },
      `running: ${this.config.uplinks.length} uplinks, balance ${this.config.balance}, config ${this.configPath}`);
  }

  /** Stops tracking. The kernel state stays, so a restart is seamless. */
  async stop(): Promise<void> {
    this.stopping = true;
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
    const health = this.tracking.health();
    // Health is tracked for IPv4 only so far: each uplink's IPv6 takes its
    // IPv4 verdict. Tracking IPv6 on its own (its targets, its rounds) is the
    // next step of dual stack; the planner already takes it apart.
    return plan({ config: this.config, facts: this.facts, health, health6: health, weights, rotationStart: this.steering.rotationStart });
  }

  private onTransition(t: Tracked, transition: Transition): void {
    const at = performance.now();
    t.since = new Date();
    this.metrics.countTransition(t.uplink.name, transition.to);
    const event = transition.to === 'down' ? 'down' : 'up';
    this.events.record({ event, uplink: t.uplink.name, reason: transition.reason });
    if (transition.from === 'pending' && transition.to === 'up') return; // pending already counted as up
    // Timed to the moment the new state is in the kernel (and, for `down`, the
    // connections are flushed), not to the read-back that follows.
    void this.converging.converge(`${t.uplink.name} ${event}`, async (slotStartedAt) => {
      if (event === 'down') {
        const index = this.config.uplinks.indexOf(t.uplink);
        const mark = this.converging.installed!.state.uplinks[index].mark;
        const table = this.converging.installed!.state.nft;
        for (const set of stickySetsOf(table, t.uplink.name)) await flushDynamicSet(this.runner, table, set);
        if (this.config.conntrack.flushOnDown) {
          const deleted = await deleteConnections(this.runner, mark, this.config.kernel.markMask);
          this.log.info({ uplink: t.uplink.name, event: 'flush', deleted }, `${t.uplink.name}: ${deleted} connections flushed`);
        }
      }
      const now = performance.now();
      this.log.debug({ uplink: t.uplink.name, ms: now - at, kernelMs: now - slotStartedAt }, 'kernel updated');
    });
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
    this.tracking.noteCarrierAndAddresses(this.facts, (t, address) =>
      this.events.record({ event: 'address', uplink: t.uplink.name, reason: `${t.uplink.interface} address ${t.address ?? 'none'} -> ${address ?? 'none'}`, address }));
    await this.converging.converge(`kernel event (${what})`);
    this.tracking.syncProbers(this.facts, this.converging.installed?.state.uplinks);
    // A route or rule event may be someone deleting ours; an address flush
    // takes the routes that use it along.
    this.converging.checkDrift(`kernel event (${what})`);
  }

  /**
   * For the service manager's watchdog (src/service/notify.ts): healthy while
   * the last kernel operation succeeded. The event loop's own health is
   * shown by the watchdog timer firing at all.
   */
  serviceHealth(): { healthy: boolean; summary: string } {
    const states = [...this.tracking.all()].map((t) => t.tracker.state);
    const up = states.filter((s) => s === 'up').length;
    const kernelError = this.converging.kernelError;
    const summary = `${up}/${states.length} uplinks up` + (kernelError ? `; kernel: ${kernelError}` : '');
    return { healthy: kernelError === undefined, summary };
  }

  async status(): Promise<Status> {
    const connections = await countConnections(this.runner, this.config.kernel.markMask).catch(() => new Map<number, number>());
    const uplinks = [...this.tracking.all()].map((t): UplinkStatus => {
      const planned = this.converging.installed?.state.uplinks.find((u) => u.name === t.uplink.name);
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
    return { uplinks, events: this.events.recent, self_healing: this.converging.selfHealing() };
  }
}
