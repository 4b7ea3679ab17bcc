/**
 * Axis permutation of row-major float32 arrays (PyTorch to TF.js weight layouts).
 *
 * @module
 */

/**
 * Permutes the axes of a row-major array: output axis `k` is input axis `perm[k]`,
 * as `numpy.transpose(x, perm)`. Supports rank up to 4.
 *
 * @example
 * ```ts
 * import { transpose } from "./transpose.ts";
 * // A conv kernel OIHW -> HWIO: transpose(w, [O, I, H, W], [2, 3, 1, 0]); here a 2x3 matrix.
 * const t = transpose(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3], [1, 0]);
 * console.log(t.data); // Float32Array(6) [1, 4, 2, 5, 3, 6]
 * if (t.data.join() !== "1,4,2,5,3,6") throw new Error(`${t.data}`);
 * ```
 */
export function transpose(
  data: Float32Array,
  shape: readonly number[],
  perm: readonly number[],
): { shape: number[]; data: Float32Array } {
  const rank = shape.length;
  if (rank > 4 || perm.length !== rank || [...perm].sort().some((p, i) => p !== i)) {
    throw new Error(`transpose: bad permutation [${perm}] for shape [${shape}]`);
  }
  const numel = shape.reduce((a, b) => a * b, 1);
  if (data.length !== numel) {
    throw new Error(`transpose: ${data.length} values for shape [${shape}]`);
  }
  const inStrides = new Array<number>(rank);
  for (let d = rank - 1, s = 1; d >= 0; d--) {
    inStrides[d] = s;
    s *= shape[d];
  }
  const outShape = perm.map((p) => shape[p]);
  // Pad to rank 4 with leading size-1 axes so one loop nest serves every rank.
  const pad = 4 - rank;
  const n = [...new Array<number>(pad).fill(1), ...outShape];
  const s = [...new Array<number>(pad).fill(0), ...perm.map((p) => inStrides[p])];
  const out = new Float32Array(numel);
  let o = 0;
  for (let a = 0; a < n[0]; a++) {
    for (let b = 0; b < n[1]; b++) {
      for (let c = 0; c < n[2]; c++) {
        let i = a * s[0] + b * s[1] + c * s[2];
        for (let d = 0; d < n[3]; d++, i += s[3]) out[o++] = data[i];
      }
    }
  }
  return { shape: outShape, data: out };
}
