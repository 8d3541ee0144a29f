// Following a health verdict without a reload: when the table's structure is
// unchanged, only set and map elements are rewritten, in one nft transaction,
// so packets see either the old shares or the new ones. Connections of an
// uplink that went down are deleted by their mark, and nothing else.

import type { Family, NftSet, NftTable } from '../plan/state.js';
import { mustRun, type Runner } from './runner.js';

const setShape = (s: NftSet) => JSON.stringify([s.name, s.declaration, s.flags, s.timeout]);

/** Same chains and same set declarations: the tables differ at most in elements. */
export function sameStructure(a: NftTable, b: NftTable): boolean {
  return a.family === b.family && a.name === b.name &&
    JSON.stringify(a.chains.map((c) => [c.name, c.hook, c.rules.map((r) => r.text)])) ===
      JSON.stringify(b.chains.map((c) => [c.name, c.hook, c.rules.map((r) => r.text)])) &&
    JSON.stringify(a.sets.map(setShape)) === JSON.stringify(b.sets.map(setShape));
}

/**
 * The nft script that rewrites the elements of every planned set whose
 * elements changed, or '' when none did. Dynamic sets (sticky) are filled by
 * packets, not by the plan, and are left alone here.
 */
export function elementUpdateScript(installed: NftTable, desired: NftTable): string {
  const lines: string[] = [];
  const id = `${desired.family} ${desired.name}`;
  for (const set of desired.sets) {
    if (set.flags?.includes('dynamic')) continue;
    const before = installed.sets.find((s) => s.name === set.name);
    if (before && JSON.stringify(before.elements) === JSON.stringify(set.elements)) continue;
    const kind = set.declaration.includes(' : ') ? 'map' : 'set';
    lines.push(`flush ${kind} ${id} ${set.name}`);
    if (set.elements.length > 0) lines.push(`add element ${id} ${set.name} { ${set.elements.join(', ')} }`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

export async function runNftScript(runner: Runner, script: string): Promise<void> {
  if (script) await mustRun(runner, 'nft', ['-f', '-'], script);
}

/** Empties a dynamic set, e.g. the sticky sources of an uplink that went down. */
export async function flushDynamicSet(runner: Runner, table: NftTable, set: string): Promise<void> {
  await mustRun(runner, 'nft', ['flush', 'set', table.family, table.name, set]);
}

/** `conntrack -D` with these filters; returns how many entries it deleted. */
async function conntrackDelete(runner: Runner, filters: string[]): Promise<number> {
  const result = await runner.run('conntrack', ['-D', ...filters]);
  const deleted = /(\d+) flow entries have been deleted/.exec(result.stderr);
  // conntrack exits 1 when nothing matched; that is not a failure here.
  if (!deleted && result.code !== 0) throw new Error(`conntrack -D: ${result.stderr.trim()}`);
  return deleted ? Number(deleted[1]) : 0;
}

/**
 * Deletes the conntrack entries of `family` carrying `mark` under `mask`,
 * but for TCP connections under way; returns how many. Both families of an
 * uplink share its mark, and each has its own health: a family that went
 * down loses its own connections only. Its TCP connections stay, to be
 * answered with a reset by the plan (nft.ts, set `ended`): deleted, their
 * next packet would be one conntrack does not know, which is dropped rather
 * than reset. Not those still waiting for their first answer (SYN_SENT):
 * their client's next try is a SYN, a new connection on a live uplink, and
 * kept for their 2 minutes one could capture a later connection that reuses
 * its addresses and ports, and send it out with this uplink's address.
 */
export async function deleteConnections(runner: Runner, mark: number, mask: number, family: Family): Promise<number> {
  const filters = ['-f', family, '-m', `${mark}/${mask}`];
  const listed = await runner.run('conntrack', ['-L', ...filters]);
  // `conntrack -D` cannot leave one protocol out, so each other protocol listed is deleted by name.
  const protocols = new Set(listed.stdout.split('\n').map((line) => line.split(/\s+/)[0]).filter((p) => p && p !== 'tcp'));
  let deleted = await conntrackDelete(runner, [...filters, '-p', 'tcp', '--state', 'SYN_SENT']);
  for (const protocol of protocols) deleted += await conntrackDelete(runner, [...filters, '-p', protocol]);
  return deleted;
}

/**
 * Deletes the TCP connections still waiting for their first answer (SYN_SENT).
 * After a restore, those are attempts made while uplinkd's state was missing:
 * unmarked, or not source-NATed. Left in place for their 2 minutes, one of
 * them can capture a new connection that happens to reuse its addresses and
 * ports, which is then dropped as a retransmission of the old attempt.
 * Returns how many were deleted.
 */
export function deleteUnansweredTcp(runner: Runner): Promise<number> {
  return conntrackDelete(runner, ['-p', 'tcp', '--state', 'SYN_SENT']);
}

/** Connections per mark value (under mask), from the conntrack table: `-L` lists both families (conntrack-tools 1.4.7). */
export async function countConnections(runner: Runner, mask: number): Promise<Map<number, number>> {
  const result = await runner.run('conntrack', ['-L']);
  const counts = new Map<number, number>();
  for (const match of result.stdout.matchAll(/\bmark=(\d+)/g)) {
    const value = (Number(match[1]) & mask) >>> 0;
    if (value !== 0) counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  return counts;
}
