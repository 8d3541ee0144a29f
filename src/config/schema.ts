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
  parseSourceAddress,
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
import {
  describeValue, DURATION_PATTERN, fail, ok, parseDuration, parsePercent, parseRate, RATE_PATTERN, type Parsed,
} from './units.js';

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

/**
 * How a leaf is written in YAML, as a JSON Schema fragment: `uplinkd schema`
 * (json-schema.ts) shows it in place of the leaf, whose zod input is unknown.
 * The parse function stays the judge; the form is what an editor can check.
 */
export type InputForm = { description: string } & Record<string, unknown>;

const inputForms = new WeakMap<z.ZodTypeDef, InputForm>();

/** The input form of a leaf or of an uplink name, by zod definition (for json-schema.ts). */
export const inputFormOf = (def: z.ZodTypeDef): InputForm | undefined => inputForms.get(def);

function withInputForm<S extends z.ZodTypeAny>(schema: S, form: InputForm): S {
  inputForms.set(schema._def, form);
  return schema;
}

/** A value read by one of the parse* functions: its message becomes the issue. `missing` says what a required key is for. */
function leaf<T>(parse: (input: unknown) => Parsed<T>, form: InputForm, missing?: string) {
  return withInputForm(z.unknown().transform((input, ctx): T => {
    if (input === undefined) {
      addIssue(ctx, [], missing ?? missingKey(ctx.path));
      return z.NEVER;
    }
    const read = parse(input);
    if (read.ok) return read.value;
    addIssue(ctx, [], aboutKey(ctx.path, read.error));
    return z.NEVER;
  }), form);
}

const STRING = (description: string, more: Record<string, unknown> = {}): InputForm => ({ type: 'string', description, ...more });
const DURATION = STRING('a duration with a unit: ms, s, m or h, e.g. 200ms, 1.5s, 10m', { pattern: DURATION_PATTERN });
const RATE = STRING('a rate with a unit: bit, kbit, mbit or gbit (decimal), e.g. 500kbit, 20mbit', { pattern: RATE_PATTERN });
const PERCENT = STRING('a percentage from 0% to 100%, e.g. 20%', { pattern: '^\\s*(?:100(?:\\.0+)?|\\d{1,2}(?:\\.\\d+)?|\\.\\d+)\\s*%\\s*$' });
// Address shapes for editors; what an address means (host bits, multicast, a family's reach) is load.ts's to judge.
const IPV4 = '(?:(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)\\.){3}(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV6 = '[0-9A-Fa-f]*:[0-9A-Fa-f:.]*';
const IPV4_PREFIX = `${IPV4}(?:/(?:3[0-2]|[12]?\\d))?`;
const IPV6_PREFIX = `${IPV6}(?:/(?:12[0-8]|1[01]\\d|[1-9]?\\d))?`;
const ADDRESS_OR_PREFIX = STRING('an address or prefix (IPv4 or IPv6)', { pattern: `^(?:${IPV4_PREFIX}|${IPV6_PREFIX})$` });
const IPV6_PREFIX_FORM = (description: string) => STRING(description, { pattern: `^${IPV6}/(?:12[0-8]|1[01]\\d|[1-9]?\\d)$` });
const IFNAME = STRING('a network interface name', { minLength: 1, maxLength: 15, pattern: '^[A-Za-z0-9_.@+][A-Za-z0-9_.@+-]*$' });
const PATH = STRING('an absolute path', { pattern: '^/' });
const ACCOUNT = (what: string): InputForm => ({ type: ['string', 'integer'], description: `a ${what} name or numeric id` });

function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
  return leaf(
    (input) =>
      typeof input === 'number' && Number.isInteger(input) && input >= min && input <= max
        ? ok(input)
        : fail(`expected an integer ${range}, got ${describeValue(input)}`),
    { type: 'integer', minimum: min, ...(max === Number.MAX_SAFE_INTEGER ? {} : { maximum: max }), description: `an integer ${range}` },
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
  unknownKeys.add(unknownKey._def);
  return z.object(shape).catchall(unknownKey);
}

