// The external programs scripts/setup.sh unpacks off PATH (keepalived,
// conntrackd, promtool), found in one place: where setup.sh put them, else PATH.

import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Where scripts/setup.sh unpacks them. */
export const TOOLS_HOME = '/usr/local/lib/uplinkd-tools';

export type Tool = 'keepalived' | 'conntrackd' | 'promtool';

/** The path of a tool: in TOOLS_HOME first, then on PATH; undefined if neither has it. */
export function locateTool(name: Tool): string | undefined {
  for (const dir of [TOOLS_HOME, ...(process.env.PATH ?? '').split(delimiter).filter(Boolean)]) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** locateTool, or an error naming both places. */
export function findTool(name: Tool): string {
  const path = locateTool(name);
  if (!path) throw new Error(`${name} is neither in ${TOOLS_HOME} nor on PATH: run scripts/setup.sh`);
  return path;
}
