// dns: a query for check.query (A) to each resolver, from the uplink's
// address. Any response counts as an answer, NXDOMAIN, SERVFAIL and REFUSED
// included: the check asks whether the resolver can be reached through this
// uplink, and a resolver that responds was reached. Only silence (a timeout)
// or an ICMP error (ECONNREFUSED) fails it.

import { Resolver } from 'node:dns/promises';
import type { Probe } from './oneshot.js';

/** c-ares codes that stand for a DNS response code, i.e. a response came back. */
const RESPONSE_CODES = new Set(['ENODATA', 'ENOTFOUND', 'ESERVFAIL', 'EREFUSED', 'EFORMERR', 'ENOTIMP']);

export const dnsProbe: Probe = async (target, from, check, signal) => {
  // One try, no retries: the round is the retry. c-ares gets more than the
  // check's timeout so that the round's close, not c-ares's timer, always ends a
  // silent query, and it reads `timeout` like every other method's.
  const resolver = new Resolver({ timeout: 2 * check.timeoutMs, tries: 1 });
  resolver.setLocalAddress(from.address);
  resolver.setServers([`${target}:${check.port}`]);
  const onAbort = () => resolver.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    await resolver.resolve4(check.query);
  } catch (err) {
    if (!RESPONSE_CODES.has((err as { code?: string }).code ?? '')) throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
};
