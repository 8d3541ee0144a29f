// Kernel events, through long-running monitors: `ip monitor` for links
// (carrier), addresses, routes and rules, and `nft monitor` for changes to
// uplinkd's own table. Events come in bursts (a DHCP renew changes an
// address and two routes; a firewall reload deletes every chain), so they are
// coalesced before the daemon re-reads the kernel; the re-read, not the event
// text, is what counts.
//
// A monitor that may have missed events says so, and that counts as a change
// too: anything it prints on stderr (`ip monitor` says there when the kernel
// dropped events for it, ENOBUFS; `nft monitor` says so on stdout, see
// nftChanges), and its restart after it exited (changes made while none ran
// went unseen). So the daemon's periodic check of all its state is only a
// last resort (src/daemon/converging.ts).

import { spawn, type ChildProcess } from 'node:child_process';

export interface KernelWatcher { stop(): void }

export interface WatchOptions {
  coalesceMs?: number;
  log?: (msg: string) => void;
  /** How long after a restart to report it: time for the new monitor to subscribe, so the check it triggers misses nothing. */
  restartSettleMs?: number;
}

/** How long an exited monitor waits before it is started again. */
const RESTART_DELAY_MS = 500;

/**
 * Runs `argv` for as long as the watcher lives (restarted if it exits), and
 * calls `onChange` with a summary of the lines `relevant` keeps, at most once
 * per `coalesceMs`.
 */
export function watchLines(argv: string[], relevant: (line: string) => string | undefined, onChange: (what: string) => void, opts: WatchOptions): KernelWatcher {
  const coalesceMs = opts.coalesceMs ?? 20;
  let child: ChildProcess | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let restartTimer: NodeJS.Timeout | undefined;
  let pending: string[] = [];

  const note = (what: string) => {
    pending.push(what);
    timer ??= setTimeout(fire, coalesceMs);
  };

  const fire = () => {
    timer = undefined;
    const what = [...new Set(pending)].join(', ');
    pending = [];
    onChange(what);
  };

  const start = (restarted: boolean) => {
    restartTimer = undefined;
    child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let buffer = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) {
        const what = line ? relevant(line) : undefined;
        if (what !== undefined) note(what);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      const said = chunk.trim().split('\n')[0].slice(0, 200);
      opts.log?.(`${argv.join(' ')}: ${said}`);
      note(`${argv[0]} monitor: ${said}`);
    });
    child.on('error', (err) => opts.log?.(`${argv[0]} monitor: ${err.message}`));
    child.on('exit', (code) => {
      if (stopped) return;
      opts.log?.(`${argv.join(' ')} exited (${code}); restarting`);
      restartTimer = setTimeout(() => start(true), RESTART_DELAY_MS);
    });
    if (restarted) {
      restartTimer = setTimeout(() => {
        restartTimer = undefined;
        if (!stopped) note(`${argv[0]} monitor restarted`);
      }, opts.restartSettleMs ?? 250);
    }
  };
  start(false);

  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (restartTimer) clearTimeout(restartTimer);
      child?.kill();
    },
  };
}

/**
 * Links, addresses, routes (every table) and rules, of both families: SLAAC
 * addresses, their deprecation, router-advertised default routes and IPv6
 * rules are events like their IPv4 kinds. `what` is the first two words of
 * each line, e.g. "Deleted 10301:".
 */
export function watchKernel(onChange: (what: string) => void, opts: WatchOptions = {}): KernelWatcher {
  return watchLines(['ip', 'monitor', 'link', 'address', 'route', 'rule'], ipMonitorChanges(), onChange, opts);
}

/**
 * Reads `ip monitor link address route rule` output line by line and returns
 * what each event is about, or undefined for what changes nothing uplinkd
 * reads:
 * - the indented second line of an address (`valid_lft … preferred_lft …`);
 * - an address announced again exactly as it was last announced: every
 *   router advertisement (a few seconds apart, or minutes) re-announces each
 *   SLAAC address with fresh lifetimes, and a DHCP renew its lease, on the
 *   second line only. A change of its flags (DAD done, `deprecated`) reads
 *   as a new first line and counts. (The RA's refresh of its default route's
 *   lifetime prints nothing.)
 * The first announcement of an address after the monitor starts counts once:
 * the monitor has no memory of before.
 */
export function ipMonitorChanges(): (line: string) => string | undefined {
  // By `ifindex: dev family address`, the first line as last announced.
  const addresses = new Map<string, string>();
  const address = /^(Deleted )?(\d+: \S+\s+inet6? \S+)(.*)$/;
  return (line) => {
    if (/^\s/.test(line)) return undefined;
    const m = address.exec(line);
    if (m) {
      const [, deleted, id, rest] = m;
      const head = rest.trim().replace(/\s+/g, ' ');
      if (deleted) addresses.delete(id);
      else if (addresses.get(id) === head) return undefined;
      else addresses.set(id, head);
    }
    return line.split(' ').slice(0, 2).join(' ');
  };
}

/**
 * Reads `nft monitor` output line by line and returns, at the end of each
 * transaction that touched table `inet <table>`, what it changed (e.g.
 * "delete rule, delete table"), unless `isOwn(pid)` says this process ran it.
 * nft prints a transaction's changes, then `# new generation N by process
 * PID (nft)`; a transaction with no process named counts as another's.
 * nft says `# ERROR: …` on stdout when it lost events (ENOBUFS) or its socket
 * failed: that is returned as a change too, since any change may be behind it.
 */
export function nftChanges(table: string, isOwn: (pid: number) => boolean): (line: string) => string | undefined {
  const ours = new RegExp(`^(add|delete|flush|replace) (\\w+) inet ${table}(\\s|$)`);
  const generation = /^# new generation \d+(?: by process (\d+))?/;
  let transaction: string[] = [];
  return (line) => {
    if (line.startsWith('# ERROR')) return `nft monitor: ${line.slice(2, 200)}`;
    const g = generation.exec(line);
    if (g) {
      const changes = transaction;
      transaction = [];
      if (changes.length === 0 || (g[1] !== undefined && isOwn(Number(g[1])))) return undefined;
      return [...new Set(changes)].join(', ');
    }
    const m = ours.exec(line);
    if (m) transaction.push(`${m[1]} ${m[2]}`);
    return undefined;
  };
}

/** Changes to nft table `inet <table>` by another program (see nftChanges). */
export function watchNftTable(table: string, isOwn: (pid: number) => boolean, onChange: (what: string) => void, opts: WatchOptions = {}): KernelWatcher {
  return watchLines(['nft', 'monitor'], nftChanges(table, isOwn), onChange, opts);
}