const unknownKeys = new WeakSet<z.ZodTypeDef>();

/** Whether a definition is the catch-all of a strictObject: every key it meets is an error (json-schema.ts: no additional properties). */
export const isUnknownKey = (def: z.ZodTypeDef): boolean => unknownKeys.has(def);

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
  query: leaf(parseDnsName, STRING('the DNS name a dns check asks for')).optional(),
  interval: leaf(parseDuration, DURATION).default('100ms'),
  timeout: leaf(parseDuration, DURATION).default('400ms'),
  down_after: integer(1).default(3),
  up_after: integer(1).default(5),
  quorum: integer(1).default(1),
  max_latency: leaf(parseDuration, DURATION).optional(),
  max_loss: leaf(parsePercent, PERCENT).optional(),
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

const UplinkNameSchema = withInputForm(z.string().superRefine((name, ctx) => {
  if (!UPLINK_NAME.test(name)) {
    addIssue(ctx, [], `uplink name "${name}" must match [a-z][a-z0-9_-]{0,14} (a lowercase letter, then up to 14 of a-z 0-9 _ -)`, { at: 'key' });
  }
}), STRING('an uplink name', { pattern: UPLINK_NAME.source }));

const prefixLength = (cidr: string) => Number(cidr.split('/')[1]);

/**
 * `nat6: {prefix: {lan: P, uplink: Q}}`: P mapped 1:1 onto Q, host part kept,
 * so P and Q must have the same length. The bare word names the mode but not
 * the prefixes, so it is an error that shows the mapping to write.
 */
const PrefixMapping = strictObject({
  lan: leaf(parseIpv6Prefix, IPV6_PREFIX_FORM('the LAN prefix to map, e.g. fd00:0:0:1::/64'), 'nat6: prefix needs lan: the LAN prefix to map (e.g. fd00:0:0:1::/64)'),
  uplink: leaf(parseIpv6Prefix, IPV6_PREFIX_FORM("the uplink's prefix of the same length, e.g. 2001:db8:1:1::/64"), "nat6: prefix needs uplink: the uplink's prefix to map it onto, of the same length (e.g. 2001:db8:1:1::/64)"),
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
  interface: leaf(parseIfname, IFNAME),
  gateway: leaf(parseGateway, STRING('auto, none or the IPv4 next hop', { pattern: `^(?:auto|none|${IPV4})$` })).default('auto'),
  // Absent means auto: IPv6 wherever the interface has a global address and a next hop.
  gateway6: leaf(parseGateway6, STRING('auto, none, off or the IPv6 next hop (link-local allowed, e.g. fe80::1)', { pattern: `^(?:auto|none|off|${IPV6})$` })).default('auto'),
  weight: integer(1, 1000).default(1),
  tier: integer(1).default(1),
  nat: z.enum(['snat', 'masquerade', 'none']).default('snat'),
  address: leaf(parseSourceAddress, STRING("auto, or the IPv4 source address for NAT and split access (e.g. a router pair's VRRP address)", { pattern: `^(?:auto|${IPV4})$` })).default('auto'),
  nat6: Nat6Schema.default('snat'),
  capacity: strictObject({ up: leaf(parseRate, RATE).optional(), down: leaf(parseRate, RATE).optional() }).optional(),
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
    address: uplink.address,
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

const Via = withInputForm(z.union([z.string(), z.array(z.string())]).transform((via, ctx): string[] | 'main' => {
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
}), {
  anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, minItems: 1, uniqueItems: true }],
  description: 'main, or the uplink(s) the rule sends its traffic through',
});

export const PROTOCOLS = ['tcp', 'udp', 'icmp', 'any'] as const;

const PORTS: InputForm = { type: ['integer', 'string'], pattern: '^\\s*\\d+(-\\d+)?\\s*$', minimum: 1, maximum: 65535, description: 'a port or a range such as 5060-5061' };

