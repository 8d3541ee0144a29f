// Events: what `uplinkd status` lists under events (newest first, the last
// MAX_EVENTS), each also logged once and handed to the operator's hooks
// (hooks.ts), so the log, the status and the hooks always tell the same story.

import type { StatusEvent } from '../api/status.js';
import type { Logger } from '../log.js';
import type { Family } from '../plan/state.js';
import { runHooks, type HookEvent } from './hooks.js';

const MAX_EVENTS = 100;

export interface EventRecord {
  event: StatusEvent['event'];
  uplink?: string;
  /** The family an up, down or address event is of. */
  family?: Family;
  reason: string;
  address?: string;
}

/**
 * What a hook is told about an uplink besides the event: its interface and
 * current address of the event's family; `dualStack`: its IPv6 counts (so its
 * IPv4 events say they are IPv4's).
 */
export type UplinkOf = (name: string, family: Family) => { interface: string; address?: string; dualStack: boolean } | undefined;

export class Events {
  private readonly events: StatusEvent[] = [];

  constructor(
    private readonly log: Logger,
    /** Read at each event, so a reload's hooks take effect at once. */
    private readonly hooks: () => string[],
    private readonly uplinkOf: UplinkOf,
    /** Told of every event as it is recorded: /metrics counts them (`uplinkd_events_total`). */
    private readonly counted: (event: StatusEvent['event'], uplink?: string) => void = () => {},
  ) {}

  /** Newest first; the status JSON's `events`. */
  get recent(): StatusEvent[] {
    return this.events;
  }

  record(e: EventRecord): void {
    const u = e.uplink ? this.uplinkOf(e.uplink, e.family ?? 'ipv4') : undefined;
    // An IPv4-only uplink's events read as they always have; the hooks are told the family regardless.
    const shown = e.family === 'ipv6' || (e.family === 'ipv4' && u?.dualStack === true) ? e.family : undefined;
    const entry: StatusEvent = { at: new Date().toISOString(), uplink: e.uplink ?? null, event: e.event, reason: e.reason, ...(shown ? { family: shown } : {}) };
    this.events.unshift(entry);
    this.events.length = Math.min(this.events.length, MAX_EVENTS);
    this.counted(e.event, e.uplink);
    const level = e.event === 'down' ? 'warn' : 'info';
    this.log[level]({ event: e.event, uplink: e.uplink, family: shown, reason: e.reason },
      `${e.uplink ? `${e.uplink} ` : ''}${shown ? `${shown} ` : ''}${e.event}: ${e.reason}`);
    const hook: HookEvent = {
      event: e.event, uplink: e.uplink, family: e.family, interface: u?.interface, address: e.address ?? u?.address, reason: e.reason,
    };
    runHooks(this.hooks(), hook, this.log);
  }
}
