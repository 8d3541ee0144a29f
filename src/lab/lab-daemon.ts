// `uplinkd run` inside a lab's router, as a child process, for the demo, the
// integration tests and the benchmarks: started, watched through its control
// socket, stopped.
//
// The status is read from the control socket directly (what `uplinkd status
// --json` does) rather than by running the CLI for every poll: a poll then
// costs microseconds instead of a Node start-up, which on a small machine
// would compete with the daemon for the CPU and blur its timings.

import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { requestStatus } from '../api/socket.js';
import type { CommandResult } from '../kernel/runner.js';
import { loadConfigFile } from '../config/load.js';
import type { UplinkState } from '../daemon/health.js';
import type { Status } from '../api/status.js';
import { isAlive, labExec, loadLab, namespaceOfNode, saveState, type LabState } from './lab.js';
import type { LabNode } from './topology.js';

/** The checkout's CLI launcher; the same path from dist/lab and src/lab. */
export const UPLINKD_BIN = fileURLToPath(new URL('../../bin/uplinkd', import.meta.url));

/** `uplinkd ARGS` in the lab's router (in a pair: r1 or r2, given as `node`), as an operator would run it there. */
export function uplinkdInRouter(lab: LabState, args: string[], node: LabNode = 'router'): Promise<CommandResult> {
  return labExec(lab.name, node, [UPLINKD_BIN, ...args]);
}

export interface LabDaemon {
  pid: number;
  /** The config it runs with (`uplinkd flush -c` it afterwards). */
  configPath: string;
  /** What it logged so far: JSON lines, one per event. */
  logs(): string;
  /** Its view, or undefined if it does not answer. */
  status(): Promise<Status | undefined>;
  /** Sends a signal: SIGHUP reloads, SIGKILL simulates a crash. */
  signal(sig: NodeJS.Signals): void;
  /** Resolves with its exit code once it has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then waits for it to exit (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<number | null>;
}

export interface StartOptions {
  /** Extra environment, e.g. NOTIFY_SOCKET for the service tests. */
  env?: NodeJS.ProcessEnv;
  /** Its UPLINKD_LOG_LEVEL, e.g. debug to log how long each kernel update took; default this process's. */
  logLevel?: string;
  /** How long it may take to answer on its control socket. Default 10 s. */
  readyWithinMs?: number;
  /**
   * How long every uplink of the config may take to come up before the start
   * counts as failed; false: resolve as soon as it answers. Default 5 s.
   */
  upWithinMs?: number | false;
  /** Ends the waiting early (rejecting), e.g. on Ctrl-C; the daemon is stopped then. */
  signal?: AbortSignal;
  /**
   * Enter only the router's network namespace (`nsenter --net`), keeping the
   * host's mounts such as the cgroup2 hierarchy, as a service on a real
   * router sees them: `ip netns exec` mounts a fresh /sys without it.
   */
  hostMounts?: boolean;
  /** The router to run in: 'router' (the default), or r1 / r2 of a pair, where the lab records it (see recordPairDaemon). */
  node?: LabNode;
  /**
   * Detached, its output appended to this file instead of piped: it outlives
   * the process that started it (`uplinkd lab heal-router` restarting it).
   */
  logFile?: string;
}

/** The command prefix that runs a program in the lab's router (or `node`, r1 or r2 of a pair). */
export function inRouter(lab: LabState, opts: { hostMounts?: boolean; node?: LabNode } = {}): string[] {
  const ns = namespaceOfNode(lab, opts.node ?? 'router');
  return opts.hostMounts ? ['nsenter', `--net=/run/netns/${ns}`] : ['ip', 'netns', 'exec', ns];
}

/**
 * Starts `uplinkd run -c configPath` in the router and resolves once it
 * answers on its control socket and (unless upWithinMs is false) every
 * uplink of the config is up. A start that fails stops the daemon and
 * rejects with its last log lines.
 */
