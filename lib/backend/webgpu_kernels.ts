/**
 * WebGPU kernels of our own for ConvNeXt's GELU and LayerNorm and for the optimizer, each one
 * dispatch where TF.js ops take several passes over the tensor. The optimized inference plan
 * (lib/infer/execute.ts) and the model's layers use them on the webgpu backend:
 *
 * - {@link webGpuGelu}: the exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, with erf as the
 *   kernel engine computes it (XLA's rational function, within 2e-7 of erf). The TF.js ops
 *   take 5 kernels (tfjs-backend-webgpu has no fused GELU activation), the wasm plan's
 *   sigmoid-polynomial form (../infer/gelu.ts) 12, on the block's widest tensor (4C
 *   channels per pixel).
 * - {@link webGpuRowNorm}: LayerNorm without its affine (folded into the next matmul) over
 *   the last axis: the mean, then the centered variance (two passes, as PyTorch), in one
 *   thread per row. The TF.js ops take 7 kernels (Mean, Sub, Square, Mean, Add, Rsqrt,
 *   Mul).
 * - {@link webGpuGeluTrainable}: {@link webGpuGelu}, differentiable: one dispatch forward, one
 *   for the gradient, where TF.js takes 5 and about 10 (the model's GELU activations on
 *   webgpu: ./webgpu_layers.ts).
 * - {@link webGpuLayerNorm}: LayerNorm with its affine, differentiable (the model's
 *   LayerNorm layer on webgpu: training, feature maps): one dispatch forward where the
 *   TF.js ops take 9; backward five, where TF.js's autodiff of those ops takes about 20:
 *   the input's gradient in one (a thread per row), gamma's and beta's as column sums of
 *   `dy` and `dy` times the normalized input.
 * - {@link webGpuMovingAverage} and {@link webGpuAdamWUpdate}: AdamW's update of a parameter
 *   (lib/train/optimizer.ts) in three dispatches (each moment, then the parameter) where the
 *   TF.js ops take 13-14, and the model's EMA (lib/train/ema.ts) in one where they take 3: a
 *   convnext_tiny step's optimizer dispatches drop from ~2,500 to 546.
 *
 * Registered for "webgpu" only, under their own kernel names; the programs follow
 * tfjs-backend-webgpu's `WebGPUProgram` interface (`runWebGPUProgram` adds the bindings,
 * uniforms and `main`'s caller around `getUserCode()`).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

/** Kernel name of {@link webGpuGelu}. */
export const GELU_KERNEL = "ConvnextGeluErf";
/** Kernel name of {@link webGpuRowNorm}. */
export const ROW_NORM_KERNEL = "ConvnextRowNorm";
/** Kernel name of the GELU's gradient (`dy * GELU'(x)`). */
export const GELU_GRAD_KERNEL = "ConvnextGeluGrad";
/** Kernel name of {@link webGpuLayerNorm}'s forward pass. */
export const LAYER_NORM_KERNEL = "ConvnextLayerNorm";
/** Kernel name of {@link webGpuLayerNorm}'s input gradient. */
export const LAYER_NORM_GRAD_KERNEL = "ConvnextLayerNormGrad";
/** Kernel name of {@link webGpuMovingAverage} (`square` false). */
export const MOVING_AVERAGE_KERNEL = "ConvnextMovingAverage";
/** Kernel name of {@link webGpuMovingAverage} with `square` (AdamW's second moment). */
export const MOVING_SQUARE_AVERAGE_KERNEL = "ConvnextMovingSquareAverage";
/** Kernel name of {@link webGpuAdamWUpdate}. */
export const ADAMW_UPDATE_KERNEL = "ConvnextAdamWUpdate";
/** Every kernel this module registers for "webgpu". */
export const WEBGPU_OWN_KERNELS = [
  GELU_KERNEL,
  GELU_GRAD_KERNEL,
  ROW_NORM_KERNEL,
  LAYER_NORM_KERNEL,
  LAYER_NORM_GRAD_KERNEL,
  MOVING_AVERAGE_KERNEL,
  MOVING_SQUARE_AVERAGE_KERNEL,
  ADAMW_UPDATE_KERNEL,
] as const;

const WORKGROUP = 128;

