/**
 * The filter gradients of convolutions on webgpu, reformulated for a GPU (issue #12, the fast
 * formulation on a GPU): `Conv2DBackpropFilter` (ConvNeXt's stem and downsampling layers)
 * and `DepthwiseConv2dNativeBackpropFilter` (every block's 7x7 depthwise conv).
 *
 * tfjs-backend-webgpu 4.22 computes each with one invocation per filter value, which sums
 * over every image and output pixel in turn: for convnext_tiny's first stage at batch 32,
 * 4,704 invocations (74 workgroups, about one per compute unit of a large GPU) each run
 * 100,352 iterations in sequence, and the stem's filter gradient likewise (4,608 values).
 *
 * - Patchify convs (filter size = stride, no padding: the stem and the downsampling layers)
 *   take one matrix product, {@link runPatchifyFilterGrad}: the input's patches (a transpose)
 *   transposed times the output gradient, on TF.js's tiled matmul.
 * - Other convs, the depthwise ones included, take a split reduction, {@link runFilterGrad}:
 *   the images' output rows are cut into chunks of about 256 output pixels; a first pass (one
 *   invocation per chunk and filter value) sums each chunk, a second (one per filter value)
 *   adds the chunks' sums. Two dispatches instead of one, with hundreds of times the
 *   invocations, each a few hundred iterations long.
 *
 * Both sum the same products in float32 in another order (within 1e-6 of float64: tested).
 * Cases neither takes run the backend's own kernel, as before: dilation, a depthwise channel
 * multiplier other than 1, channels-first data, and an input too large for the partial sums
 * (`maxStorageBufferBindingSize`).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

/** The kernels {@link installWebGpuFilterGrads} replaces for "webgpu". */
export const WEBGPU_FILTER_GRAD_KERNELS = [
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropFilter",
] as const;

/** Output pixels each invocation of the first pass sums (whole rows of them: at least one). */
const CHUNK_PIXELS = 256;
/** Partial sums at the most (floats): 64 MB, half the default storage binding limit. */
const MAX_PARTIALS = 16 * 1024 * 1024;
const WORKGROUP = 64;

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