export async function startDaemon(lab: LabState, configPath: string, opts: StartOptions = {}): Promise<LabDaemon> {
  const loaded = loadConfigFile(configPath);
  if (!loaded.ok) throw new Error(`${configPath} is not a valid config: ${loaded.errors.map((e) => e.message).join('; ')}`);
  const socket = loaded.config.api.socket;
  const [enter, ...args] = inRouter(lab, opts);
  const logFd = opts.logFile === undefined ? undefined : openSync(opts.logFile, 'a');
  const child = spawn(enter, [...args, UPLINKD_BIN, 'run', '-c', configPath], {
    stdio: ['ignore', logFd ?? 'pipe', logFd ?? 'pipe'],
    detached: logFd !== undefined,
    env: { ...process.env, ...(opts.logLevel ? { UPLINKD_LOG_LEVEL: opts.logLevel } : {}), ...opts.env },
  });
  let piped = '';
  if (logFd !== undefined) {
    closeSync(logFd);
    child.unref();
  } else {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (piped += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (piped += d));
  }
  const output = () => (opts.logFile === undefined ? piped : readFileSync(opts.logFile, 'utf8'));
  const exited = new Promise<number | null>((resolve) => {
    child.on('error', (err) => ((piped += `${err.message}\n`), resolve(null)));
    child.on('close', (code) => resolve(code));
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const daemon: LabDaemon = {
    pid: child.pid ?? -1,
    configPath,
    logs: output,
    status: () => requestStatus(socket, 1000),
    signal: (sig) => void child.kill(sig),
    exited,
    async stop(graceMs = 5000) {
      if (running()) child.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(graceMs).then(() => 'late' as const)]);
      if (code !== 'late') return code;
      child.kill('SIGKILL');
      return exited;
    },
  };
  const deadline = Date.now() + (opts.readyWithinMs ?? 10_000);
  while (!(await daemon.status())) {
    if (!running() || Date.now() > deadline) {
      await daemon.stop();
      throw new Error(`uplinkd run did not answer on ${socket}${running() ? ' in time' : ''}; its output:\n${lastLines(output(), 10)}`);
    }
    await sleep(50);
  }
  recordPairDaemon(lab, opts.node, daemon);
  if (opts.upWithinMs === false) return daemon;
  const withinMs = opts.upWithinMs ?? 5000;
  const up = Object.fromEntries(loaded.config.uplinks.map((u) => [u.name, 'up' as const]));
  const reached = await waitForStates(daemon, up, withinMs, opts.signal).catch(async (err: unknown) => {
    await daemon.stop();
    throw err;
  });
  if (!reached) {
    const states = (await daemon.status())?.uplinks.map((u) => `${u.name} ${u.state}`).join(', ');
    await daemon.stop();
    throw new Error(`uplinks not up within ${withinMs / 1000} s (${states}); uplinkd's output:\n${lastLines(output(), 10)}`);
  }
  return daemon;
}

/**
 * A daemon started in r1 or r2 of a pair goes into the lab's state (pid and
 * config), so `lab fail-router` knows it ran there and `lab heal-router`
 * starts it again, also from another process than the one that started it.
 */
function recordPairDaemon(lab: LabState, node: LabNode | undefined, daemon: LabDaemon): void {
  if (!lab.pair || node === undefined) return;
  const state = loadLab(lab.name);
  const router = state.pair?.routers.find((r) => r.name === node);
  if (!router) return;
  router.daemon = { pid: daemon.pid, configPath: daemon.configPath };
  saveState(state);
}

/** Is the daemon the lab recorded for router `node` of a pair running? Its pid if so. */
export function pairDaemonPid(lab: LabState, node: LabNode): number | undefined {
  const pid = loadLab(lab.name).pair?.routers.find((r) => r.name === node)?.daemon?.pid;
  return pid !== undefined && isAlive(pid) ? pid : undefined;
}

/**
 * Polls the daemon until every uplink named in `want` is in that state.
 * Resolves with that status, or undefined after `withinMs`.
 */
export async function waitForStates(
  daemon: LabDaemon, want: Record<string, UplinkState>, withinMs: number, signal?: AbortSignal,
): Promise<Status | undefined> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    signal?.throwIfAborted();
    const status = await daemon.status();
    const reached = status && Object.entries(want).every(([name, state]) => status.uplinks.find((u) => u.name === name)?.state === state);
    if (reached) return status;
    if (Date.now() > deadline) return undefined;
    await sleep(20, undefined, { signal });
  }
}

/** The last n lines of a log, for error messages; JSON lines shortened to their message. */
export function lastLines(log: string, n: number): string {
  return log.split('\n').filter((l) => l.trim()).slice(-n).map((line) => {
    try {
      const entry = JSON.parse(line) as { time?: string; msg?: string };
      return `  ${entry.time ?? ''} ${entry.msg ?? line}`;
    } catch {
      return `  ${line}`;
    }
  }).join('\n');
}
