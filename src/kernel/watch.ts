// Kernel events: link (carrier), address and route changes, through a
// long-running `ip monitor`. Events come in bursts (a DHCP renew changes an
// address and two routes), so they are coalesced before the daemon re-reads
// the facts; the re-read, not the event text, is what counts.

import { spawn, type ChildProcess } from 'node:child_process';

export interface KernelWatcher { stop(): void }

export function watchKernel(onChange: (what: string) => void, opts: { coalesceMs?: number; log?: (msg: string) => void } = {}): KernelWatcher {
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
    child = spawn('ip', ['-4', 'monitor', 'link', 'address', 'route'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buffer = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines.filter(Boolean)) {
        pending.push(line.split(' ').slice(0, 2).join(' '));
        timer ??= setTimeout(fire, coalesceMs);
      }
    });
    child.on('exit', (code) => {
      if (stopped) return;
      opts.log?.(`ip monitor exited (${code}); restarting`);
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
