// Readers for the config's names and addresses. Everything that later reaches
// `ip`, `nft` or a socket passes through one of these first, so the kernel
// layer can trust what it is given (README "Use it on a router": every name and address is checked before use).

import { ipv4ToNumber, numberToIpv4, prefixMask } from './ipv4.js';
import type { Gateway, PortRange } from './types.js';
import { describeValue, fail, ok, type Parsed } from './units.js';

const ipv6NotSupported = (text: string) => `IPv6 is not supported yet: ${text}`;

const looksLikeIpv6 = (text: string) => text.includes(':');

export function parseIpv4(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an IPv4 address, got ${describeValue(input)}`);
  if (looksLikeIpv6(input)) return fail(ipv6NotSupported(input));
  if (ipv4ToNumber(input) === undefined) return fail(`${JSON.stringify(input)} is not an IPv4 address`);
  return ok(input);
}

export function parseGateway(input: unknown): Parsed<Gateway> {
  if (input === 'auto' || input === 'none') return ok({ kind: input });
  if (typeof input === 'string' && looksLikeIpv6(input)) return fail(ipv6NotSupported(input));
  const address = parseIpv4(input);
  if (!address.ok) return fail(`${address.error} (a gateway is an IPv4 address, auto or none)`);
  return ok({ kind: 'address', address: address.value });
}

/** An IPv4 address or prefix, normalised to CIDR form: "192.0.2.1" -> "192.0.2.1/32". */
export function parsePrefix(input: unknown): Parsed<string> {
  if (typeof input !== 'string') return fail(`expected an IPv4 address or prefix, got ${describeValue(input)}`);
  if (looksLikeIpv6(input)) return fail(ipv6NotSupported(input));
  const [addressText, lengthText, ...rest] = input.split('/');
  const address = ipv4ToNumber(addressText);
  if (address === undefined || rest.length > 0) {
    return fail(`${JSON.stringify(input)} is not an IPv4 address or prefix (e.g. 192.0.2.0/24)`);
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
      if (url.protocol === 'http:' || url.protocol === 'https:') {
        if (url.hostname.startsWith('[')) return fail(ipv6NotSupported(input));
        return ok(input);
      }
    } catch {
      // reported below
    }
  }
  return fail(`an http check's target is an http:// or https:// URL, got ${describeValue(input)}`);
}
