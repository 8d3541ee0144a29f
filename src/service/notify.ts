// The systemd notify protocol (sd_notify(3)) for `uplinkd run`: READY=1 once
// the first state is installed, RELOADING=1/READY=1 around a reload,
// STOPPING=1, a one-line STATUS= and the watchdog ping while the daemon is
// healthy. Active only when systemd set NOTIFY_SOCKET.
//
// Node has no AF_UNIX datagram sockets, so every message goes out through
// systemd's own `systemd-notify` (README "Run it as a service" says why this
// and not a native addon). Under the unit's capability set it cannot pass our
// PID as the sender, so the unit says NotifyAccess=all, and `--pid` names the
// main PID in the message itself. Since systemd 246 it waits for systemd to
// have read the message (BARRIER=1) before it exits, so systemd can still
// tell which unit sent it.
//
// Messages go out one at a time, in order: a RELOADING=1 can never overtake
// the READY=1 before it. A failed send is logged once and otherwise ignored:
// notifying is never a reason to stop routing.

import type { Runner } from '../kernel/runner.js';

export interface ServiceHealth {
  healthy: boolean;
  /** One line for `systemctl status`. */
  summary: string;
}

export interface NotifyLog {
  info(msg: string): void;
  warn(msg: string): void;
}

/** The longest setInterval delay Node accepts (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** systemd-notify gives up on its barrier after 5 s; past this something else is wrong. */
export const SEND_TIMEOUT_MS = 10_000;
/** How often the summary is looked at for a STATUS= update. */
export const STATUS_EVERY_MS = 1000;
/** STATUS= is shown in one line of `systemctl status`; longer text only wraps. */
const STATUS_MAX_CHARS = 200;

/**
 * The time between WATCHDOG=1 pings, half of WATCHDOG_USEC as systemd
 * advises, or undefined when the watchdog is off or not this process's:
 * the rules of sd_watchdog_enabled(3), where an unparsable value means off
 * and a WATCHDOG_PID naming another process means the watchdog is theirs.
 */
export function watchdogIntervalMs(usec: string | undefined, watchdogPid: string | undefined, pid: number): number | undefined {
  if (usec === undefined || !/^\d+$/.test(usec)) return undefined;
  const micros = Number(usec);
  if (micros <= 0) return undefined;
  if (watchdogPid !== undefined && (!/^[1-9]\d*$/.test(watchdogPid) || Number(watchdogPid) !== pid)) return undefined;
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(micros / 2000)));
}

export interface ServiceEnvironment {
  /** NOTIFY_SOCKET, as systemd set it. */
  socket: string;
  /** From WATCHDOG_USEC and WATCHDOG_PID; undefined when no watchdog is ours. */
  watchdogMs?: number;
}

/**
 * What systemd passed in the environment, removed from it as sd_notify's
 * `unset_environment` does: a hook or a tool started by the daemon must not
 * take systemd's socket for its own, or a notify-aware child would report
 * itself as the service's main process.
 */
export function takeServiceEnvironment(env: NodeJS.ProcessEnv, pid: number): ServiceEnvironment | undefined {
  const socket = env.NOTIFY_SOCKET;
  const watchdogMs = watchdogIntervalMs(env.WATCHDOG_USEC, env.WATCHDOG_PID, pid);
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  if (!socket) return undefined;
  return { socket, watchdogMs };
}

/** STATUS= with the summary on one line: the protocol is newline-separated, so a multi-line error must not split it. */
export function statusField(summary: string): string {
  const line = summary.replace(/\s+/g, ' ').trim();
  return `STATUS=${line.length > STATUS_MAX_CHARS ? `${line.slice(0, STATUS_MAX_CHARS - 1)}…` : line}`;
}

/** RELOADING=1 with the CLOCK_MONOTONIC time that systemd 253's Type=notify-reload also asks for. */
export function reloadingFields(monotonicNs: bigint = process.hrtime.bigint()): string[] {
  return ['RELOADING=1', `MONOTONIC_USEC=${monotonicNs / 1000n}`];
}

/**
 * The argument vector that sends `fields` as one message: `env` puts the
 * socket in systemd-notify's environment only (the daemon's own no longer
 * has it), and `--pid` names the daemon as the main PID.
 */
export function notifyArgv(socket: string, pid: number, fields: string[]): string[] {
  return [`NOTIFY_SOCKET=${socket}`, 'systemd-notify', `--pid=${pid}`, ...fields];
}

export interface NotifierOptions {
  socket: string;
  pid: number;
  runner: Runner;
  log: NotifyLog;
  watchdogMs?: number;
  statusEveryMs?: number;
  sendTimeoutMs?: number;
}

