import type { Check } from '../config/types.js';
import type { ProbeSubject } from './types.js';

/**
 * The targets a round probes: the check's own, else the uplink's gateway (the
 * README's default, "Configuration reference"). None at all when neither is known (gateway `none`, or
 * `auto` before DHCP has given one): such rounds have no results, which a
 * quorum of 1 or more judges bad.
 */
export function probeTargets(subject: ProbeSubject, check: Check): string[] {
  if (check.targets.length > 0) return [...check.targets];
  return subject.gateway ? [subject.gateway] : [];
}
