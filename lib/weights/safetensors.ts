/**
 * Reads `.safetensors` files (the format of timm and Hugging Face checkpoints).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then
 * the tensor bytes, offsets relative to the end of the header. Nothing is executed, and
 * every range is checked (inside the data, no two tensors sharing bytes) before any
 * tensor is read.
 *
 * @module
 */

import { decodeToFloat32, type DType, DTYPE_SIZE } from "./dtype.ts";
import { openCheckpointSource } from "./source.ts";
import type { StateDict } from "./types.ts";

export type { StateDict, TensorData } from "./types.ts";

const DTYPES: Record<string, DType> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U8: "uint8",
  BOOL: "bool",
};

/** Largest header accepted (the format's own limit is 100 MB). */
const MAX_HEADER = 100_000_000;

/** A tensor name for an error message: quoted, control characters escaped, shortened. */
function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name);
}

interface HeaderEntry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/** A header entry checked against the format and the data's size (`bad` throws). */
function headerEntry(
  name: string,
  raw: unknown,
  dataSize: number,
  bad: (msg: string) => never,
): HeaderEntry {
  const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  const dtype = DTYPES[String(e?.dtype)];
  if (!dtype) bad(`tensor ${quote(name)} has unsupported dtype ${JSON.stringify(e?.dtype)}`);
  const shape = e.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    bad(`tensor ${quote(name)} has a bad shape ${JSON.stringify(shape)}`);
  }
  const off = e.data_offsets;
  if (
    !Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d)) ||
    off[0] < 0 || off[1] < off[0] || off[1] > dataSize
  ) {
    bad(
      `tensor ${quote(name)} has bad data_offsets ${
        JSON.stringify(off)
      } (data is ${dataSize} bytes; truncated?)`,
    );
  }
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  const [begin, end] = off as number[];
  if (end - begin !== numel * DTYPE_SIZE[dtype]) {
    bad(
      `tensor ${quote(name)} spans ${end - begin} bytes, expected ${numel * DTYPE_SIZE[dtype]}`,
    );
  }
  return { dtype, shape: shape as number[], begin, end };
}

/**
 * Each byte belongs to one tensor at most: overlapping ranges would let a small file decode
 * the same bytes many times over (and no writer produces them).
 */
function checkNoOverlap(entries: Map<string, HeaderEntry>, bad: (msg: string) => never): void {
  const byBegin = [...entries].filter(([, e]) => e.end > e.begin).sort((a, b) =>
    a[1].begin - b[1].begin
  );
  for (let i = 1; i < byBegin.length; i++) {
    const [prevName, prev] = byBegin[i - 1];
    const [name, e] = byBegin[i];
    if (e.begin < prev.end) {
      bad(
        `tensor ${quote(name)} (bytes ${e.begin}..${e.end}) overlaps tensor ${
          quote(prevName)
        } (bytes ${prev.begin}..${prev.end})`,
      );
    }
  }
}

/**
 * Reads a safetensors file (a path, read tensor by tensor, or its bytes) into a
 * {@link StateDict}, every tensor as float32.
 *
 * @example
 * ```ts
 * import { readSafetensors } from "./safetensors.ts";
 * const file = new URL("../../tests/fixtures/checkpoints/timm_mini.safetensors", import.meta.url);
 * const sd = await readSafetensors(file.pathname);
 * console.log([...sd.keys()].slice(0, 3)); // ["stem.0.weight", "stem.0.bias", "stem.1.weight"]
 * ```
 */
export async function readSafetensors(source: string | Uint8Array): Promise<StateDict> {
  const src = await openCheckpointSource(source);
  try {
    const label = src.label;
    const bad = (msg: string): never => {
      throw new Error(`${label}: not a valid safetensors file (${msg})`);
    };
    if (src.size < 8) bad("shorter than its 8-byte header length");
    const n = new DataView((await src.read(0, 8)).slice().buffer).getBigUint64(0, true);
    if (n > BigInt(MAX_HEADER) || 8 + Number(n) > src.size) {
      bad(`header length ${n} exceeds the file size ${src.size} (truncated?)`);
    }
    let header: unknown;
    try {
      header = JSON.parse(
        new TextDecoder("utf-8", { fatal: true }).decode(await src.read(8, Number(n))),
      );
    } catch (e) {
      bad(`header is not JSON: ${(e as Error).message}`);
    }
    if (!header || typeof header !== "object" || Array.isArray(header)) {
      bad("header is not an object");
    }
    const dataStart = 8 + Number(n);
    const dataSize = src.size - dataStart;
    const entries = new Map<string, HeaderEntry>();
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name !== "__metadata__") entries.set(name, headerEntry(name, raw, dataSize, bad));
    }
    checkNoOverlap(entries, bad);
    const out: StateDict = new Map();
    for (const [name, e] of entries) {
      const bytes = await src.read(dataStart + e.begin, e.end - e.begin);
      const numel = e.shape.reduce((a, b) => a * b, 1);
      out.set(name, {
        dtype: e.dtype,
        shape: [...e.shape],
        data: decodeToFloat32(bytes, e.dtype, numel),
      });
    }
    return out;
  } finally {
    src.close();
  }
}
