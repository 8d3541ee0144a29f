// NetworkManager reconfigures the interfaces it manages on its own schedule
// (reconnects, reapplied profiles, DHCP through its internal client), and may
// remove routes on them it did not add: uplinkd's uplink tables hold routes
// on each uplink interface.

import type { Uplink } from '../config/types.js';
import { findTool, tryRun, type Finding, type MachineView } from './view.js';

export const NM_CONF = '/etc/NetworkManager/conf.d/99-uplinkd.conf';

/** `nmcli -t` fields: separated by ':', with ':' and '\' inside a field escaped by '\'. */
export function parseTerse(line: string): string[] {
  const fields = [''];
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\' && i + 1 < line.length) fields[fields.length - 1] += line[++i];
    else if (c === ':') fields.push('');
    else fields[fields.length - 1] += c;
  }
  return fields;
}

export async function checkNetworkManager(view: MachineView, uplinks: Uplink[]): Promise<Finding[]> {
  if (!findTool(view.path, 'nmcli')) return [];
  // Fails when NetworkManager is not running: then it manages nothing.
  const r = await tryRun(view.runner, 'nmcli', ['-t', '-f', 'DEVICE,STATE', 'device']);
  if (r?.code !== 0) return [];
  const state = new Map(r.stdout.split('\n').filter(Boolean).map((l) => parseTerse(l) as [string, string]));
  const managed = uplinks.filter((u) => state.has(u.interface) && state.get(u.interface) !== 'unmanaged');
  if (managed.length === 0) return [];
  const list = managed.map((u) => `interface-name:${u.interface}`).join(';');
  return [{
    id: 'networkmanager',
    message: `NetworkManager manages ${managed.map((u) => `${u.interface} (uplink ${u.name}, ${state.get(u.interface)})`).join(', ')}: ` +
      `it reconfigures their addresses and routes on its own and may remove routes on them it did not add, such as those in uplinkd's uplink tables`,
    fix: `printf '[keyfile]\\nunmanaged-devices=${list}\\n' > ${NM_CONF} && systemctl reload NetworkManager ` +
      `(if another conf.d file sets unmanaged-devices, add these there instead: the last file read wins)`,
  }];
}