// erf(x) as kernels.c's gelu4k computes it: x clamped to [-4, 4] (beyond, erf is +-1 in
// float32), then an odd degree-13 polynomial over an even degree-8 one.
const ERF_WGSL = `
fn erfXla(v : f32) -> f32 {
  let x = clamp(v, -4.0, 4.0);
  let x2 = x * x;
  var p = -2.72614225801306e-10 * x2 + 2.77068142495902e-08;
  p = p * x2 - 2.10102402082508e-06;
  p = p * x2 - 5.69250639462346e-05;
  p = p * x2 - 7.34990630326855e-04;
  p = p * x2 - 2.95459980854025e-03;
  p = p * x2 - 1.60960333262415e-02;
  var q = -1.45660718464996e-05 * x2 - 2.13374055278905e-04;
  q = q * x2 - 1.68282697438203e-03;
  q = q * x2 - 7.37332916720468e-03;
  q = q * x2 - 1.42647390514189e-02;
  return p * x / q;
}`;

/** The fields of tfjs-backend-webgpu's `WebGPUProgram` this project's programs use. */
export interface WebGpuProgram {
  variableNames: string[];
  outputShape: number[];
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  shaderKey: string;
  size?: boolean;
  uniforms?: string;
  getUserCode(): string;
}

/** A flat program: one invocation per `count` (elements or rows) of `outputShape`. */
export function flatProgram(
  outputShape: number[],
  count: number,
  shaderKey: string,
  code: string,
): WebGpuProgram {
  return {
    variableNames: ["A"],
    outputShape,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    // runWebGPUProgram reshapes a dispatch beyond the adapter's per-dimension limit.
    dispatch: [Math.ceil(count / WORKGROUP), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    shaderKey,
    getUserCode: () => code,
  };
}

/** Runs `program` on `inputs` (bound in its `variableNames` order) with `uniforms`. */
export function runProgram(
  backend: WebGPUBackend,
  program: WebGpuProgram,
  inputs: tf.TensorInfo[],
  uniforms: { type: "int32" | "float32"; data: number[] }[],
): tf.TensorInfo {
  // Our programs are structurally TF.js's WebGPUProgram, whose class the package does not export.
  type TfjsProgram = Parameters<WebGPUBackend["runWebGPUProgram"]>[0];
  return backend.runWebGPUProgram(program as unknown as TfjsProgram, inputs, "float32", uniforms);
}

/**
 * An elementwise program over `shape`: `value` (WGSL) computes the output at `index` from
 * `v = A[index]` (and the other inputs, indexed alike) and the f32 `uniforms`.
 */
function elementwiseProgram(
  shape: number[],
  shaderKey: string,
  inputs: string[],
  value: string,
  uniforms: readonly string[] = [],
): WebGpuProgram {
  const size = shape.reduce((a, b) => a * b, 1);
  return {
    ...flatProgram(
      shape,
      size,
      shaderKey,
      `${ERF_WGSL}
fn main(index : i32) {
  if (index < uniforms.size) {
    let v = A[index];
    setOutputAtIndex(index, ${value});
  }
}`,
    ),
    variableNames: inputs,
    size: true,
    uniforms: uniforms.map((u) => `${u} : f32,`).join(" "),
  };
}

// GELU(x) = x Phi(x), Phi the normal CDF.
const GELU_WGSL = "0.5 * v * (1.0 + erfXla(v * 0.7071067811865476))";
// dy * GELU'(x) = dy (Phi(x) + x phi(x)), phi the normal density.
const GELU_GRAD_WGSL = "Dy[index] * (0.5 * (1.0 + erfXla(v * 0.7071067811865476)) + " +
  "v * 0.3989422804014327 * exp(-0.5 * v * v))";

// x decay + y (1 - decay): an exponential moving average (AdamW's first moment, EMA), and of
// y squared (AdamW's second moment); the same float32 operations in the same order as
// lib/train/optimizer.ts's and lib/train/ema.ts's TF.js ops.
const MOVING_AVERAGE_WGSL = "v * uniforms.decay + Y[index] * uniforms.rest";
const MOVING_SQUARE_AVERAGE_WGSL = "v * uniforms.decay + Y[index] * Y[index] * uniforms.rest";
const AVERAGE_UNIFORMS = ["decay", "rest"] as const;
// AdamW's update of a parameter from its new moments, as lib/train/optimizer.ts's ops:
// p keep - m / (sqrt(v) / bc2Sqrt + eps) stepSize, keep = 1 - lr wd, stepSize = lr / bc1.
const ADAMW_UPDATE_WGSL =
  "v * uniforms.keep - M[index] / (sqrt(V[index]) / uniforms.bc2Sqrt + uniforms.eps) * " +
  "uniforms.stepSize";
const ADAMW_UNIFORMS = ["keep", "bc2Sqrt", "eps", "stepSize"] as const;

// A row's mean and 1 / sqrt(variance + eps), two passes as PyTorch (A: the rows).
const ROW_STATS_WGSL = `
  let cols = uniforms.cols;
  let base = row * cols;
  var sum = 0.0;
  for (var c = 0; c < cols; c++) {
    sum += A[base + c];
  }
  let mean = sum / f32(cols);
  var squares = 0.0;
  for (var c = 0; c < cols; c++) {
    let d = A[base + c] - mean;
    squares += d * d;
  }
  let r = inverseSqrt(squares / f32(cols) + uniforms.eps);`;

/** What each row's program writes once ROW_STATS_WGSL has the row's mean and r. */
const ROW_OUTPUTS = {
  [ROW_NORM_KERNEL]: `
  for (var c = 0; c < cols; c++) {
    setOutputAtIndex(base + c, (A[base + c] - mean) * r);
  }`,
  [LAYER_NORM_KERNEL]: `
  for (var c = 0; c < cols; c++) {
    setOutputAtIndex(base + c, (A[base + c] - mean) * r * Gamma[c] + Beta[c]);
  }`,
  // dx = r (g - mean(g) - xhat mean(g xhat)), g = dy gamma: LayerNorm's input gradient.
  [LAYER_NORM_GRAD_KERNEL]: `
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = 0; c < cols; c++) {
    let g = Dy[base + c] * Gamma[c];
    sg += g;
    sgx += g * (A[base + c] - mean) * r;
  }
  let mg = sg / f32(cols);
  let mgx = sgx / f32(cols);
  for (var c = 0; c < cols; c++) {
    let g = Dy[base + c] * Gamma[c];
    setOutputAtIndex(base + c, r * (g - mg - (A[base + c] - mean) * r * mgx));
  }`,
} as const;

const ROW_INPUTS = {
  [ROW_NORM_KERNEL]: ["A"],
  [LAYER_NORM_KERNEL]: ["A", "Gamma", "Beta"],
  [LAYER_NORM_GRAD_KERNEL]: ["A", "Dy", "Gamma"],
} as const;

type RowKernel = keyof typeof ROW_OUTPUTS;

/** A program of one thread per row of `shape` (rows x the last axis). */
function rowProgram(kernel: RowKernel, shape: number[]): WebGpuProgram {
  const cols = shape[shape.length - 1];
  const rows = shape.reduce((a, b) => a * b, 1) / cols;
  return {
    ...flatProgram(
      shape,
      rows,
      kernel,
      `
fn main(row : i32) {
  if (row >= uniforms.rows) {
    return;
  }${ROW_STATS_WGSL}${ROW_OUTPUTS[kernel]}
}`,
    ),
    variableNames: [...ROW_INPUTS[kernel]],
    uniforms: "rows : i32, cols : i32, eps : f32,",
  };
}

/** Registers a row kernel: inputs in ROW_INPUTS order, attribute `epsilon`. */
function registerRowKernel(kernel: RowKernel, inputNames: string[]): void {
  tf.registerKernel({
    kernelName: kernel,
    backendName: "webgpu",
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs[inputNames[0]] as tf.TensorInfo;
      const cols = x.shape[x.shape.length - 1];
      return runProgram(
        backend as WebGPUBackend,
        rowProgram(kernel, x.shape),
        inputNames.map((n) => inputs[n] as tf.TensorInfo),
        [
          { type: "int32", data: [x.shape.reduce((a, b) => a * b, 1) / cols] },
          { type: "int32", data: [cols] },
          { type: "float32", data: [(attrs as { epsilon: number }).epsilon] },
        ],
      );
    },
  });
}

