/**
 * Folds a model's weights into the tensors a {@link Plan} runs with.
 *
 * Per ConvNeXt block (exact algebra, only float rounding changes):
 * - LayerNorm's affine goes into the first pointwise layer: `W1' = diag(gamma) W1`,
 *   `b1' = beta W1 + b1`;
 * - layer scale goes into the second layer: `W2' = W2 diag(gamma)`, `b2' = b2 * gamma`;
 * - a V2 block's GRN beta goes into the second layer's bias, `b2' = beta W2 + b2` (before
 *   the layer scale), and its gamma stays (`<prefix>/grn_gamma`): the GRN's per-image scale
 *   `gamma Nx + 1` of the hidden units is computed at run time;
 * - a 7x7 depthwise kernel is also split into four 5x5 tiles ({@link splitKernel7}).
 *
 * A model's input normalization `(x / 255 - mean) / std` goes into the stem convolution that
 * reads it ({@link foldInputNormalization}), so the plan takes 0..255 pixels with no step of
 * its own.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import type { DenseStep, InputNormalizationFold, Plan, SpatialStep } from "./plan.ts";

/** Folded weights by key (`<prefix>/<name>`). */
export type FoldedWeights = Record<string, tf.Tensor>;

type Layer = tf.layers.Layer;

/** The weight `name` (last path segment, e.g. "kernel") of a layer. */
function weight(layer: Layer, name: string): tf.Tensor {
  const found = layer.weights.filter((w) => w.originalName.split("/").pop() === name);
  if (found.length !== 1) {
    throw new Error(`foldWeights: layer ${layer.name} has no single weight "${name}"`);
  }
  return found[0].read();
}

function optionalWeight(layer: Layer, name: string): tf.Tensor | null {
  return layer.weights.some((w) => w.originalName.split("/").pop() === name)
    ? weight(layer, name)
    : null;
}

/**
 * The variables a plan's weights come from, in a fixed order. Their `dataId`s change on
 * every assignment (`setWeights`, `fit`, `loadWeights`), which is how a cache of folded
 * weights knows it is stale: see {@link weightsVersion}.
 */
export function sourceVariables(model: tf.LayersModel, plan: Plan): tf.Tensor[] {
  const out: tf.Tensor[] = [];
  for (const source of plan.sources) {
    for (const name of source.layers) {
      for (const w of model.getLayer(name).weights) out.push(w.read());
    }
  }
  return out;
}

/** The current data ids of {@link sourceVariables}: equal arrays mean unchanged weights. */
export function weightsVersion(variables: tf.Tensor[]): object[] {
  return variables.map((v) => v.dataId as object);
}

