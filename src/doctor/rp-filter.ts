// Strict reverse-path filtering (rp_filter=1) on an uplink drops the replies
// of connections balanced onto it, since the main table would route their
// source elsewhere. uplinkd's plan sets rp_filter=2 (loose) on every uplink
// whose interface exists, at every full install (README "What uplinkd
// installs"), and the kernel uses the larger of conf/all and conf/IFACE, so
// a strict value found before uplinkd runs is one uplinkd fixes itself and
// is not reported. What it does not cover:
//  - a value set back to strict after uplinkd installed its state: no kernel
//    event tells uplinkd, so it stays until uplinkd next installs (a running
//    `uplinkd run` finds it in its periodic drift check, within 5 s);
//  - a sysctl.d file that makes an uplink strict: systemd-sysctl writes it
//    again whenever the interface is (re)created (a PPP or LTE link coming
//    back), racing uplinkd's own write.

import type { Uplink } from '../config/types.js';
import type { Files, Finding } from './view.js';

const SYSCTL_DIRS = ['etc/sysctl.d', 'run/sysctl.d', 'usr/local/lib/sysctl.d', 'usr/lib/sysctl.d', 'lib/sysctl.d'];

/** The key sysctl(8) takes for an interface: dots inside the name become slashes. */
export function rpFilterKey(ifname: string): string {
  return `net.ipv4.conf.${ifname.replaceAll('.', '/')}.rp_filter`;
}

function fixFor(ifname: string): string {
  return `sysctl -w ${rpFilterKey(ifname)}=2, and to keep it, the line "${rpFilterKey(ifname)} = 2" in /etc/sysctl.d/90-uplinkd.conf`;
}

function readInt(files: Files, path: string): number | undefined {
  const text = files.read(path)?.trim();
  return text && /^\d+$/.test(text) ? Number(text) : undefined;
}

/** rp_filter of conf/all and conf/IFACE, and the one the kernel applies: the larger. */
function liveRpFilter(files: Files, ifname: string): { all: number; iface?: number; effective?: number } {
  const all = readInt(files, 'proc/sys/net/ipv4/conf/all/rp_filter') ?? 0;
  const iface = readInt(files, `proc/sys/net/ipv4/conf/${ifname}/rp_filter`);
  return { all, iface, effective: iface === undefined ? undefined : Math.max(all, iface) };
}

/** Strict right now, although uplinkd's state is installed (it loosened it then). */
export function checkLiveRpFilter(files: Files, uplinks: Uplink[], stateInstalled: boolean): Finding[] {
  if (!stateInstalled) return [];
  return uplinks.flatMap((u) => {
    const live = liveRpFilter(files, u.interface);
    if (live.effective !== 1) return [];
    return [{
      id: 'rp-filter',
      message: `${u.interface} (uplink ${u.name}) has strict rp_filter (conf/all=${live.all}, conf/${u.interface}=${live.iface}) although uplinkd's state is installed: ` +
        `something set it back after uplinkd loosened it, and until uplinkd next installs (a running uplinkd run puts it back within 5 s), replies to connections balanced onto ${u.name} are dropped`,
      fix: fixFor(u.interface),
    }];
  });
}

interface SysctlLine { file: string; line: number; key: string[]; value: string }

/** sysctl.d(5): a key with a slash uses slashes as separators, else dots. */
function splitKey(key: string): string[] {
  return key.includes('/') ? key.split('/').filter(Boolean) : key.split('.');
}

function sysctlFiles(files: Files): string[] {
  const byName = new Map<string, string>();
  for (const dir of SYSCTL_DIRS) {
    for (const name of files.list(dir).filter((n) => n.endsWith('.conf'))) {
      if (!byName.has(name)) byName.set(name, `${dir}/${name}`);
    }
  }
  return [...byName.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((n) => byName.get(n)!);
}

function sysctlLines(files: Files): SysctlLine[] {
  const out: SysctlLine[] = [];
  for (const file of sysctlFiles(files)) {
    (files.read(file) ?? '').split('\n').forEach((raw, i) => {
      const line = raw.trim();
      const eq = line.indexOf('=');
      if (!line || line.startsWith('#') || line.startsWith(';') || eq < 0) return;
      // A leading '-' only silences errors for a missing key.
      const key = line.slice(0, eq).trim().replace(/^-/, '');
      out.push({ file: '/' + file, line: i + 1, key: splitKey(key), value: line.slice(eq + 1).trim() });
    });
  }
  return out;
}

function globMatches(pattern: string, name: string): boolean {
  const re = pattern.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`).test(name);
}

/**
 * The sysctl.d setting systemd-sysctl applies to conf/IFACE/rp_filter when
 * the interface appears: an explicit key beats a glob, and among each kind
 * the last one read wins.
 */
function fileRpFilter(lines: SysctlLine[], ifname: string): SysctlLine | undefined {
  const rp = lines.filter((l) => l.key.length === 5 && l.key.slice(0, 3).join('.') === 'net.ipv4.conf' && l.key[4] === 'rp_filter');
  const explicit = rp.filter((l) => l.key[3] === ifname);
  const glob = rp.filter((l) => /[*?[]/.test(l.key[3]) && globMatches(l.key[3], ifname));
  return explicit.at(-1) ?? glob.at(-1);
}

export function checkSysctlFiles(files: Files, uplinks: Uplink[]): Finding[] {
  const lines = sysctlLines(files);
  const all = readInt(files, 'proc/sys/net/ipv4/conf/all/rp_filter') ?? 0;
  // With conf/all loose, a strict conf/IFACE makes no difference.
  if (all >= 2) return [];
  return uplinks.flatMap((u) => {
    const setting = fileRpFilter(lines, u.interface);
    if (setting?.value !== '1') return [];
    return [{
      id: 'rp-filter-file',
      message: `${setting.file}:${setting.line} sets rp_filter=1 (strict) for ${u.interface} (uplink ${u.name}): systemd-sysctl writes it again whenever ${u.interface} is (re)created, ` +
        `possibly after uplinkd loosened it, and replies to connections balanced onto ${u.name} are then dropped`,
      fix: `change it to 2 (loose) in ${setting.file}, or add "${rpFilterKey(u.interface)} = 2" to a sysctl.d file that sorts after it`,
    }];
  });
}
