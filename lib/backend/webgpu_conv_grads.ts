/**
 * The gradients of convolutions on webgpu, reformulated for a GPU (issue #12, the fast
 * formulation on a GPU): filter and input gradients of `Conv2D` (ConvNeXt's stem and
 * downsampling layers) and of `DepthwiseConv2dNative` (every block's 7x7 depthwise conv).
 *
 * tfjs-backend-webgpu 4.22 computes a filter gradient with one invocation per filter value,
 * which sums over every image and output pixel in turn: for convnext_tiny's first stage at
 * batch 32, 4,704 invocations (74 workgroups, about one per compute unit of a large GPU) each
 * run 100,352 iterations in sequence, and the stem's likewise (4,608 values). Its input
 * gradients are parallel but plain: an invocation per input value, which divides and tests a
 * fraction per filter tap (depthwise) or multiplies through every output channel
 * (`WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE`, on by default).
 *
 * - Patchify convs (filter size = stride: the stem and the downsampling layers) take one
 *   matrix product each way, on TF.js's tiled matmul: the filter gradient as the input's
 *   patches (a transpose) transposed times the output gradient, the input gradient as the
 *   output gradient times the filter transposed, the patches transposed back (the wasm
 *   backend's generic kernels, ./conv_grads.ts, run on webgpu).
 * - A "same" stride-1 depthwise conv's input gradient is the output gradient convolved with
 *   the filter turned by 180 degrees, on the backend's forward depthwise kernel (which reads
 *   four channels at a time; its backprop kernel divides and tests a fraction per tap): the
 *   wasm backend's generic `depthwiseBackpropInput` (./conv_grads.ts), run on webgpu.
 * - Other filter gradients, the depthwise ones included, take a split reduction
 *   ({@link runFilterGrad}): the images' output rows are cut into chunks of about 256 output
 *   pixels; a first pass (one invocation per chunk and filter value) sums each chunk, a second
 *   (one per filter value) adds the chunks' sums. Two dispatches instead of one, with hundreds
 *   of times the invocations, each a few hundred iterations long.
 *
 * All sum the same products in float32 in another order (within 1e-6 of float64: tested).
 * Cases none takes run the backend's own kernel, as before: dilation, a depthwise channel
 * multiplier other than 1, channels-first data, other input gradients (strided depthwise,
 * convs whose filter size is not their stride), and filter gradients too large for the
 * partial sums (`maxStorageBufferBindingSize`).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import {
  conv2DBackpropFilter,
  depthwiseBackpropInput,
  patchifyConv2DBackpropInput,
} from "./conv_grads.ts";
import { flatProgram, runProgram, type WebGpuProgram } from "./webgpu_kernels.ts";

/** The kernels {@link installWebGpuConvGrads} replaces for "webgpu". */
export const WEBGPU_CONV_GRAD_KERNELS = [
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropFilter",
  "Conv2DBackpropInput",
  "DepthwiseConv2dNativeBackpropInput",
] as const;

/** One of {@link WEBGPU_CONV_GRAD_KERNELS}. */
export type ConvGradKernel = typeof WEBGPU_CONV_GRAD_KERNELS[number];

/** Output pixels each invocation of the first pass sums (whole rows of them: at least one). */
const CHUNK_PIXELS = 256;
/** Partial sums at the most (floats): 64 MB, half the default storage binding limit. */
const MAX_PARTIALS = 16 * 1024 * 1024;

/** A convolution's geometry as both passes need it (NHWC, no dilation). */
export interface FilterGradGeometry {
  /** Images, input rows and columns, input channels. */
  n: number;
  inH: number;
  inW: number;
  cin: number;
  /** Output rows, columns and channels (`cout === cin` for a depthwise conv). */
  outH: number;
  outW: number;
  cout: number;
  /** Filter rows and columns, strides and top/left padding. */
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padTop: number;
  padLeft: number;
  /** Depthwise: filter `[kh, kw, c, 1]`; else `[kh, kw, cin, cout]`. */
  depthwise: boolean;
}

