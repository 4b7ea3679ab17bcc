/**
 * The state-dict type the checkpoint readers return.
 *
 * @module
 */

/** One tensor of a checkpoint, decoded to float32 in row-major (C) order. */
export interface TensorData {
  /** The dtype stored in the checkpoint (PyTorch name, e.g. `"float16"`). */
  readonly dtype: string;
  /** Shape as in the checkpoint (PyTorch layout, e.g. OIHW for convolutions). */
  readonly shape: number[];
  /** Values, converted to float32 (integers too; they are never weights). */
  readonly data: Float32Array;
}

/** Tensors of a checkpoint by key (e.g. `"stages.0.0.dwconv.weight"`), in file order. */
export type StateDict = Map<string, TensorData>;
