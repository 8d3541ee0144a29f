// Running programs for the lab: always an argument array, never a shell, and
// always inside one of the lab's namespaces (`ip -n NS` or `ip netns exec NS`):
// the lab never touches the network of the machine it runs on.

import { spawn, type StdioOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Text written to the program's stdin. */
  input?: string;
  /** Killed (SIGKILL) after this long; the result then has code 124 like timeout(1). */
  timeoutMs?: number;
  /** Pass the terminal through instead of capturing output. */
  inherit?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Runs argv and resolves with its exit code and output, whatever the code. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = opts.inherit ? 'inherit' : [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'];
    const child = spawn(argv[0], argv.slice(1), { stdio, env: opts.env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin?.end(opts.input);
    const timer = opts.timeoutMs ? setTimeout(() => ((timedOut = true), child.kill('SIGKILL')), opts.timeoutMs) : undefined;
    child.on('error', (err) => (clearTimeout(timer), reject(new Error(`${argv[0]}: ${err.message}`))));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const exit = timedOut ? 124 : (code ?? 128 + signalNumber(signal));
      resolve({ code: exit, stdout, stderr });
    });
  });
}

function signalNumber(signal: NodeJS.Signals | null): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return (signal && numbers[signal]) || 0;
}

/** Runs argv and resolves with its stdout; a non-zero exit is an error carrying the command and its stderr. */
export async function must(argv: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(argv, opts);
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
export function labProgram(program: 'whoami' | 'client'): string[] {
  const self = import.meta.url;
  if (self.endsWith('.ts')) {
    return [process.execPath, '--import', import.meta.resolve('tsx'), fileURLToPath(new URL(`./${program}.ts`, self))];
  }
  return [process.execPath, fileURLToPath(new URL(`./${program}.js`, self))];
}
