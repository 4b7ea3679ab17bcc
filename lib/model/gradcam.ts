/**
 * Grad-CAM (Selvaraju et al. 2017) for ConvNeXt: which regions of the last stage drive a
 * class score.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { stageOutputNames } from "./features.ts";

/** Options of {@link gradCam}. */
export interface GradCamOptions {
  /** Class to explain; default: the top-scoring class. */
  classIndex?: number;
  /** Feature-map layer; default: the last stage's output. */
  layerName?: string;
}

/** A class activation map over a feature map's grid. */
export interface GradCamResult {
  /** Row-major `height * width` values in [0, 1] (ReLU of the weighted maps, max-normalized). */
  data: Float32Array;
  /** Grid height (the feature map's). */
  height: number;
  /** Grid width. */
  width: number;
  /** The class explained. */
  classIndex: number;
  /** That class's score (logit). */
  score: number;
}

/**
 * Grad-CAM of one image: the channels of the feature map `A` weighted by the spatial mean of
 * `d score / d A`, summed, passed through ReLU and scaled to [0, 1].
 *
 * Works for a layer whose successors in the model form a simple chain (the head after the
 * last stage), which is where Grad-CAM is usually taken.
 *
 * @param input one preprocessed image, `[1, H, W, 3]`.
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { gradCam } from "./gradcam.ts";
 * await selectBackend("cpu");
 * // A small random ConvNeXt; a loaded one (convnext_tiny at 224 px: a 7x7 map) works the same.
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const cam = await gradCam(model, tf.randomUniform([1, 64, 64, 3]) as tf.Tensor4D);
 * console.log(cam.height, cam.width); // 2 2: the last stage's map, stride 32
 * if (cam.data.length !== cam.height * cam.width) throw new Error("not one value per cell");
 * ```
 */
export async function gradCam(
  model: tf.LayersModel,
  input: tf.Tensor4D,
  options: GradCamOptions = {},
): Promise<GradCamResult> {
  if (input.rank !== 4 || input.shape[0] !== 1) {
    throw new Error(`gradCam: input must be one image [1, H, W, C], got [${input.shape}]`);
  }
  const layerName = options.layerName ?? stageOutputNames(model).at(-1)!;
  const index = model.layers.findIndex((l) => l.name === layerName);
  if (index < 0) throw new Error(`gradCam: model "${model.name}" has no layer "${layerName}"`);
  const head = model.layers.slice(index + 1);
  // Each successor must consume exactly the previous layer's output.
  head.forEach((layer, i) => {
    const inbound = layer.inboundNodes[0]?.inboundLayers ?? [];
    const previous = i === 0 ? layerName : head[i - 1].name;
    if (inbound.length !== 1 || inbound[0].name !== previous) {
      throw new Error(
        `gradCam: the layers after "${layerName}" are not a simple chain (at "${layer.name}"); use the last stage's output`,
      );
    }
  });
  const features = tf.model({ inputs: model.inputs, outputs: model.getLayer(layerName).output });
  const scores = (x: tf.Tensor) => head.reduce((t, l) => l.apply(t) as tf.Tensor, x) as tf.Tensor2D;
  const maps = features.predict(input) as tf.Tensor4D;
  try {
    // Values are read with await (no dataSync): webgpu cannot read synchronously under Deno.
    const logits = tf.tidy(() => scores(maps));
    const numClasses = logits.shape[1];
    let values: Float32Array;
    try {
      values = await logits.data() as Float32Array;
    } finally {
      logits.dispose();
    }
    const classIndex = options.classIndex ??
      values.reduce((best, v, i) => (v > values[best] ? i : best), 0);
    if (!(Number.isInteger(classIndex) && classIndex >= 0 && classIndex < numClasses)) {
      throw new Error(
        `gradCam: classIndex must be an integer in [0, ${numClasses}), got ${classIndex}`,
      );
    }
    const cam = tf.tidy(() => {
      const grads = tf.grad((a: tf.Tensor) => tf.sum(tf.slice(scores(a), [0, classIndex], [1, 1])))(
        maps,
      );
      const weights = tf.mean(grads, [1, 2], true); // [1, 1, 1, C]
      const cam = tf.relu(tf.sum(tf.mul(maps, weights), -1)).squeeze([0]) as tf.Tensor2D;
      // ReLU makes the map >= 0: an all-zero map (max 0) stays zero.
      return tf.divNoNan(cam, tf.max(cam)) as tf.Tensor2D;
    });
    try {
      return {
        data: await cam.data() as Float32Array,
        height: cam.shape[0],
        width: cam.shape[1],
        classIndex,
        score: values[classIndex],
      };
    } finally {
      cam.dispose();
    }
  } finally {
    maps.dispose();
  }
}
