// The YAML config as zod schemas: snake_case keys exactly as in the README's "Configuration reference",
// every default, and the conversion of each value into the shape of types.ts.
// Checks that relate one value to another (an uplink named by a rule, a port
// match and its protocol, a quorum and its targets) live in load.ts: zod skips
// an object's refinements as soon as anything inside it fails, and those
// checks must run however broken the rest of the file is.

import { z } from 'zod';
import { DEFAULT_OWNERSHIP, RULE_RANGE, hex, markField } from '../ownership.js';
import {
  parseAbsolutePath,
  parseDnsName,
  parseGateway,
  parseGateway6,
  parseIfname,
  parseIpAddress,
  parseIpv4,
  parseIpv6Prefix,
  parseListenAddress,
  parsePortRange,
  parsePrefix,
} from './net.js';
import { parseCgroupPath, parseGroup, parseUser } from './process-keys.js';
import { didYouMean } from './suggest.js';
import type { Check, Config, KernelOwnership, Nat6, PinRule, ProbeMethod, Uplink } from './types.js';
import { describeValue, fail, ok, parseDuration, parsePercent, parseRate, type Parsed } from './units.js';

/** The control socket when the config does not name one (and for `status` without a config). */
export const DEFAULT_SOCKET = '/run/uplinkd/uplinkd.sock';

export const UPLINK_NAME = /^[a-z][a-z0-9_-]{0,14}$/;
export const RULE_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
export const NFT_TABLE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;

/** Added to a custom issue's params when the message belongs on the key, not the value. */
export interface IssueParams {
  at?: 'key';
}

type Path = readonly (string | number)[];

/** The key a message is about: the last named step of the path ("dst" for rules.0.dst.1). */
function keyOf(path: Path): string | undefined {
  return [...path].reverse().find((step): step is string => typeof step === 'string');
}

/** "weight: message", so each line says what it is about even when read alone. */
function aboutKey(path: Path, message: string): string {
  const key = keyOf(path);
  return key === undefined ? message : `${key}: ${message}`;
}

const missingKey = (path: Path) => `missing required key "${String(path.at(-1))}"`;

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
  null: 'an empty value',
};

/** zod's messages speak of zod types; these speak of YAML and of the key at hand. */
export const yamlErrorMap: z.ZodErrorMap = (issue, ctx) => {
  const about = (message: string) => ({ message: aboutKey(issue.path, message) });
  switch (issue.code) {
    case z.ZodIssueCode.invalid_type:
      if (issue.received === 'undefined') return { message: missingKey(issue.path) };
      if (issue.path.length === 0) {
        return { message: `the config must be a mapping of sections such as uplinks: and rules:, got ${describeValue(ctx.data)}` };
      }
      return about(`expected ${TYPE_WORDS[issue.expected] ?? issue.expected}, got ${describeValue(ctx.data)}`);
    case z.ZodIssueCode.invalid_union: {
      if (ctx.data === undefined) return { message: missingKey(issue.path) };
      const expected = issue.unionErrors
        .flatMap((error) => error.issues)
        .flatMap((inner) => (inner.code === 'invalid_type' ? [TYPE_WORDS[inner.expected] ?? inner.expected] : []));
      return about(`expected ${[...new Set(expected)].join(' or ')}, got ${describeValue(ctx.data)}`);
    }
    case z.ZodIssueCode.invalid_enum_value: {
      const options = issue.options.map(String);
      const hint = typeof ctx.data === 'string' ? didYouMean(ctx.data, options) : '';
      return about(`expected ${options.join(' | ')}, got ${describeValue(ctx.data)}${hint}`);
    }
    default:
      return about(ctx.defaultError);
  }
};

function addIssue(ctx: z.RefinementCtx, path: Path, message: string, params?: IssueParams): void {
  ctx.addIssue({ code: z.ZodIssueCode.custom, path: [...path], message, params });
}

/** A value read by one of the parse* functions: its message becomes the issue. `missing` says what a required key is for. */
function leaf<T>(parse: (input: unknown) => Parsed<T>, missing?: string) {
  return z.unknown().transform((input, ctx): T => {
    if (input === undefined) {
      addIssue(ctx, [], missing ?? missingKey(ctx.path));
      return z.NEVER;
    }
    const read = parse(input);
    if (read.ok) return read.value;
    addIssue(ctx, [], aboutKey(ctx.path, read.error));
    return z.NEVER;
  });
}

