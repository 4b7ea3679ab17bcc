/**
 * Runs a compiled {@link Plan} with folded weights, using as few backend kernels as the
 * algebra allows: per ConvNeXt block one fused depthwise conv (with bias), a LayerNorm
 * without affine (six small kernels on the C-channel map), two 2-D fused matmuls with bias
 * (no transposes, stable weight tensors so the wasm backend packs each weight once), a
 * three-kernel GELU and the residual add.
 *
 * Generic TF.js ops only: it runs on any backend, but it is meant for wasm and cpu, where
 * the stock layers' overhead dominates.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { type FoldedWeights, TILE_OFFSETS } from "./fold.ts";
import { gelu } from "./gelu.ts";
import { webGpuGelu, webGpuRowNorm } from "../backend/webgpu_kernels.ts";
import type { BlockStep, Plan, PlanActivation } from "./plan.ts";

const half = (step: BlockStep) => (step.kernelSize - 1) / 2;

function get(weights: FoldedWeights, key: string): tf.Tensor {
  const t = weights[key];
  if (!t) throw new Error(`executePlan: missing folded weight ${key}`);
  return t;
}

/** `(x - mean) / sqrt(var + eps)` over the last axis of a 2-D tensor (biased variance). */
function normalize(x: tf.Tensor, epsilon: number): tf.Tensor {
  if (tf.getBackend() === "webgpu") return webGpuRowNorm(x, epsilon);
  const mean = tf.mean(x, -1, true);
  const centered = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centered), -1, true);
  return tf.mul(centered, tf.rsqrt(tf.add(variance, epsilon)));
}

/** GELU of a block's hidden units: one dispatch on webgpu, else ./gelu.ts's fast kernels. */
function hiddenGelu(x: tf.Tensor): tf.Tensor {
  return tf.getBackend() === "webgpu" ? webGpuGelu(x) : gelu(x);
}

