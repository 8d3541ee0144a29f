// A firewall file that starts with `flush ruleset` (Debian's /etc/nftables.conf
// does) removes every table on each load, uplinkd's included: uplinkd puts
// it back (README "Self-healing"), but new connections fail until it has.

import { dirname, join, posix } from 'node:path';
import type { Files, Finding } from './view.js';

export const NFTABLES_CONF = 'etc/nftables.conf';

interface Line { file: string; line: number; text: string }

/** A glob in the last path component, as nft allows in `include`, as a RegExp. */
function globPattern(name: string): RegExp {
  const escaped = name.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(`^${escaped}$`);
}

/** The files an `include "…"` names: relative to the including file's folder, else nft's default include path /etc. */
function includeTargets(files: Files, from: string, target: string): string[] {
  const candidates = target.startsWith('/') ? [target.slice(1)] : [join(dirname(from), target), join('etc', target)];
  for (const candidate of candidates) {
    const name = posix.basename(candidate);
    if (!/[*?]/.test(name)) {
      if (files.read(candidate) !== undefined) return [candidate];
      continue;
    }
    const dir = posix.dirname(candidate);
    const matches = files.list(dir).filter((n) => globPattern(name).test(n)).map((n) => `${dir}/${n}`);
    if (matches.length) return matches;
  }
  return [];
}

/** Every statement line of the file and of the files it includes, in load order, comments removed. */
function statements(files: Files, path: string, seen = new Set<string>()): Line[] {
  if (seen.has(path) || seen.size > 50) return [];
  seen.add(path);
  const out: Line[] = [];
  (files.read(path) ?? '').split('\n').forEach((raw, i) => {
    const code = raw.replace(/#.*/, '');
    for (const text of code.split(';').map((s) => s.trim()).filter(Boolean)) {
      out.push({ file: '/' + path, line: i + 1, text });
      const include = /^include\s+"([^"]+)"/.exec(text);
      if (include) for (const target of includeTargets(files, path, include[1])) out.push(...statements(files, target, seen));
    }
  });
  return out;
}

/** The unit's ExecStop flushes too: `systemctl restart nftables` then wipes everything even after the file is fixed. */
function unitFlushesOnStop(files: Files): boolean {
  const unit = ['etc/systemd/system', 'usr/lib/systemd/system', 'lib/systemd/system']
    .map((d) => files.read(`${d}/nftables.service`)).find((t) => t !== undefined);
  return /^ExecStop=.*\bflush\s+ruleset\b/m.test(unit ?? '');
}

/**
 * `flush ruleset`, or `flush ruleset inet` (the family of uplinkd's table);
 * `flush ruleset ip` leaves inet tables alone.
 */
export function checkNftablesConf(files: Files, ownFamily = 'inet'): Finding[] {
  if (files.read(NFTABLES_CONF) === undefined) return [];
  const lines = statements(files, NFTABLES_CONF);
  const flushes = lines.filter((l) => {
    const m = /^flush\s+ruleset(?:\s+(\w+))?$/.exec(l.text);
    return m && (!m[1] || m[1] === ownFamily);
  });
  if (flushes.length === 0) return [];
  const tables = [...new Set(lines.map((l) => /^table\s+(?:(ip|ip6|inet|arp|bridge|netdev)\s+)?([\w.-]+)\s*\{?/.exec(l.text))
    .filter((m) => m !== null).map((m) => `${m![1] ?? 'ip'} ${m![2]}`))];
  const where = flushes.map((f) => `${f.file}:${f.line}`).join(', ');
  const replacement = tables.length
    ? `"${tables.map((t) => `table ${t}; delete table ${t}`).join('; ')}"`
    : '"table FAMILY NAME; delete table FAMILY NAME" for each table the file defines';
  const stop = unitFlushesOnStop(files) ? '; and reload it with systemctl reload nftables, not restart or stop: the unit\'s ExecStop is nft flush ruleset' : '';
  return [{
    id: 'nftables-flush',
    message: `${where}: flush ruleset removes every table, uplinkd's too, each time the firewall is loaded or reloaded; uplinkd restores its table within a second, but new connections fail meanwhile`,
    fix: `at ${where}, replace "flush ruleset" with ${replacement} (each table is created if missing, then deleted, so its definition below starts clean and other tables, uplinkd's included, stay)${stop}`,
  }];
}