function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
  return leaf((input) =>
    typeof input === 'number' && Number.isInteger(input) && input >= min && input <= max
      ? ok(input)
      : fail(`expected an integer ${range}, got ${describeValue(input)}`),
  );
}

/** A single value or a list of them, read as a list. */
function oneOrMany<T extends z.ZodTypeAny>(item: T) {
  // The list comes first: a leaf would accept a list as its input and complain about it as a whole.
  return z.union([z.array(item), item.transform((value): z.output<T>[] => [value])]);
}

/**
 * An object that reports each unknown key at the key, with a suggestion. (Not
 * zod's .strict(): that reports all unknown keys of an object as one issue,
 * and we want one positioned line per key.)
 */
function strictObject<T extends z.ZodRawShape>(shape: T) {
  const known = Object.keys(shape);
  const unknownKey = z.unknown().superRefine((_, ctx) => {
    const key = String(ctx.path.at(-1));
    const hint = didYouMean(key, known) || `; expected one of ${known.join(', ')}`;
    addIssue(ctx, [], `unknown key "${key}"${hint}`, { at: 'key' });
  });
  return z.object(shape).catchall(unknownKey);
}

const optionalFields = <T extends object>(fields: T): Partial<T> =>
  Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>;

// --- check -----------------------------------------------------------------

export const PROBE_METHODS = ['icmp', 'tcp', 'http', 'dns'] as const;

/** The port of a check whose method has one; 0 for icmp, which has none, and http, whose URLs carry theirs. */
const DEFAULT_PORT: Record<ProbeMethod, number> = { tcp: 443, dns: 53, icmp: 0, http: 0 };
const DEFAULT_QUERY = 'example.org';

const CheckSchema = strictObject({
  method: z.enum(PROBE_METHODS).default('icmp'),
  // Read by method in load.ts: URLs for http, addresses of either family for the others.
  targets: oneOrMany(z.string()).default([]),
  port: integer(1, 65535).optional(),
  query: leaf(parseDnsName).optional(),
  interval: leaf(parseDuration).default('100ms'),
  timeout: leaf(parseDuration).default('400ms'),
  down_after: integer(1).default(3),
  up_after: integer(1).default(5),
  quorum: integer(1).default(1),
  max_latency: leaf(parseDuration).optional(),
  max_loss: leaf(parsePercent).optional(),
  window: integer(1).default(20),
}).transform(
  (check): Check => ({
    method: check.method,
    // IPv6 in canonical text, as the prober reports it back (load.ts has checked each).
    targets: check.method === 'http' ? check.targets : check.targets.map((target) => {
      const read = parseIpAddress(target);
      return read.ok ? read.value : target;
    }),
    port: check.port ?? DEFAULT_PORT[check.method],
    query: check.method === 'dns' ? (check.query ?? DEFAULT_QUERY) : '',
    intervalMs: check.interval,
    timeoutMs: check.timeout,
    downAfter: check.down_after,
    upAfter: check.up_after,
    quorum: check.quorum,
    window: check.window,
    ...optionalFields({ maxLatencyMs: check.max_latency, maxLoss: check.max_loss }),
  }),
);

// --- uplink ----------------------------------------------------------------

const UplinkNameSchema = z.string().superRefine((name, ctx) => {
  if (!UPLINK_NAME.test(name)) {
    addIssue(ctx, [], `uplink name "${name}" must match [a-z][a-z0-9_-]{0,14} (a lowercase letter, then up to 14 of a-z 0-9 _ -)`, { at: 'key' });
  }
});

const prefixLength = (cidr: string) => Number(cidr.split('/')[1]);

/**
 * `nat6: {prefix: {lan: P, uplink: Q}}`: P mapped 1:1 onto Q, host part kept,
 * so P and Q must have the same length. The bare word names the mode but not
 * the prefixes, so it is an error that shows the mapping to write.
 */
const PrefixMapping = strictObject({
  lan: leaf(parseIpv6Prefix, 'nat6: prefix needs lan: the LAN prefix to map (e.g. fd00:0:0:1::/64)'),
  uplink: leaf(parseIpv6Prefix, "nat6: prefix needs uplink: the uplink's prefix to map it onto, of the same length (e.g. 2001:db8:1:1::/64)"),
}).transform((mapping, ctx): Nat6 => {
  const [lan, uplink] = [prefixLength(mapping.lan), prefixLength(mapping.uplink)];
  if (lan !== uplink) {
    addIssue(ctx, ['uplink'], `uplink: ${mapping.uplink} is a /${uplink} but lan ${mapping.lan} a /${lan}; ` +
      'a 1:1 prefix mapping needs prefixes of the same length');
    return z.NEVER;
  }
  return { mode: 'prefix', lan: mapping.lan, uplink: mapping.uplink };
});