function activate(x: tf.Tensor, activation: PlanActivation): tf.Tensor {
  switch (activation) {
    case "linear":
      return x;
    case "relu":
      return tf.relu(x);
    case "sigmoid":
      return tf.sigmoid(x);
    case "softmax":
      return tf.softmax(x, -1);
    case "gelu":
      if (tf.getBackend() === "webgpu") return webGpuGelu(x);
      return tf.mul(x, tf.mul(0.5, tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
  }
}

/** Flatten all but the last axis, run `f` on the 2-D tensor, and restore the shape. */
function on2d(x: tf.Tensor, f: (x2: tf.Tensor2D) => tf.Tensor): tf.Tensor {
  const shape = x.shape;
  const c = shape[shape.length - 1];
  const y = f(tf.reshape(x, [-1, c]));
  return tf.reshape(y, [...shape.slice(0, -1), y.shape[1]!]);
}

/**
 * One ConvNeXt block with folded weights (see ./fold.ts) on a band of rows:
 * `x + (g W2' + b2')` with `g = z + z erf(z)`, `z = norm(dw(x)) W1' + b1'`.
 *
 * `slab` holds the rows the band's depthwise conv reads; `padTop`/`padBottom` say how many
 * of the conv's zero-padding rows lie outside it (the full map: both `(k - 1) / 2`; a band
 * inside the map: 0 on that side, the slab then carries the neighbouring rows instead).
 * Returns the band's output rows: the slab minus its extra rows.
 *
 * For the whole map as a plain block: `blockOnSlab(x, weights, step, 3, 3)`.
 */
export function blockOnSlab(
  slab: tf.Tensor4D,
  weights: FoldedWeights,
  step: BlockStep,
  padTop: number,
  padBottom: number,
  mlp?: (normalized: tf.Tensor2D) => tf.Tensor,
): tf.Tensor4D {
  const prefix = step.prefix;
  const half = (step.kernelSize - 1) / 2;
  const [n, rows, w, c] = slab.shape;
  const outRows = rows + padTop + padBottom - 2 * half;
  if (outRows <= 0 || padTop > half || padBottom > half) {
    throw new Error(
      `blockOnSlab: a slab of ${rows} rows with padding ${padTop}/${padBottom} has no output rows`,
    );
  }
  if (step.grn && (mlp || padTop !== half || padBottom !== half)) {
    throw new Error(
      `blockOnSlab: ${prefix} has a GRN, which needs whole images (no bands, no MLP split)`,
    );
  }
  const y = depthwise(slab, weights, prefix, step.kernelSize, padTop, padBottom);
  const branch = on2d(y, (y2) => {
    const normalized = normalize(y2, step.epsilon) as tf.Tensor2D;
    if (mlp) return mlp(normalized);
    if (step.grn) return grnMlp(normalized, n, weights, step);
    return mlpPart(
      normalized,
      get(weights, `${prefix}/w1`),
      get(weights, `${prefix}/b1`),
      get(weights, `${prefix}/w2`),
      get(weights, `${prefix}/b2`),
    );
  });
  const residual = outRows === rows
    ? slab
    : tf.slice(slab, [0, half - padTop, 0, 0], [n, outRows, w, c]);
  return tf.add(residual, branch);
}

/**
 * The block's MLP on normalized rows, `gelu(a W1 + b1) W2 (+ b2)`, or a share of it: with
 * the columns `W1[:, j]`, `b1[j]` and rows `W2[j, :]` of a slice `j` of the hidden units
 * (and no `b2`), the shares of a partition of the hidden units sum to the whole MLP.
 */
export function mlpPart(
  a: tf.Tensor2D,
  w1: tf.Tensor,
  b1: tf.Tensor,
  w2: tf.Tensor,
  b2?: tf.Tensor,
): tf.Tensor {
  const z = tf.fused.matMul({ a, b: w1 as tf.Tensor2D, bias: b1 });
  return tf.fused.matMul({ a: hiddenGelu(z) as tf.Tensor2D, b: w2 as tf.Tensor2D, bias: b2 });
}

/**
 * A V2 block's MLP on the normalized rows of `n` whole images: the hidden `h = gelu(a W1 +
 * b1)` scaled per image and hidden unit by `s = gamma Nx + 1` (GRN: `Nx = Gx / (mean_j Gx +
 * eps)`, `Gx` the L2 norm of a hidden unit over the image's pixels), then `(h s) W2 + b2`
 * (b2 holds GRN's `beta W2`, see ./fold.ts).
 */
function grnMlp(
  a: tf.Tensor2D,
  n: number,
  weights: FoldedWeights,
  step: BlockStep,
): tf.Tensor {
  const p = step.prefix;
  const z = tf.fused.matMul({
    a,
    b: get(weights, `${p}/w1`) as tf.Tensor2D,
    bias: get(weights, `${p}/b1`),
  });
  const h = hiddenGelu(z);
  const [m, hidden] = h.shape;
  const h3 = tf.reshape(h, [n, m / n, hidden]);
  const gx = tf.sqrt(tf.sum(tf.square(h3), 1, true));
  const nx = tf.div(gx, tf.add(tf.mean(gx, -1, true), step.grn!.epsilon));
  const s = tf.add(tf.mul(nx, get(weights, `${p}/grn_gamma`)), 1);
  const scaled = tf.reshape(tf.mul(h3, s), [m, hidden]) as tf.Tensor2D;
  return tf.fused.matMul({
    a: scaled,
    b: get(weights, `${p}/w2`) as tf.Tensor2D,
    bias: get(weights, `${p}/b2`),
  });
}

/**
 * Slice `part` of `parts` of a block's hidden units: `{ w1, b1, w2 }` for {@link mlpPart}.
 * New tensors (copies), which the caller keeps and disposes.
 */
export function hiddenSlice(
  weights: FoldedWeights,
  prefix: string,
  part: number,
  parts: number,
): { w1: tf.Tensor; b1: tf.Tensor; w2: tf.Tensor } {
  const w1 = get(weights, `${prefix}/w1`);
  const [c, hidden] = w1.shape;
  const size = Math.ceil(hidden / parts);
  const start = Math.min(hidden, part * size);
  const len = Math.min(size, hidden - start);
  return {
    w1: tf.slice(w1, [0, start], [c, len]),
    b1: tf.slice(get(weights, `${prefix}/b1`), start, len),
    w2: tf.slice(get(weights, `${prefix}/w2`), [start, 0], [len, c]),
  };
}

/**
 * Depthwise conv (with bias) of a block, padded `padTop`/`padBottom` rows and `(k-1)/2`
 * columns on each side. On wasm a 7x7 kernel runs as its four 5x5 tiles (see
 * `splitKernel7`): a tile at offset (r0, c0) is a 5x5 conv whose padding is shifted by the
 * offset; a negative padding (a band's slab that carries more rows than the tile reads) is
 * a crop.
 */
function depthwise(
  x: tf.Tensor4D,
  weights: FoldedWeights,
  prefix: string,
  kernelSize: number,
  padTop: number,
  padBottom: number,
): tf.Tensor4D {
  const half = (kernelSize - 1) / 2;
  const bias = get(weights, `${prefix}/dw_bias`);
  const conv = (
    input: tf.Tensor4D,
    filter: tf.Tensor4D,
    top: number,
    bottom: number,
    left: number,
    right: number,
    withBias: boolean,
  ) => {
    if (top < 0 || bottom < 0) {
      const [n, h, w, c] = input.shape;
      const cropTop = Math.max(0, -top);
      input = tf.slice(input, [0, cropTop, 0, 0], [n, h - cropTop - Math.max(0, -bottom), w, c]);
      top = Math.max(0, top);
      bottom = Math.max(0, bottom);
    }
    const same = top === bottom && left === right && 2 * top === filter.shape[0] - 1 &&
      2 * left === filter.shape[1] - 1;
    return tf.fused.depthwiseConv2d({
      x: input,
      filter,
      strides: 1,
      // Explicit padding works in the kernels (computeConv2DInfo) though the fused op's type
      // only names the string forms; the band and tile tests compare it with "same".
      pad: same ? "same" : [[0, 0], [top, bottom], [left, right], [0, 0]] as unknown as number,
      bias: withBias ? bias : undefined,
    });
  };
  const tiles = weights[`${prefix}/dw_tile0`];
  if (kernelSize !== 7 || !tiles || tf.getBackend() !== "wasm") {
    const kernel = get(weights, `${prefix}/dw_kernel`) as tf.Tensor4D;
    return conv(x, kernel, padTop, padBottom, half, half, true);
  }
  const parts = TILE_OFFSETS.map(([r0, c0], i) =>
    conv(
      x,
      get(weights, `${prefix}/dw_tile${i}`) as tf.Tensor4D,
      padTop - r0,
      padBottom - 2 + r0,
      half - c0,
      half - 2 + c0,
      i === 0,
    )
  );
  return tf.addN(parts);
}

/** Replaces how a plan's blocks run (e.g. split over threads); see {@link executePlan}. */
export type BlockRunner = (
  x: tf.Tensor4D,
  step: BlockStep,
  weights: FoldedWeights,
) => tf.Tensor;

/** One step of a plan on tensors; `read` gives the slots' tensors. One flat switch. */
function runStep(
  step: Plan["steps"][number],
  weights: FoldedWeights,
  read: (slot: number) => tf.Tensor,
  runBlock: BlockRunner | undefined,
): tf.Tensor {
  let out: tf.Tensor;
  switch (step.op) {
    case "block":
      // A GRN block needs whole images: never split by the runner (rows, hidden units).
      out = runBlock && !step.grn
        ? runBlock(read(step.input) as tf.Tensor4D, step, weights)
        : blockOnSlab(read(step.input) as tf.Tensor4D, weights, step, half(step), half(step));
      break;
    case "conv":
    case "depthwise": {
      // Same arguments; only the kernel differs.
      const conv = step.op === "conv" ? tf.fused.conv2d : tf.fused.depthwiseConv2d;
      out = conv({
        x: read(step.input) as tf.Tensor4D,
        filter: get(weights, `${step.prefix}/kernel`) as tf.Tensor4D,
        strides: step.strides,
        pad: step.padding,
        bias: step.bias ? get(weights, `${step.prefix}/bias`) : undefined,
      });
      out = activate(out, step.activation);
      break;
    }
    case "layerNorm":
      out = on2d(read(step.input), (x2) =>
        tf.add(
          tf.mul(normalize(x2, step.epsilon), get(weights, `${step.prefix}/gamma`)),
          get(weights, `${step.prefix}/beta`),
        ));
      break;
    case "dense":
      out = on2d(read(step.input), (x2) =>
        tf.fused.matMul({
          a: x2,
          b: get(weights, `${step.prefix}/kernel`) as tf.Tensor2D,
          bias: step.bias ? get(weights, `${step.prefix}/bias`) : undefined,
        }));
      out = activate(out, step.activation);
      break;
    case "scale":
      out = tf.mul(read(step.input), get(weights, `${step.prefix}/gamma`));
      break;
    case "avgPool":
      out = tf.mean(read(step.input), [1, 2]);
      break;
    case "maxPool":
      out = tf.max(read(step.input), [1, 2]);
      break;
    case "add":
      out = step.inputs.map(read).reduce((a, b) => tf.add(a, b));
      break;
    case "identity":
      out = tf.clone(read(step.input));
      break;
  }
  return out;
}

/**
 * Run `plan` on `input` (`[batch, h, w, channels]`) with `weights` from `foldWeights`;
 * `runBlock`, when given, runs the fused blocks instead of {@link blockOnSlab}.
 * Intermediates are freed as soon as their last reader has run, so peak memory stays near
 * one block's activations. Returns a new tensor the caller owns.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * import { compilePlan } from "./plan.ts";
 * import { foldWeights } from "./fold.ts";
 * import { executePlan } from "./execute.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const images = tf.randomUniform([1, 32, 32, 3]) as tf.Tensor4D;
 * const plan = compilePlan(model);
 * const weights = foldWeights(model, plan);
 * const logits = executePlan(plan, weights, images);
 * if (logits.shape.join() !== "1,3") throw new Error(`shape ${logits.shape}`);
 * ```
 */
export function executePlan(
  plan: Plan,
  weights: FoldedWeights,
  input: tf.Tensor,
  runBlock?: BlockRunner,
): tf.Tensor {
  return tf.tidy(() => {
    const slots: (tf.Tensor | undefined)[] = [];
    slots[plan.input] = input;
    const read = (s: number): tf.Tensor => {
      const t = slots[s];
      if (!t) throw new Error(`executePlan: slot ${s} is empty`);
      return t;
    };
    plan.steps.forEach((step, i) => {
      // A tidy per step frees the step's temporaries at once, not at the end of the plan.
      slots[step.output] = tf.tidy(() => runStep(step, weights, read, runBlock));
      // Free what no later step reads (never the caller's input).
      const reads = step.op === "add" ? step.inputs : [step.input];
      for (const s of reads) {
        if (plan.lastUse[s] === i && s !== plan.input) {
          slots[s]!.dispose();
          slots[s] = undefined;
        }
      }
    });
    return read(plan.output);
  });
}
