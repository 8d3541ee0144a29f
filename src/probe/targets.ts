import { addressFamily, ipv6ToBigInt, isLinkLocal } from '../config/ipv6.js';
import type { Check } from '../config/types.js';
import type { Family } from '../plan/state.js';
import type { ProbeSubject } from './types.js';

/**
 * Whether a target judges `family`: each family's targets judge that family
 * alone (README "Configuration reference"). An http URL whose host is a name
 * judges both: each family's prober resolves it in its own family.
 */
function judges(target: string, method: Check['method'], family: Family): boolean {
  if (method !== 'http') return addressFamily(target) === family;
  // An IPv6 host is written in brackets, right after the scheme (the config has checked each URL).
  if (/^[a-z][a-z0-9+.-]*:\/\/\[/i.test(target)) return family === 'ipv6';
  const host = URL.canParse(target) ? new URL(target).hostname : target;
  return /^[0-9.]+$/.test(host) ? family === 'ipv4' : true;
}

/**
 * Whether the check probes `family` at all. Only an http check may not: its
 * targets are URLs, and a gateway is no web server, so a family without a URL
 * of its own is not probed (up unless its link or the plan says otherwise).
 */
export function checksFamily(check: Check, family: Family): boolean {
  return check.method !== 'http' || check.targets.some((target) => judges(target, check.method, family));
}

/**
 * The targets a round probes: the check's own ones of the subject's family, else
 * the uplink's gateway of that family (the README's default, "Configuration
 * reference"). None at all when neither is known (gateway `none`, or `auto`
 * before DHCP or a router advertisement has given one): such rounds have no
 * results, which a quorum of 1 or more judges bad. A link-local target is
 * reached on the uplink's device, so it carries it as its zone (fe80::1%wan2):
 * fping and Node's sockets both take that form, and fping prints it back as given.
 */
export function probeTargets(subject: ProbeSubject, check: Check): string[] {
  const family = subject.family ?? 'ipv4';
  const own = check.targets.filter((target) => judges(target, check.method, family));
  const targets = own.length > 0 ? own : subject.gateway ? [subject.gateway] : [];
  return family === 'ipv6' && check.method !== 'http' ? targets.map((target) => withZone(target, subject.device)) : targets;
}

function withZone(address: string, device: string): string {
  const value = ipv6ToBigInt(address);
  return value !== undefined && isLinkLocal(value) ? `${address}%${device}` : address;
}
