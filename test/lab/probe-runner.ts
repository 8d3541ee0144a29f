// Runs one prober inside a lab node (the router) for the probe tests:
//   node --import tsx probe-runner.ts '{"subject": {...}, "check": {...}, "rounds": 10}'
// Prints one JSON object: the rounds, how long after its start each round was
// delivered, and the prober's log lines. With "dieAfter": N it instead prints
// the pids of its fping children after N rounds and kills itself (SIGKILL),
// leaving them orphaned, as a crashed daemon would.

import { readdirSync, readFileSync } from 'node:fs';
import type { Check } from '../../src/config/types.js';
import { createProber, type ProbeRound, type ProbeSubject } from '../../src/probe/index.js';

export interface RunnerArgs {
  subject: ProbeSubject;
  check: Check;
  rounds: number;
  dieAfter?: number;
}

export interface RunnerOutput {
  rounds: ProbeRound[];
  /** Date.now() - startedAt when each round was delivered. */
  deliveredAfterMs: number[];
  logs: string[];
}

const args = JSON.parse(process.argv[2]) as RunnerArgs;
const logs: string[] = [];
const rounds: ProbeRound[] = [];
const deliveredAfterMs: number[] = [];

const prober = createProber(args.subject, args.check, { log: (m) => logs.push(m) });
prober.start((round) => {
  deliveredAfterMs.push(Date.now() - round.startedAt);
  rounds.push(round);
  if (args.dieAfter !== undefined && rounds.length === args.dieAfter) {
    console.log(JSON.stringify({ fping: childPids('fping') }));
    process.kill(process.pid, 'SIGKILL');
  }
  if (rounds.length === args.rounds) {
    void prober.stop().then(() => {
      console.log(JSON.stringify({ rounds, deliveredAfterMs, logs } satisfies RunnerOutput));
    });
  }
});

/** Pids of this process's children running `command`. */
function childPids(command: string): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return comm === command && ppid === process.pid;
    } catch {
      return false;
    }
  });
}