/** Filter values: what each chunk sums and the second pass adds up. */
function filterSize(g: FilterGradGeometry): number {
  return g.kh * g.kw * g.cin * (g.depthwise ? 1 : g.cout);
}

/**
 * Output rows (over all images) per chunk, or 0 when the partial sums would not fit in
 * {@link MAX_PARTIALS}: rows of about {@link CHUNK_PIXELS} pixels, more when the batch is
 * large.
 */
export function chunkRows(g: FilterGradGeometry): number {
  const rows = g.n * g.outH;
  const fitting = Math.floor(MAX_PARTIALS / filterSize(g));
  if (fitting < 1) return 0;
  return Math.max(Math.ceil(CHUNK_PIXELS / g.outW), Math.ceil(rows / fitting), 1);
}

const GEOMETRY_UNIFORMS = "inH : i32, inW : i32, cin : i32, outH : i32, outW : i32, " +
  "cout : i32, kw : i32, strideH : i32, strideW : i32, padTop : i32, padLeft : i32, " +
  "rows : i32, chunk : i32, filterSize : i32,";

// One invocation per (chunk, filter value): the sum over the chunk's output rows (global
// rows over all images: row r is image r / outH's row r % outH) of input times output
// gradient. Filter values are [ky, kx, ci, co] (depthwise: [ky, kx, c]), co fastest, so
// neighbouring invocations read neighbouring channels.
function partialsCode(depthwise: boolean): string {
  const channels = depthwise
    ? `let ci = f % uniforms.cin;
    let tap = f / uniforms.cin;
    let co = ci;`
    : `let co = f % uniforms.cout;
    let ci = (f / uniforms.cout) % uniforms.cin;
    let tap = f / (uniforms.cout * uniforms.cin);`;
  return `
fn main(index : i32) {
  if (index < uniforms.size) {
    let f = index % uniforms.filterSize;
    let chunk = index / uniforms.filterSize;
    ${channels}
    let ky = tap / uniforms.kw;
    let kx = tap % uniforms.kw;
    let r0 = chunk * uniforms.chunk;
    let r1 = min(r0 + uniforms.chunk, uniforms.rows);
    var sum = 0.0;
    for (var r = r0; r < r1; r++) {
      let b = r / uniforms.outH;
      let y = r % uniforms.outH;
      let iy = y * uniforms.strideH + ky - uniforms.padTop;
      if (iy < 0 || iy >= uniforms.inH) {
        continue;
      }
      let xRow = (b * uniforms.inH + iy) * uniforms.inW;
      let dyRow = r * uniforms.outW;
      for (var ox = 0; ox < uniforms.outW; ox++) {
        let ix = ox * uniforms.strideW + kx - uniforms.padLeft;
        if (ix >= 0 && ix < uniforms.inW) {
          sum += x[(xRow + ix) * uniforms.cin + ci] * dy[(dyRow + ox) * uniforms.cout + co];
        }
      }
    }
    setOutputAtIndex(index, sum);
  }
}`;
}

// One invocation per filter value: the chunks' sums, in chunk order.
const SUM_CODE = `
fn main(index : i32) {
  if (index < uniforms.size) {
    var sum = 0.0;
    for (var c = 0; c < uniforms.chunks; c++) {
      sum += partials[c * uniforms.filterSize + index];
    }
    setOutputAtIndex(index, sum);
  }
}`;

/** A program of one invocation per value of `outputShape`, with TF.js's `size` uniform. */
function program(
  variableNames: string[],
  outputShape: number[],
  shaderKey: string,
  uniforms: string,
  code: string,
): WebGpuProgram {
  const count = outputShape.reduce((a, b) => a * b, 1);
  return {
    ...flatProgram(outputShape, count, shaderKey, code),
    variableNames,
    size: true,
    uniforms,
  };
}

