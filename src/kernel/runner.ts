// The one door to external commands. Arguments are always an array: no shell
// ever sees config text. Tests swap in a runner that records instead.
// runCommand is the one implementation of "run a program and collect what it
// said", for the daemon (through systemRunner), the lab, the tests and the
// benchmarks alike.

import { spawn, type StdioOptions } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

export interface CommandResult { code: number; stdout: string; stderr: string }

/**
 * One kernel change, as the command that made it (the daemon logs it as
 * `[#] args`). Here, beside the runner, so kernel/apply.ts and kernel/mptcp.ts
 * share it without importing each other.
 */
export interface Change { what: string; args: string[] }

export interface Runner {
  run(command: string, args: string[], input?: string): Promise<CommandResult>;
  /**
   * Kernel settings under /proc/sys (`path` relative to it), read and written
   * directly rather than through `sysctl`: the periodic drift check reads them
   * all. Without it, the real /proc/sys (procSysctl).
   */
  sysctl?: SysctlAccess;
}

export interface SysctlAccess {
  /** The current value, or undefined when there is no such setting. */
  read(path: string): string | undefined;
  write(path: string, value: string): void;
}

export const procSysctl: SysctlAccess = {
  read(path) {
    try {
      return readFileSync(`/proc/sys/${path}`, 'utf8').trim();
    } catch {
      return undefined;
    }
  },
  write(path, value) {
    writeFileSync(`/proc/sys/${path}`, value);
  },
};

export class CommandError extends Error {
  constructor(readonly command: string, readonly args: string[], readonly result: CommandResult) {
    super(`${command} ${args.join(' ')}: ${result.stderr.trim() || `exit ${result.code}`}`);
  }
}

/** How long a command's pid is remembered after it was started. */
const REMEMBER_PIDS_MS = 10_000;
const startedPids = new Map<number, number>();

/**
 * Whether this process started `pid` in the last few seconds: event monitors
 * (`nft monitor` names the process behind each change) use it to tell
 * uplinkd's own changes from another program's.
 */
export function startedRecently(pid: number): boolean {
  return startedPids.has(pid);
}

function rememberPid(pid: number | undefined): void {
  const now = Date.now();
  for (const [p, at] of startedPids) if (now - at > REMEMBER_PIDS_MS) startedPids.delete(p);
  if (pid !== undefined) startedPids.set(pid, now);
}

export interface CommandOptions {
  /** Text written to the program's stdin; without it, stdin is /dev/null. */
  input?: string;
  /** Killed (SIGKILL) after this long; the result then has code 124 like timeout(1). */
  timeoutMs?: number;
  /** Pass the terminal through instead of capturing output. */
  inherit?: boolean;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs argv and resolves with its exit code (128+N after signal N) and
 * output, whatever the code; rejects only when it cannot be started.
 */
export function runCommand(argv: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = opts.inherit ? 'inherit' : [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'];
    const child = spawn(argv[0], argv.slice(1), { stdio, env: opts.env });
    rememberPid(child.pid);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = opts.timeoutMs ? setTimeout(() => ((timedOut = true), child.kill('SIGKILL')), opts.timeoutMs) : undefined;
    child.on('error', (err) => (clearTimeout(timer), reject(err)));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: timedOut ? 124 : (code ?? 128 + signalNumber(signal)), stdout, stderr });
    });
    if (child.stdin) {
      // A command that exits without reading its input must not crash us.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input);
    }
  });
}

function signalNumber(signal: NodeJS.Signals | null): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return (signal && numbers[signal]) || 0;
}

export const systemRunner: Runner = {
  run: (command, args, input) => runCommand([command, ...args], { input }),
};

/** Runs a command and returns its stdout, or throws CommandError. */
export async function mustRun(runner: Runner, command: string, args: string[], input?: string): Promise<string> {
  const result = await runner.run(command, args, input);
  if (result.code !== 0) throw new CommandError(command, args, result);
  return result.stdout;
}
