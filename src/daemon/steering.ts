// Steering: samples every uplink's byte counters into its RateEstimator (for
// status and metrics) and, with `balance: least-loaded`, closes the loop that
// balance.ts describes: new weights, and a converge, only when a share moved
// past the deadband.

import { randomInt } from 'node:crypto';
import type { Config } from '../config/types.js';
import { readInterfaceCounters } from '../kernel/facts.js';
import type { Logger } from '../log.js';
import { ROTATION_SLOTS } from '../ownership.js';
import type { UplinkSummary } from '../plan/state.js';
import { leastLoadedWeights, SAMPLE_MS, sharesMoved, STATUS_SAMPLE_MS } from './balance.js';
import type { Tracking } from './tracking.js';

export class Steering {
  private sampler?: NodeJS.Timeout;
  /** The weights the loop steers with; undefined until it first moves them. */
  private loadWeights?: Record<string, number>;
  /** A converge for new weights is under way: no newer weights until it is done. */
  private steering = false;
  /** Uplinks judged full last time (hysteresis). */
  private fullUplinks = new Set<string>();
  /** Where this instance's rotation begins (see PlanInput.rotationStart). */
  readonly rotationStart = randomInt(ROTATION_SLOTS);

  constructor(
    private readonly log: Logger,
    /** The current config: its balance is read at every sample. */
    private readonly config: () => Config,
    private readonly tracking: Pick<Tracking, 'all' | 'get'>,
    /** The installed plan's uplinks, with the shares the kernel has. */
    private readonly planned: () => readonly UplinkSummary[],
    private readonly converge: (why: string) => Promise<void>,
  ) {}

  /** The weights to plan with, in place of the configured ones (least-loaded only). */
  weights(): Record<string, number> | undefined {
    return this.config().balance === 'least-loaded' ? this.loadWeights : undefined;
  }

  /**
   * (Re)starts sampling. least-loaded needs fresh rates many times a second;
   * otherwise the rates only feed status and metrics, and once a second
   * spares the CPU.
   */
  start(): void {
    if (this.sampler) clearInterval(this.sampler);
    this.sampler = setInterval(() => this.sampleRates(), this.config().balance === 'least-loaded' ? SAMPLE_MS : STATUS_SAMPLE_MS);
  }

  stop(): void {
    if (this.sampler) clearInterval(this.sampler);
  }

  /** Reads each uplink's byte counters; with least-loaded, steers the balance map. */
  private sampleRates(): void {
    const atMs = performance.now();
    const counters = readInterfaceCounters();
    for (const t of this.tracking.all()) {
      const c = counters.get(t.uplink.interface);
      if (c) t.rates.update({ ...c, atMs });
    }
    if (this.config().balance === 'least-loaded') this.steer();
  }

  /** The least-loaded loop (see balance.ts): new weights only when a share moved past the deadband. */
  private steer(): void {
    const carriers = this.planned().filter((u) => !u.unusable && u.health === 'up');
    if (carriers.length === 0) return;
    const loads = carriers.map((u) => {
      const t = this.tracking.get(u.name)!;
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
}
