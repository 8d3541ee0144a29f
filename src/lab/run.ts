// Running programs for the lab: always an argument array, never a shell, and
// always inside one of the lab's namespaces (`ip -n NS` or `ip netns exec NS`):
// the lab never touches the network of the machine it runs on. Programs are
// run by the kernel layer's runCommand; these are the lab's shorthands for it.

import { fileURLToPath } from 'node:url';
import { runCommand, type CommandOptions } from '../kernel/runner.js';

/** Runs argv and resolves with its stdout; a non-zero exit is an error carrying the command and its stderr. */
export async function must(argv: string[], opts: CommandOptions = {}): Promise<string> {
  const r = await runCommand(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  return r.stdout;
}

/** `ip -n NS ...`: iproute2 acting inside a namespace. */
export function ip(ns: string, ...args: string[]): Promise<string> {
  return must(['ip', '-n', ns, ...args]);
}

/** `ip netns exec NS ...`: any program inside a namespace. */
export function inNamespace(ns: string, ...argv: string[]): Promise<string> {
  return must(['ip', 'netns', 'exec', ns, ...argv]);
}

/** `nft -f -` inside a namespace: one atomic transaction. */
export function nft(ns: string, script: string): Promise<string> {
  return must(['ip', 'netns', 'exec', ns, 'nft', '-f', '-'], { input: script });
}

/**
 * The command that runs one of the lab's node programs (whoami, client).
 * Production runs the compiled dist/lab/*.js; tests run src/lab/*.ts through
 * tsx. Whichever this module is, its sibling is the same kind.
 */
export function labProgram(program: 'whoami' | 'client' | 'transfers'): string[] {
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    return [process.execPath, '--import', import.meta.resolve('tsx'), fileURLToPath(new URL(`./${program}.ts`, self))];
  }
  return [process.execPath, fileURLToPath(new URL(`./${program}.js`, self))];
}
