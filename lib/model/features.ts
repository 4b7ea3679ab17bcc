/**
 * Feature extraction from a ConvNeXt classification model, sharing its layers (and so
 * its weights): the four stage feature maps and the pooled, normed embedding.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { HEAD_NORM, parseLayerName } from "./names.ts";

/** Which outputs {@link createFeatureExtractor} returns. */
export interface FeatureOptions {
  /** Include the four stage outputs (default true). */
  stages?: boolean;
  /** Include the pooled, normed embedding `head_norm` (default true when the model has it). */
  embedding?: boolean;
}

/**
 * Names of the layers whose outputs are the four "stage" feature maps.
 *
 * Hierarchical models: the last block of each stage (`stages_{i}_block_{last}`), strides
 * 4, 8, 16 and 32. Isotropic models have a single stage; their four outputs are the blocks
 * ending each quarter of the depth (all at stride 16), as is usual for plain backbones.
 *
 * @throws Error when the model does not have ConvNeXt's layer names.
 */
export function stageOutputNames(model: tf.LayersModel): string[] {
  const last = new Map<number, string>();
  const blocks: string[] = [];
  for (const { name } of model.layers) {
    const where = parseLayerName(name);
    // Block outputs only (no sublayer part); layers are in topological order.
    if (where?.kind !== "block" || where.part !== undefined) continue;
    if (where.stage === undefined) blocks.push(name);
    else if (where.stage < 4) last.set(where.stage, name);
  }
  if (last.size === 4) return [0, 1, 2, 3].map((i) => last.get(i)!);
  if (blocks.length > 0) {
    const quarter = blocks.length / 4;
    return [1, 2, 3, 4].map((q) => blocks[Math.max(0, Math.round(q * quarter) - 1)]);
  }
  throw new Error(
    `stageOutputNames: model "${model.name}" has no ConvNeXt stage layers (stages_{i}_block_{j} or blocks_{j})`,
  );
}

/**
 * Build a model that outputs the stage feature maps and/or the embedding of `model`,
 * without copying weights: it reuses the same layers.
 *
 * Outputs, in order: stage 0..3 feature maps (NHWC), then the embedding `[batch, C]`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { createFeatureExtractor } from "./features.ts";
 * await selectBackend("cpu");
 * // A small ConvNeXt (dims 8, 8, 16, 16); convnext_tiny at 224 px gives 56, 28, 14 and 7 px maps.
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const features = createFeatureExtractor(model);
 * const [s0, s1, s2, s3, embedding] = features.predict(tf.zeros([1, 64, 64, 3])) as tf.Tensor[];
 * console.log(s0.shape, s1.shape, s2.shape, s3.shape, embedding.shape);
 * // [1, 16, 16, 8] [1, 8, 8, 8] [1, 4, 4, 16] [1, 2, 2, 16] [1, 16]
 * if (embedding.shape.join() !== "1,16") throw new Error(`embedding ${embedding.shape}`);
 * ```
 */
export function createFeatureExtractor(
  model: tf.LayersModel,
  options: FeatureOptions = {},
): tf.LayersModel {
  const outputs: tf.SymbolicTensor[] = [];
  if (options.stages ?? true) {
    for (const name of stageOutputNames(model)) {
      outputs.push(model.getLayer(name).output as tf.SymbolicTensor);
    }
  }
  const hasNorm = model.layers.some((l) => l.name === HEAD_NORM);
  if (options.embedding === true && !hasNorm) {
    throw new Error(
      `createFeatureExtractor: model "${model.name}" has no head_norm layer (build it with includeTop or pooling: "avg")`,
    );
  }
  if (options.embedding ?? hasNorm) {
    outputs.push(model.getLayer(HEAD_NORM).output as tf.SymbolicTensor);
  }
  if (outputs.length === 0) {
    throw new Error("createFeatureExtractor: no outputs requested (stages and embedding are off)");
  }
  return tf.model({ inputs: model.inputs, outputs, name: `${model.name}_features` });
}
