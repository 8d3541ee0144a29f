// The kernel's jhash (Bob Jenkins' lookup3, as include/linux/jhash.h has it)
// and nft's `jhash … mod N seed S` on top of it (net/netfilter/nft_hash.c):
// `uplinkd explain` computes the bucket of a `balance: hash` connection the
// way the kernel does, so it can name the exact uplink (README "uplinkd explain").

const rol32 = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

/** jhash(key, length, initval) on a little-endian CPU (the kernel reads the key as host-order words). */
export function jhash(key: Uint8Array, initval: number): number {
  let length = key.length;
  let a = (0xdeadbeef + length + initval) >>> 0;
  let b = a;
  let c = a;
  const word = (at: number) => (key[at] | (key[at + 1] << 8) | (key[at + 2] << 16) | (key[at + 3] << 24)) >>> 0;
  let k = 0;
  const mix = () => {
    a = (a - c) >>> 0; a = (a ^ rol32(c, 4)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol32(a, 6)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol32(b, 8)) >>> 0; b = (b + a) >>> 0;
    a = (a - c) >>> 0; a = (a ^ rol32(c, 16)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol32(a, 19)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol32(b, 4)) >>> 0; b = (b + a) >>> 0;
  };
  const final = () => {
    c = (c ^ b) >>> 0; c = (c - rol32(b, 14)) >>> 0;
    a = (a ^ c) >>> 0; a = (a - rol32(c, 11)) >>> 0;
    b = (b ^ a) >>> 0; b = (b - rol32(a, 25)) >>> 0;
    c = (c ^ b) >>> 0; c = (c - rol32(b, 16)) >>> 0;
    a = (a ^ c) >>> 0; a = (a - rol32(c, 4)) >>> 0;
    b = (b ^ a) >>> 0; b = (b - rol32(a, 14)) >>> 0;
    c = (c ^ b) >>> 0; c = (c - rol32(b, 24)) >>> 0;
  };
  while (length > 12) {
    a = (a + word(k)) >>> 0;
    b = (b + word(k + 4)) >>> 0;
    c = (c + word(k + 8)) >>> 0;
    mix();
    length -= 12;
    k += 12;
  }
  if (length === 0) return c;
  // The tail, byte by byte, into the low bytes first (the kernel's switch falls through).
  const tail = (at: number, shift: number) => (key[k + at] << shift) >>> 0;
  if (length >= 9) c = (c + [0, 8, 16, 24].slice(0, length - 8).reduce((s, sh, i) => s + tail(8 + i, sh), 0)) >>> 0;
  if (length >= 5) b = (b + [0, 8, 16, 24].slice(0, Math.min(4, length - 4)).reduce((s, sh, i) => s + tail(4 + i, sh), 0)) >>> 0;
  a = (a + [0, 8, 16, 24].slice(0, Math.min(4, length)).reduce((s, sh, i) => s + tail(i, sh), 0)) >>> 0;
  final();
  return c;
}

/** nft's `jhash <key> mod <modulus> seed <seed>`: the hash scaled into 0 … modulus-1 (reciprocal_scale). */
export function nftJhash(key: Uint8Array, modulus: number, seed: number): number {
  return Number((BigInt(jhash(key, seed)) * BigInt(modulus)) >> 32n);
}