/**
 * The filter gradient of a convolution of `x` whose output gradient is `dy`, in two
 * dispatches (see the module doc); `rows` from {@link chunkRows} (not 0).
 */
export function runFilterGrad(
  backend: WebGPUBackend,
  x: tf.TensorInfo,
  dy: tf.TensorInfo,
  g: FilterGradGeometry,
  rows: number,
): tf.TensorInfo {
  const filter = filterSize(g);
  const chunks = Math.ceil(g.n * g.outH / rows);
  const kind = g.depthwise ? "depthwise" : "conv";
  const partials = runProgram(
    backend,
    program(
      ["x", "dy"],
      [chunks, filter],
      `convnext_${kind}_filter_partials`,
      GEOMETRY_UNIFORMS,
      partialsCode(g.depthwise),
    ),
    [x, dy],
    [
      g.inH,
      g.inW,
      g.cin,
      g.outH,
      g.outW,
      g.cout,
      g.kw,
      g.strideH,
      g.strideW,
      g.padTop,
      g.padLeft,
      g.n * g.outH,
      rows,
      filter,
    ].map((v) => ({ type: "int32", data: [v] })),
  );
  try {
    const shape = g.depthwise ? [g.kh, g.kw, g.cin, 1] : [g.kh, g.kw, g.cin, g.cout];
    return runProgram(
      backend,
      program(
        ["partials"],
        shape,
        "convnext_filter_partials_sum",
        "chunks : i32, filterSize : i32,",
        SUM_CODE,
      ),
      [partials],
      [{ type: "int32", data: [chunks] }, { type: "int32", data: [filter] }],
    );
  } finally {
    backend.disposeData(partials.dataId);
  }
}

/**
 * True for a "patchify" conv (filter size = stride: the stem and the downsampling layers),
 * whose gradients are one matrix product each (./conv_grads.ts).
 */
export function isPatchify(g: FilterGradGeometry): boolean {
  return !g.depthwise && g.kh === g.strideH && g.kw === g.strideW;
}

/**
 * Attributes of the filter gradients (TF.js's `Conv2DBackpropFilterAttrs` and depthwise's);
 * the input gradients' are the same with `inputShape` for `filterShape`.
 */
interface FilterGradAttrs {
  strides: number | [number, number];
  pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
  dimRoundingMode?: "floor" | "round" | "ceil";
  filterShape: [number, number, number, number];
  dataFormat?: "NHWC" | "NCHW";
  dilations?: number | [number, number];
}

/** The geometry of a kernel call, or undefined for a case this module leaves alone. */
export function filterGradGeometry(
  xShape: number[],
  attrs: FilterGradAttrs,
  depthwise: boolean,
): FilterGradGeometry | undefined {
  const dilations = attrs.dilations ?? 1;
  if ((attrs.dataFormat ?? "NHWC") !== "NHWC" || xShape.length !== 4) return undefined;
  if (!tf.backend_util.tupleValuesAreOne(dilations)) return undefined;
  if (depthwise && attrs.filterShape[3] !== 1) return undefined;
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    depthwise,
  );
  return {
    n: info.batchSize,
    inH: info.inHeight,
    inW: info.inWidth,
    cin: info.inChannels,
    outH: info.outHeight,
    outW: info.outWidth,
    cout: info.outChannels,
    kh: info.filterHeight,
    kw: info.filterWidth,
    strideH: info.strideHeight,
    strideW: info.strideWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
    depthwise,
  };
}

/**
 * True for a depthwise conv whose input gradient is itself a depthwise conv ("same", odd
 * filter, stride 1, no dilation, multiplier 1: every ConvNeXt block's 7x7).
 */
export function isSymmetricDepthwise(g: FilterGradGeometry): boolean {
  return g.depthwise && g.strideH === 1 && g.strideW === 1 && g.kh % 2 === 1 &&
    g.kw % 2 === 1 && g.padTop === (g.kh - 1) / 2 && g.padLeft === (g.kw - 1) / 2 &&
    g.outH === g.inH && g.outW === g.inW;
}

