// systemd-networkd deletes the ip rules and routes it did not create whenever
// it starts or reconfigures a link (ManageForeignRoutingPolicyRules= and
// ManageForeignRoutes= default to yes), which takes uplinkd's rules and
// uplink tables with it.

import { dirname } from 'node:path';
import type { Files, Finding } from './view.js';

const KEYS = ['ManageForeignRoutingPolicyRules', 'ManageForeignRoutes'] as const;

/** Where systemd looks for units and config, most important first (systemd.unit(5), networkd.conf(5)). */
const UNIT_DIRS = ['etc/systemd/system', 'run/systemd/system', 'usr/local/lib/systemd/system', 'usr/lib/systemd/system', 'lib/systemd/system'];
const CONF_DIRS = ['etc/systemd', 'run/systemd', 'usr/local/lib/systemd', 'usr/lib/systemd'];

export const NETWORKD_DROPIN = '/etc/systemd/networkd.conf.d/99-uplinkd.conf';

/**
 * Enabled (a `.wants/` link to its service or socket, not masked) or running
 * this boot: networkd writes /run/systemd/netif/state while it runs. The
 * /run/systemd/netif directory alone says nothing: systemd's tmpfiles create
 * it on every machine that has systemd installed.
 */
function networkdPresence(files: Files): string | undefined {
  if (files.exists('run/systemd/netif/state')) return 'running';
  // A masked unit is a symlink to /dev/null: reading it gives ''.
  const masked = ['etc/systemd/system', 'run/systemd/system'].some((dir) => files.read(`${dir}/systemd-networkd.service`) === '');
  if (masked) return undefined;
  for (const dir of UNIT_DIRS) {
    for (const entry of files.list(dir).filter((e) => e.endsWith('.wants'))) {
      for (const unit of ['systemd-networkd.service', 'systemd-networkd.socket']) {
        if (files.exists(`${dir}/${entry}/${unit}`)) return `enabled (/${dir}/${entry}/${unit})`;
      }
    }
  }
  return undefined;
}

/** The files networkd reads, in the order it applies them (later wins): the main file, then drop-ins by name. */
export function networkdConfFiles(files: Files): string[] {
  const main = CONF_DIRS.map((d) => `${d}/networkd.conf`).find((p) => files.read(p) !== undefined);
  const dropins = new Map<string, string>();
  for (const dir of CONF_DIRS) {
    for (const name of files.list(`${dir}/networkd.conf.d`).filter((n) => n.endsWith('.conf'))) {
      // A drop-in of the same name in a more important directory hides this one.
      if (!dropins.has(name)) dropins.set(name, `${dir}/networkd.conf.d/${name}`);
    }
  }
  const names = [...dropins.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return [...(main ? [main] : []), ...names.map((n) => dropins.get(n)!)];
}

interface Setting { value: boolean; file: string }

/** systemd's parse_boolean. */
function parseBoolean(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (['1', 'yes', 'y', 'true', 't', 'on'].includes(t)) return true;
  if (['0', 'no', 'n', 'false', 'f', 'off'].includes(t)) return false;
  return undefined;
}

/** The last value each key gets in the [Network] sections of these files. */
export function networkdSettings(files: Files, paths: string[]): Partial<Record<(typeof KEYS)[number], Setting>> {
  const out: Partial<Record<(typeof KEYS)[number], Setting>> = {};
  for (const path of paths) {
    let section = '';
    for (const raw of (files.read(path) ?? '').split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#') || line.startsWith(';')) continue;
      const header = /^\[(.+)\]$/.exec(line);
      if (header) {
        section = header[1];
        continue;
      }
      const eq = line.indexOf('=');
      if (section !== 'Network' || eq < 0) continue;
      const key = line.slice(0, eq).trim() as (typeof KEYS)[number];
      const value = parseBoolean(line.slice(eq + 1));
      // systemd ignores a value it cannot parse, keeping the earlier one.
      if (KEYS.includes(key) && value !== undefined) out[key] = { value, file: '/' + path };
    }
  }
  return out;
}

export function checkNetworkd(files: Files): Finding[] {
  const presence = networkdPresence(files);
  if (!presence) return [];
  const settings = networkdSettings(files, networkdConfFiles(files));
  const active = KEYS.filter((k) => settings[k]?.value !== false);
  if (active.length === 0) return [];
  const how = active.map((k) => `${k}=yes (${settings[k] ? `set in ${settings[k]!.file}` : 'the default'})`).join(', ');
  // A drop-in that sorts after ours would win again: then that file is the one to edit.
  const later = active.map((k) => settings[k]?.file).find((f) => f && dirname(f).endsWith('networkd.conf.d') && f.split('/').pop()! > '99-uplinkd.conf');
  const fix = later
    ? `set ${active.map((k) => `${k}=no`).join(' and ')} in ${later} (it is read after any 99-uplinkd.conf), then systemctl restart systemd-networkd`
    : `mkdir -p ${dirname(NETWORKD_DROPIN)} && printf '[Network]\\nManageForeignRoutingPolicyRules=no\\nManageForeignRoutes=no\\n' > ${NETWORKD_DROPIN} && systemctl restart systemd-networkd`;
  return [{
    id: 'networkd',
    message: `systemd-networkd is ${presence} with ${how}: it deletes uplinkd's ip rules and uplink routes whenever it starts or reconfigures a link`,
    fix,
  }];
}
