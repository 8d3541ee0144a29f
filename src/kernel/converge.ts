// The one door through which the daemon changes the kernel, and the check that
// what it installed is still there.
//
// `converge(installed, desired)` decides how: element updates in one nft
// transaction when only elements changed (a health verdict), a full apply
// otherwise; an element update that fails (the table is gone) falls back to a
// full apply, so the kernel is never left half way. Afterwards it reads back
// what the kernel holds, so `findDrift` can later tell when someone else (a
// firewall reload, a network manager, a DHCP client) removed or changed any
// of it. See README "Self-healing".

import type { DesiredState, NftTable } from '../plan/state.js';
import { applyState, plansIpv6, routingDiff, sysctlDiff, type NftMode } from './apply.js';
import { applyMptcp, mptcpDrift } from './mptcp.js';
import { type Change, type Runner } from './runner.js';
import { elementUpdateScript, runNftScript, sameStructure } from './update.js';

/** What uplinkd's nft table held right after uplinkd last changed it, as `nft -j` lists it. */
export interface NftFingerprint {
  /** Tables, chains, rules and set declarations; undefined when the table did not exist. */
  structure?: string;
  /** The elements of every planned set; dynamic sets (sticky) are filled by packets and left out. */
  elements?: string;
}

export interface Installed {
  state: DesiredState;
  nft: NftFingerprint;
}

export type DriftKind = 'nft-table' | 'nft-structure' | 'nft-elements' | 'rules' | 'routes' | 'addresses' | 'sysctls' | 'mptcp';

export interface Drift {
  kind: DriftKind;
  /** What differs, in a few words, for the log and status. */
  detail: string;
}

export interface ConvergeResult {
  installed: Installed;
  changes: Change[];
  /** Set when an element update failed and a full apply was done instead: the error it met. */
  fellBack?: string;
}

interface NftJsonItem { [kind: string]: { name?: string; elem?: unknown } }

/**
 * Reads the fingerprint of the planned table: 1 `nft -j list table`, ~10 ms.
 * The plan says which sets are dynamic: nft does not list that flag back.
 */
export async function readFingerprint(runner: Runner, table: NftTable): Promise<NftFingerprint> {
  const result = await runner.run('nft', ['-j', 'list', 'table', table.family, table.name]);
  if (result.code !== 0) return {};
  return fingerprintOf(result.stdout, new Set(table.sets.filter((s) => s.flags?.includes('dynamic')).map((s) => s.name)));
}

/** The fingerprint of `nft -j list table` output (see NftFingerprint); `dynamic` names the sets packets fill. */
export function fingerprintOf(json: string, dynamic: ReadonlySet<string>): NftFingerprint {
  const items = (JSON.parse(json) as { nftables: NftJsonItem[] }).nftables.filter((i) => !('metainfo' in i));
  const structure: NftJsonItem[] = [];
  const elements: [string, unknown][] = [];
  for (const item of items) {
    const [kind, body] = Object.entries(item)[0];
    if (kind === 'set' || kind === 'map') {
      const { elem, ...declaration } = body;
      structure.push({ [kind]: declaration });
      if (!dynamic.has(declaration.name ?? '')) elements.push([declaration.name ?? '', elem ?? []]);
    } else {
      structure.push(item);
    }
  }
  return { structure: JSON.stringify(structure), elements: JSON.stringify(elements) };
}

/**
 * What a drift check reads: `all` of it, or only what no monitor reports
 * (`unwatched`): the sysctls and MPTCP's endpoints and limits. `nft monitor`
 * and `ip monitor` (kernel/watch.ts) report every change to the table, the
 * rules, the routes and the addresses, and say when they may have missed one.
 */
export type DriftScope = 'all' | 'unwatched';

/**
 * Everything that differs between what `installed` says is in the kernel and
 * what is: 2 commands (`nft -j list table`, and one `ip -4 -batch` for rules,
 * routes and addresses), 1 more when the plan has IPv6 (`ip -6 -batch` for
 * its rules and routes), 2 more with `mptcp: subflow` (endpoints and limits),
 * and a few /proc/sys reads. `unwatched` leaves out the `nft` and `ip`
 * ones. An empty list means in step.
 */
