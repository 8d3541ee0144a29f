// What the doctor's checks look at: a root directory for files (and /proc),
// a runner for commands, and PATH for the tools. On a real machine that is
// `/`, the system runner and the process's PATH; tests pass temporary roots
// and runners that answer from a script.

import { accessSync, constants, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/types.js';
import type { CommandResult, Runner } from '../kernel/runner.js';

/** One problem found, one line when printed: what is wrong, why it breaks uplinkd, and what to do. */
export interface Finding {
  /** Which check found it, e.g. `networkd`, `rp-filter`. */
  id: string;
  message: string;
  fix: string;
}

export interface MachineView {
  /** Config files and /proc are read under it. */
  root: string;
  runner: Runner;
  /** Where the tools are looked up, as in $PATH. */
  path: string;
  /** Without one, the checks about uplinks and the LAN are skipped. */
  config?: Config;
}

export class Files {
  constructor(readonly root: string) {}

  /** The file's text, or undefined when it cannot be read. */
  read(path: string): string | undefined {
    try {
      return readFileSync(join(this.root, path), 'utf8');
    } catch {
      return undefined;
    }
  }

  /** Whether anything (even a dangling symlink) is at that path. */
  exists(path: string): boolean {
    try {
      lstatSync(join(this.root, path));
      return true;
    } catch {
      return false;
    }
  }

  /** Names in a directory, sorted by byte value as systemd and nft sort them; none when it is missing. */
  list(dir: string): string[] {
    try {
      return readdirSync(join(this.root, dir)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    } catch {
      return [];
    }
  }
}

/** The first executable called `command` in the PATH directories, or undefined. */
export function findTool(path: string, command: string): string | undefined {
  for (const dir of path.split(':').filter(Boolean)) {
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs a command; undefined when it could not be started at all. */
export async function tryRun(runner: Runner, command: string, args: string[]): Promise<CommandResult | undefined> {
  try {
    return await runner.run(command, args);
  } catch {
    return undefined;
  }
}

/** The first line of a command's complaint, for a finding's message. */
export function complaint(result: CommandResult | undefined): string {
  if (!result) return 'could not be started';
  const line = (result.stderr || result.stdout).trim().split('\n')[0];
  return line ? `${line} (exit ${result.code})` : `exit ${result.code}`;
}
