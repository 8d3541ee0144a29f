// Converging: every kernel change goes through one queue, so changes never
// interleave, and a failure is kept for the watchdog until work succeeds
// again. The same queue runs the drift checks, which restore what someone
// else removed or changed, backing off while they keep at it (README
// "Self-healing"). How to get from one state to the next is kernel/converge.ts's
// decision; what the next state is, the daemon's `desired`.

import type { Metrics } from '../api/metrics.js';
import type { SelfHealingStatus } from '../api/status.js';
import { converge, findDrift, RestoreBackoff, type ConvergeOptions, type DriftScope, type Installed } from '../kernel/converge.js';
import type { Runner } from '../kernel/runner.js';
import { deleteUnansweredTcp } from '../kernel/update.js';
import type { Logger } from '../log.js';
import type { DesiredState } from '../plan/state.js';
import type { Events } from './events.js';

/**
 * The periodic drift check: every 5 s what raises no kernel event (sysctls,
 * MPTCP endpoints: no commands unless MPTCP is on), and every 6th time (30 s)
 * everything, the last resort under the monitors, which say when they may
 * have missed an event (kernel/watch.ts). See README "Self-healing".
 */
const DRIFT_CHECK_EVERY_MS = 5000;
const FULL_DRIFT_CHECK_EVERY = 6;

export class Converging {
  private installedState?: Installed;
  private kernelQueue: Promise<void> = Promise.resolve();
  /** The last kernel operation's error, until one succeeds again. */
  private lastError?: string;
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
  private stopping = false;

  constructor(
    private readonly runner: Runner,
    private readonly log: Logger,
    /** The state to install, planned afresh for each install. */
    private readonly desired: () => DesiredState,
    /** Runs after every install, in its queue slot (the plan may have found an uplink unusable). */
    private readonly onInstalled: () => void,
    private readonly metrics: Pick<Metrics, 'countRestore'>,
    private readonly events: Pick<Events, 'record'>,
  ) {}

  /** What is in the kernel, as last installed or restored. */
  get installed(): Installed | undefined {
    return this.installedState;
  }

  /** The last kernel operation's error, until one succeeds again. */
  get kernelError(): string | undefined {
    return this.lastError;
  }

  selfHealing(): SelfHealingStatus {
    return { ...this.healing, backoff_ms: this.backoff.currentGapMs(Date.now()) };
  }

  /**
   * Brings the kernel to the plan for the current config, facts and health
   * (kernel/converge.ts decides how). `after` runs in the same queue slot,
   * once the new state is in (e.g. flushing a down uplink's connections once
   * new ones no longer go there).
   */
  converge(why: string, after?: (slotStartedAt: number) => Promise<void>): Promise<void> {
    return this.enqueue(why, async () => {
      const slotStartedAt = performance.now();
      await this.install(why, { then: after && (() => after(slotStartedAt)) });
    });
  }

  startDriftChecks(): void {
    this.driftTimer = setInterval(() => {
      this.checkDrift('periodic check', ++this.periodicChecks % FULL_DRIFT_CHECK_EVERY === 0 ? 'all' : 'unwatched');
    }, DRIFT_CHECK_EVERY_MS);
  }

  /**
   * Looks for drift (kernel/converge.ts findDrift) soon, and restores what
   * someone else removed or changed. Triggers while a check is queued join
   * it; while a restore waits out the back-off, they wait with it.
   */
  checkDrift(trigger: string, scope: DriftScope = 'all'): void {
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
      if (!this.installedState || this.stopping) return;
      const drift = await findDrift(this.installedState, this.runner, this.driftScope);
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

  /** No further drift checks or restores; work already queued still runs (see `idle`). */
  stop(): void {
    this.stopping = true;
    clearInterval(this.driftTimer);
    clearTimeout(this.restoreTimer);
  }

  /** Settles once the work queued so far is done. */
  idle(): Promise<void> {
    return this.kernelQueue;
  }

  /**
   * Runs `work` in the kernel queue, so kernel changes never interleave.
   * A failure is logged and kept for the watchdog until work succeeds again;
   * the returned promise never rejects.
   */
  private enqueue(why: string, work: () => Promise<void>): Promise<void> {
    const run = async () => {
      await work();
      this.lastError = undefined;
    };
    this.kernelQueue = this.kernelQueue.then(run, run).catch((err) => {
      this.lastError = err instanceof Error ? err.message : String(err);
      this.log.error({ why }, `kernel update failed (${why}): ${this.lastError}`);
    });
    return this.kernelQueue;
  }

  /** Plans and installs, in the caller's queue slot; returns how many changes it made. */
  private async install(why: string, opts: ConvergeOptions): Promise<number> {
    const result = await converge(this.installedState, this.desired(), this.runner, opts);
    this.installedState = result.installed;
    this.onInstalled();
    if (result.changes.length) this.log.info({ event: 'apply', why, changes: result.changes.length }, `${why}: ${result.changes.length} kernel changes`);
    for (const c of result.changes) this.log.debug({ event: 'change' }, `[#] ${c.args.join(' ')}`);
    if (result.fellBack) this.noteRestore([{ kind: 'update-failed', detail: `element update failed (${result.fellBack}); replaced the table` }], why, 0);
    return result.changes.length;
  }

  private noteRestore(drift: { kind: string; detail: string }[], trigger: string, ms: number, changes?: number): void {
    const cause = drift.map((d) => d.kind).join('+');
    for (const d of drift) {
      this.healing.by_cause[d.kind] = (this.healing.by_cause[d.kind] ?? 0) + 1;
      this.metrics.countRestore(d.kind);
    }
    this.healing.restores++;
    this.healing.last = { at: new Date().toISOString(), cause, detail: describeDrift(drift), trigger, restore_ms: Math.round(ms * 10) / 10 };
    this.events.record({ event: 'restore', reason: `${describeDrift(drift)}; restored in ${Math.round(ms)} ms${changes ? ` (${changes} changes)` : ''}, noticed by ${trigger}` });
  }
}

function describeDrift(drift: { detail: string }[]): string {
  return drift.map((d) => d.detail).join('; ');
}
