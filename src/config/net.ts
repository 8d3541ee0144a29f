// Readers for the config's names and addresses. Everything that later reaches
// `ip`, `nft` or a socket passes through one of these first, so the kernel
// layer can trust what it is given (README "Use it on a router": every name and address is checked before use).

import { ipv4ToNumber, numberToIpv4, prefixMask } from './ipv4.js';
import { IPV6_BITS, bigIntToIpv6, ipv6PrefixMask, isIpv4Mapped, isMulticast, readIpv6 } from './ipv6.js';
import type { Gateway, Gateway6, PortRange, SourceAddress } from './types.js';
import { describeValue, fail, ok, type Parsed } from './units.js';

// Left where the contract is IPv4 only: the listen address, host_source.
const ipv6NotSupported = (text: string) => `IPv6 is not supported yet: ${text}`;

const looksLikeIpv6 = (text: string) => text.includes(':');

/** An IPv6 address as canonical text, or what is wrong with it. */
function readIpv6Text(text: string): Parsed<string> {
  const read = readIpv6(text);
  return read.ok ? ok(bigIntToIpv6(read.value)) : fail(`${JSON.stringify(text)} is not an IPv6 address: ${read.reason}`);
}

export function parseIpv4(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an IPv4 address, got ${describeValue(input)}`);
  if (looksLikeIpv6(input)) return fail(ipv6NotSupported(input));
  if (ipv4ToNumber(input) === undefined) return fail(`${JSON.stringify(input)} is not an IPv4 address`);
  return ok(input);
}

/** An address of either family, IPv6 in canonical text: a probe target. */
export function parseIpAddress(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an IPv4 or IPv6 address, got ${describeValue(input)}`);
  if (looksLikeIpv6(input)) return readIpv6Text(input);
  if (ipv4ToNumber(input) === undefined) return fail(`${JSON.stringify(input)} is not an IPv4 or IPv6 address`);
  return ok(input);
}

export function parseGateway(input: unknown): Parsed<Gateway> {
  if (input === 'auto' || input === 'none') return ok({ kind: input });
  if (typeof input === 'string' && looksLikeIpv6(input)) {
    return fail(`${input} is an IPv6 address; the IPv6 next hop goes in gateway6`);
  }
  const address = parseIpv4(input);
  if (!address.ok) return fail(`${address.error} (a gateway is an IPv4 address, auto or none)`);
  return ok({ kind: 'address', address: address.value });
}

/** An uplink's `address`: auto, or the IPv4 address it NATs to (which its interface may not hold yet). */
export function parseSourceAddress(input: unknown): Parsed<SourceAddress> {
  if (input === 'auto') return ok({ kind: 'auto' });
  if (typeof input === 'string' && looksLikeIpv6(input)) {
    return fail(`${input} is an IPv6 address; address takes an IPv4 address (the IPv6 source is the interface's global address, see nat6)`);
  }
  const address = parseIpv4(input);
  if (!address.ok) return fail(`${address.error} (address is auto or an IPv4 address)`);
  const value = ipv4ToNumber(address.value)!;
  const first = value >>> 24;
  if (value === 0 || first === 127 || first >= 224) {
    return fail(`${address.value} cannot be a source address (unspecified, loopback, multicast or reserved)`);
  }
  return ok({ kind: 'address', address: address.value });
}

/** What makes an address unfit to be a next hop, if anything. */
function notANextHop(value: bigint): string | undefined {
  if (value === 0n) return 'the unspecified address';
  if (value === 1n) return 'the loopback address';
  if (isMulticast(value)) return 'a multicast address';
  if (isIpv4Mapped(value)) return 'an IPv4-mapped address';
  return undefined;
}

