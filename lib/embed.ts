/**
 * Image embeddings: the pooled, normed features a ConvNeXt's head classifies (the official
 * `forward_features`), with the model's own preprocessing, as `classify` applies it.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import {
  checkBatchOptions,
  type ClassifyImages,
  expandInputs,
  pixelBatches,
  runBatch,
} from "./classify.ts";
import { ConvNeXtModel } from "./infer/model.ts";
import { evalTransformOptions, modelPreprocessing, type Preprocessing } from "./model/config.ts";
import { HEAD_FC, HEAD_NORM } from "./model/names.ts";

/** Options of {@link embed}. */
export interface EmbedOptions {
  /** Images per forward pass (default 16). */
  batch?: number;
  /** Preprocessing worker threads (default: cores - 1, at most 4; 0 = main thread). */
  workers?: number;
  /** Display names of the inputs, used in error messages (default as in `classify`). */
  names?: readonly string[];
  /**
   * Input preparation (default: the model's, `modelConfig(model).preprocessing`). Its
   * `inModel` is ignored: a model that normalizes itself (`includePreprocessing`) always
   * gets 0..255 pixels, any other normalized ones.
   */
  preprocessing?: Preprocessing;
}

/** The embedding model of each model, built once (it shares the model's layers). */
const embedders = new WeakMap<tf.LayersModel, tf.LayersModel>();

/**
 * The model from the input to the embedding: `model` itself when it ends there (built with
 * `includeTop: false` and `pooling: "avg"` or `"max"`), else a model sharing its layers up to
 * `head_norm`. A ConvNeXtModel, so that `predict` takes the optimized path where the model's
 * does.
 *
 * @throws Error for a model without a pooled embedding (`includeTop: false` without pooling).
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "./backend/select.ts";
 * import { embeddingModel } from "./embed.ts";
 * import { createConvNeXt } from "./model/convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3, inputShape: [32, 32, 3] });
 * const features = embeddingModel(model); // input -> head_norm, the same weights
 * const e = features.predict(tf.zeros([2, 32, 32, 3])) as tf.Tensor;
 * console.log(e.shape); // [2, 16]
 * ```
 */
export function embeddingModel(model: tf.LayersModel): tf.LayersModel {
  const cached = embedders.get(model);
  if (cached) return cached;
  const names = new Set(model.layers.map((l) => l.name));
  const output = model.outputs[0];
  let embedder: tf.LayersModel;
  if (model.outputs.length === 1 && output.rank === 2 && !names.has(HEAD_FC)) {
    embedder = model; // already ends with the pooled (and normed) features
  } else if (names.has(HEAD_NORM)) {
    embedder = new ConvNeXtModel({
      inputs: model.inputs,
      outputs: model.getLayer(HEAD_NORM).output as tf.SymbolicTensor,
      name: `${model.name}_embedding`,
    });
  } else {
    throw new Error(
      `embed: model "${model.name}" has no pooled embedding (no head_norm layer, output [${
        output.shape.map((d) => d ?? "batch").join(", ")
      }]): build it with includeTop or pooling: "avg"`,
    );
  }
  embedders.set(model, embedder);
  return embedder;
}

/**
 * The embedding of each image: the globally pooled, layer-normed features that the head
 * classifies (the official `forward_features`; `head_norm`'s output, 768 values for
 * convnext_tiny). Images are what {@link classify} takes (paths, bytes, `RgbImage`s,
 * `tf.Tensor3D`/`Tensor4D` of 0..255 RGB pixels) and are preprocessed as it does, with the
 * model's configuration (resize, center crop, mean/std).
 *
 * Like tfjs-models' `infer(img, true)`, the result is a tensor: a `tf.Tensor2D`
 * `[images, channels]`, one row per image in input order (the images of a `Tensor4D` one row
 * each), that the caller disposes; `await e.array()` gives `number[][]`. The head applied
 * to it gives `classify`'s logits. An unreadable image is an error naming it.
 *
 * @example
 * ```ts
 * import { embed, loadModel } from "./mod.ts";
 * // loadModel("convnext_tiny_1k_224") gives the official weights (downloaded once); here a
 * // small checkpoint shaped like them, from the tests.
 * const file = new URL("../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const model = await loadModel(file.pathname);
 * const photo = new URL("../data/images/chelsea.png", import.meta.url).pathname;
 * const e = await embed(model, [photo]);
 * console.log(e.shape); // [1, C]: C = the last stage's width (768 for convnext_tiny)
 * const [row] = await e.array(); // number[]
 * e.dispose();
 * if (row.length !== e.shape[1]) throw new Error(`${row.length}`);
 * ```
 */
export async function embed(
  model: tf.LayersModel,
  images: ClassifyImages,
  options: EmbedOptions = {},
): Promise<tf.Tensor2D> {
  const batch = options.batch ?? 16;
  checkBatchOptions("embed", batch);
  const embedder = embeddingModel(model);
  const dim = embedder.outputs[0].shape[1]!;
  // 0..255 pixels for a model that normalizes itself (includePreprocessing), else normalized.
  const t = evalTransformOptions(modelPreprocessing(model, options.preprocessing));
  const { inputs, names } = await expandInputs(images, options.names, "embed");
  const out = new Float32Array(inputs.length * dim);
  for await (const b of pixelBatches(inputs, names, t, batch, options.workers)) {
    if (b.failures.length > 0) throw new Error(`embed: ${b.failures[0].message}`);
    if (b.indices.length === 0) continue;
    const rows = await runBatch(embedder, b, t.size);
    b.indices.forEach((index, row) => {
      out.set(rows.subarray(row * dim, (row + 1) * dim), index * dim);
    });
  }
  return tf.tensor2d(out, [inputs.length, dim]);
}