export async function findDrift(installed: Installed, runner: Runner, scope: DriftScope = 'all'): Promise<Drift[]> {
  const { state } = installed;
  const watched = scope === 'all';
  const [now, routing, mptcp] = await Promise.all([
    watched ? readFingerprint(runner, state.nft) : undefined,
    watched ? routingDiff(state, runner) : undefined,
    mptcpDrift(state.mptcp, runner),
  ]);
  const drift: Drift[] = [];
  if (now) drift.push(...tableDrift(installed, now));
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  if (routing && (routing.missingRules.length || routing.staleRules.length)) {
    drift.push({ kind: 'rules', detail: [routing.missingRules.length && `${count(routing.missingRules.length, 'rule')} missing`,
      routing.staleRules.length && `${count(routing.staleRules.length, 'foreign rule')} in the owned range`].filter(Boolean).join(', ') });
  }
  if (routing && (routing.missingRoutes.length || routing.staleRoutes.length)) {
    drift.push({ kind: 'routes', detail: [routing.missingRoutes.length && `${count(routing.missingRoutes.length, 'route')} missing`,
      routing.staleRoutes.length && `${count(routing.staleRoutes.length, 'foreign route')} in owned tables`].filter(Boolean).join(', ') });
  }
  if (routing && (routing.missingAddresses.length || routing.staleAddresses.length)) {
    drift.push({ kind: 'addresses', detail: [routing.missingAddresses.length && 'the host source address is missing',
      routing.staleAddresses.length && 'a stale address carries uplinkd\'s label'].filter(Boolean).join(', ') });
  }
  const sysctls = sysctlDiff(state, runner);
  if (sysctls.length) drift.push({ kind: 'sysctls', detail: sysctls.map((s) => s.key).join(', ') + ' changed' });
  if (mptcp) drift.push({ kind: 'mptcp', detail: `MPTCP: ${mptcp}` });
  return drift;
}

/** How the table as read now differs from the one uplinkd installed: at most one Drift, the gravest. */
function tableDrift({ state, nft }: Installed, now: NftFingerprint): Drift[] {
  if (now.structure === undefined) return [{ kind: 'nft-table', detail: `table ${state.nft.family} ${state.nft.name} is gone` }];
  if (now.structure !== nft.structure) return [{ kind: 'nft-structure', detail: `table ${state.nft.name}: chains, rules or sets changed` }];
  if (now.elements !== nft.elements) return [{ kind: 'nft-elements', detail: `table ${state.nft.name}: set or map elements changed` }];
  return [];
}

/**
 * Brings the kernel from `installed` (undefined: unknown, as at start) to
 * `desired`. `drift` (from findDrift) says what someone else changed, so it
 * is restored even where the plan itself did not change.
 */
export interface ConvergeOptions {
  drift?: Drift[];
  /**
   * Runs once the kernel holds the new state and before it is read back
   * (e.g. flushing a down uplink's connections), so it waits for nothing.
   */
  then?: () => Promise<void>;
}

