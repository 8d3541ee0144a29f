// What other programs on a real router do to uplinkd's kernel state, done to
// the lab's router: a firewall reload that flushes the whole ruleset, a
// network manager that deletes foreign rules or flushes foreign tables, one
// element gone. The tests and `npm run bench` time how long uplinkd takes to
// restore each (README "Self-healing"), measured by new LAN connections at
// the far end.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_OWNERSHIP, RULE_RANGE, uplinkTable } from '../ownership.js';
import { loadLab, type LabState } from './lab.js';
import { failoverMs, monotonicMs, startStream, type StreamSample } from './measure.js';
import { runCommand } from '../kernel/runner.js';
import { inNamespace, must } from './run.js';
import { LAN, uplinkWiring } from './topology.js';

export const WIPES = ['flush-ruleset', 'firewall-reload', 'rules', 'tables', 'element', 'address-flush'] as const;
export type WipeKind = (typeof WIPES)[number];

export const WIPE_DESCRIPTIONS: Record<WipeKind, string> = {
  'flush-ruleset': '`nft flush ruleset`',
  'firewall-reload': '`nft -f` of a Debian-style firewall (`flush ruleset`, then its own `inet filter`)',
  rules: 'every ip rule in the owned range deleted',
  tables: 'every owned routing table flushed',
  element: "one map element deleted (the last uplink's SNAT address)",
  'address-flush': "the last uplink's address flushed and added back, as ISC dhclient-script does on a lease change",
};

/**
 * Half the measuring connections come from this LAN source, pinned to the
 * lab's last uplink by `pinnedSourceRule`. Some wipes leave connections
 * working but on the wrong uplink (with the uplink tables flushed, marked
 * packets fall through to the main table's default route): the pinned ones
 * must also arrive from the last uplink's address to count as good.
 */
export const PINNED_SOURCE = LAN.sources[LAN.sources.length - 1];

/** The `rules:` YAML that pins PINNED_SOURCE to the lab's last uplink. */
export function pinnedSourceRule(lab: LabState): string {
  return `rules:\n  - { name: pinned-stream, src: ${PINNED_SOURCE}, via: ${lab.uplinks[lab.uplinks.length - 1].name} }\n`;
}

/**
 * A firewall as Debian's /etc/nftables.conf writes it: it starts by flushing
 * the whole ruleset, uplinkd's table included. Its own table accepts
 * everything, so only uplinkd's absence can stop a connection.
 */
export const DEBIAN_STYLE_FIREWALL = `#!/usr/sbin/nft -f
flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		iifname "lo" accept
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state invalid drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
`;

/** Does `kind` to the router of lab `name`, with uplinkd's default ownership. */
export async function labWipe(name: string, kind: WipeKind): Promise<void> {
  const lab = loadLab(name);
  const router = lab.ns.router;
  const own = DEFAULT_OWNERSHIP;
  switch (kind) {
    case 'flush-ruleset':
      await inNamespace(router, 'nft', 'flush', 'ruleset');
      return;
    case 'firewall-reload': {
      const file = join(lab.stateDir, 'nftables.conf');
      writeFileSync(file, DEBIAN_STYLE_FIREWALL);
      await inNamespace(router, 'nft', '-f', file);
      return;
    }
    case 'rules': {
      const rules = JSON.parse(await inNamespace(router, 'ip', '-j', '-4', 'rule', 'show')) as { priority: number }[];
      const owned = [...new Set(rules.map((r) => r.priority).filter((p) => p >= own.rulePriority && p < own.rulePriority + RULE_RANGE))];
      // Repeated deletes by priority remove every rule at it, twins included.
      const counts = owned.map((p) => rules.filter((r) => r.priority === p).length);
      await must(['ip', '-n', router, '-batch', '-'], { input: owned.flatMap((p, i) => Array(counts[i]).fill(`rule del priority ${p}\n`)).join('') });
      return;
    }
    case 'tables':
      await must(['ip', '-n', router, '-batch', '-'], {
        input: lab.uplinks.map((_, i) => `route flush table ${uplinkTable(own, i)}\n`).join(''),
      });
      return;
    case 'address-flush': {
      // dhclient-script on a changed lease: flush, add the address, then the default
      // route. The kernel drops every route that used the address, uplinkd's own
      // table's included, and nothing in the plan changes. IPv4 only (-4), as
      // dhclient-script flushes: the uplink's IPv6 is another client's.
      const k = lab.uplinks.length;
      const u = lab.uplinks[k - 1];
      await must(['ip', '-4', '-n', router, '-batch', '-'], {
        input: `address flush dev ${u.routerIf}\naddress add ${u.address}/${u.prefixLen} dev ${u.routerIf}\n` +
          `route add default via ${u.gateway} dev ${u.routerIf} metric ${uplinkWiring(k).metric}\n`,
      });
      return;
    }
    case 'element':
      await inNamespace(router, 'nft', 'delete', 'element', 'inet', own.nftTable, 'snat_address', `{ "${lab.uplinks[lab.uplinks.length - 1].routerIf}" }`);
      return;
  }
}