/**
 * Registers an elementwise kernel: `bindings` maps the kernel's inputs (the first sets the shape)
 * to the program's variables; `value` as in {@link elementwiseProgram}; `uniforms` name float
 * attributes of the kernel, passed as f32 uniforms of the same names.
 */
function registerElementwiseKernel(
  kernel: string,
  shaderKey: string,
  bindings: Record<string, string>,
  value: string,
  uniforms: readonly string[] = [],
): void {
  const inputNames = Object.keys(bindings);
  const variables = Object.values(bindings);
  tf.registerKernel({
    kernelName: kernel,
    backendName: "webgpu",
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = inputs[inputNames[0]] as tf.TensorInfo;
      const values = attrs as Record<string, number>;
      return runProgram(
        backend as WebGPUBackend,
        elementwiseProgram(x.shape, shaderKey, variables, value, uniforms),
        inputNames.map((n) => inputs[n] as tf.TensorInfo),
        uniforms.map((u) => ({ type: "float32", data: [values[u]] })),
      );
    },
  });
}

let registered = false;

/** Registers {@link WEBGPU_OWN_KERNELS} for "webgpu" (once; the backend need not be loaded). */
export function registerWebGpuKernels(): void {
  if (registered) return;
  registered = true;
  registerElementwiseKernel(GELU_KERNEL, "convnext_gelu_erf", { x: "A" }, GELU_WGSL);
  registerElementwiseKernel(
    GELU_GRAD_KERNEL,
    "convnext_gelu_grad",
    { x: "A", dy: "Dy" },
    GELU_GRAD_WGSL,
  );
  for (
    const [kernel, key, wgsl] of [
      [MOVING_AVERAGE_KERNEL, "convnext_moving_average", MOVING_AVERAGE_WGSL],
      [MOVING_SQUARE_AVERAGE_KERNEL, "convnext_moving_square_average", MOVING_SQUARE_AVERAGE_WGSL],
    ]
  ) {
    registerElementwiseKernel(kernel, key, { x: "A", y: "Y" }, wgsl, AVERAGE_UNIFORMS);
  }
  registerElementwiseKernel(
    ADAMW_UPDATE_KERNEL,
    "convnext_adamw_update",
    { p: "A", m: "M", v: "V" },
    ADAMW_UPDATE_WGSL,
    ADAMW_UNIFORMS,
  );
  registerRowKernel(ROW_NORM_KERNEL, ["x"]);
  registerRowKernel(LAYER_NORM_KERNEL, ["x", "gamma", "beta"]);
  registerRowKernel(LAYER_NORM_GRAD_KERNEL, ["x", "dy", "gamma"]);
}