export async function converge(installed: Installed | undefined, desired: DesiredState, runner: Runner, opts: ConvergeOptions = {}): Promise<ConvergeResult> {
  const drift = opts.drift ?? [];
  const kinds = new Set(drift.map((d) => d.kind));
  const sameTable = installed !== undefined && !kinds.has('nft-table') && !kinds.has('nft-structure') && sameStructure(installed.state.nft, desired.nft);
  const routingSame = installed !== undefined && !kinds.has('rules') && !kinds.has('routes') && !kinds.has('addresses') && !kinds.has('sysctls') &&
    JSON.stringify([installed.state.routes, installed.state.rules, installed.state.addresses, installed.state.sysctls]) ===
      JSON.stringify([desired.routes, desired.rules, desired.addresses, desired.sysctls]);
  // A table whose elements were changed by someone else gets every planned
  // set rewritten; otherwise only the sets the plan changed.
  const elements = sameTable ? elementUpdateScript(kinds.has('nft-elements') ? { ...installed.state.nft, sets: [] } : installed.state.nft, desired.nft) : '';

  let changes: Change[] = [];
  let fellBack: string | undefined;
  let onlyElements = false;
  try {
    if (sameTable && routingSame) {
      // The failover path: one nft transaction and nothing else to wait for.
      await runNftScript(runner, elements);
      if (elements) changes.push({ what: 'nft elements', args: ['nft', '-f', '-'] });
      onlyElements = true;
    } else {
      changes = await fullApply(desired, runner, sameTable ? { elements } : installed ? 'replace' : 'adopt', readsIpv6(installed, desired));
    }
  } catch (err) {
    if (!sameTable) throw err;
    // The table we meant to update is not the one we know (deleted, or
    // changed under us): replace it whole, with routes and rules.
    fellBack = err instanceof Error ? err.message : String(err);
    changes = await fullApply(desired, runner, 'replace', readsIpv6(installed, desired));
  }
  // MPTCP endpoints follow health too (a full apply converges them itself);
  // before `then`, so a down uplink's subflows are handed over before its
  // connections are flushed.
  if (onlyElements && (kinds.has('mptcp') || JSON.stringify(installed!.state.mptcp) !== JSON.stringify(desired.mptcp))) {
    changes.push(...await applyMptcp(desired.mptcp, runner));
  }
  await opts.then?.();
  return { installed: { state: desired, nft: await readFingerprint(runner, desired.nft) }, changes, ...(fellBack ? { fellBack } : {}) };
}

/**
 * Whether a full apply must read the IPv6 side: when either plan has one, or
 * nothing is known of what is installed (a restart adopts whatever a
 * previous instance left). An IPv4-only daemon thus runs no `ip -6` after
 * its first apply.
 */
function readsIpv6(installed: Installed | undefined, desired: DesiredState): boolean {
  return installed === undefined || plansIpv6(installed.state) || plansIpv6(desired);
}

/**
 * applyState, and when it adopted a table it did not itself write (a previous
 * instance's), every planned set rewritten once: that instance may have
 * followed verdicts element by element under the same table digest, so the
 * digest alone cannot tell what the maps hold. Dynamic sets (sticky) are kept.
 */
async function fullApply(desired: DesiredState, runner: Runner, nftMode: NftMode, ipv6: boolean): Promise<Change[]> {
  const { changes, nftKept } = await applyState(desired, runner, nftMode, ipv6);
  if (nftMode === 'adopt' && nftKept) {
    const script = elementUpdateScript({ ...desired.nft, sets: [] }, desired.nft);
    await runNftScript(runner, script);
    if (script) changes.push({ what: 'nft elements', args: ['nft', '-f', '-'] });
  }
  return changes;
}

/**
 * Paces restores so that a program that keeps deleting uplinkd's state is
 * not fought in a tight loop: the first restore after a quiet spell is
 * immediate, each further one waits twice as long as the one before (from
 * BASE_MS), up to CAP_MS. The cap keeps the state back within a second of
 * the other program stopping: at worst the cap, plus noticing (~30 ms) and
 * the restore itself (~100 ms).
 */
export class RestoreBackoff {
  static readonly BASE_MS = 100;
  static readonly CAP_MS = 500;
  /** A spell this long without a restore forgets the streak: a program that deletes less often than this is no loop to fear. */
  static readonly QUIET_MS = 3000;
  private streak = 0;
  private lastRestoreAt = -Infinity;

  /** The current gap between restores: 0 while not backing off (no restore yet, or a quiet spell since the last). */
  currentGapMs(nowMs: number): number {
    if (this.streak === 0 || nowMs - this.lastRestoreAt > RestoreBackoff.QUIET_MS) return 0;
    return Math.min(RestoreBackoff.CAP_MS, RestoreBackoff.BASE_MS * 2 ** (this.streak - 1));
  }

  /** How long to wait, from `nowMs`, before restoring drift found now. */
  delayMs(nowMs: number): number {
    const gap = this.currentGapMs(nowMs);
    return gap === 0 ? 0 : Math.max(0, this.lastRestoreAt + gap - nowMs);
  }

  restored(nowMs: number): void {
    this.streak = this.currentGapMs(nowMs) === 0 ? 1 : this.streak + 1;
    this.lastRestoreAt = nowMs;
  }
}
