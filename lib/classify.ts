/**
 * Image classification with a ConvNeXt: the model's own preprocessing (the official eval
 * transform), batched and prefetched loading, softmax probabilities and the top-k classes
 * with their names.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { checkWebGpuLimits } from "./backend/webgpu_limits.ts";
import { imageBatches, type ImageFailure } from "./data/batches.ts";
import type { RgbImage } from "./util/image.ts";
import { imagenetClasses } from "./data/imagenet.ts";
import { evalTransform, type EvalTransformOptions } from "./data/transform.ts";
import { numClasses } from "./model/architecture.ts";
import {
  evalTransformOptions,
  labelsFor,
  modelConfig,
  modelPreprocessing,
  type Preprocessing,
} from "./model/config.ts";
import { HEAD_FC } from "./model/names.ts";
import { fetchLabels22k } from "./weights/fetch.ts";

/**
 * An image to classify: a file path, encoded bytes (JPEG, PNG...), decoded RGB pixels, or a
 * tensor of RGB pixels in 0..255, height x width x channels as `readImage` decodes them: a
 * `tf.Tensor3D` `[height, width, 3]` is one image, a `tf.Tensor4D` `[n, height, width, 3]`
 * is n images (each its own result). Tensor values are rounded to whole numbers (the model's
 * transform resizes 8-bit pixels, as PIL does); the tensors are read, not disposed.
 */
export type ClassifyInput = string | Uint8Array | RgbImage | tf.Tensor3D | tf.Tensor4D;

/** The images of {@link classify}, {@link classifyEach} and `embed`: a list, or one tensor. */
export type ClassifyImages = readonly ClassifyInput[] | tf.Tensor3D | tf.Tensor4D;

/** One of the top classes of an image. */
export interface Prediction {
  /** Class index (logit position). */
  index: number;
  /** Class name. */
  label: string;
  /** Softmax probability of the class, in [0, 1]. */
  probability: number;
}

/** The top classes of one image. */
export interface Classification {
  /** The path, or the display name of bytes / pixels (`<bytes #i>`, `<image #i>`). */
  image: string;
  /** The `topK` most probable classes, most probable first. */
  top: Prediction[];
}

/**
 * One input's outcome in {@link classifyEach}: its classes, or why it could not be read.
 * `index` is the position in the input list, the images of a `tf.Tensor4D` counting one each.
 */
export type ClassifiedItem =
  | { index: number; image: string; top: Prediction[] }
  | { index: number; image: string; error: string };

/** Options of {@link classify} and {@link classifyEach}. */
export interface ClassifyOptions {
  /** Classes reported per image (default 5; at most the model's class count). */
  topK?: number;
  /** Class names by index (default: from the model's metadata, see {@link classLabels}). */
  labels?: readonly string[];
  /** Images per forward pass (default 16). */
  batch?: number;
  /** Preprocessing worker threads (default: cores - 1, at most 4; 0 = main thread). */
  workers?: number;
  /**
   * Display names of the inputs, by position (the images of a `tf.Tensor4D` count one each;
   * default: the path, `<bytes #i>`, `<image #i>` or `<tensor #i>`).
   */
  names?: readonly string[];
  /**
   * Input preparation (default: the model's, `modelConfig(model).preprocessing`). Its
   * `inModel` is ignored: a model that normalizes itself (`includePreprocessing`) always
   * gets 0..255 pixels, any other normalized ones.
   */
  preprocessing?: Preprocessing;
  /**
   * Called for each image that cannot be read (missing file, not an image); the image is
   * then left out of the result. Without it, {@link classify} throws on the first one.
   */
  onError?: (failure: ImageFailure) => void;
}

/**
 * The class count of a classifier: {@link numClasses} of its head, and an error naming the
 * output shape for a model without one (a feature extractor's embedding is no class list).
 */
export function classifierClasses(model: tf.LayersModel): number {
  const n = numClasses(model);
  if (n === 0) {
    throw new Error(
      `the model's output has shape [${
        model.outputs[0].shape.map((d) => d ?? "batch").join(", ")
      }], expected [batch, classes]: it has no classification head`,
    );
  }
  return n;
}

/**
 * The class names of a model's outputs: ImageNet-22k names (from the official
 * `label_to_words.json`, downloaded once) for 22k models, the ImageNet-1k names for 1k
 * models, else `"class N"`. Models without metadata are recognized by their class count
 * (1000 or 21841).
 *
 * @example
 * ```ts
 * import { classLabels } from "./classify.ts";
 * import { selectBackend } from "./backend/select.ts";
 * import { createConvNeXt } from "./model/convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 1000, inputShape: [32, 32, 3] });
 * const labels = await classLabels(model); // a 1000-class head: ImageNet-1k's names
 * console.log(labels[281]); // "tabby"
 * ```
 */