/** `gateway6`: an IPv6 address (link-local allowed), auto, none or off. */
export function parseGateway6(input: unknown): Parsed<Gateway6> {
  if (input === 'auto' || input === 'none' || input === 'off') return ok({ kind: input });
  const help = 'gateway6 is an IPv6 address (link-local allowed, e.g. fe80::1), auto, none or off';
  if (typeof input !== 'string') return fail(`expected an IPv6 address, auto, none or off, got ${describeValue(input)}`);
  if (!looksLikeIpv6(input)) {
    if (ipv4ToNumber(input) !== undefined) return fail(`${input} is an IPv4 address; the IPv4 next hop goes in gateway`);
    return fail(`${JSON.stringify(input)} is not an IPv6 address (${help})`);
  }
  const zone = input.indexOf('%');
  if (zone >= 0) {
    return fail(`${JSON.stringify(input)}: write ${input.slice(0, zone)} without the zone id ${input.slice(zone)}; ` +
      "a gateway is always reached on its uplink's interface");
  }
  const read = readIpv6(input);
  if (!read.ok) return fail(`${JSON.stringify(input)} is not an IPv6 address: ${read.reason}`);
  const unfit = notANextHop(read.value);
  if (unfit) return fail(`${input} is ${unfit}, which cannot be a next hop`);
  return ok({ kind: 'address', address: bigIntToIpv6(read.value) });
}

/** An IPv4 prefix, checked and in CIDR form: "192.0.2.1" -> "192.0.2.1/32". */
function parseIpv4Prefix(input: string): Parsed<string> {
  const [addressText, lengthText, ...rest] = input.split('/');
  const address = ipv4ToNumber(addressText);
  if (address === undefined || rest.length > 0) {
    return fail(`${JSON.stringify(input)} is not an IPv4 or IPv6 address or prefix (e.g. 192.0.2.0/24, 2001:db8::/32)`);
  }
  if (lengthText === undefined) return ok(`${addressText}/32`);
  if (!/^\d{1,2}$/.test(lengthText) || Number(lengthText) > 32) {
    return fail(`${JSON.stringify(input)}: a prefix length is 0..32`);
  }
  const length = Number(lengthText);
  const network = (address & prefixMask(length)) >>> 0;
  if (network !== address) {
    const meant = `${numberToIpv4(network)}/${length}`;
    return fail(`${input} has host bits set; did you mean ${meant}?`);
  }
  return ok(`${addressText}/${length}`);
}

/** An IPv6 address or prefix, checked and in canonical CIDR form: "2001:DB8::1" -> "2001:db8::1/128". */
export function parseIpv6Prefix(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an IPv6 prefix, got ${describeValue(input)}`);
  if (!looksLikeIpv6(input)) return fail(`${JSON.stringify(input)} is not an IPv6 prefix (e.g. 2001:db8:1::/64)`);
  const [addressText, lengthText, ...rest] = input.split('/');
  if (rest.length > 0) return fail(`${JSON.stringify(input)} is not an IPv6 address or prefix (e.g. 2001:db8::/32)`);
  const read = readIpv6(addressText);
  if (!read.ok) return fail(`${JSON.stringify(input)} is not an IPv6 address or prefix: ${read.reason}`);
  if (lengthText === undefined) return ok(`${bigIntToIpv6(read.value)}/${IPV6_BITS}`);
  if (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > IPV6_BITS) {
    return fail(`${JSON.stringify(input)}: an IPv6 prefix length is 0..128`);
  }
  const length = Number(lengthText);
  const network = read.value & ipv6PrefixMask(length);
  if (network !== read.value) return fail(`${input} has host bits set; did you mean ${bigIntToIpv6(network)}/${length}?`);
  return ok(`${bigIntToIpv6(network)}/${length}`);
}

/** An address or prefix of either family, in CIDR form: "192.0.2.1" -> "192.0.2.1/32", "2001:db8::/32" as it is. */
export function parsePrefix(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an IPv4 or IPv6 address or prefix, got ${describeValue(input)}`);
  return looksLikeIpv6(input) ? parseIpv6Prefix(input) : parseIpv4Prefix(input);
}

