// Operator hooks: every executable in `hooks` runs on every event with the
// event in its environment. A hook never stalls tracking: it is not awaited,
// and one that fails or outlives HOOK_TIMEOUT_MS is logged (and killed).

import { spawn } from 'node:child_process';
import type { Logger } from '../log.js';
import type { StatusEvent } from '../api/status.js';
import type { Family } from '../plan/state.js';

export const HOOK_TIMEOUT_MS = 10_000;

export interface HookEvent {
  event: StatusEvent['event'];
  uplink?: string;
  /** The family an up, down or address event is of; none for reload and restore. */
  family?: Family;
  interface?: string;
  address?: string;
  reason: string;
}

export function hookEnvironment(e: HookEvent): Record<string, string> {
  return {
    UPLINKD_EVENT: e.event,
    UPLINKD_UPLINK: e.uplink ?? '',
    UPLINKD_FAMILY: e.family ?? '',
    UPLINKD_INTERFACE: e.interface ?? '',
    UPLINKD_ADDRESS: e.address ?? '',
    UPLINKD_REASON: e.reason,
  };
}

export function runHooks(hooks: string[], e: HookEvent, log: Logger): void {
  for (const hook of hooks) {
    const child = spawn(hook, [], { env: { ...process.env, ...hookEnvironment(e) }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    const timer = setTimeout(() => {
      log.warn({ hook, event: e.event, uplink: e.uplink, family: e.family }, `hook ${hook} ran past ${HOOK_TIMEOUT_MS / 1000} s; killed`);
      child.kill('SIGKILL');
    }, HOOK_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      log.warn({ hook, event: e.event, uplink: e.uplink, family: e.family }, `hook ${hook} could not run: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0 && signal !== 'SIGKILL') {
        log.warn({ hook, event: e.event, uplink: e.uplink, family: e.family, code, signal }, `hook ${hook} failed (${signal ?? `exit ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`);
      }
    });
  }
}