export const NAT6_MODES = ['snat', 'masquerade', 'prefix', 'none'] as const;

const Nat6Schema = z.union([z.enum(NAT6_MODES), strictObject({ prefix: PrefixMapping })]).transform((nat6, ctx): Nat6 => {
  if (typeof nat6 !== 'string') return nat6.prefix;
  if (nat6 !== 'prefix') return { mode: nat6 };
  addIssue(ctx, [], 'nat6: prefix needs the two prefixes it maps, lan and uplink, of the same length: ' +
    'write nat6: {prefix: {lan: LAN-PREFIX, uplink: UPLINK-PREFIX}}');
  return z.NEVER;
});

const UplinkSchema = strictObject({
  interface: leaf(parseIfname),
  gateway: leaf(parseGateway).default('auto'),
  // Absent means auto: IPv6 wherever the interface has a global address and a next hop.
  gateway6: leaf(parseGateway6).default('auto'),
  weight: integer(1, 1000).default(1),
  tier: integer(1).default(1),
  nat: z.enum(['snat', 'masquerade', 'none']).default('snat'),
  nat6: Nat6Schema.default('snat'),
  capacity: strictObject({ up: leaf(parseRate).optional(), down: leaf(parseRate).optional() }).optional(),
  // `check: false` turns tracking off; `true` or no key means the defaults.
  check: z.union([z.boolean(), CheckSchema]).default(true),
}).transform(
  (uplink): Omit<Uplink, 'name'> => ({
    interface: uplink.interface,
    gateway: uplink.gateway,
    gateway6: uplink.gateway6,
    weight: uplink.weight,
    tier: uplink.tier,
    nat: uplink.nat,
    nat6: uplink.nat6,
    ...optionalFields({
      capacity: uplink.capacity && optionalFields({ up: uplink.capacity.up, down: uplink.capacity.down }),
      check: uplink.check === true ? CheckSchema.parse({}) : uplink.check || undefined,
    }),
  }),
);

// --- rule ------------------------------------------------------------------

/** The name of an unnamed rule: its 1-based position. */
export const defaultRuleName = (index: number) => `rule-${index + 1}`;

function parseRuleName(input: unknown): Parsed<string> {
  if (typeof input === 'string' && RULE_NAME.test(input)) return ok(input);
  return fail(`${describeValue(input)} must match [a-z][a-z0-9_-]{0,31}`);
}

const Via = z.union([z.string(), z.array(z.string())]).transform((via, ctx): string[] | 'main' => {
  if (typeof via === 'string') return via === 'main' ? 'main' : [via];
  if (via.length === 0) addIssue(ctx, [], 'via: an empty list names no uplink; give one or more, or main');
  via.forEach((name, index) => {
    if (name === 'main') {
      addIssue(ctx, [index], 'via: main cannot be mixed with uplinks (it hands the connection to the main routing table); use it alone');
    } else if (via.indexOf(name) !== index) {
      addIssue(ctx, [index], `via: ${name} is listed twice`);
    }
  });
  return via;
});

export const PROTOCOLS = ['tcp', 'udp', 'icmp', 'any'] as const;

const RuleSchema = strictObject({
  name: leaf(parseRuleName).optional(),
  src: oneOrMany(leaf(parsePrefix)).default([]),
  dst: oneOrMany(leaf(parsePrefix)).default([]),
  proto: z.enum(PROTOCOLS).default('any'),
  sport: oneOrMany(leaf(parsePortRange)).default([]),
  dport: oneOrMany(leaf(parsePortRange)).default([]),
  iif: oneOrMany(leaf(parseIfname)).default([]),
  user: oneOrMany(leaf(parseUser)).default([]),
  group: oneOrMany(leaf(parseGroup)).default([]),
  cgroup: oneOrMany(leaf(parseCgroupPath)).default([]),
  via: Via,
  fallback: z.enum(['any', 'block']).default('any'),
});

// --- kernel ----------------------------------------------------------------

