// Kernel events, through long-running monitors: `ip monitor` for links
// (carrier), addresses, routes and rules, and `nft monitor` for changes to
// uplinkd's own table. Events come in bursts (a DHCP renew changes an
// address and two routes; a firewall reload deletes every chain), so they are
// coalesced before the daemon re-reads the kernel; the re-read, not the event
// text, is what counts.

import { spawn, type ChildProcess } from 'node:child_process';

export interface KernelWatcher { stop(): void }

export interface WatchOptions {
  coalesceMs?: number;
  log?: (msg: string) => void;
}

/**
 * Runs `argv` for as long as the watcher lives (restarted if it exits), and
 * calls `onChange` with a summary of the lines `relevant` keeps, at most once
 * per `coalesceMs`.
 */
function watchLines(argv: string[], relevant: (line: string) => string | undefined, onChange: (what: string) => void, opts: WatchOptions): KernelWatcher {
  const coalesceMs = opts.coalesceMs ?? 20;
  let child: ChildProcess | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let pending: string[] = [];

  const fire = () => {
    timer = undefined;
    const what = [...new Set(pending)].join(', ');
    pending = [];
    onChange(what);
  };

  const start = () => {
    child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let buffer = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) {
        const what = line ? relevant(line) : undefined;
        if (what === undefined) continue;
        pending.push(what);
        timer ??= setTimeout(fire, coalesceMs);
      }
    });
    child.on('error', (err) => opts.log?.(`${argv[0]} monitor: ${err.message}`));
    child.on('exit', (code) => {
      if (stopped) return;
      opts.log?.(`${argv.join(' ')} exited (${code}); restarting`);
      setTimeout(start, 500);
    });
  };
  start();

  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      child?.kill();
    },
  };
}

/** Links, addresses, routes (every table) and rules. `what` is the first two words of each line, e.g. "Deleted 10301:". */
export function watchKernel(onChange: (what: string) => void, opts: WatchOptions = {}): KernelWatcher {
  return watchLines(['ip', '-4', 'monitor', 'link', 'address', 'route', 'rule'], (line) => line.split(' ').slice(0, 2).join(' '), onChange, opts);
}

/**
 * Changes to nft table `inet <table>` by anyone, uplinkd included: its own
 * changes are followed by a drift check that finds nothing. `what` is the
 * change and the object kind, e.g. "delete table".
 */
export function watchNftTable(table: string, onChange: (what: string) => void, opts: WatchOptions = {}): KernelWatcher {
  const ours = new RegExp(`^(add|delete|flush|replace) (\\w+) inet ${table}(\\s|$)`);
  return watchLines(['nft', 'monitor'], (line) => {
    const m = ours.exec(line);
    return m ? `${m[1]} ${m[2]}` : undefined;
  }, onChange, opts);
}
