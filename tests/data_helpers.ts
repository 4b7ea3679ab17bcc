/**
 * Shared helpers of the tests/data_*_test.ts files: fixture loading and comparisons
 * against tests/fixtures/preprocess/ (made by tools/fixtures/make_preprocess.py).
 *
 * @module
 */

/** Repository root (tests run from anywhere). */
export const ROOT = new URL("../", import.meta.url);

/** Absolute path of a repository-relative file. */
export function repoPath(rel: string): string {
  return new URL(rel, ROOT).pathname;
}

/** expected.json, typed loosely. */
export interface Expected {
  decode: { file: string; pil_mode: string; width: number; height: number; sha256: string }[];
  resize: { file: string; width: number; height: number; sha256: string }[];
  transform: {
    file: string;
    size: number;
    crop_pct: number;
    crop_sha256: string;
    float_sha256: string;
    shape: number[];
    sample_stride: number;
    samples: number[];
    sum: number;
  }[];
  cmyk: { sha256: string };
  normalize_table: { file: string; mean: number[]; std: number[] };
  small_resize: { file: string; input: string; width: number; height: number };
}

/** Load the reference values. */
export async function loadExpected(): Promise<Expected> {
  return JSON.parse(
    await Deno.readTextFile(repoPath("tests/fixtures/preprocess/expected.json")),
  );
}

/** Hex SHA-256 of a typed array's bytes. */
export async function sha256(data: ArrayBufferView): Promise<string> {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Count and largest size of differing elements. */
export function diffStats(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
): { count: number; max: number } {
  let count = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d !== 0) {
      count++;
      if (d > max) max = d;
    }
  }
  return { count, max };
}