/** A 32-bit mask as a number (YAML reads 0x0000ff00 as one) or a hex string. */
export function parseMarkMask(input: unknown): Parsed<number> {
  const mask =
    typeof input === 'number' ? input : typeof input === 'string' && /^0x[0-9a-f]{1,8}$/i.test(input) ? Number(input) : NaN;
  if (!Number.isInteger(mask) || mask < 1 || mask > 0xffffffff) {
    return fail(`expected a 32-bit mask such as 0x0000ff00, got ${describeValue(input)}`);
  }
  if (!markField(mask)) return fail(`${hex(mask)} is not one contiguous run of bits (e.g. 0x0000ff00)`);
  return ok(mask);
}

/** Priorities the kernel itself uses: 0 local, 32766 main, 32767 default. */
const FIRST_FREE_PRIORITY = 1;
const LAST_FREE_PRIORITY = 32765;

function parseRulePriority(input: unknown): Parsed<number> {
  if (typeof input !== 'number' || !Number.isInteger(input)) return fail(`expected an integer, got ${describeValue(input)}`);
  const last = input + RULE_RANGE - 1;
  if (input < FIRST_FREE_PRIORITY || last > LAST_FREE_PRIORITY) {
    return fail(
      `${input} owns ${input}..${last}, which must lie within ${FIRST_FREE_PRIORITY}..${LAST_FREE_PRIORITY} ` +
        `(0 is local, 32766 main, 32767 default), so at most ${LAST_FREE_PRIORITY - RULE_RANGE + 1}`,
    );
  }
  return ok(input);
}

function parseNftTable(input: unknown): Parsed<string> {
  if (typeof input === 'string' && NFT_TABLE_NAME.test(input)) return ok(input);
  return fail(`${describeValue(input)} must match [A-Za-z][A-Za-z0-9_-]{0,31}`);
}

const KernelSchema = strictObject({
  nft_table: leaf(parseNftTable).default(DEFAULT_OWNERSHIP.nftTable),
  mark_mask: leaf(parseMarkMask).default(DEFAULT_OWNERSHIP.markMask),
  table_base: integer(0, 2 ** 32 - 1).default(DEFAULT_OWNERSHIP.tableBase),
  rule_priority: leaf(parseRulePriority).default(DEFAULT_OWNERSHIP.rulePriority),
  host_source: leaf(parseIpv4).default(DEFAULT_OWNERSHIP.hostSource),
}).transform(
  (kernel): KernelOwnership => ({
    nftTable: kernel.nft_table,
    markMask: kernel.mark_mask,
    tableBase: kernel.table_base,
    rulePriority: kernel.rule_priority,
    hostSource: kernel.host_source,
  }),
);

// --- the whole file --------------------------------------------------------

const ApiSchema = strictObject({
  socket: leaf(parseAbsolutePath).default(DEFAULT_SOCKET),
  http: leaf((input) => (input === 'off' || input === false ? ok('off') : parseListenAddress(input))).default('127.0.0.1:9271'),
});

export const ConfigSchema = strictObject({
  lan: oneOrMany(leaf(parseIfname)).default([]),
  uplinks: z.record(UplinkNameSchema, UplinkSchema).default({}),
  balance: z.enum(['weighted', 'hash', 'least-loaded']).default('weighted'),
  sticky: leaf(parseDuration).optional(),
  rules: z.array(RuleSchema).default([]),
  mptcp: z.enum(['off', 'subflow']).default('off'),
  conntrack: strictObject({ flush_on_down: z.boolean().default(true) }).default({}),
  hooks: oneOrMany(leaf(parseAbsolutePath)).default([]),
  api: ApiSchema.default({}),
  kernel: KernelSchema.default({}),
}).transform(
  (config): Omit<Config, 'source'> => ({
    lan: config.lan,
    uplinks: Object.entries(config.uplinks).map(([name, uplink]) => ({ name, ...uplink })),
    balance: config.balance,
    ...optionalFields({ stickyMs: config.sticky }),
    rules: config.rules.map(
      (rule, index): PinRule => ({
        name: rule.name ?? defaultRuleName(index),
        src: rule.src,
        dst: rule.dst,
        proto: rule.proto,
        sport: rule.sport,
        dport: rule.dport,
        iif: rule.iif,
        user: [...new Set(rule.user)],
        group: [...new Set(rule.group)],
        cgroup: [...new Set(rule.cgroup)],
        via: rule.via,
        fallback: rule.fallback,
      }),
    ),
    mptcp: config.mptcp,
    conntrack: { flushOnDown: config.conntrack.flush_on_down },
    hooks: config.hooks,
    api: { socket: config.api.socket, http: config.api.http },
    kernel: config.kernel,
  }),
);
