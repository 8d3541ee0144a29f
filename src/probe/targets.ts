import { addressFamily } from '../config/ipv6.js';
import type { Check } from '../config/types.js';
import type { ProbeSubject } from './types.js';

/**
 * Whether a target judges IPv4, the one family probed so far: each family's
 * targets judge that family alone (README "Configuration reference"), so an
 * IPv6 address, or a URL whose host is one, is left to IPv6 health.
 */
function judgesIpv4(target: string, method: Check['method']): boolean {
  if (method !== 'http') return addressFamily(target) === 'ipv4';
  // An IPv6 host is written in brackets, right after the scheme (the config has checked each URL).
  return !/^[a-z][a-z0-9+.-]*:\/\/\[/i.test(target);
}

/**
 * The targets a round probes: the check's own IPv4 ones, else the uplink's gateway (the
 * README's default, "Configuration reference"). None at all when neither is known (gateway `none`, or
 * `auto` before DHCP has given one): such rounds have no results, which a
 * quorum of 1 or more judges bad.
 */
export function probeTargets(subject: ProbeSubject, check: Check): string[] {
  const own = check.targets.filter((target) => judgesIpv4(target, check.method));
  if (own.length > 0) return own;
  return subject.gateway ? [subject.gateway] : [];
}
