// The driver of the in-process methods (tcp, http, dns): each round, one
// independent attempt per target, timed here, so a method only has to say
// whether its target answered.

import type { Check } from '../config/types.js';
import type { ProbeDriver, ProbeSubject, Report, TargetResult } from './types.js';

/**
 * One attempt at one target, sent from `from.address`. Resolves once the
 * target has answered; rejects, with an error whose `code` or message says
 * why, when it will not. Must give up promptly when `signal` aborts.
 */
export type Probe = (target: string, from: ProbeSubject, check: Check, signal: AbortSignal) => Promise<void>;

export function oneShotDriver(probe: Probe, check: Check, report: Report): ProbeDriver {
  const stopping = new AbortController();
  const inFlight = new Set<Promise<void>>();
  return {
    roundOpened(seq, targets, subject) {
      for (const target of targets) {
        const attempt = probeOnce(probe, target, subject, check, stopping.signal).then((result) => {
          report(seq, result);
        });
        inFlight.add(attempt);
        void attempt.finally(() => inFlight.delete(attempt));
      }
    },
    async stop() {
      stopping.abort();
      await Promise.allSettled([...inFlight]);
    },
  };
}

/** Runs one probe under the check's timeout; never rejects. */
export async function probeOnce(probe: Probe, target: string, from: ProbeSubject, check: Check, stop: AbortSignal): Promise<TargetResult> {
  const abort = new AbortController();
  const onStop = () => abort.abort();
  stop.addEventListener('abort', onStop, { once: true });
  const timer = setTimeout(() => abort.abort(), check.timeoutMs);
  // A probe that ignored its signal must not hold the round: the abort settles it regardless.
  const aborted = new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new Error('timeout')), { once: true }));
  aborted.catch(() => {}); // the race below sees it; no one else needs to
  const started = performance.now();
  try {
    await Promise.race([probe(target, from, check, abort.signal), aborted]);
    return { target, ok: true, latencyMs: roundMs(performance.now() - started) };
  } catch (err) {
    return { target, ok: false, error: abort.signal.aborted ? (stop.aborted ? 'stopped' : 'timeout') : reasonOf(err) };
  } finally {
    clearTimeout(timer);
    stop.removeEventListener('abort', onStop);
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