/**
 * A network interface name. Linux takes 1..15 bytes without '/', ':' or
 * whitespace; we also keep to the characters real names use, because the name
 * is written into nftables input, where a quote or brace would change its
 * meaning, and a leading '-' would read as an option to `ip`.
 */
export function parseIfname(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an interface name, got ${describeValue(input)}`);
  const name = JSON.stringify(input);
  if (input.length === 0 || input.length > 15) return fail(`interface name ${name} must be 1 to 15 characters`);
  if (input === '.' || input === '..') return fail(`${name} is not an interface name`);
  if (/[/:\s]/.test(input)) return fail(`interface name ${name} must not contain '/', ':' or whitespace`);
  if (!/^[A-Za-z0-9_.@+][A-Za-z0-9_.@+-]*$/.test(input)) {
    return fail(`interface name ${name} may hold only letters, digits and _ . - @ + (and not start with -)`);
  }
  return ok(input);
}

/** A port or an inclusive range: 5060, "5060" or "5060-5061". */
export function parsePortRange(input: unknown): Parsed<PortRange> {
  const text = typeof input === 'number' ? String(input) : input;
  const shape = typeof text === 'string' ? /^(\d+)(?:-(\d+))?$/.exec(text.trim()) : null;
  if (!shape) return fail(`expected a port or a range such as 5060-5061, got ${describeValue(input)}`);
  const from = Number(shape[1]);
  const to = shape[2] === undefined ? from : Number(shape[2]);
  for (const port of [from, to]) {
    if (port < 1 || port > 65535) return fail(`port ${port} is out of range 1..65535`);
  }
  if (from > to) return fail(`range ${text} is reversed; write ${to}-${from}`);
  return ok({ from, to });
}

export function parseAbsolutePath(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an absolute path, got ${describeValue(input)}`);
  if (!input.startsWith('/')) return fail(`${JSON.stringify(input)} is not an absolute path (it must start with /)`);
  if (input.includes('\0')) return fail('a path must not contain a NUL character');
  return ok(input);
}

/** "HOST:PORT" with an IPv4 host, e.g. 127.0.0.1:9271. */
export function parseListenAddress(input: unknown): Parsed<string> {
  const help = 'expected HOST:PORT with an IPv4 host (e.g. 127.0.0.1:9271) or off';
  if (typeof input !== 'string') return fail(`${help}, got ${describeValue(input)}`);
  const colon = input.lastIndexOf(':');
  if (colon < 0) return fail(`${help}, got ${JSON.stringify(input)}`);
  const host = input.slice(0, colon);
  if (host.startsWith('[') || looksLikeIpv6(host)) return fail(ipv6NotSupported(input));
  if (ipv4ToNumber(host) === undefined) return fail(`${help}; ${JSON.stringify(host)} is not an IPv4 address`);
  const portText = input.slice(colon + 1);
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) return fail(`port ${JSON.stringify(portText)} is out of range 1..65535`);
  return ok(input);
}

/** A DNS name to ask a resolver about: labels of letters, digits, '-' and '_'. */
export function parseDnsName(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected a DNS name, got ${describeValue(input)}`);
  const labels = input.replace(/\.$/, '').split('.');
  const valid = input.length <= 253 && labels.every((label) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label));
  return valid ? ok(input) : fail(`${JSON.stringify(input)} is not a DNS name (e.g. example.org)`);
}

/** An http:// or https:// URL. */
export function parseHttpUrl(input: unknown): Parsed<string> {
  if (typeof input === 'string') {
    try {
      const url = new URL(input);
      // An IPv6 host is written in brackets (http://[2001:db8::80]/); URL has checked it.
      if (url.protocol === 'http:' || url.protocol === 'https:') return ok(input);
    } catch {
      // reported below
    }
  }
  return fail(`an http check's target is an http:// or https:// URL, got ${describeValue(input)}`);
}