export async function classLabels(model: tf.LayersModel): Promise<string[]> {
  const n = classifierClasses(model);
  // Fine-tuned models (deno task finetune) carry their class names.
  const own = (model.getUserDefinedMetadata() as { classes?: unknown } | undefined)?.classes;
  if (Array.isArray(own) && own.length === n && own.every((c) => typeof c === "string")) {
    return own as string[];
  }
  const kind = modelConfig(model).labels ?? labelsFor(n);
  if (kind === "imagenet-1k" && n === 1000) return imagenetClasses();
  if (kind === "imagenet-22k" && n === 21841) return await fetchLabels22k();
  return Array.from({ length: n }, (_, i) => `class ${i}`);
}

/** Softmax of one row of logits, computed in float64 (stable: the max is subtracted). */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/**
 * Indices of the `k` largest values, largest first; equal values keep index order.
 *
 * @example
 * ```ts
 * import { topIndices } from "./classify.ts";
 * console.log(topIndices([0.1, 3, 2, 3], 3)); // [1, 3, 2]
 * ```
 */
export function topIndices(values: ArrayLike<number>, k: number): number[] {
  const kk = Math.min(k, values.length);
  const top: number[] = [];
  // A sorted insertion into k slots: O(n k), fast for the small k used here.
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (top.length === kk && !(v > values[top[kk - 1]])) continue;
    let j = top.length === kk ? kk - 1 : top.length;
    while (j > 0 && v > values[top[j - 1]]) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = i;
  }
  return top;
}

/** What the head puts out: logits (default) or probabilities (softmax/sigmoid heads). */
function headActivation(model: tf.LayersModel): string {
  try {
    const config = model.getLayer(HEAD_FC).getConfig() as { activation?: string };
    return config.activation ?? "linear";
  } catch {
    return "linear"; // not one of our models: assume logits
  }
}

function isRgbImage(x: unknown): x is RgbImage {
  return typeof x === "object" && x !== null && !(x instanceof Uint8Array) &&
    !(x instanceof tf.Tensor) && typeof (x as RgbImage).width === "number" &&
    (x as RgbImage).data instanceof Uint8Array;
}

/** An input once tensors are split into images: what the batching below reads. */
type SingleInput = string | Uint8Array | RgbImage;

/**
 * The images of a tensor input (`[h, w, 3]` or `[n, h, w, 3]`, 0..255), as 8-bit RGB.
 *
 * @throws TypeError naming the input for another shape, or values that are not finite or
 *   lie outside 0..255 (e.g. already normalized or mean/std-scaled pixels below 0).
 */
async function tensorImages(t: tf.Tensor, at: number, caller: string): Promise<RgbImage[]> {
  const shape = t.shape;
  if ((t.rank !== 3 && t.rank !== 4) || shape[t.rank - 1] !== 3) {
    throw new TypeError(
      `${caller}: tensor input #${at} has shape [${shape}], expected [height, width, 3] or [batch, height, width, 3]`,
    );
  }
  const [n, height, width] = t.rank === 4 ? shape : [1, ...shape];
  const values = await t.data();
  const data = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = Math.round(values[i]);
    if (!(v >= 0 && v <= 255)) {
      throw new TypeError(
        `${caller}: tensor input #${at} holds ${
          values[i]
        }: expected RGB pixels in 0..255 (the model's preprocessing is applied here)`,
      );
    }
    data[i] = v;
  }
  const per = height * width * 3;
  return Array.from({ length: n }, (_, k) => ({
    width,
    height,
    data: data.subarray(k * per, (k + 1) * per),
  }));
}

/**
 * Internal, shared by classify and `embed` (lib/embed.ts).
 * The inputs with every tensor split into its images, and each image's display name
 * (`names[i]` when given, else the path, `<bytes #i>`, `<image #i>` or `<tensor #i>`).
 */
