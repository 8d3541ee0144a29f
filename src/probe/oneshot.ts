// The driver of the in-process methods (tcp, http, dns): each round, one
// independent attempt per target, timed here, so a method only has to say
// whether its target answered. An attempt ends when its round closes (on the
// round clock), so no attempt needs a timer of its own.

import type { Check } from '../config/types.js';
import type { FileResult, ProbeDriver, ProbeSubject, TargetResult } from './types.js';

/**
 * One attempt at one target, sent from `from.address`. Resolves once the
 * target has answered; rejects, with an error whose `code` or message says
 * why, when it will not. Must give up promptly when `signal` aborts.
 */
export type Probe = (target: string, from: ProbeSubject, check: Check, signal: AbortSignal) => Promise<void>;

export function oneShotDriver(probe: Probe, check: Check, report: FileResult, now: () => number = () => performance.now()): ProbeDriver {
  /** Open rounds: aborting one makes its attempts still running give up. */
  const rounds = new Map<number, AbortController>();
  const inFlight = new Set<Promise<void>>();
  return {
    roundOpened(seq, targets, subject) {
      const abort = new AbortController();
      rounds.set(seq, abort);
      for (const target of targets) {
        const attempt = probeOnce(probe, target, subject, check, abort.signal, now).then((result) => {
          report(seq, result);
        });
        inFlight.add(attempt);
        void attempt.finally(() => inFlight.delete(attempt));
      }
    },
    roundClosed(seq) {
      rounds.get(seq)?.abort('timeout');
      rounds.delete(seq);
    },
    async stop() {
      for (const abort of rounds.values()) abort.abort('stopped');
      rounds.clear();
      await Promise.allSettled([...inFlight]);
    },
  };
}

/**
 * Runs one probe until it answers or `signal` aborts (its round closed, or
 * the prober stopped); never rejects. The error of an aborted attempt is the
 * signal's reason ('timeout', 'stopped').
 */
export async function probeOnce(
  probe: Probe, target: string, from: ProbeSubject, check: Check, signal: AbortSignal, now: () => number = () => performance.now(),
): Promise<TargetResult> {
  const abortError = () => ({ target, ok: false, error: String(signal.reason ?? 'aborted') });
  if (signal.aborted) return abortError();
  // A probe that ignored its signal must not hold the round: the abort settles it regardless.
  const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));
  aborted.catch(() => {}); // the race below sees it; no one else needs to
  const started = now();
  try {
    await Promise.race([probe(target, from, check, signal), aborted]);
    return { target, ok: true, latencyMs: roundMs(now() - started) };
  } catch (err) {
    return signal.aborted ? abortError() : { target, ok: false, error: reasonOf(err) };
  }
}

/** Milliseconds to the microsecond. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** A short reason: a system error code (ECONNREFUSED, ETIMEOUT) when there is one, else the message. */
export function reasonOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  return err instanceof Error ? err.message : String(err);
}
