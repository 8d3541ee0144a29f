// Readers for the rule keys that match the process behind a connection:
// `user`, `group` and `cgroup`. Names are resolved when the config is read,
// through `getent`, so users and groups from NSS (LDAP, sssd) count as well
// as those in /etc/passwd; only the ids reach nft.

import { execFileSync } from 'node:child_process';
import { describeValue, fail, ok, type Parsed } from './units.js';

/** The largest uid or gid: (uid_t)-1 means "no id" to the kernel. */
const LAST_ID = 2 ** 32 - 2;

type Database = 'passwd' | 'group';
const WORD: Record<Database, string> = { passwd: 'user', group: 'group' };

/** `getent DATABASE NAME`: the fields of its entry, or undefined when there is no such entry. */
function entryOf(database: Database, name: string): string[] | undefined {
  let line: string;
  try {
    line = execFileSync('getent', [database, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { status?: number | null };
    // 2: no such entry. Anything else (getent missing, NSS failing) is not an answer.
    if (e.status === 2) return undefined;
    throw new Error(e.code === 'ENOENT' ? 'getent is not installed (Debian: libc-bin)' : `getent ${database}: ${e.message}`);
  }
  return line.split('\n')[0].split(':');
}

/** `getent DATABASE NAME`: the id it gives, or undefined when there is no such entry. */
function lookUp(database: Database, name: string): number | undefined {
  const fields = entryOf(database, name);
  if (fields === undefined) return undefined;
  // name:password:ID:... for both databases.
  const id = Number(fields[2]);
  if (!Number.isInteger(id)) throw new Error(`getent ${database} ${name} printed no id`);
  return id;
}

/** A user's primary group (the gid a process of theirs runs with), or undefined when the user is unknown. */
export function primaryGroupOf(uid: number): number | undefined {
  const gid = Number(entryOf('passwd', String(uid))?.[3]);
  return Number.isInteger(gid) ? gid : undefined;
}

function parseAccount(database: Database, input: unknown): Parsed<number> {
  const word = WORD[database];
  if (typeof input === 'number') {
    return Number.isInteger(input) && input >= 0 && input <= LAST_ID
      ? ok(input)
      : fail(`expected a ${word} name or an id from 0 to ${LAST_ID}, got ${describeValue(input)}`);
  }
  if (typeof input !== 'string') return fail(`expected a ${word} name or id, got ${describeValue(input)}`);
  if (/^\d+$/.test(input)) return parseAccount(database, Number(input));
  // A leading '-' would read as an option to getent; control characters are in no name.
  if (input === '' || input.startsWith('-') || /[\x00-\x1f\x7f:]/.test(input)) return fail(`${JSON.stringify(input)} is not a ${word} name`);
  try {
    const id = lookUp(database, input);
    return id === undefined ? fail(`no ${word} "${input}" on this machine (getent ${database} knows none)`) : ok(id);
  } catch (err) {
    return fail(`cannot look up ${word} "${input}": ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** A user name (resolved to its uid now) or a uid. */
export const parseUser = (input: unknown): Parsed<number> => parseAccount('passwd', input);

/** A group name (resolved to its gid now) or a gid. */
export const parseGroup = (input: unknown): Parsed<number> => parseAccount('group', input);

/**
 * A cgroup v2 path relative to the hierarchy's root, normalised without
 * leading or trailing slash: "/system.slice/restic.service/" ->
 * "system.slice/restic.service". The characters are those of systemd unit
 * names (escapes such as \x2d included): the path is written into nft input
 * inside double quotes.
 */
export function parseCgroupPath(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected a cgroup path such as system.slice/restic.service, got ${describeValue(input)}`);
  const path = input.replace(/^\/+|\/+$/g, '');
  if (path === '') return fail('the root cgroup holds every process; name one below it, such as system.slice/restic.service');
  for (const part of path.split('/')) {
    if (part === '' || part === '.' || part === '..') return fail(`${JSON.stringify(input)}: each part of a cgroup path is a directory name (no empty, . or .. parts)`);
    if (!/^[A-Za-z0-9_.:@\\+=,-]+$/.test(part)) {
      return fail(`${JSON.stringify(input)}: a cgroup path may hold only letters, digits, / and _ . : @ \\ + = , -`);
    }
  }
  return ok(path);
}
