/**
 * Batched, prefetching image loading for classification and evaluation: while the
 * caller runs the model on batch k, batches k+1..k+prefetch are being read, decoded
 * and transformed by the worker pool.
 *
 * @module
 */

import { defaultWorkerCount, PreprocessPool } from "./pool.ts";
import type { EvalTransformOptions } from "./transform.ts";

/** An image that could not be loaded (missing file, not an image...). */
export interface ImageFailure {
  /** Position in the input list. */
  index: number;
  /** The path (or name) of the input. */
  name: string;
  /** One-line reason naming the file. */
  message: string;
}

/** One batch of preprocessed images. */
export interface ImageBatch {
  /** Positions in the input list of the images in `data`, in order. */
  indices: number[];
  /** Names (paths) of the images in `data`, in order. */
  names: string[];
  /** NHWC float32 pixels of the loaded images: `names.length * size * size * 3`. */
  data: Float32Array;
  /** [names.length, size, size, 3]. */
  shape: [number, number, number, 3];
  /** Inputs of this batch that failed to load; they are left out of `data`. */
  failures: ImageFailure[];
}

/** Options of {@link imageBatches}. */
export interface ImageBatchOptions extends EvalTransformOptions {
  /** Model input size (default 224). */
  size?: number;
  /** Images per batch (default 32). */
  batch?: number;
  /** Batches prepared ahead of the consumer (default 2). */
  prefetch?: number;
  /** Worker threads (default: cores - 1, max 4; 0 = on the main thread). */
  workers?: number;
  /** Display names for inputs given as bytes (default `<bytes #i>`). */
  names?: string[];
}

/** Prepare batch [start, end) of the inputs. Failures are collected, not thrown. */
async function loadBatch(
  pool: PreprocessPool,
  inputs: readonly (string | Uint8Array)[],
  names: readonly string[],
  start: number,
  end: number,
  size: number,
  options: EvalTransformOptions,
): Promise<ImageBatch> {
  const results = await Promise.allSettled(
    inputs.slice(start, end).map((input, k) => pool.run(input, size, options, names[start + k])),
  );
  const per = size * size * 3;
  const ok = results.filter((r) => r.status === "fulfilled").length;
  const data = new Float32Array(ok * per);
  const batch: ImageBatch = {
    indices: [],
    names: [],
    data,
    shape: [ok, size, size, 3],
    failures: [],
  };
  results.forEach((r, k) => {
    const index = start + k;
    if (r.status === "fulfilled") {
      data.set(r.value, batch.indices.length * per);
      batch.indices.push(index);
      batch.names.push(names[index]);
    } else {
      const message = r.reason instanceof Error ? r.reason.message : String(r.reason);
      batch.failures.push({ index, name: names[index], message });
    }
  });
  return batch;
}

/**
 * Iterate over the inputs in batches of preprocessed images (official eval transform),
 * keeping `prefetch` batches in preparation while the consumer works on the current
 * one. Unreadable images are reported in `failures` and skipped, so one bad file does
 * not stop a run. The worker pool is closed when the loop ends or is broken off.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { imageBatches } from "./batches.ts";
 * await selectBackend("cpu");
 * const dir = new URL("../../data/images/", import.meta.url);
 * const paths = ["coffee.jpg", "missing.jpg", "chelsea.png"].map((f) => new URL(f, dir).pathname);
 * for await (const b of imageBatches(paths, { size: 224, batch: 16 })) {
 *   const x = tf.tensor4d(b.data, b.shape);
 *   // ... model.predict(x) ...
 *   x.dispose();
 *   for (const f of b.failures) console.error(f.message);
 * }
 * ```
 */
export async function* imageBatches(
  inputs: readonly (string | Uint8Array)[],
  options: ImageBatchOptions = {},
): AsyncGenerator<ImageBatch, void, undefined> {
  const size = options.size ?? 224;
  const batch = options.batch ?? 32;
  const prefetch = options.prefetch ?? 2;
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`imageBatches: batch must be an integer >= 1, got ${batch}`);
  }
  if (!Number.isInteger(prefetch) || prefetch < 0) {
    throw new RangeError(`imageBatches: prefetch must be an integer >= 0, got ${prefetch}`);
  }
  const names = inputs.map((input, i) =>
    typeof input === "string" ? input : options.names?.[i] ?? `<bytes #${i}>`
  );
  const transform: EvalTransformOptions = {
    cropPct: options.cropPct,
    mean: options.mean,
    std: options.std,
  };
  const pool = new PreprocessPool(options.workers ?? defaultWorkerCount());
  const inFlight: Promise<ImageBatch>[] = [];
  let next = 0;
  /** Start batches until `limit` are in preparation. */
  const launch = (limit: number) => {
    while (next < inputs.length && inFlight.length < limit) {
      const start = next;
      next = Math.min(inputs.length, next + batch);
      const p = loadBatch(pool, inputs, names, start, next, size, transform);
      // Avoid unhandled-rejection noise if the consumer stops early.
      p.catch(() => {});
      inFlight.push(p);
    }
  };
  try {
    while (true) {
      launch(prefetch + 1);
      if (inFlight.length === 0) break;
      const current = await inFlight.shift()!;
      // Keep `prefetch` batches in preparation while the consumer works on this one.
      launch(prefetch);
      yield current;
    }
  } finally {
    // A consumer that stops early waits for the decodes it started: none outlives the loop.
    await pool.close();
    await Promise.allSettled(inFlight);
  }
}