/** The WGSL fields of tfjs-backend-webgpu's `WebGPUProgram` these programs use. */
interface Program {
  variableNames: string[];
  outputShape: number[];
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  shaderKey: string;
  size: boolean;
  uniforms: string;
  getUserCode(): string;
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

function flatProgram(
  variableNames: string[],
  outputShape: number[],
  shaderKey: string,
  uniforms: string,
  code: string,
): Program {
  const size = outputShape.reduce((a, b) => a * b, 1);
  return {
    variableNames,
    outputShape,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    // runWebGPUProgram reshapes a dispatch beyond the adapter's per-dimension limit.
    dispatch: [Math.ceil(size / WORKGROUP), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    shaderKey,
    size: true,
    uniforms,
    getUserCode: () => code,
  };
}

type RunProgram = Parameters<WebGPUBackend["runWebGPUProgram"]>;

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
  const partials = backend.runWebGPUProgram(
    flatProgram(
      ["x", "dy"],
      [chunks, filter],
      `convnext_${kind}_filter_partials`,
      GEOMETRY_UNIFORMS,
      partialsCode(g.depthwise),
    ) as unknown as RunProgram[0],
    [x, dy],
    "float32",
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
    return backend.runWebGPUProgram(
      flatProgram(
        ["partials"],
        shape,
        "convnext_filter_partials_sum",
        "chunks : i32, filterSize : i32,",
        SUM_CODE,
      ) as unknown as RunProgram[0],
      [partials],
      "float32",
      [{ type: "int32", data: [chunks] }, { type: "int32", data: [filter] }],
    );
  } finally {
    backend.disposeData(partials.dataId);
  }
}

/** Runs the webgpu backend's kernel `name` (registered by tfjs-backend-webgpu). */
function backendKernel(
  backend: WebGPUBackend,
  name: string,
  inputs: Record<string, tf.TensorInfo>,
  attrs: Record<string, unknown>,
): tf.TensorInfo {
  const kernelFunc = tf.getKernel(name, "webgpu")!.kernelFunc;
  return kernelFunc({ inputs, backend, attrs: attrs as tf.NamedAttrMap }) as tf.TensorInfo;
}

/**
 * True for a "patchify" conv (filter size = stride, no padding: the stem and the
 * downsampling layers), whose filter gradient {@link runPatchifyFilterGrad} computes.
 */
export function isPatchify(g: FilterGradGeometry): boolean {
  return !g.depthwise && g.kh === g.strideH && g.kw === g.strideW && g.padTop === 0 &&
    g.padLeft === 0;
}

/**
 * The filter gradient of a patchify conv as one matrix product: the input's patches (rows of
 * kh x kw x cin values, one per output pixel; a transpose of the input) transposed, times
 * the output gradient's rows. Three dispatches (transpose, product, and a slice when the
 * conv leaves input rows or columns out), TF.js's tiled matrix product doing the sums.
 */
export function runPatchifyFilterGrad(
  backend: WebGPUBackend,
  x: tf.TensorInfo,
  dy: tf.TensorInfo,
  g: FilterGradGeometry,
): tf.TensorInfo {
  const { n, outH, outW, cin, cout, kh, kw } = g;
  const pixels = n * outH * outW;
  const temps: tf.TensorInfo[] = [];
  const keep = (t: tf.TensorInfo) => (temps.push(t), t);
  try {
    let covered = x;
    if (g.inH !== outH * kh || g.inW !== outW * kw) {
      covered = keep(backendKernel(backend, "Slice", { x }, {
        begin: [0, 0, 0, 0],
        size: [n, outH * kh, outW * kw, cin],
      }));
    }
    // [n, outH, ky, outW, kx * cin] -> [n, outH, outW, ky, kx * cin]: one patch per row.
    const rows = keep(backendKernel(backend, "Reshape", { x: covered }, {
      shape: [n * outH, kh, outW, kw * cin],
    }));
    const patches = keep(backendKernel(backend, "Transpose", { x: rows }, { perm: [0, 2, 1, 3] }));
    const a = keep(backendKernel(backend, "Reshape", { x: patches }, {
      shape: [1, pixels, kh * kw * cin],
    }));
    const b = keep(backendKernel(backend, "Reshape", { x: dy }, { shape: [1, pixels, cout] }));
    const product = keep(backendKernel(backend, "BatchMatMul", { a, b }, {
      transposeA: true,
      transposeB: false,
    }));
    return backendKernel(backend, "Reshape", { x: product }, { shape: [kh, kw, cin, cout] });
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/** Attributes of both kernels (TF.js's `Conv2DBackpropFilterAttrs` and depthwise's). */
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

/** Marks the kernel functions this module registered. */
const SPLIT = Symbol("convnext-tfjs filter gradient");

/** `original` (the backend's kernel), with the cases {@link filterGradGeometry} takes ours. */
function splitFilterGradKernel(original: tf.KernelFunc, depthwise: boolean): tf.KernelFunc {
  const split = ((args: Parameters<tf.KernelFunc>[0]) => {
    const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const attrs = args.attrs as unknown as FilterGradAttrs;
    const geometry = x.dtype === "float32" && dy.dtype === "float32"
      ? filterGradGeometry(x.shape, attrs, depthwise)
      : undefined;
    const rows = geometry ? chunkRows(geometry) : 0;
    const backend = args.backend as WebGPUBackend;
    if (geometry && isPatchify(geometry)) return runPatchifyFilterGrad(backend, x, dy, geometry);
    if (!geometry || rows === 0) return original(args);
    return runFilterGrad(backend, x, dy, geometry, rows);
  }) as tf.KernelFunc & { [SPLIT]?: tf.KernelFunc };
  split[SPLIT] = original;
  return split;
}

/**
 * Replaces the webgpu backend's `Conv2DBackpropFilter` and `DepthwiseConv2dNativeBackpropFilter`
 * with this module's formulations (see the module doc). Idempotent; needs the
 * backend's module imported (it registers the kernels replaced).
 *
 * @returns the kernel names replaced by this call (empty when already done).
 * @throws Error naming a kernel that is not registered for "webgpu".
 */
export function installWebGpuFilterGrads(): string[] {
  const replaced: string[] = [];
  for (const name of WEBGPU_FILTER_GRAD_KERNELS) {
    const config = tf.getKernel(name, "webgpu");
    if (config == null) {
      throw new Error(`installWebGpuFilterGrads: no ${name} kernel registered for "webgpu"`);
    }
    if ((config.kernelFunc as { [SPLIT]?: tf.KernelFunc })[SPLIT]) continue;
    tf.unregisterKernel(name, "webgpu");
    tf.registerKernel({
      ...config,
      kernelFunc: splitFilterGradKernel(config.kernelFunc, name !== "Conv2DBackpropFilter"),
    });
    replaced.push(name);
  }
  return replaced;
}

/** The webgpu backend's own kernel behind `name` (for tests and benchmarks). */
export function stockFilterGradKernel(
  name: typeof WEBGPU_FILTER_GRAD_KERNELS[number],
): tf.KernelFunc {
  const config = tf.getKernel(name, "webgpu");
  if (config == null) throw new Error(`stockFilterGradKernel: no ${name} kernel for "webgpu"`);
  const f = config.kernelFunc as tf.KernelFunc & { [SPLIT]?: tf.KernelFunc };
  return f[SPLIT] ?? f;
}
