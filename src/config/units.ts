// Readers for the config's quantities: durations, rates and percentages.
// Each takes the raw YAML value and returns the number or a message that says
// what was wrong and which units are accepted; none throws.

/** The outcome of reading one value: the value, or a message for the user. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

export const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
export const fail = (error: string): Parsed<never> => ({ ok: false, error });

/** A value as the user wrote it, for messages: strings quoted, containers named. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'an empty value';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}

/** A decimal number and a unit, as in "1.5s", "20mbit" or "20%" (a space between is tolerated). */
const NUMBER_AND_UNIT = /^(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z%]*)$/;

function readQuantity(
  input: unknown,
  what: string,
  units: Record<string, number>,
  help: string,
  caseInsensitive = false,
): Parsed<number> {
  if (typeof input === 'number') {
    return fail(`${input} has no unit; ${help}`);
  }
  if (typeof input !== 'string') return fail(`expected ${what}, got ${describeValue(input)}; ${help}`);
  const match = NUMBER_AND_UNIT.exec(input.trim());
  if (!match) return fail(`${JSON.stringify(input)} is not ${what}; ${help}`);
  const [, digits, written] = match;
  if (written === '') return fail(`${JSON.stringify(input)} has no unit; ${help}`);
  const unit = caseInsensitive ? written.toLowerCase() : written;
  const factor = Object.hasOwn(units, unit) ? units[unit] : undefined;
  if (factor === undefined) return fail(`unknown unit "${written}" in ${JSON.stringify(input)}; ${help}`);
  return ok(Number(digits) * factor);
}

/**
 * A JSON Schema pattern for a quantity in these units, as readQuantity reads it
 * (for `uplinkd schema`; JSON Schema patterns have no flags, so letter case is spelled out).
 */
function quantityPattern(units: Record<string, number>, caseInsensitive = false): string {
  const spell = (unit: string) =>
    [...unit].map((c) => (caseInsensitive && /[a-z]/i.test(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c)).join('');
  return `^\\s*${NUMBER_AND_UNIT.source.slice(1, -1).replace('[A-Za-z%]*', `(?:${Object.keys(units).map(spell).join('|')})`)}\\s*$`;
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_HELP = 'durations take ms, s, m or h, e.g. 200ms, 1.5s, 10m';
/** Node's timers hold at most 2^31-1 ms; a longer delay silently fires at once. */
const MAX_DURATION_MS = 2 ** 31 - 1;

export const DURATION_PATTERN = quantityPattern(DURATION_UNITS);

/** A positive duration, in milliseconds: "200ms", "1.5s", "10m", "1h". */
export function parseDuration(input: unknown): Parsed<number> {
  const read = readQuantity(input, 'a duration', DURATION_UNITS, DURATION_HELP);
  if (!read.ok) return read;
  if (read.value <= 0) return fail(`a duration must be positive, got ${describeValue(input)}`);
  if (read.value > MAX_DURATION_MS) return fail(`${describeValue(input)} is too long; at most 596h`);
  return read;
}

// tc's decimal units: 1kbit = 1000 bit/s.
const RATE_UNITS = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };
const RATE_HELP = 'rates take bit, kbit, mbit or gbit, e.g. 500kbit, 20mbit, 1gbit';

export const RATE_PATTERN = quantityPattern(RATE_UNITS, true);

/** A positive rate, in bits per second: "500kbit", "20mbit", "1gbit" (any letter case). */
export function parseRate(input: unknown): Parsed<number> {
  const read = readQuantity(input, 'a rate', RATE_UNITS, RATE_HELP, true);
  if (!read.ok) return read;
  const bitsPerSecond = Math.round(read.value);
  if (bitsPerSecond <= 0) return fail(`a rate must be positive, got ${describeValue(input)}`);
  return ok(bitsPerSecond);
}

const PERCENT_HELP = 'percentages take %, e.g. 20%';

/** A percentage from 0% to 100%, as a fraction: "20%" -> 0.2. */
export function parsePercent(input: unknown): Parsed<number> {
  if (typeof input === 'number') {
    // 0.2 most likely meant 20%; 20 meant 20%.
    const meant = input > 0 && input < 1 ? Number((input * 100).toFixed(6)) : input;
    return fail(`${input} has no unit; write ${meant}% (${PERCENT_HELP})`);
  }
  const read = readQuantity(input, 'a percentage', { '%': 1 }, PERCENT_HELP);
  if (!read.ok) return read;
  if (read.value > 100) return fail(`a percentage must be from 0% to 100%, got ${describeValue(input)}`);
  return ok(read.value / 100);
}
