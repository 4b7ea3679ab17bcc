/**
 * CRC-32 (the ISO-HDLC polynomial zip uses), to detect corrupt checkpoint entries.
 *
 * @module
 */

const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 of `bytes`, as an unsigned 32-bit number (the value zip headers store).
 *
 * @example
 * ```ts
 * import { crc32 } from "./crc32.ts";
 * const crc = crc32(new TextEncoder().encode("123456789")); // the standard check value
 * if (crc !== 0xcbf43926) throw new Error(crc.toString(16));
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