/** Marks the kernel functions this module registered: the backend's own kernel. */
const STOCK = Symbol("convnext-tfjs stock conv gradient");

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The float32 geometry of a call, or undefined for a case this module leaves alone. */
function geometryOf(args: KernelArgs, input: boolean, depthwise: boolean) {
  const inputs = args.inputs as Record<string, tf.TensorInfo>;
  if (Object.values(inputs).some((t) => t.dtype !== "float32")) return undefined;
  const attrs = args.attrs as unknown as FilterGradAttrs & { inputShape?: number[] };
  // Input gradients: the input's shape is an attribute, the filter an input.
  const shape = input ? attrs.inputShape! : inputs.x.shape;
  const filterShape = input ? inputs.filter.shape : attrs.filterShape;
  return filterGradGeometry(shape, {
    ...attrs,
    filterShape: filterShape as [number, number, number, number],
  }, depthwise);
}

/** Ours for the cases we take, else `original`: by kernel (see the module doc). */
function ourKernel(name: ConvGradKernel, original: tf.KernelFunc): tf.KernelFunc {
  const depthwise = name.startsWith("Depthwise");
  const input = name.endsWith("Input");
  // The generic ones (./conv_grads.ts, the wasm backend's too): for patchify convs one
  // matrix product each way, for the depthwise input gradient the flipped filter's forward
  // conv.
  const patchifyFilter = conv2DBackpropFilter("webgpu");
  const patchifyInput = patchifyConv2DBackpropInput(original, "webgpu");
  const depthwiseInput = depthwiseBackpropInput("webgpu");
  return (args: KernelArgs) => {
    const g = geometryOf(args, input, depthwise);
    if (!g) return original(args);
    if (input) {
      if (isPatchify(g)) return patchifyInput(args) as tf.TensorInfo;
      if (isSymmetricDepthwise(g)) return depthwiseInput(args) as tf.TensorInfo;
      return original(args);
    }
    if (isPatchify(g)) return patchifyFilter(args) as tf.TensorInfo;
    const rows = chunkRows(g);
    if (rows === 0) return original(args);
    const { x, dy } = args.inputs as Record<string, tf.TensorInfo>;
    return runFilterGrad(args.backend as WebGPUBackend, x, dy, g, rows);
  };
}

/**
 * Replaces the webgpu backend's convolution gradients ({@link WEBGPU_CONV_GRAD_KERNELS})
 * with this module's formulations (see the module doc). Idempotent; needs the backend's
 * module imported (it registers the kernels replaced).
 *
 * @returns the kernel names replaced by this call (empty when already done).
 * @throws Error naming a kernel that is not registered for "webgpu".
 */
export function installWebGpuConvGrads(): string[] {
  const replaced: string[] = [];
  for (const name of WEBGPU_CONV_GRAD_KERNELS) {
    const config = tf.getKernel(name, "webgpu");
    if (config == null) {
      throw new Error(`installWebGpuConvGrads: no ${name} kernel registered for "webgpu"`);
    }
    if ((config.kernelFunc as { [STOCK]?: tf.KernelFunc })[STOCK]) continue;
    const ours = ourKernel(name, config.kernelFunc) as tf.KernelFunc & {
      [STOCK]?: tf.KernelFunc;
    };
    ours[STOCK] = config.kernelFunc;
    tf.unregisterKernel(name, "webgpu");
    tf.registerKernel({ ...config, kernelFunc: ours });
    replaced.push(name);
  }
  return replaced;
}

/** The webgpu backend's own kernel behind `name` (for tests and benchmarks). */
export function stockConvGradKernel(name: ConvGradKernel): tf.KernelFunc {
  const config = tf.getKernel(name, "webgpu");
  if (config == null) throw new Error(`stockConvGradKernel: no ${name} kernel for "webgpu"`);
  const f = config.kernelFunc as tf.KernelFunc & { [STOCK]?: tf.KernelFunc };
  return f[STOCK] ?? f;
}
