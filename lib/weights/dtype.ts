/**
 * Decoding raw little-endian tensor bytes of the dtypes checkpoints use into float32.
 *
 * @module
 */

/** Element types understood by the checkpoint readers (PyTorch names). */
export type DType =
  | "float32"
  | "float64"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

/** Bytes per element of each {@link DType}. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** True for the floating-point dtypes (the ones that hold weights). */
export function isFloatDType(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float64" || dtype === "float16" ||
    dtype === "bfloat16";
}

/**
 * Converts an IEEE half-precision bit pattern to a number (exact: every half is a float32).
 *
 * @example
 * ```ts
 * import { halfToFloat } from "./dtype.ts";
 * console.log(halfToFloat(0x3c00), halfToFloat(0xc000)); // 1 -2
 * ```
 */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let halfTable: Float32Array | undefined;

/**
 * Decodes `count` elements of `dtype` stored little-endian (or big-endian when
 * `bigEndian`) at the start of `bytes` into a new Float32Array.
 * Integers beyond 2^24 lose precision, which is fine: they are never weights.
 *
 * @example
 * ```ts
 * import { decodeToFloat32 } from "./dtype.ts";
 * const values = decodeToFloat32(new Uint8Array([0, 0x3c]), "float16", 1); // little-endian
 * console.log(values); // Float32Array(1) [1]
 * if (values[0] !== 1) throw new Error(`${values}`);
 * ```
 */
export function decodeToFloat32(
  bytes: Uint8Array,
  dtype: DType,
  count: number,
  bigEndian = false,
): Float32Array {
  const size = DTYPE_SIZE[dtype];
  if (bytes.length < count * size) {
    throw new Error(
      `tensor data has ${bytes.length} bytes, expected ${count * size} (${count} x ${dtype})`,
    );
  }
  let src = bytes.subarray(0, count * size);
  if (bigEndian && size > 1) {
    src = src.slice();
    for (let i = 0; i < src.length; i += size) src.subarray(i, i + size).reverse();
  }
  const out = new Float32Array(count);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  switch (dtype) {
    case "float32":
      if (src.byteOffset % 4 === 0) out.set(new Float32Array(src.buffer, src.byteOffset, count));
      else for (let i = 0; i < count; i++) out[i] = dv.getFloat32(4 * i, true);
      break;
    case "float64":
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(8 * i, true);
      break;
    case "float16": {
      if (!halfTable) {
        halfTable = new Float32Array(65536);
        for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
      }
      const t = halfTable;
      for (let i = 0; i < count; i++) out[i] = t[src[2 * i] | (src[2 * i + 1] << 8)];
      break;
    }
    case "bfloat16": {
      // bfloat16 is the top half of a float32.
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = (src[2 * i] << 16 | src[2 * i + 1] << 24) >>> 0;
      break;
    }
    case "int64":
      for (let i = 0; i < count; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      break;
    case "int32":
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    case "int16":
      for (let i = 0; i < count; i++) out[i] = dv.getInt16(2 * i, true);
      break;
    case "int8":
      for (let i = 0; i < count; i++) out[i] = dv.getInt8(i);
      break;
    case "uint8":
    case "bool":
      for (let i = 0; i < count; i++) out[i] = src[i];
      break;
  }
  return out;
}
