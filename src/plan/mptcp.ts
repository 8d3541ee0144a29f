// `mptcp: subflow`: which MPTCP endpoints the kernel's path manager should
// have, from the resolved uplinks. Every usable, up uplink's address is an
// endpoint with the `subflow` flag, so each MPTCP connection of this machine
// opens one more subflow from that address (split access sends it out that
// uplink) and the server spreads one download over every uplink. A down or
// unusable uplink has none: removing an endpoint makes the kernel close the
// subflows that use its address and announce that to the peer, which then
// resends their data on the others. See README "MPTCP".

import { MPTCP_LIMIT_MAX, mptcpEndpointId } from '../ownership.js';
import { canCarry, type PlanContext } from './resolve.js';
import type { MptcpEndpoint, MptcpState } from './state.js';

export function mptcpState({ config, uplinks }: PlanContext): MptcpState {
  if (config.mptcp !== 'subflow') return { enabled: false, endpoints: [], absent: [] };
  // The lowest tier configured, not the lowest up: flags follow the config,
  // so a failover changes no flag (a change would be an MP_PRIO to every
  // peer). While the lower tiers are down their endpoints are gone, and the
  // backup subflows are all there is: they carry the data.
  const lowestTier = Math.min(...uplinks.map((u) => u.uplink.tier));
  const endpoints: MptcpEndpoint[] = [];
  const absent: MptcpState['absent'] = [];
  for (const u of uplinks) {
    const id = mptcpEndpointId(u.index);
    const name = u.uplink.name;
    if (id === undefined) absent.push({ uplink: name, why: 'the kernel holds at most 8 MPTCP endpoints; uplinks past the eighth get none' });
    else if (u.unusable) absent.push({ uplink: name, why: `unusable (${u.unusable})` });
    else if (!canCarry(u)) absent.push({ uplink: name, why: 'down: it takes no new subflows, and the kernel closes the ones it had' });
    else {
      const backup = u.uplink.tier > lowestTier;
      endpoints.push({
        id, address: u.address!, dev: u.uplink.interface, backup,
        why: backup
          ? `${name} (tier ${u.uplink.tier}): a backup subflow from ${u.address}, carrying data only while no tier-${lowestTier} subflow is left`
          : `${name}: every MPTCP connection opens a subflow from ${u.address}, so one connection uses this uplink too`,
      });
    }
  }
  // `subflows` counts the subflows beyond a connection's first, and the
  // first leaves from the neutral source (host_source or the LAN address),
  // which is no endpoint: so one per uplink. add_addr_accepted as many, for
  // servers that announce further addresses of their own.
  const wanted = Math.min(MPTCP_LIMIT_MAX, uplinks.filter((u) => mptcpEndpointId(u.index) !== undefined).length);
  return {
    enabled: true, endpoints, absent,
    limits: { subflows: wanted, addAddrAccepted: wanted,
      why: `room for a subflow from every uplink; raised to at least this, never lowered: the limits are shared by everything in this network namespace` },
  };
}