const RuleSchema = strictObject({
  name: leaf(parseRuleName, STRING('the rule\'s name', { pattern: RULE_NAME.source })).optional(),
  src: oneOrMany(leaf(parsePrefix, ADDRESS_OR_PREFIX)).default([]),
  dst: oneOrMany(leaf(parsePrefix, ADDRESS_OR_PREFIX)).default([]),
  proto: z.enum(PROTOCOLS).default('any'),
  sport: oneOrMany(leaf(parsePortRange, PORTS)).default([]),
  dport: oneOrMany(leaf(parsePortRange, PORTS)).default([]),
  iif: oneOrMany(leaf(parseIfname, IFNAME)).default([]),
  user: oneOrMany(leaf(parseUser, ACCOUNT('user'))).default([]),
  group: oneOrMany(leaf(parseGroup, ACCOUNT('group'))).default([]),
  cgroup: oneOrMany(leaf(parseCgroupPath, STRING('a cgroup v2 path, e.g. /system.slice/backup.service'))).default([]),
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
  nft_table: leaf(parseNftTable, STRING('the nftables table uplinkd owns', { pattern: NFT_TABLE_NAME.source })).default(DEFAULT_OWNERSHIP.nftTable),
  mark_mask: leaf(parseMarkMask, { type: ['integer', 'string'], pattern: '^0[xX][0-9a-fA-F]{1,8}$', minimum: 1, maximum: 0xffffffff, description: 'the packet-mark bits uplinkd owns: one contiguous run, e.g. 0x0000ff00' }).default(DEFAULT_OWNERSHIP.markMask),
  table_base: integer(0, 2 ** 32 - 1).default(DEFAULT_OWNERSHIP.tableBase),
  rule_priority: leaf(parseRulePriority, { type: 'integer', minimum: FIRST_FREE_PRIORITY, maximum: LAST_FREE_PRIORITY - RULE_RANGE + 1, description: `the first of the ${RULE_RANGE} policy-rule priorities uplinkd owns` }).default(DEFAULT_OWNERSHIP.rulePriority),
  host_source: leaf(parseIpv4, STRING('an IPv4 address', { pattern: `^${IPV4}$` })).default(DEFAULT_OWNERSHIP.hostSource),
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
  socket: leaf(parseAbsolutePath, PATH).default(DEFAULT_SOCKET),
  http: leaf((input) => (input === 'off' || input === false ? ok('off') : parseListenAddress(input)),
    { type: ['string', 'boolean'], description: 'HOST:PORT with an IPv4 host, or off' }).default('127.0.0.1:9271'),
});

export const ConfigSchema = strictObject({
  lan: oneOrMany(leaf(parseIfname, IFNAME)).default([]).describe('the LAN interface(s) whose traffic uplinkd balances'),
  uplinks: z.record(UplinkNameSchema, UplinkSchema).default({}).describe('the uplinks, by name: interface, gateway, weight, tier, nat, check'),
  balance: z.enum(['weighted', 'hash', 'least-loaded']).default('weighted').describe('how new connections are spread over the up uplinks'),
  sticky: leaf(parseDuration, DURATION).optional().describe('keep a source on its uplink for this long (host mode)'),
  rules: z.array(RuleSchema).default([]).describe('pins: traffic matching a rule goes via the uplinks it names'),
  mptcp: z.enum(['off', 'subflow']).default('off').describe('MPTCP subflows over every up uplink'),
  conntrack: strictObject({ flush_on_down: z.boolean().default(true) }).default({}).describe("what happens to a down uplink's connections"),
  hooks: oneOrMany(leaf(parseAbsolutePath, PATH)).default([]).describe('programs run on up, down, address and reload events'),
  api: ApiSchema.default({}).describe('the control socket and the HTTP listener (status page, /metrics)'),
  kernel: KernelSchema.default({}).describe('the kernel state uplinkd owns: nft table, marks, tables, rule priorities'),
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