export class ServiceNotifier {
  private queue: Promise<void> = Promise.resolve();
  private watchdogQueued = false;
  private failureLogged = false;
  private ready = false;
  private lastStatus?: string;
  private healthyBefore = true;
  private health?: () => ServiceHealth;
  private timers: NodeJS.Timeout[] = [];

  constructor(private readonly opts: NotifierOptions) {}

  /**
   * Call once the daemon has started. READY=1 goes out at once if the state
   * was installed, else as soon as the health says so; until then systemd
   * keeps the unit "activating" and shows the reason in its status.
   */
  start(health: () => ServiceHealth): void {
    this.health = health;
    const h = health();
    if (!h.healthy) this.opts.log.warn(`not ready for systemd yet: ${h.summary}`);
    this.look();
    this.timers.push(setInterval(() => this.look(), this.opts.statusEveryMs ?? STATUS_EVERY_MS));
    if (this.opts.watchdogMs !== undefined) this.timers.push(setInterval(() => this.pingWatchdog(), this.opts.watchdogMs));
  }

  /** Before a SIGHUP reload. */
  reloading(): Promise<void> {
    return this.post(reloadingFields());
  }

  /** After a reload, whether it was taken or rejected: the daemon runs on either way. */
  reloaded(): Promise<void> {
    if (!this.ready || !this.health) return this.look();
    const h = this.health();
    this.lastStatus = statusField(h.summary);
    return this.post(['READY=1', this.lastStatus]);
  }

  /** On SIGTERM: no more pings; resolves once STOPPING=1 went out (or failed). */
  stopping(): Promise<void> {
    this.close();
    return this.post(['STOPPING=1']);
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** READY=1 the first time the daemon is healthy; afterwards a STATUS= whenever the summary changed. */
  private look(): Promise<void> {
    if (!this.health) return Promise.resolve();
    const h = this.health();
    const status = statusField(h.summary);
    if (!this.ready && h.healthy) {
      this.ready = true;
      this.lastStatus = status;
      return this.post(['READY=1', status]);
    }
    if (status === this.lastStatus) return Promise.resolve();
    this.lastStatus = status;
    return this.post([status]);
  }

  /**
   * WATCHDOG=1 only while healthy: an unhealthy daemon that stays so for
   * WatchdogSec is restarted by systemd. A ping still waiting behind a slow
   * send is enough; more would only pile up.
   */
  private pingWatchdog(): void {
    if (!this.health) return;
    // systemd arms the watchdog only once it has READY=1.
    if (!this.ready) return void this.look();
    const h = this.health();
    if (h.healthy !== this.healthyBefore) {
      this.healthyBefore = h.healthy;
      if (h.healthy) this.opts.log.info(`healthy again (${h.summary}); watchdog pings resume`);
      else this.opts.log.warn(`unhealthy (${h.summary}); watchdog pings withheld, so systemd restarts uplinkd if this lasts`);
    }
    if (!h.healthy || this.watchdogQueued) return;
    const status = statusField(h.summary);
    const fields = ['WATCHDOG=1'];
    if (status !== this.lastStatus) {
      this.lastStatus = status;
      fields.push(status);
    }
    this.watchdogQueued = true;
    void this.post(fields, () => (this.watchdogQueued = false));
  }

  private post(fields: string[], onSent?: () => void): Promise<void> {
    const send = async () => {
      onSent?.();
      let timer: NodeJS.Timeout | undefined;
      const timeoutMs = this.opts.sendTimeoutMs ?? SEND_TIMEOUT_MS;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
      });
      try {
        const r = await Promise.race([this.opts.runner.run('env', notifyArgv(this.opts.socket, this.opts.pid, fields)), late]);
        if (r.code !== 0) throw new Error(r.stderr.trim() || `exit ${r.code}`);
      } catch (err) {
        if (!this.failureLogged) {
          this.failureLogged = true;
          this.opts.log.warn(`systemd notify (${fields[0]}) failed: ${err instanceof Error ? err.message : String(err)}; ` +
            'uplinkd runs on, and further failures are not logged');
        }
      } finally {
        clearTimeout(timer);
      }
    };
    this.queue = this.queue.then(send);
    return this.queue;
  }
}

/**
 * The notifier for this process, or undefined when systemd did not ask for
 * notifications. Takes NOTIFY_SOCKET and the watchdog variables out of `env`.
 */
export function notifierFromEnvironment(env: NodeJS.ProcessEnv, runner: Runner, log: NotifyLog): ServiceNotifier | undefined {
  const service = takeServiceEnvironment(env, process.pid);
  if (!service) return undefined;
  return new ServiceNotifier({ ...service, pid: process.pid, runner, log });
}
