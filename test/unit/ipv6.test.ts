import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  addressFamily,
  bigIntToIpv6,
  canonicalIpv6,
  ipv6NetworkOf,
  ipv6PrefixMask,
  ipv6PrefixRange,
  ipv6RangeText,
  ipv6RangesOverlap,
  ipv6ToBigInt,
  isIpv4Mapped,
  isLinkLocal,
  isMulticast,
  mergeIpv6Ranges,
  readIpv6,
} from '../../src/config/ipv6.js';

const v = (text: string): bigint => {
  const value = ipv6ToBigInt(text);
  assert.notEqual(value, undefined, text);
  return value!;
};

/** The reason readIpv6 gives for text that is not an address. */
const reason = (text: string): string => {
  const read = readIpv6(text);
  assert.equal(read.ok, false, `${text} was accepted`);
  return read.ok ? '' : read.reason;
};

describe('IPv6 text to numbers', () => {
  it('reads the unspecified and the loopback address', () => {
    assert.equal(v('::'), 0n);
    assert.equal(v('::1'), 1n);
    assert.equal(v('0:0:0:0:0:0:0:1'), 1n);
  });

  it('reads full, compressed and mixed forms alike', () => {
    const expected = 0x20010db8000000000000000000000001n;
    for (const text of ['2001:db8::1', '2001:0db8:0000:0000:0000:0000:0000:0001', '2001:DB8::0:1', '2001:db8:0::0:0:1']) {
      assert.equal(v(text), expected, text);
    }
    assert.equal(v('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), (1n << 128n) - 1n);
    assert.equal(v('1::'), 1n << 112n);
    assert.equal(v('1:2:3:4:5:6:7:8'), 0x00010002000300040005000600070008n);
    assert.equal(v('1:2:3:4:5:6::8'), 0x00010002000300040005000600000008n, ':: for one group');
    assert.equal(v('1:2:3:4:5:6:7::'), 0x00010002000300040005000600070000n, ':: for the last group');
  });

  it('reads an IPv4 address in the last 32 bits', () => {
    assert.equal(v('::ffff:192.0.2.1'), 0xffffc0000201n);
    assert.equal(v('64:ff9b::198.51.100.7'), 0x0064ff9b0000000000000000c6336407n);
    assert.equal(v('1:2:3:4:5:6:192.0.2.1'), 0x000100020003000400050006c0000201n);
  });

  it('says why text is not an address', () => {
    assert.match(reason('fe80::1%wan1'), /zone id \(%wan1\)/);
    assert.match(reason('2001:db8::/32'), /prefix length is not part/);
    assert.match(reason('192.0.2.1'), /has colons/);
    assert.match(reason('1::2::3'), /"::" may appear only once/);
    assert.match(reason('1:2:3:4:5:6:7:8:9'), /too many groups: 9/);
    assert.match(reason('1:2:3:4:5:6:7::8'), /at most 7 others/);
    assert.match(reason('1:2:3:4:5:6:7:8::'), /at most 7 others/);
    assert.match(reason('::1:2:3:4:5:6:7:8'), /at most 7 others/);
    assert.match(reason('1:2:3:4:5:6:7'), /too few groups: 7 of 8/);
    assert.match(reason('2001:00db8::1'), /"00db8" has more than 4 hex digits/);
    assert.match(reason('2001:db8::g'), /"g" is not a group of hex digits/);
    assert.match(reason(':1:2:3:4:5:6:7'), /a group is empty/);
    assert.match(reason('1:2:3:4:5:6:7:'), /a group is empty/);
    assert.match(reason(':::'), /a group is empty/);
    assert.match(reason('::ffff:192.0.2.01'), /not a dotted IPv4 address/, 'octal-looking octet');
    assert.match(reason('::ffff:192.0.2'), /not a dotted IPv4 address/);
    assert.match(reason('::192.0.2.1:1'), /not a group of hex digits/, 'a dotted quad only at the end');
    assert.match(reason(' ::1'), /not a group of hex digits/);
    assert.match(reason('+1::'), /not a group of hex digits/);
    assert.equal(ipv6ToBigInt(''), undefined);
  });
});

describe('RFC 5952 text', () => {
  const cases: [input: string, canonical: string][] = [
    ['0:0:0:0:0:0:0:0', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    // 4.2.2: a single zero group is not shortened.
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    // 4.2.3: the longest run is shortened...
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    // ... and of equal runs, the first.
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['fe80:0:0:0:0:0:0:1', 'fe80::1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:0:0:4:5:0:0:0', '1:0:0:4:5::'],
    ['0:0:3:4:5:6:7:8', '::3:4:5:6:7:8'],
    // Section 5: an IPv4-mapped address keeps its dotted quad.
    ['::FFFF:c000:0201', '::ffff:192.0.2.1'],
    ['0:0:0:0:0:ffff:0:0', '::ffff:0.0.0.0'],
    ['64:ff9b::c633:6407', '64:ff9b::c633:6407'],
  ];
  for (const [input, canonical] of cases) {
    it(`${input} -> ${canonical}`, () => {
      assert.equal(canonicalIpv6(input), canonical);
      // Canonical text reads back as the same number and prints as itself.
      assert.equal(canonicalIpv6(canonical), canonical);
    });
  }

  it('prints the largest address and is undefined for non-addresses', () => {
    assert.equal(bigIntToIpv6((1n << 128n) - 1n), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
    assert.equal(canonicalIpv6('fe80::1%lo'), undefined);
  });
});

describe('IPv6 address kinds', () => {
  it('knows link-local (fe80::/10) and nothing next to it', () => {
    assert.ok(isLinkLocal(v('fe80::1')));
    assert.ok(isLinkLocal(v('febf:ffff::1')));
    assert.ok(!isLinkLocal(v('fec0::1')));
    assert.ok(!isLinkLocal(v('fe7f::1')));
    assert.ok(!isLinkLocal(v('2001:db8::1')));
  });

  it('knows multicast and IPv4-mapped addresses', () => {
    assert.ok(isMulticast(v('ff02::1')));
    assert.ok(!isMulticast(v('fe80::1')));
    assert.ok(isIpv4Mapped(v('::ffff:192.0.2.1')));
    assert.ok(!isIpv4Mapped(v('::192.0.2.1')));
    assert.ok(!isIpv4Mapped(v('1::ffff:192.0.2.1')));
  });

  it('tells the families apart', () => {
    assert.equal(addressFamily('2001:db8::/32'), 'ipv6');
    assert.equal(addressFamily('::ffff:192.0.2.1'), 'ipv6');
    assert.equal(addressFamily('192.0.2.0/24'), 'ipv4');
  });
});

describe('IPv6 prefixes and ranges', () => {
  it('computes masks', () => {
    assert.equal(ipv6PrefixMask(0), 0n);
    assert.equal(ipv6PrefixMask(128), (1n << 128n) - 1n);
    assert.equal(bigIntToIpv6(ipv6PrefixMask(64)), 'ffff:ffff:ffff:ffff::');
    assert.equal(bigIntToIpv6(ipv6PrefixMask(10)), 'ffc0::');
  });

  it('turns prefixes into inclusive ranges', () => {
    assert.deepEqual(ipv6PrefixRange('2001:db8::/32'), { from: v('2001:db8::'), to: v('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff') });
    assert.deepEqual(ipv6PrefixRange('2001:db8::1'), { from: v('2001:db8::1'), to: v('2001:db8::1') });
    assert.deepEqual(ipv6PrefixRange('::/0'), { from: 0n, to: (1n << 128n) - 1n });
    // A prefix with host bits (an interface address) yields its network.
    assert.deepEqual(ipv6PrefixRange('2001:db8:1::2/64'), ipv6PrefixRange('2001:db8:1::/64'));
    assert.throws(() => ipv6PrefixRange('2001:db8::/129'), /not an IPv6 prefix/);
    assert.throws(() => ipv6PrefixRange('192.0.2.0/24'), /not an IPv6 prefix/);
  });

  it('finds the network of an interface address', () => {
    assert.equal(ipv6NetworkOf('2001:db8:1:0:a::2', 64), '2001:db8:1::/64');
    assert.equal(ipv6NetworkOf('2001:db8:1::2', 127), '2001:db8:1::2/127');
    assert.equal(ipv6NetworkOf('2001:db8:1::2', 128), '2001:db8:1::2/128');
  });

  it('merges touching and overlapping ranges, and keeps apart those with a gap', () => {
    const ranges = ['2001:db8:1::/48', '2001:db8::/48', '2001:db8:3::/48', '2001:db8:0:5::/64'].map(ipv6PrefixRange);
    assert.deepEqual(mergeIpv6Ranges(ranges).map(ipv6RangeText), ['2001:db8::/47', '2001:db8:3::/48']);
    assert.deepEqual(mergeIpv6Ranges([]), []);
    const last = ipv6PrefixRange('ffff::/16');
    assert.deepEqual(mergeIpv6Ranges([last, ipv6PrefixRange('ffff:ffff::/32')]), [last], 'the top of the space');
  });

  it('tells overlapping ranges', () => {
    const a = ipv6PrefixRange('2001:db8::/32');
    assert.ok(ipv6RangesOverlap(a, ipv6PrefixRange('2001:db8:ffff::1')));
    assert.ok(ipv6RangesOverlap(ipv6PrefixRange('::/0'), a));
    assert.ok(!ipv6RangesOverlap(a, ipv6PrefixRange('2001:db9::/32')));
  });

  it('writes ranges as nft does: an address, a prefix, else from-to', () => {
    assert.equal(ipv6RangeText({ from: v('2001:db8::1'), to: v('2001:db8::1') }), '2001:db8::1');
    assert.equal(ipv6RangeText(ipv6PrefixRange('::/0')), '::/0');
    assert.equal(ipv6RangeText(ipv6PrefixRange('2001:db8:0:10::/60')), '2001:db8:0:10::/60');
    assert.equal(ipv6RangeText({ from: v('2001:db8::2'), to: v('2001:db8::3') }), '2001:db8::2/127');
    assert.equal(ipv6RangeText({ from: v('2001:db8::1'), to: v('2001:db8::2') }), '2001:db8::1-2001:db8::2', 'not aligned');
    assert.equal(ipv6RangeText({ from: v('2001:db8::'), to: v('2001:db8::2') }), '2001:db8::-2001:db8::2', 'not a power of two');
  });
});
