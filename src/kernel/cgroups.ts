// The cgroups that pinning rules name (`cgroup:`): where the cgroup v2
// hierarchy is mounted, which of the named cgroups exist and their ids, and
// a watcher that says when that changes. See README "Process pinning".
//
// nft 1.0.6 takes a cgroup as a path, resolves it relative to /sys/fs/cgroup
// when it loads the rule and keeps only the id (the inode of the cgroup's
// directory). So a cgroup that does not exist cannot be loaded at all, and one
// that is removed and created again (a systemd service restart) is a new id
// the loaded rule does not know: the plan names each cgroup with its id, so a
// new id is a new plan.
//
// Watching is a stat of each named cgroup, twice a second. inotify does see
// cgroup directories come and go, but only on a parent that exists: it would
// need the nearest existing ancestor of each path watched and re-armed as
// directories appear and disappear, and a hierarchy mounted late still goes
// unseen. A handful of stats costs microseconds and has none of those cases.

import { readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Config } from '../config/types.js';
import type { CgroupFacts } from '../plan/state.js';

/** Where nft 1.0.6 resolves cgroup paths (SYSFS_CGROUPSV2_PATH in its src/datatype.c). */
export const NFT_CGROUP_BASE = '/sys/fs/cgroup';

/** How often the watcher looks: a cgroup that appears is matched within about this much, plus one re-plan. */
export const CGROUP_POLL_MS = 500;

/**
 * How often it looks while no rule names a cgroup: only to find that a reload
 * now names one (the reload's own plan reads them), so an idle daemon without
 * cgroup rules wakes for nothing twice a second.
 */
export const CGROUP_IDLE_POLL_MS = 5000;

/**
 * The mount point of the cgroup v2 hierarchy in /proc/self/mountinfo text:
 * /sys/fs/cgroup on a unified layout, /sys/fs/cgroup/unified on a hybrid one.
 * Only mounts of the hierarchy's root count (a bind mount of a subtree would
 * shift every path and level). Undefined when none is mounted, as under
 * `ip netns exec`, which mounts a fresh /sys.
 */
export function cgroup2MountPoint(mountinfo: string): string | undefined {
  const mounts = mountinfo.split('\n').flatMap((line) => {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    const [before, after] = line.split(' - ');
    const fields = before?.split(' ') ?? [];
    const fstype = after?.split(' ')[0];
    return fstype === 'cgroup2' && fields[3] === '/' && fields[4] ? [unescapeMountField(fields[4])] : [];
  });
  return mounts.find((m) => m === NFT_CGROUP_BASE) ?? mounts.find((m) => m === `${NFT_CGROUP_BASE}/unified`) ?? mounts[0];
}

/** mountinfo writes space, tab, newline and backslash as octal escapes. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** `socket cgroupv2 level N`: how deep the cgroup lies below the hierarchy's root. */
export function cgroupLevel(path: string): number {
  return path.split('/').length;
}

/** The path nft needs for a cgroup: relative to /sys/fs/cgroup, wherever the hierarchy is mounted. */
export function nftCgroupPath(mountPoint: string, path: string): string {
  return relative(NFT_CGROUP_BASE, join(mountPoint, path));
}

export interface CgroupReading {
  /** Where the hierarchy is mounted; undefined when it is not. */
  mountPoint?: string;
  /** The cgroups of `paths` that exist now. */
  present: CgroupFacts[];
}

/** Which of `paths` (relative to the hierarchy's root) exist now, with their ids. */
export function readCgroups(paths: readonly string[], mountinfoPath = '/proc/self/mountinfo'): CgroupReading {
  if (paths.length === 0) return { present: [] };
  let mountPoint: string | undefined;
  try {
    mountPoint = cgroup2MountPoint(readFileSync(mountinfoPath, 'utf8'));
  } catch {
    mountPoint = undefined;
  }
  if (mountPoint === undefined) return { present: [] };
  const present = [...new Set(paths)].flatMap((path): CgroupFacts[] => {
    try {
      const st = statSync(join(mountPoint, path));
      return st.isDirectory() ? [{ path, id: st.ino, nftPath: nftCgroupPath(mountPoint, path) }] : [];
    } catch {
      return [];
    }
  });
  return { mountPoint, present };
}

/** The cgroup facts the planner needs, for `paths`. */
export function cgroupFacts(paths: readonly string[]): CgroupFacts[] {
  return readCgroups(paths).present;
}

/** What changed between two readings of the same cgroups, e.g. "cgroup a appeared, cgroup b recreated"; '' when nothing did. */
export function cgroupChanges(paths: readonly string[], before: readonly CgroupFacts[], now: readonly CgroupFacts[]): string {
  const changes = [...new Set(paths)].flatMap((path) => {
    const a = before.find((c) => c.path === path);
    const b = now.find((c) => c.path === path);
    if (!a && b) return [`cgroup ${path} appeared`];
    if (a && !b) return [`cgroup ${path} is gone`];
    if (a && b && (a.id !== b.id || a.nftPath !== b.nftPath)) return [`cgroup ${path} recreated`];
    return [];
  });
  return changes.join(', ');
}

export interface CgroupWatcher { stop(): void }

/**
 * Calls `onChange` when the cgroups `paths()` names no longer match `known()`
 * (the facts the current plan was made from): one appeared, went away, or was
 * created again with a new id. Both are read at every look, so a reload that
 * names other cgroups, and a re-read of the facts for any other reason, are
 * followed without telling the watcher. While `paths()` names none it looks
 * every `idleEveryMs` instead of every `everyMs`: after a reload that names
 * some, a change to them is then seen up to that much later, once.
 */
export function watchCgroups(
  paths: () => readonly string[],
  known: () => readonly CgroupFacts[] | undefined,
  onChange: (what: string) => void,
  everyMs = CGROUP_POLL_MS,
  idleEveryMs = CGROUP_IDLE_POLL_MS,
): CgroupWatcher {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const look = () => {
    const wanted = paths();
    if (wanted.length > 0) {
      const what = cgroupChanges(wanted, known() ?? [], cgroupFacts(wanted));
      if (what) onChange(what);
    }
    arm(wanted.length > 0 ? everyMs : idleEveryMs);
  };
  const arm = (ms: number) => {
    if (stopped) return; // perhaps by onChange
    timer = setTimeout(look, ms);
    timer.unref();
  };
  arm(paths().length > 0 ? everyMs : idleEveryMs);
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** The cgroups a config's rules name, each once. */
export function ruleCgroups(config: Pick<Config, 'rules'>): string[] {
  return [...new Set(config.rules.flatMap((r) => r.cgroup))];
}