/** True when two {@link weightsVersion} results are equal. */
export function sameVersion(a: object[], b: object[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

/**
 * Split a 7x7 depthwise kernel `[7, 7, C, 1]` into four 5x5 kernels whose sum, each applied
 * at its offset, is the 7x7 conv: tile (r0, c0) covers kernel rows r0..r0+4 and columns
 * c0..c0+4 (offsets 0 or 2) and keeps only the taps no earlier tile has (the rest are zeros).
 *
 * Why: the wasm backend's XNNPACK has fast depthwise kernels up to 25 taps; a 49-tap
 * kernel takes a generic path 2.5 times slower than these four 5x5 convolutions.
 * Order: (0,0), (0,2), (2,0), (2,2); see {@link TILE_OFFSETS}.
 */
export function splitKernel7(kernel: tf.Tensor): tf.Tensor4D[] {
  return tf.tidy(() => {
    const [, , c, m] = kernel.shape;
    return TILE_OFFSETS.map(([r0, c0]) => {
      // Rows/columns this tile owns: 0..4 for offset 0, 5..6 for offset 2.
      const rows = r0 === 0 ? [0, 5] : [5, 2];
      const cols = c0 === 0 ? [0, 5] : [5, 2];
      const part = tf.slice(kernel, [rows[0], cols[0], 0, 0], [rows[1], cols[1], c, m]);
      // Place the part inside the 5x5 window that starts at (r0, c0).
      const top = rows[0] - r0;
      const left = cols[0] - c0;
      return tf.pad(part, [[top, 5 - top - rows[1]], [left, 5 - left - cols[1]], [0, 0], [
        0,
        0,
      ]]) as tf.Tensor4D;
    });
  });
}

/** Offsets (kernel row, column) of the 5x5 tiles of {@link splitKernel7}. */
export const TILE_OFFSETS: readonly [number, number][] = [[0, 0], [0, 2], [2, 0], [2, 2]];

/**
 * A "valid" Conv2D's kernel `[kh, kw, C, O]` and bias `[O]` (null: none) with the input
 * normalization `(x / 255 - mean) / std` folded in, exact algebra:
 * `conv(W, (x / 255 - m) / s) + b = conv(W / (255 s), x) + (b - sum_{kh,kw,c} W m / s)`.
 * Only for convolutions without padding: a padded tap reads 0 in both forms, but 0 stands
 * for the normalized value there and for the pixel value here (the plan folds "valid" only).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { foldInputNormalization } from "./fold.ts";
 * await selectBackend("cpu");
 * const fold = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
 * const w = tf.ones([1, 1, 3, 1]);
 * const { kernel, bias } = foldInputNormalization(w, null, fold);
 * // A white pixel normalizes to 2 per channel; three channels of weight 1 give 6.
 * const y = tf.add(tf.sum(tf.mul(tf.fill([3], 255), tf.reshape(kernel, [3]))), bias);
 * console.log(y.dataSync()[0]); // about 6
 * if (Math.abs(y.dataSync()[0] - 6) > 1e-4) throw new Error(`${y.dataSync()}`);
 * ```
 */
export function foldInputNormalization(
  kernel: tf.Tensor,
  bias: tf.Tensor | null,
  fold: InputNormalizationFold,
): { kernel: tf.Tensor; bias: tf.Tensor } {
  return tf.tidy(() => {
    const channels = kernel.shape[2];
    if (kernel.rank !== 4 || fold.mean.length !== channels || fold.std.length !== channels) {
      throw new Error(
        `foldWeights: an input normalization of ${fold.mean.length} channels cannot fold into a kernel of shape [${kernel.shape}]`,
      );
    }
    // Per input channel, broadcast over [kh, kw, C, O]; the factors in float64, then rounded.
    const perChannel = (v: number[]) => tf.tensor4d(v, [1, 1, channels, 1]);
    const scaled = tf.mul(kernel, perChannel(fold.std.map((s) => 1 / (255 * s))));
    const shift = tf.sum(tf.mul(kernel, perChannel(fold.mean.map((m, c) => m / fold.std[c]))), [
      0,
      1,
      2,
    ]);
    return { kernel: scaled, bias: bias ? tf.sub(bias, shift) : tf.neg(shift) };
  });
}

/**
 * The kernel and bias of a conv, depthwise or dense step (copies), with a conv's input
 * normalization folded in.
 */
function layerWeights(model: tf.LayersModel, step: SpatialStep | DenseStep): FoldedWeights {
  const layer = model.getLayer(step.prefix);
  const kernel = weight(layer, step.op === "depthwise" ? "depthwise_kernel" : "kernel");
  const bias = optionalWeight(layer, "bias");
  if (step.op === "conv" && step.inputNormalization) {
    const folded = foldInputNormalization(kernel, bias, step.inputNormalization);
    return { [`${step.prefix}/kernel`]: folded.kernel, [`${step.prefix}/bias`]: folded.bias };
  }
  const out: FoldedWeights = { [`${step.prefix}/kernel`]: tf.clone(kernel) };
  if (step.bias) {
    if (!bias) throw new Error(`foldWeights: layer ${layer.name} has no bias`);
    out[`${step.prefix}/bias`] = tf.clone(bias);
  }
  return out;
}

/**
 * Compute the folded weights of `plan` from `model`'s current variables. The caller owns
 * the returned tensors (dispose them when done).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * import { compilePlan } from "./plan.ts";
 * import { foldWeights } from "./fold.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const plan = compilePlan(model);
 * const weights = foldWeights(model, plan); // the caller owns these tensors
 * tf.dispose(Object.values(weights));
 * ```
 */
export function foldWeights(model: tf.LayersModel, plan: Plan): FoldedWeights {
  return tf.tidy(() => {
    const out: FoldedWeights = {};
    for (const step of plan.steps) {
      switch (step.op) {
        case "block": {
          const source = plan.sources.find((s) => s.prefix === step.prefix)!;
          const [dw, norm, fc1, fc2] = source.layers.slice(0, 4).map((n) => model.getLayer(n));
          const scaleLayer = source.layers.map((n) => model.getLayer(n)).find((l) =>
            l.getClassName() === "LayerScale"
          );
          const p = step.prefix;
          const dwKernel = weight(dw, "depthwise_kernel");
          out[`${p}/dw_kernel`] = tf.clone(dwKernel);
          out[`${p}/dw_bias`] = tf.clone(weight(dw, "bias"));
          if (step.kernelSize === 7) {
            splitKernel7(dwKernel).forEach((t, i) => out[`${p}/dw_tile${i}`] = t);
          }
          const gamma = weight(norm, "gamma");
          const beta = weight(norm, "beta");
          const w1 = weight(fc1, "kernel");
          const b1 = weight(fc1, "bias");
          // beta W1 as a broadcast product and a sum: a matMul would make the wasm backend
          // pack and cache a copy of W1 for as long as the variable lives.
          const betaW1 = tf.sum(tf.mul(tf.reshape(beta, [-1, 1]), w1), 0);
          out[`${p}/w1`] = tf.mul(w1, tf.reshape(gamma, [-1, 1]));
          out[`${p}/b1`] = tf.add(betaW1, b1);
          const w2 = weight(fc2, "kernel");
          let b2 = weight(fc2, "bias");
          if (step.grn) {
            // GRN: y = h (gamma Nx + 1) + beta, so y W2 + b2 = (h s) W2 + (beta W2 + b2) with
            // the per-image scale s = gamma Nx + 1 computed at run time from gamma.
            const grn = source.layers.map((n) => model.getLayer(n)).find((l) =>
              l.getClassName() === "GlobalResponseNorm"
            );
            if (!grn) throw new Error(`foldWeights: block ${p} has no GlobalResponseNorm layer`);
            out[`${p}/grn_gamma`] = tf.clone(weight(grn, "gamma"));
            const betaW2 = tf.sum(tf.mul(tf.reshape(weight(grn, "beta"), [-1, 1]), w2), 0);
            b2 = tf.add(betaW2, b2);
          }
          if (scaleLayer) {
            const ls = weight(scaleLayer, "gamma");
            out[`${p}/w2`] = tf.mul(w2, ls);
            out[`${p}/b2`] = tf.mul(b2, ls);
          } else {
            out[`${p}/w2`] = tf.clone(w2);
            out[`${p}/b2`] = tf.clone(b2);
          }
          break;
        }
        case "conv":
        case "depthwise":
        case "dense":
          Object.assign(out, layerWeights(model, step));
          break;
        case "layerNorm": {
          const layer = model.getLayer(step.prefix);
          out[`${step.prefix}/gamma`] = tf.clone(weight(layer, "gamma"));
          out[`${step.prefix}/beta`] = tf.clone(weight(layer, "beta"));
          break;
        }
        case "scale": {
          out[`${step.prefix}/gamma`] = tf.clone(weight(model.getLayer(step.prefix), "gamma"));
          break;
        }
        default:
          break; // no weights
      }
    }
    return out;
  });
}

/** Dispose every tensor of a {@link FoldedWeights}. */
export function disposeWeights(weights: FoldedWeights): void {
  for (const t of Object.values(weights)) t.dispose();
}
