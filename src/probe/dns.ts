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
  // c-ares drops an IPv6 zone (fe80::1%wan2 becomes fe80::1, then ECONNREFUSED,
  // Node 20): say why rather than fail for a reason that misleads.
  if (target.includes('%')) throw new Error('link-local DNS server: the resolver cannot reach it; give a global address in targets');
  // One try, no retries: the round is the retry. c-ares gets more than the
  // check's timeout so that the round's close, not c-ares's timer, always ends a
  // silent query, and it reads `timeout` like every other method's.
  const resolver = new Resolver({ timeout: 2 * check.timeoutMs, tries: 1 });
  if (from.family === 'ipv6') resolver.setLocalAddress('0.0.0.0', from.address);
  else resolver.setLocalAddress(from.address);
  // An IPv6 server with a port is written in brackets ([2001:db8::53]:53).
  resolver.setServers([from.family === 'ipv6' ? `[${target}]:${check.port}` : `${target}:${check.port}`]);
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
