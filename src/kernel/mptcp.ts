// The kernel side of `mptcp: subflow`: the endpoints in uplinkd's id range
// (ownership.ts MPTCP_ENDPOINT_IDS) are brought to the plan's, and the
// per-namespace limits raised to what the uplinks need. Endpoints with other
// ids belong to someone else and are never touched, whatever they hold.
//
// The limits are per network namespace and shared by everything in it (a
// second MPTCP user, a path manager daemon): uplinkd raises them to what its
// uplinks need and never lowers them, so it cannot take room away from a
// setting someone else made; `flush` leaves them too, since it cannot know
// what they were before. See README "MPTCP".

import { MPTCP_ENDPOINT_IDS } from '../ownership.js';
import { mptcpEndpointArgs, mptcpLimitsArgs } from '../plan/render.js';
import type { MptcpEndpoint, MptcpState } from '../plan/state.js';
import { mustRun, type Change, type Runner } from './runner.js';

/** An endpoint as the kernel lists it. */
export interface Endpoint {
  id: number;
  address: string;
  /** The interface name; `if<N>` once that interface is gone. */
  dev?: string;
  /** Sorted: signal, subflow, backup, fullmesh, … */
  flags: string[];
}

export interface Limits { subflows: number; addAddrAccepted: number }

export function isOwnedEndpoint(e: { id: number }): boolean {
  return e.id >= MPTCP_ENDPOINT_IDS.first && e.id <= MPTCP_ENDPOINT_IDS.last;
}

/** The keys `ip -j mptcp endpoint show` uses that are not flags. */
const NOT_FLAGS = new Set(['address', 'id', 'dev', 'port', 'flags']);

/**
 * `ip -j mptcp endpoint show`. iproute2 prints each flag as `"subflow": true`;
 * a `flags` list is taken too, should a version print that instead.
 */
export function parseEndpoints(json: string): Endpoint[] {
  return (JSON.parse(json || '[]') as Record<string, unknown>[]).map((e) => {
    const flags = Array.isArray(e.flags)
      ? e.flags.map(String)
      : Object.keys(e).filter((k) => !NOT_FLAGS.has(k) && e[k] === true);
    return { id: Number(e.id), address: String(e.address ?? ''), ...(typeof e.dev === 'string' ? { dev: e.dev } : {}), flags: flags.sort() };
  });
}

/** `ip -j mptcp limits show`: JSON from newer iproute2, `add_addr_accepted 0 subflows 2` from older (6.1 ignores -j here). */
export function parseLimits(text: string): Limits {
  let fields: Record<string, unknown>;
  try {
    fields = JSON.parse(text) as Record<string, unknown>;
  } catch {
    const words = text.trim().split(/\s+/);
    fields = Object.fromEntries(words.flatMap((w, i) => (i % 2 === 0 ? [[w, words[i + 1]]] : [])));
  }
  const subflows = Number(fields.subflows);
  const addAddrAccepted = Number(fields.add_addr_accepted);
  if (!Number.isInteger(subflows) || !Number.isInteger(addAddrAccepted)) throw new Error(`ip mptcp limits show: cannot read ${JSON.stringify(text.trim())}`);
  return { subflows, addAddrAccepted };
}

const desiredFlags = (e: MptcpEndpoint) => (e.backup ? ['backup', 'subflow'] : ['subflow']);
const endpointKey = (e: { id: number; address: string; dev?: string; flags: string[] }) => [e.id, e.address, e.dev ?? '-', e.flags.join(',')].join(' ');
const desiredKey = (e: MptcpEndpoint) => endpointKey({ ...e, flags: desiredFlags(e) });

export interface MptcpDiff {
  /** Owned endpoints the plan does not have (a down uplink's, an old address's): deleted first, so their id is free again. */
  stale: Endpoint[];
  missing: MptcpEndpoint[];
  /** Planned endpoints whose address already has an endpoint of someone else's: the kernel takes an address once, so it stays theirs. */
  heldByOthers: MptcpEndpoint[];
  /** The limits to set, when the present ones are below the plan's. */
  limits?: Limits;
}