export async function expandInputs(
  images: ClassifyImages,
  names: readonly string[] | undefined,
  caller: string,
): Promise<{ inputs: SingleInput[]; names: string[] }> {
  const list: readonly ClassifyInput[] = images instanceof tf.Tensor ? [images] : images;
  const inputs: SingleInput[] = [];
  const kinds: string[] = [];
  for (const [at, img] of list.entries()) {
    if (img instanceof tf.Tensor) {
      const split = await tensorImages(img, at, caller);
      inputs.push(...split);
      kinds.push(...split.map(() => "tensor"));
    } else if (typeof img === "string" || img instanceof Uint8Array || isRgbImage(img)) {
      inputs.push(img);
      kinds.push(img instanceof Uint8Array ? "bytes" : "image");
    } else {
      throw new TypeError(
        `${caller}: input #${at} is not a path, bytes, an RgbImage or a tf.Tensor3D/4D`,
      );
    }
  }
  const name = (img: SingleInput, i: number) =>
    names?.[i] ?? (typeof img === "string" ? img : `<${kinds[i]} #${i}>`);
  return { inputs, names: inputs.map(name) };
}

/** A batch of preprocessed images: their positions, NHWC pixels and the inputs that failed. */
export interface PixelBatch {
  /** Positions in the input list of the images in `data`, in order. */
  indices: number[];
  /** `indices.length * size * size * 3` preprocessed values. */
  data: Float32Array;
  /** Inputs of this batch that could not be read; left out of `data`. */
  failures: ImageFailure[];
}

/** Decoded images need no decoding: transform them on this thread, `batch` at a time. */
function* rgbBatches(
  images: readonly RgbImage[],
  offset: number,
  names: readonly string[],
  batch: number,
  t: EvalTransformOptions & { size: number },
): Generator<PixelBatch> {
  const per = t.size * t.size * 3;
  for (let start = 0; start < images.length; start += batch) {
    const chunk = images.slice(start, start + batch);
    const out: PixelBatch = {
      indices: [],
      data: new Float32Array(chunk.length * per),
      failures: [],
    };
    chunk.forEach((img, k) => {
      const index = offset + start + k;
      try {
        if (!(img.width > 0 && img.height > 0 && img.data.length === img.width * img.height * 3)) {
          throw new Error(
            `expected ${img.width}x${img.height}x3 = ${
              img.width * img.height * 3
            } bytes, got ${img.data.length}`,
          );
        }
        const at = out.indices.length * per;
        evalTransform(img, t.size, t, out.data.subarray(at, at + per));
        out.indices.push(index);
      } catch (e) {
        out.failures.push({
          index,
          name: names[index],
          message: `cannot use image '${names[index]}': ${(e as Error).message}`,
        });
      }
    });
    out.data = out.data.subarray(0, out.indices.length * per);
    yield out;
  }
}

/** Consecutive inputs of one kind: files/bytes go through the worker pool, pixels do not. */
function runsOf(images: readonly SingleInput[]): { start: number; end: number; rgb: boolean }[] {
  const runs: { start: number; end: number; rgb: boolean }[] = [];
  images.forEach((img, i) => {
    const rgb = isRgbImage(img);
    const last = runs[runs.length - 1];
    if (last && last.rgb === rgb) last.end = i + 1;
    else runs.push({ start: i, end: i + 1, rgb });
  });
  return runs;
}

/**
 * Internal, shared by classify and `embed`.
 * The inputs preprocessed with transform `t`, `batch` at a time and in input order: files
 * and bytes are decoded and transformed in worker threads (the next batches while the
 * caller runs the model), pixels on this thread.
 */
export async function* pixelBatches(
  inputs: readonly SingleInput[],
  names: readonly string[],
  t: EvalTransformOptions & { size: number },
  batch: number,
  workers?: number,
): AsyncGenerator<PixelBatch, void, undefined> {
  for (const run of runsOf(inputs)) {
    if (run.rgb) {
      const rgb = inputs.slice(run.start, run.end) as RgbImage[];
      yield* rgbBatches(rgb, run.start, names, batch, t);
      continue;
    }
    const files = imageBatches(inputs.slice(run.start, run.end) as (string | Uint8Array)[], {
      ...t,
      batch,
      workers,
      names: names.slice(run.start, run.end),
    });
    // imageBatches numbers inputs from 0 within the run.
    for await (const b of files) {
      yield {
        indices: b.indices.map((i) => i + run.start),
        data: b.data,
        failures: b.failures.map((f) => ({ ...f, index: f.index + run.start })),
      };
    }
  }
}

/** Internal: `model`'s output for one preprocessed batch, read back (tensors disposed). */
export async function runBatch(
  model: tf.LayersModel,
  b: PixelBatch,
  size: number,
): Promise<Float32Array> {
  const shape: [number, number, number, number] = [b.indices.length, size, size, 3];
  // On webgpu: a clear error (before upload) when a tensor exceeds the buffer limits.
  checkWebGpuLimits(model, shape);
  const x = tf.tensor4d(b.data.subarray(0, shape[0] * size * size * 3), shape);
  const y = tf.tidy(() => model.predict(x) as tf.Tensor);
  x.dispose();
  try {
    return await y.data() as Float32Array;
  } finally {
    y.dispose();
  }
}