export interface RestoreTrial {
  kind: WipeKind;
  /** From the wipe until the first moment after which every new LAN connection succeeded; undefined if that never came. */
  restoreMs?: number;
  /** Connections opened from the wipe on, and how many failed (or, pinned, took the wrong uplink). */
  opened: number;
  failed: number;
  /** Uplink addresses the far end saw after the restore. */
  seenAfter: string[];
}

/** How long to keep the stream going after the wipe: long enough for a slow restore and the stream's timeout. */
const OBSERVE_MS = 2000;
const STREAM_EVERY_MS = 10;
/**
 * Shorter than TCP's first SYN retransmission (1 s), so a connection opened
 * during the outage fails rather than recovers; as long as that allows, so a
 * connection slowed by a busy machine is not mistaken for a failure.
 */
export const STREAM_TIMEOUT_MS = 900;

/**
 * One timed wipe: a stream of new LAN connections (one every 10 ms, from the
 * LAN host's own address and PINNED_SOURCE in turn) runs across it, and the
 * restore time is read off the samples as the failover time is (measure.ts
 * failoverMs): a connection is good when answered, and a pinned one only
 * when answered from the pinned uplink's address. The daemon must run with
 * `pinnedSourceRule` in its config.
 */
export async function timeRestore(lab: LabState, kind: WipeKind, signal?: AbortSignal): Promise<RestoreTrial & { samples: StreamSample[]; wipeAt: number }> {
  const pinnedAddress = lab.uplinks[lab.uplinks.length - 1].address;
  const good = (s: StreamSample) => s.ok && (s.source !== PINNED_SOURCE || s.seen === pinnedAddress);
  const stream = startStream({
    ns: lab.ns.lan, url: `http://${lab.server}:${lab.whoamiPort}/`, everyMs: STREAM_EVERY_MS, timeoutMs: STREAM_TIMEOUT_MS, durationMs: 30_000,
    sources: [lab.lanHost, PINNED_SOURCE],
  });
  try {
    await stream.started;
    // A random moment, so the wipe falls anywhere within the daemon's timers.
    await sleep(200 + Math.random() * 300, undefined, { signal });
    const wipeAt = monotonicMs();
    await labWipe(lab.name, kind);
    await sleep(OBSERVE_MS, undefined, { signal });
    const samples = await stream.stop();
    const restoreMs = failoverMs(samples, wipeAt, Infinity, good);
    const after = samples.filter((s) => s.start >= wipeAt);
    const seenAfter = [...new Set(after.filter((s) => restoreMs !== undefined && s.start >= wipeAt + restoreMs && s.seen).map((s) => s.seen!))].sort();
    return { kind, restoreMs, opened: after.length, failed: after.filter((s) => !good(s)).length, seenAfter, samples, wipeAt };
  } finally {
    await stream.stop().catch(() => {});
  }
}

/**
 * A program that keeps deleting uplinkd's table: `nft delete table` every
 * `everyMs` for `forMs`, from the router. Resolves with when it started and
 * when the last delete returned (monotonicMs).
 */
export async function deleteTableLoop(lab: LabState, everyMs = 100, forMs = 5000): Promise<{ startedAt: number; lastDeleteAt: number }> {
  const startedAt = monotonicMs();
  let lastDeleteAt = startedAt;
  for (let i = 0; i < Math.round(forMs / everyMs); i++) {
    await runCommand(['ip', 'netns', 'exec', lab.ns.router, 'nft', 'delete', 'table', 'inet', DEFAULT_OWNERSHIP.nftTable]);
    lastDeleteAt = monotonicMs();
    await sleep(Math.max(0, startedAt + (i + 1) * everyMs - monotonicMs()));
  }
  return { startedAt, lastDeleteAt };
}

/** CPU time of a process and of its children it has reaped (utime, stime, cutime, cstime), in seconds. */
export function cpuSeconds(pid: number): number {
  // After "pid (comm) ", the state is field 3, so utime..cstime (fields 14-17) are at 11-14.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return fields.slice(11, 15).map(Number).reduce((a, b) => a + b, 0) / 100;
}
