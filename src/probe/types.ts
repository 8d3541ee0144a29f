// The prober's vocabulary, shared by the scheduler and the probe methods.

import type { Family } from '../plan/state.js';

/**
 * What is being measured: one family of one uplink, as it is right now. Each
 * family has its own prober, targets and health (README "Health tracking,
 * failover and kernel events").
 */
export interface ProbeSubject {
  /** The uplink's name, for messages. */
  uplink: string;
  /** The uplink's interface, e.g. wan1. */
  device: string;
  /** IPv4 when absent. */
  family?: Family;
  /** The uplink's current address of that family: every probe is sent from it. */
  address: string;
  /**
   * Probed when check.targets has none of this family (the default: [gateway],
   * README "Configuration reference"). IPv6's may be link-local (fe80::1, from
   * a router advertisement): it is reached on `device`.
   */
  gateway?: string;
}

export interface TargetResult {
  target: string;
  /** The target answered within the check's timeout. */
  ok: boolean;
  /** Set when ok. */
  latencyMs?: number;
  /** Set when not ok: why, in a few words (timeout, ECONNREFUSED, HTTP 503...). */
  error?: string;
}

/** One probe to each target, sent together. */
export interface ProbeRound {
  seq: number;
  /** Date.now() at the round's slot on the round clock, when its probes are sent; its timeout counts from here. */
  startedAt: number;
  /** One per target, in target order. */
  results: TargetResult[];
}

export interface Prober {
  /** Starts probing every check.intervalMs; each round is delivered once all its targets answered, or its check.timeoutMs passed. */
  start(onRound: (round: ProbeRound) => void): void;
  /** The address may change (DHCP renew): the next rounds use the new one. */
  update(subject: ProbeSubject): void;
  stop(): Promise<void>;
}

/**
 * Files one target's result into round `seq`: 'filed'; or 'late' when that
 * round is already closed (or already has this target's result), or 'early'
 * when it has not begun: either way the result belongs to no round.
 */
export type FileResult = (seq: number, result: TargetResult) => 'filed' | 'late' | 'early';

/** How one probe method sends a round's probes; the scheduler does the rest. */
export interface ProbeDriver {
  /** Round `seq` has opened: probe each target from `subject` and report every result through `report`. */
  roundOpened(seq: number, targets: string[], subject: ProbeSubject): void;
  /** Round `seq` is over (every target reported, or its timeout passed): attempts still running give up. */
  roundClosed?(seq: number): void;
  /**
   * Reports what has come in since the last call, without waiting. Called at
   * every wakeup of the round clock, after due rounds are opened and before
   * rounds whose timeout has passed are closed. For a driver whose results
   * arrive on their own (the in-process methods) there is nothing to do.
   */
  collect?(): void;
  /** Stops sending; resolves once nothing the driver started is still running. */
  stop(): Promise<void>;
}