/**
 * The exact GELU of `x` (float32) in one WebGPU dispatch; the webgpu backend must be active.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs@4.22.0";
 * import { selectBackend } from "./select.ts";
 * await selectBackend("webgpu");
 * const y = await webGpuGelu(tf.tensor([-1, 0, 1])).data(); // ~[-0.158655, 0, 0.841345]
 * if (Math.abs(y[2] - 0.841345) > 1e-6) throw new Error(`gelu(1) = ${y[2]}`);
 * ```
 */
export function webGpuGelu(x: tf.Tensor): tf.Tensor {
  registerWebGpuKernels();
  return tf.engine().runKernel(GELU_KERNEL, { x }) as tf.Tensor;
}

/**
 * `(x - mean) / sqrt(var + epsilon)` over the last axis of `x` (float32), in one WebGPU
 * dispatch; the webgpu backend must be active.
 */
export function webGpuRowNorm(x: tf.Tensor, epsilon: number): tf.Tensor {
  registerWebGpuKernels();
  return tf.engine().runKernel(ROW_NORM_KERNEL, { x }, { epsilon }) as tf.Tensor;
}

/** Throws unless `tensors` (by argument name) are float32 of `first`'s shape. */
function checkSameShape(fn: string, tensors: Record<string, tf.Tensor>): void {
  const [[firstName, first], ...rest] = Object.entries(tensors);
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype !== "float32") throw new Error(`${fn}: ${name} must be float32, got ${t.dtype}`);
  }
  for (const [name, t] of rest) {
    if (!tf.util.arraysEqual(t.shape, first.shape)) {
      throw new Error(
        `${fn}: ${name} has shape [${t.shape}], ${firstName} [${first.shape}]; they must match`,
      );
    }
  }
}