/** What differs between the plan and the kernel's endpoints and limits. Pure. */
export function mptcpDiff(state: MptcpState, present: Endpoint[], limits: Limits | undefined): MptcpDiff {
  const owned = present.filter(isOwnedEndpoint);
  const wanted = new Set(state.endpoints.map(desiredKey));
  const have = new Set(owned.map(endpointKey));
  const othersAddresses = new Set(present.filter((e) => !isOwnedEndpoint(e)).map((e) => e.address));
  const notThere = state.endpoints.filter((e) => !have.has(desiredKey(e)));
  const diff: MptcpDiff = {
    stale: owned.filter((e) => !wanted.has(endpointKey(e))),
    missing: notThere.filter((e) => !othersAddresses.has(e.address)),
    heldByOthers: notThere.filter((e) => othersAddresses.has(e.address)),
  };
  const want = state.limits;
  if (want && limits && (limits.subflows < want.subflows || limits.addAddrAccepted < want.addAddrAccepted)) {
    diff.limits = { subflows: Math.max(limits.subflows, want.subflows), addAddrAccepted: Math.max(limits.addAddrAccepted, want.addAddrAccepted) };
  }
  return diff;
}

/** The endpoints, or undefined when this kernel (or `ip`) has no MPTCP: then none can be uplinkd's. */
async function listEndpoints(runner: Runner): Promise<Endpoint[] | undefined> {
  const result = await runner.run('ip', ['-j', 'mptcp', 'endpoint', 'show']);
  return result.code === 0 ? parseEndpoints(result.stdout) : undefined;
}

/**
 * Reads endpoints and limits and diffs them with the plan. With `mptcp: off`
 * a kernel without MPTCP is no error (there is nothing of ours to remove);
 * with `subflow` it is, since the config asks for it.
 */
async function readDiff(state: MptcpState, runner: Runner): Promise<MptcpDiff> {
  if (!state.enabled) return mptcpDiff(state, (await listEndpoints(runner)) ?? [], undefined);
  const [endpoints, limits] = await Promise.all([
    mustRun(runner, 'ip', ['-j', 'mptcp', 'endpoint', 'show']),
    mustRun(runner, 'ip', ['-j', 'mptcp', 'limits', 'show']),
  ]);
  return mptcpDiff(state, parseEndpoints(endpoints), parseLimits(limits));
}

/**
 * Brings the owned endpoints and the limits to the plan: stale endpoints
 * deleted (the kernel then closes their subflows and tells the peers), the
 * limits raised, missing endpoints added (the kernel then opens their
 * subflows on the connections already established, too).
 */
export async function applyMptcp(state: MptcpState | undefined, runner: Runner): Promise<Change[]> {
  if (!state) return [];
  const diff = await readDiff(state, runner);
  const changes: Change[] = [];
  const ip = async (what: string, args: string[]) => {
    await mustRun(runner, 'ip', args);
    changes.push({ what, args: ['ip', ...args] });
  };
  for (const e of diff.stale) await ip('stale mptcp endpoint', ['mptcp', 'endpoint', 'delete', 'id', String(e.id)]);
  if (diff.limits) await ip('mptcp limits', mptcpLimitsArgs(diff.limits));
  for (const e of diff.missing) await ip('mptcp endpoint', mptcpEndpointArgs(e));
  return changes;
}

/** What someone else changed among uplinkd's endpoints and the limits, in a few words; undefined when in step. */
export async function mptcpDrift(state: MptcpState | undefined, runner: Runner): Promise<string | undefined> {
  if (!state?.enabled) return undefined;
  const diff = await readDiff(state, runner);
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  const parts = [
    diff.missing.length && `${count(diff.missing.length, 'endpoint')} missing`,
    diff.stale.length && `${count(diff.stale.length, 'endpoint')} changed or foreign in the owned ids`,
    diff.limits && 'limits lowered',
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : undefined;
}

/** Deletes every endpoint with an owned id; foreign endpoints and the limits stay as they are. */
export async function flushMptcp(runner: Runner): Promise<Change[]> {
  const changes: Change[] = [];
  for (const e of ((await listEndpoints(runner)) ?? []).filter(isOwnedEndpoint)) {
    const args = ['mptcp', 'endpoint', 'delete', 'id', String(e.id)];
    await mustRun(runner, 'ip', args);
    changes.push({ what: 'mptcp endpoint', args: ['ip', ...args] });
  }
  return changes;
}
