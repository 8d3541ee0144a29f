// MPTCP in the lab: a download server in a node (the internet, by default)
// and a client that downloads from it, both the Python program mptcp.py
// beside this file (Node cannot open IPPROTO_MPTCP sockets). The server is
// recorded among the lab's processes, so `lab down` stops it with the rest.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isAlive, labExec, labRecordPid, loadLab, type LabState } from './lab.js';
import { inNamespace } from './run.js';
import { INTERNET, namespaceOf, type LabNode } from './topology.js';

export const MPTCP_PORT = 8444;

/** What one download reports (see mptcp.py). */
export interface MptcpDownload {
  bytes: number;
  sha256_ok: boolean;
  seconds: number;
  /** False when the connection fell back to plain TCP (or was plain TCP, `tcp`). */
  mptcp: boolean;
  /** The most subflows the kernel reported at once besides the first. */
  subflows_max: number;
  /** The longest wait for data. */
  max_gap_s: number;
  error?: string;
}

/** mptcp.py: beside this module in src/lab, and still there when this runs compiled from dist/lab. */
function program(): string {
  const here = new URL('./mptcp.py', import.meta.url);
  const path = existsSync(here) ? here : new URL('../../src/lab/mptcp.py', import.meta.url);
  return fileURLToPath(path);
}

/**
 * Starts the MPTCP download server in `node` on `port` and resolves with its
 * pid once it listens. The node's MPTCP limits are raised to the kernel's
 * maximum first: a server accepts only as many further subflows per
 * connection as its own `subflows` limit (2 by default), and every uplink of
 * the client opens one.
 */
export async function labMptcpServer(name: string, opts: { node?: LabNode; port?: number } = {}): Promise<number> {
  const state = loadLab(name);
  const node = opts.node ?? 'inet';
  const port = opts.port ?? MPTCP_PORT;
  const ns = namespaceOf(state.name, node);
  await inNamespace(ns, 'ip', 'mptcp', 'limits', 'set', 'subflow', '8', 'add_addr_accepted', '8');
  const logPath = join(state.stateDir, `mptcp-${node}-${port}.log`);
  const log = openSync(logPath, 'a');
  const child = spawn('ip', ['netns', 'exec', ns, 'python3', program(), 'server', '--port', String(port)],
    { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.on('error', () => {}); // seen below as an exit before listening
  child.unref();
  if (child.pid === undefined) throw new Error('could not start the MPTCP server');
  labRecordPid(name, child.pid);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = existsSync(logPath) ? readFileSync(logPath, 'utf8') : '';
    if (text.includes(`"listening": ${port}`)) return child.pid;
    if (child.exitCode !== null || child.signalCode !== null || !isAlive(child.pid)) {
      throw new Error(`the MPTCP server exited before listening: ${text.trim().split('\n').at(-1) ?? '(no output)'}`);
    }
    if (Date.now() > deadline) throw new Error(`the MPTCP server is not listening on ${port} after 10 s`);
    await sleep(50);
  }
}

export interface DownloadOptions {
  bytes: number;
  server?: string;
  port?: number;
  /** Plain TCP instead of MPTCP, for comparison. */
  tcp?: boolean;
  /** Source address, e.g. an uplink's own (split access then keeps it on that uplink). */
  bind?: string;
  /** Seconds without data before the client gives up. Default 30. */
  stallTimeoutS?: number;
}

/** Downloads `bytes` from the MPTCP server from a node (the router, in host mode the machine itself). */
export async function labMptcpDownload(name: string, node: LabNode | string, opts: DownloadOptions): Promise<MptcpDownload> {
  const argv = ['python3', program(), 'client', '--server', opts.server ?? INTERNET.server, '--port', String(opts.port ?? MPTCP_PORT),
    '--bytes', String(opts.bytes), '--stall-timeout', String(opts.stallTimeoutS ?? 30)];
  if (opts.tcp) argv.push('--tcp');
  if (opts.bind) argv.push('--bind', opts.bind);
  const r = await labExec(name, node, argv);
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as MptcpDownload;
  } catch {
    throw new Error(`the MPTCP client in ${node} exited ${r.code} without a result: ${r.stderr.trim() || line}`);
  }
}

/** Stops a server labMptcpServer started (lab down stops it too). */
export async function labMptcpStop(name: string, pid: number): Promise<void> {
  const state: LabState = loadLab(name);
  if (!state.pids.includes(pid)) throw new Error(`pid ${pid} is not one of lab ${name}'s processes`);
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    if (!isAlive(pid)) return;
    try {
      process.kill(pid, signal);
    } catch {
      return;
    }
    for (let i = 0; i < 40 && isAlive(pid); i++) await sleep(50);
  }
}

/** Received bytes of each interface of a namespace, read in one `ip` run so they belong to one instant. */
async function rxBytes(ns: string): Promise<{ atMs: number; bytes: Record<string, number> }> {
  const before = performance.now();
  const out = await inNamespace(ns, 'ip', '-s', '-j', 'link', 'show');
  const atMs = (before + performance.now()) / 2;
  const bytes: Record<string, number> = {};
  for (const l of JSON.parse(out) as { ifname: string; stats64?: { rx: { bytes: number } } }[]) {
    if (l.stats64) bytes[l.ifname] = l.stats64.rx.bytes;
  }
  return { atMs, bytes };
}

export interface WindowedDownload {
  download: MptcpDownload;
  /** What each of the given interfaces received per second over the window, in bits. */
  rxBps: Record<string, number>;
  /** Their sum. */
  totalBps: number;
  windowS: number;
}

/**
 * A download, and what the node's interfaces received during one window of
 * it: every counter read at the same instant at the window's start and end,
 * `skipS` after the download began (past slow start). The download must
 * still be running at the window's end (size it so), or the window would
 * count idle time: that is an error.
 */
export async function labMeasuredDownload(name: string, node: LabNode, opts: DownloadOptions & { interfaces: string[]; skipS: number; windowS: number }): Promise<WindowedDownload> {
  const ns = namespaceOf(loadLab(name).name, node);
  let finished = false;
  const running = labMptcpDownload(name, node, opts).finally(() => (finished = true));
  running.catch(() => {}); // awaited below
  await sleep(opts.skipS * 1000);
  const start = await rxBytes(ns);
  await sleep(opts.windowS * 1000);
  const end = await rxBytes(ns);
  const endedEarly = finished;
  const download = await running;
  if (endedEarly) throw new Error(`the download ended before the window did (${download.seconds} s for ${download.bytes} bytes): make it bigger`);
  const missing = opts.interfaces.filter((i) => start.bytes[i] === undefined || end.bytes[i] === undefined);
  if (missing.length) throw new Error(`no interface ${missing.join(', ')} in ${node}`);
  const seconds = (end.atMs - start.atMs) / 1000;
  const rxBps = Object.fromEntries(opts.interfaces.map((i) => [i, ((end.bytes[i] - start.bytes[i]) * 8) / seconds]));
  return { download, rxBps, totalBps: Object.values(rxBps).reduce((a, b) => a + b, 0), windowS: seconds };
}
