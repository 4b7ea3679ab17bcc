/**
 * Models for fine-tuning: load the starting point, read its architecture, and rebuild it
 * with the classes, drop path and head initialization of the new task, copying every
 * weight by name.
 *
 * @module
 */
import { OptionError } from "../util/errors.ts";
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { createConvNeXt } from "../model/convnext.ts";
import { TruncatedNormal } from "../model/layers.ts";
import { architectureOf, numClasses } from "../model/architecture.ts";
import { HEAD_FC, layerOfWeight } from "../model/names.ts";
import { loadModel } from "../weights/pretrained.ts";

/**
 * Load the starting model: a zoo name, a converted model directory, a `model.json`, or a
 * `.pth`/`.safetensors` checkpoint (see `loadModel`). A model object is returned as is.
 */
export async function loadBaseModel(source: string | tf.LayersModel): Promise<tf.LayersModel> {
  if (typeof source !== "string") return source;
  try {
    return await loadModel(source);
  } catch (e) {
    throw new OptionError(
      "model",
      (name) => `${name("model")} ${source}: ${(e as Error).message.split("\n")[0]}`,
    );
  }
}

/** Options of {@link rebuildForTraining}. */
export interface RebuildOptions {
  /** Classes of the new task. */
  numClasses: number;
  /** Stochastic depth rate (linear over blocks, as the official code). */
  dropPathRate?: number;
  /** Factor on the new head's initial weights (official fine-tuning: 0.001). */
  headInitScale?: number;
  /** Seed of the new head's initialization. */
  seed?: number;
}

/**
 * A copy of `base` for training on `numClasses` classes: the same architecture with drop
 * path, every weight copied by name, and a new head (truncated normal, std
 * 0.02 * headInitScale, zero bias) when the class count differs or `base` has no head.
 *
 * @returns the new model and whether its head is new.
 * @example
 * ```ts
 * import { rebuildForTraining } from "./model_setup.ts";
 * import { selectBackend } from "../backend/select.ts";
 * import { loadModel } from "../weights/pretrained.ts";
 * await selectBackend("cpu");
 * // loadModel("convnext_tiny_1k_224") for the real weights; here a small checkpoint file.
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const base = await loadModel(file.pathname);
 * const opts = { numClasses: 5, dropPathRate: 0.1, headInitScale: 0.001 };
 * const { model, newHead } = rebuildForTraining(base, opts);
 * console.log(model.outputs[0].shape, newHead); // [null, 5] true
 * ```
 */
export function rebuildForTraining(
  base: tf.LayersModel,
  options: RebuildOptions,
): { model: tf.LayersModel; newHead: boolean } {
  const { spec } = architectureOf(base);
  const newHead = numClasses(base) !== options.numClasses;
  const model = createConvNeXt(spec, {
    numClasses: options.numClasses,
    dropPathRate: options.dropPathRate ?? 0,
    headInitScale: options.headInitScale ?? 1,
    randomInit: false, // everything is copied below, except a new head
    name: base.name,
  });
  const source = new Map(base.weights.map((w) => [w.originalName, w]));
  for (const w of model.weights) {
    const isHead = layerOfWeight(w.originalName) === HEAD_FC;
    if (isHead && newHead) continue;
    const from = source.get(w.originalName);
    if (!from || from.shape.join() !== w.shape.join()) {
      model.dispose();
      throw new Error(
        `rebuild: the starting model has no weight "${w.originalName}" of shape [${w.shape}]`,
      );
    }
    w.write(from.read());
  }
  if (newHead) {
    const scale = options.headInitScale ?? 1;
    const kernel = model.getLayer(HEAD_FC).weights[0];
    const init = new TruncatedNormal({
      stddev: 0.02 * scale,
      minval: -2 * scale,
      maxval: 2 * scale,
      seed: options.seed,
    });
    const value = init.apply(kernel.shape as number[]);
    kernel.write(value);
    value.dispose();
  }
  return { model, newHead };
}