/**
 * `x * decay + y * (1 - decay)` (with `square`, `y * y`) in one WebGPU dispatch, where TF.js
 * ops take three (four): an exponential moving average, as AdamW's moments and the model's
 * EMA update them. The webgpu backend must be active.
 *
 * @throws Error when `x` and `y` differ in shape or are not float32.
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs@4.22.0";
 * import { selectBackend } from "./select.ts";
 * await selectBackend("webgpu");
 * const m = await webGpuMovingAverage(tf.tensor([1, 2]), tf.tensor([3, 4]), 0.75).data();
 * if (m[0] !== 1.5 || m[1] !== 2.5) throw new Error(`moving average: ${m}`);
 * ```
 */
export function webGpuMovingAverage(
  x: tf.Tensor,
  y: tf.Tensor,
  decay: number,
  square = false,
): tf.Tensor {
  checkSameShape("webGpuMovingAverage", { x, y });
  registerWebGpuKernels();
  const kernel = square ? MOVING_SQUARE_AVERAGE_KERNEL : MOVING_AVERAGE_KERNEL;
  return tf.engine().runKernel(kernel, { x, y }, { decay, rest: 1 - decay }) as tf.Tensor;
}

/** The scalars of one parameter's AdamW update, for {@link webGpuAdamWUpdate}. */
export interface AdamWUpdateScalars {
  /** `1 - lr * weightDecay`: the decoupled weight decay's factor. */
  keep: number;
  /** `lr / (1 - beta1^t)`. */
  stepSize: number;
  /** `sqrt(1 - beta2^t)`. */
  bc2Sqrt: number;
  /** Denominator epsilon. */
  eps: number;
}

/**
 * A parameter after AdamW's update from its new moments, in one WebGPU dispatch where TF.js
 * ops take six: `p keep - m / (sqrt(v) / bc2Sqrt + eps) stepSize` (see lib/train/optimizer.ts).
 * The webgpu backend must be active.
 *
 * @throws Error when `p`, `m` and `v` differ in shape or are not float32.
 */
export function webGpuAdamWUpdate(
  p: tf.Tensor,
  m: tf.Tensor,
  v: tf.Tensor,
  scalars: AdamWUpdateScalars,
): tf.Tensor {
  checkSameShape("webGpuAdamWUpdate", { p, m, v });
  registerWebGpuKernels();
  return tf.engine().runKernel(
    ADAMW_UPDATE_KERNEL,
    { p, m, v },
    { ...scalars } as unknown as tf.NamedAttrMap,
  ) as tf.Tensor;
}

function webGpuLayerNorm_(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  epsilon: number,
): tf.Tensor {
  registerWebGpuKernels();
  const shape = x.shape;
  const norm = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [rows, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([rows, g]);
    return {
      value: tf.engine().runKernel(LAYER_NORM_KERNEL, { x: rows, gamma: g, beta: b }, {
        epsilon,
      }) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, gs] = saved;
        const dx = tf.engine().runKernel(LAYER_NORM_GRAD_KERNEL, { x: xs, dy, gamma: gs }, {
          epsilon,
        }) as tf.Tensor;
        const normalized = webGpuRowNorm(xs, epsilon);
        return [dx, tf.sum(tf.mul(dy, normalized), 0), tf.sum(dy, 0)];
      },
    };
  });
  const rows = tf.reshape(x, [-1, shape[shape.length - 1]]);
  return tf.reshape(norm(rows, gamma, beta), shape);
}

/**
 * LayerNorm over the last axis of `x` with `gamma` and `beta` (float32), differentiable with
 * respect to all three: one WebGPU dispatch forward; backward, the input's gradient in one
 * and gamma's and beta's as column sums. The webgpu backend must be active. A TF.js op
 * (`tf.op`): `tf.profile` lists it as "webGpuLayerNorm__op" around its kernels.
 */
export const webGpuLayerNorm: typeof webGpuLayerNorm_ = tf.op({ webGpuLayerNorm_ });

function webGpuGeluTrainable_(x: tf.Tensor): tf.Tensor {
  registerWebGpuKernels();
  const gelu = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([input]);
    return {
      value: tf.engine().runKernel(GELU_KERNEL, { x: input }) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(GELU_GRAD_KERNEL, { x: saved[0], dy }) as tf.Tensor,
    };
  });
  return gelu(x);
}

/**
 * The exact GELU of `x` as a differentiable TF.js op on webgpu: one dispatch forward, one for
 * the gradient (`tf.profile` lists it as "webGpuGeluTrainable__op" around its kernels).
 */
export const webGpuGeluTrainable: typeof webGpuGeluTrainable_ = tf.op({ webGpuGeluTrainable_ });
