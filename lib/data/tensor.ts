/**
 * Preprocessed images as TensorFlow.js tensors (NHWC float32, our models are
 * channels-last).
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { decodeImage, readImage } from "./decode.ts";
import { evalTransform, type EvalTransformOptions } from "./transform.ts";
import { imageBatches } from "./batches.ts";

/**
 * Load one image (path or encoded bytes) with the official eval transform as a
 * [1, size, size, 3] tensor.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { loadImageTensor } from "./tensor.ts";
 * await selectBackend("cpu");
 * const x = await loadImageTensor(new URL("../../data/images/coffee.jpg", import.meta.url).pathname, 224);
 * console.log(x.shape); // [1, 224, 224, 3], ready for model.predict(x)
 * x.dispose();
 * ```
 */
export async function loadImageTensor(
  input: string | Uint8Array,
  size = 224,
  options: EvalTransformOptions = {},
): Promise<tf.Tensor4D> {
  const rgb = typeof input === "string" ? await readImage(input) : await decodeImage(input);
  return tf.tensor4d(evalTransform(rgb, size, options), [1, size, size, 3]);
}

/**
 * Load several images into one [n, size, size, 3] tensor (using the worker pool).
 * Any unreadable image is an error naming the file.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { preprocessBatch } from "./tensor.ts";
 * await selectBackend("cpu");
 * const dir = new URL("../../data/images/", import.meta.url);
 * const paths = ["coffee.jpg", "chelsea.png"].map((f) => new URL(f, dir).pathname);
 * const x = await preprocessBatch(paths, 384); // shape [2, 384, 384, 3]
 * x.dispose();
 * ```
 */
export async function preprocessBatch(
  inputs: readonly (string | Uint8Array)[],
  size = 224,
  options: EvalTransformOptions & { workers?: number } = {},
): Promise<tf.Tensor4D> {
  const parts: Float32Array[] = [];
  for await (
    const b of imageBatches(inputs, { ...options, size, batch: Math.max(1, inputs.length) })
  ) {
    if (b.failures.length > 0) throw new Error(b.failures[0].message);
    parts.push(b.data);
  }
  const data = parts.length === 1 ? parts[0] : new Float32Array(0);
  return tf.tensor4d(data, [inputs.length, size, size, 3]);
}