/** Internal: checks the options of classify and `embed`: `batch`, and `topK` when given. */
export function checkBatchOptions(caller: string, batch: number, topK?: number): void {
  if (topK !== undefined && (!Number.isInteger(topK) || topK < 1)) {
    throw new RangeError(`${caller}: topK must be an integer >= 1, got ${topK}`);
  }
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`${caller}: batch must be an integer >= 1, got ${batch}`);
  }
}

/**
 * Classify images one batch at a time, yielding each input's outcome in input order:
 * its top classes, or the one-line reason it could not be read (the other images go on).
 * The next batches are decoded and transformed in worker threads while the model runs.
 *
 * @example
 * ```ts
 * import { classifyEach } from "./classify.ts";
 * import { selectBackend } from "./backend/select.ts";
 * import { createConvNeXt } from "./model/convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 1000, inputShape: [32, 32, 3] });
 * const photo = new URL("../data/images/coffee.jpg", import.meta.url).pathname;
 * for await (const item of classifyEach(model, [photo, "missing.jpg"])) {
 *   if ("error" in item) console.error(item.error);
 *   else console.log(item.image, item.top[0].label);
 * }
 * ```
 */
export async function* classifyEach(
  model: tf.LayersModel,
  images: ClassifyImages,
  options: Omit<ClassifyOptions, "onError"> = {},
): AsyncGenerator<ClassifiedItem, void, undefined> {
  const topK = options.topK ?? 5;
  const batch = options.batch ?? 16;
  checkBatchOptions("classify", batch, topK);
  const n = classifierClasses(model);
  const labels = options.labels ?? await classLabels(model);
  if (labels.length !== n) {
    throw new Error(`classify: ${labels.length} labels given for a model with ${n} classes`);
  }
  // 0..255 pixels for a model that normalizes itself (includePreprocessing), else normalized.
  const t = evalTransformOptions(modelPreprocessing(model, options.preprocessing));
  const probabilities = headActivation(model) !== "linear";
  const { inputs, names } = await expandInputs(images, options.names, "classify");
  for await (const b of pixelBatches(inputs, names, t, batch, options.workers)) {
    const done = new Map<number, ClassifiedItem>();
    for (const f of b.failures) {
      done.set(f.index, { index: f.index, image: names[f.index], error: f.message });
    }
    if (b.indices.length > 0) {
      const out = await runBatch(model, b, t.size);
      b.indices.forEach((index, row) => {
        const values = out.subarray(row * n, (row + 1) * n);
        const p = probabilities ? Float64Array.from(values) : softmax(values);
        const top = topIndices(p, topK).map((c) => ({
          index: c,
          label: labels[c],
          probability: p[c],
        }));
        done.set(index, { index, image: names[index], top });
      });
    }
    yield* [...done.values()].sort((a, b) => a.index - b.index);
  }
}

/**
 * Classify images (paths, encoded bytes, decoded RGB or tensors of 0..255 RGB pixels, see
 * {@link ClassifyInput}) with a ConvNeXt: the model's preprocessing (official eval
 * transform, 224 by default), softmax of the logits, and the `topK` classes with their names
 * per image, in input order.
 *
 * @throws Error naming the file for an unreadable image, unless `onError` is given (then
 *   that image is reported there and left out of the result).
 * @example
 * ```ts
 * import { classify, loadModel, selectBackend } from "./mod.ts";
 * await selectBackend();
 * // loadModel("convnext_tiny_1k_224") gives the official weights (downloaded once); here a
 * // small checkpoint shaped like them, from the tests, with 10 classes.
 * const file = new URL("../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const model = await loadModel(file.pathname);
 * const photo = new URL("../data/images/chelsea.png", import.meta.url).pathname;
 * const [result] = await classify(model, [photo], { topK: 3 });
 * console.log(result.top[0]); // { index, label, probability }
 * ```
 */
export async function classify(
  model: tf.LayersModel,
  images: ClassifyImages,
  options: ClassifyOptions = {},
): Promise<Classification[]> {
  const results: Classification[] = [];
  for await (const item of classifyEach(model, images, options)) {
    if ("error" in item) {
      if (!options.onError) throw new Error(item.error);
      options.onError({ index: item.index, name: item.image, message: item.error });
    } else {
      results.push({ image: item.image, top: item.top });
    }
  }
  return results;
}
