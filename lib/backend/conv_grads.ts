/**
 * Convolution gradient kernels that tfjs-backend-wasm lacks, built only from kernels
 * it has (Transpose, Reshape, Slice, PadV2, StridedSlice, Concat, Reverse, Sum,
 * BatchMatMul, DepthwiseConv2dNative):
 *
 * - `DepthwiseConv2dNativeBackpropInput`: a depthwise convolution of the (zero-dilated
 *   for strides, padded) output gradient with the spatially flipped filter;
 * - `DepthwiseConv2dNativeBackpropFilter`: a depthwise convolution in which the output
 *   gradient is the filter and batch x channels are the channels (one kernel call, about
 *   as fast as wasm's own 7x7 forward convolution);
 * - `Conv2DBackpropFilter`: im2col then one matmul; when kernel == stride (ConvNeXt's
 *   stem and downsampling convs) the im2col is a reshape and a transpose;
 * - `Conv2DBackpropInput` of a kernel == stride conv: one matmul and a transpose (others
 *   keep the backend's kernel).
 *
 * The kernelFuncs are backend-generic (they call whatever kernels are registered for
 * `backendName`), and NHWC only, as the wasm backend's convolutions: webgpu takes the
 * patchify ones and the depthwise input gradient too (./webgpu_conv_grads.ts).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { unsplitDepthwiseKernel } from "./depthwise_split.ts";
import { KernelScope, padCropSpatial } from "./kernel_scope.ts";

type Pad = "valid" | "same" | number | tf.backend_util.ExplicitPadding;
type Pair = [number, number];

function pair(v: number | number[] | undefined, name: string, kernel: string): Pair {
  const p = v == null ? [1, 1] : typeof v === "number" ? [v, v] : v;
  if (p.length !== 2 || !p.every((x) => Number.isInteger(x) && x >= 1)) {
    throw new Error(`${kernel}: ${name} must be one or two positive integers, got ${String(v)}`);
  }
  return [p[0], p[1]];
}

/** As TensorFlow's depthwise gradients: strides and dilations may not both exceed 1. */
function expectStridesOrDilationsOne(strides: Pair, dilations: Pair, kernel: string): void {
  if (Math.max(...strides) > 1 && Math.max(...dilations) > 1) {
    throw new Error(
      `${kernel}: strides [${strides}] and dilations [${dilations}] cannot both exceed 1`,
    );
  }
}

function expectFloatNHWC(t: tf.TensorInfo, name: string, kernel: string): void {
  if (t.shape.length !== 4) {
    throw new Error(`${kernel}: ${name} must be rank 4 (NHWC), got shape [${t.shape}]`);
  }
  if (t.dtype !== "float32") {
    throw new Error(`${kernel}: ${name} must be float32, got ${t.dtype}`);
  }
}

function expectChannelsLast(dataFormat: unknown, kernel: string): void {
  if (dataFormat != null && dataFormat !== "NHWC" && dataFormat !== "channelsLast") {
    throw new Error(`${kernel}: only NHWC data is supported, got dataFormat ${String(dataFormat)}`);
  }
}

/** Attributes of DepthwiseConv2dNativeBackpropInput (as tfjs-core sends them). */
interface DepthwiseInputAttrs {
  strides: number | Pair;
  pad: Pad;
  dilations?: number | Pair;
  dimRoundingMode?: "floor" | "round" | "ceil";
  inputShape: [number, number, number, number];
}

/** Attributes of DepthwiseConv2dNativeBackpropFilter. */
interface DepthwiseFilterAttrs {
  strides: number | Pair;
  pad: Pad;
  dilations?: number | Pair;
  dimRoundingMode?: "floor" | "round" | "ceil";
  filterShape: [number, number, number, number];
}

/** Attributes of Conv2DBackpropFilter. */
interface Conv2DFilterAttrs {
  strides: number | Pair;
  pad: Pad;
  dataFormat?: "NHWC" | "NCHW";
  dimRoundingMode?: "floor" | "round" | "ceil";
  filterShape: [number, number, number, number];
}

/**
 * Gradient of a depthwise convolution with respect to its input.
 *
 * dx[r] = sum_i dyDilated[r + top - i*d] f[i]; with the flipped filter this is a
 * stride-1 correlation (dilation d) of dyDilated shifted by effK - 1 - top.
 *
 * @param backendName registry name of the backend the kernels run on.
 */
export function depthwiseBackpropInput(backendName: string): tf.KernelFunc {
  const kernel = "DepthwiseConv2dNativeBackpropInput";
  return ({ inputs, backend, attrs }) => {
    const { dy, filter } = inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
    const a = attrs as unknown as DepthwiseInputAttrs;
    expectFloatNHWC(dy, "dy", kernel);
    expectFloatNHWC(filter, "filter", kernel);
    const [sh, sw] = pair(a.strides, "strides", kernel);
    const [dh, dw] = pair(a.dilations, "dilations", kernel);
    expectStridesOrDilationsOne([sh, sw], [dh, dw], kernel);
    const info = tf.backend_util.computeConv2DInfo(
      a.inputShape,
      filter.shape as [number, number, number, number],
      [sh, sw],
      [dh, dw],
      a.pad,
      a.dimRoundingMode,
      true,
    );
    const [n, h, w, c] = a.inputShape;
    const [kh, kw, , m] = filter.shape;
    const [, ho, wo, cm] = dy.shape;
    if (ho !== info.outHeight || wo !== info.outWidth || cm !== c * m) {
      throw new Error(
        `${kernel}: dy shape [${dy.shape}] does not match the convolution's output ` +
          `[${n},${info.outHeight},${info.outWidth},${c * m}]`,
      );
    }
    const effH = (kh - 1) * dh + 1;
    const effW = (kw - 1) * dw + 1;
    const scope = new KernelScope(backend, backendName);
    try {
      // Insert stride-1 zeros between output rows/cols: dyD[h*s] = dy[h].
      let dyD = dy;
      if (sh > 1 || sw > 1) {
        const r = scope.reshape(dy, [n, ho, 1, wo, 1, cm]);
        const p = scope.run("PadV2", { x: r }, {
          paddings: [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]],
          constantValue: 0,
        });
        dyD = scope.reshape(p, [n, ho * sh, wo * sw, cm]);
      }
      // dyP[q] = dyD[q - before], over H + effH - 1 rows; as explicit convolution padding
      // when it only pads (no copy, and the 5x5 split of 7x7 filters shifts it for free).
      const before: Pair = [effH - 1 - info.padInfo.top, effW - 1 - info.padInfo.left];
      const after: Pair = [
        h + effH - 1 - dyD.shape[1] - before[0],
        w + effW - 1 - dyD.shape[2] - before[1],
      ];
      let input = dyD;
      const rowsPad: Pair = [before[0], after[0]];
      const colsPad: Pair = [before[1], after[1]];
      let pad: tf.backend_util.ExplicitPadding = [[0, 0], rowsPad, colsPad, [0, 0]];
      if (Math.min(...before, ...after) < 0) {
        input = padCropSpatial(scope, dyD, before, [h + effH - 1, w + effW - 1]);
        pad = [[0, 0], [0, 0], [0, 0], [0, 0]];
      }
      const flipped = scope.run("Reverse", { x: filter }, { dims: [0, 1] });
      const f = scope.reshape(flipped, [kh, kw, c * m, 1]);
      // dataFormat: webgpu's kernel rejects a call without it (wasm's ignores it).
      let dx = scope.run("DepthwiseConv2dNative", { x: input, filter: f }, {
        strides: [1, 1],
        pad,
        dilations: [dh, dw],
        dataFormat: "NHWC",
      });
      if (m > 1) {
        dx = scope.run("Sum", { x: scope.reshape(dx, [n, h, w, c, m]) }, {
          axis: [4],
          keepDims: false,
        });
      }
      return scope.finish(dx);
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
}

/**
 * Gradient of a depthwise convolution with respect to its filter.
 *
 * dW[i,j,c,m] = sum_{n,y,x} xPad[n, y*s + i*d, x*s + j*d, c] * dy[n, y, x, c*M + m]:
 * a depthwise convolution of xPad (batch folded into channels) with dy as the filter,
 * stride d and dilation s, whose kh x kw output is then summed over the batch.
 *
 * Measured on wasm about as fast as the forward convolution. (Cutting dy into 5x5 blocks so
 * that XNNPACK's fast 25-tap path applies was tried and is slower: with a 7x7 output and
 * blocks x N x C channels the convolution is memory-bound, and the overlapping windows
 * cost copies.)
 *
 * @param backendName registry name of the backend the kernels run on.
 */
export function depthwiseBackpropFilter(backendName: string): tf.KernelFunc {
  const kernel = "DepthwiseConv2dNativeBackpropFilter";
  return ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const a = attrs as unknown as DepthwiseFilterAttrs;
    expectFloatNHWC(x, "x", kernel);
    expectFloatNHWC(dy, "dy", kernel);
    const [sh, sw] = pair(a.strides, "strides", kernel);
    const [dh, dw] = pair(a.dilations, "dilations", kernel);
    expectStridesOrDilationsOne([sh, sw], [dh, dw], kernel);
    const [kh, kw, c, m] = a.filterShape;
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      a.filterShape,
      [sh, sw],
      [dh, dw],
      a.pad,
      a.dimRoundingMode,
      true,
    );
    const [n, , , xc] = x.shape;
    const [, ho, wo, cm] = dy.shape;
    if (xc !== c || ho !== info.outHeight || wo !== info.outWidth || cm !== c * m) {
      throw new Error(
        `${kernel}: x [${x.shape}] and dy [${dy.shape}] do not match filterShape [${a.filterShape}]`,
      );
    }
    const needH = (ho - 1) * sh + (kh - 1) * dh + 1;
    const needW = (wo - 1) * sw + (kw - 1) * dw + 1;
    const scope = new KernelScope(backend, backendName);
    try {
      const xp = padCropSpatial(scope, x, [info.padInfo.top, info.padInfo.left], [needH, needW]);
      // [N,H,W,C] -> [1,H,W,N*C]: the batch becomes channels of one image.
      const xt = scope.reshape(scope.transpose(xp, [1, 2, 0, 3]), [1, needH, needW, n * c]);
      // dy [N,Ho,Wo,C*M] -> filter [Ho,Wo,N*C,M]; channel (n*C+c)*M+m is dy[n,..,c*M+m].
      const f = scope.reshape(scope.transpose(dy, [1, 2, 0, 3]), [ho, wo, n * c, m]);
      const conv = scope.adopt(
        unsplitDepthwiseKernel(backendName)({
          inputs: { x: xt, filter: f },
          backend,
          attrs: { strides: [dh, dw], pad: "valid", dilations: [sh, sw] },
        }) as tf.TensorInfo,
      );
      // conv: [1, kh, kw, N*C*M] (exactly kh x kw by construction of needH/needW).
      let dW = scope.reshape(conv, [kh * kw, n, c * m]);
      if (n > 1) dW = scope.run("Sum", { x: dW }, { axis: [1], keepDims: false });
      return scope.finish(scope.reshape(dW, [kh, kw, c, m]));
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
}

/** The sizes of a filter gradient: batch, output size, kernel, strides and channels. */
interface FilterGradDims {
  n: number;
  ho: number;
  wo: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  cin: number;
  cout: number;
}

/**
 * dW [K, Cout] (as a [1, K, Cout] product) of a patchify conv (kernel == stride) from the
 * padded-and-cropped `xp` and `dy2` [P, Cout]: the windows do not overlap, so the patches are
 * `xp` with one transpose ([n, ho, kh, wo, kw * cin] to [n, ho, wo, kh, kw * cin], one patch
 * per row), and dW is patches^T dy in one matmul. (On wasm 1.2-1.9x faster than a matmul per
 * filter row, the formulation this replaced, at convnext_tiny's shapes; on webgpu one large
 * product is what the GPU needs: see ./webgpu_conv_grads.ts.)
 */
function patchifyFilterGrad(
  scope: KernelScope,
  xp: tf.TensorInfo,
  dy2: tf.TensorInfo,
  { n, ho, wo, kh, kw, cin, cout }: FilterGradDims,
): tf.TensorInfo {
  const rows = scope.reshape(xp, [n * ho, kh, wo, kw * cin]);
  const patches = scope.transpose(rows, [0, 2, 1, 3]);
  return scope.run("BatchMatMul", {
    a: scope.reshape(patches, [1, n * ho * wo, kh * kw * cin]),
    b: scope.reshape(dy2, [1, n * ho * wo, cout]),
  }, { transposeA: true, transposeB: false });
}

/** dW [K, Cout] of any conv: one strided slice of `xp` per filter tap (im2col), one matmul. */
function im2colFilterGrad(
  scope: KernelScope,
  xp: tf.TensorInfo,
  dy2: tf.TensorInfo,
  { n, ho, wo, kh, kw, sh, sw, cin, cout }: FilterGradDims,
): tf.TensorInfo {
  const p = n * ho * wo;
  const k = kh * kw * cin;
  const taps: tf.TensorInfo[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      taps.push(scope.run("StridedSlice", { x: xp }, {
        begin: [0, i, j, 0],
        end: [n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, cin],
        strides: [1, sh, sw, 1],
        beginMask: 0,
        endMask: 0,
        ellipsisMask: 0,
        newAxisMask: 0,
        shrinkAxisMask: 0,
      }));
    }
  }
  const patches = taps.length === 1 ? taps[0] : scope.run("Concat", taps, { axis: 3 });
  const patchesT = scope.transpose(scope.reshape(patches, [p, k]), [1, 0]);
  return scope.run("BatchMatMul", {
    a: scope.reshape(patchesT, [1, k, p]),
    b: scope.reshape(dy2, [1, p, cout]),
  }, { transposeA: false, transposeB: false });
}

/**
 * Gradient of a (dense) 2-D convolution with respect to its filter:
 * dW[K, Cout] = patches[P, K]^T dy[P, Cout] with P = N*Ho*Wo, K = kh*kw*Cin.
 *
 * When kernel == stride (patchify convs) the patches are a reshape and one transpose
 * of x; otherwise one strided slice per filter tap builds them (im2col).
 *
 * @param backendName registry name of the backend the kernels run on.
 */
export function conv2DBackpropFilter(backendName: string): tf.KernelFunc {
  const kernel = "Conv2DBackpropFilter";
  return ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const a = attrs as unknown as Conv2DFilterAttrs;
    expectChannelsLast(a.dataFormat, kernel);
    expectFloatNHWC(x, "x", kernel);
    expectFloatNHWC(dy, "dy", kernel);
    const [sh, sw] = pair(a.strides, "strides", kernel);
    const [kh, kw, cin, cout] = a.filterShape;
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      a.filterShape,
      [sh, sw],
      1,
      a.pad,
      a.dimRoundingMode,
      false,
    );
    const [n, , , xc] = x.shape;
    const [, ho, wo, dc] = dy.shape;
    if (xc !== cin || ho !== info.outHeight || wo !== info.outWidth || dc !== cout) {
      throw new Error(
        `${kernel}: x [${x.shape}] and dy [${dy.shape}] do not match filterShape [${a.filterShape}]`,
      );
    }
    const p = n * ho * wo;
    const needH = (ho - 1) * sh + kh;
    const needW = (wo - 1) * sw + kw;
    const scope = new KernelScope(backend, backendName);
    try {
      const xp = padCropSpatial(scope, x, [info.padInfo.top, info.padInfo.left], [needH, needW]);
      const dy2 = scope.reshape(dy, [p, cout]);
      const dims = { n, ho, wo, kh, kw, sh, sw, cin, cout };
      // [K, Cout], rows ordered (i, j, cin) as the HWIO filter
      const dW = kh === sh && kw === sw
        ? patchifyFilterGrad(scope, xp, dy2, dims)
        : im2colFilterGrad(scope, xp, dy2, dims);
      return scope.finish(scope.reshape(dW, [kh, kw, cin, cout]));
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
}

/** Attributes of Conv2DBackpropInput. */
interface Conv2DInputAttrs {
  strides: number | Pair;
  pad: Pad;
  dataFormat?: "NHWC" | "NCHW";
  dimRoundingMode?: "floor" | "round" | "ceil";
  inputShape: [number, number, number, number];
}

/**
 * Wrap a backend's `Conv2DBackpropInput` with a fast path for patchify convolutions
 * (kernel == stride, NHWC, e.g. ConvNeXt's stem and downsampling convs): the patches of
 * dx do not overlap, so dx is one matmul dy[P, Cout] W^T[Cout, K] and a transpose. Other
 * cases go to `original`.
 *
 * Why: wasm's own kernel is a plain loop, about 10x slower than its matmul (measured
 * 470 ms for the 4 patchify convs of a convnext_tiny step at batch 2); webgpu's is parallel
 * but plain (./webgpu_conv_grads.ts).
 *
 * @param original the backend's kernelFunc, called for every other case.
 * @param backendName registry name of the backend the kernels run on.
 */
export function patchifyConv2DBackpropInput(
  original: tf.KernelFunc,
  backendName: string,
): tf.KernelFunc {
  const kernel = "Conv2DBackpropInput";
  return (args) => {
    const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
    const a = args.attrs as unknown as Conv2DInputAttrs;
    const [kh, kw, cin, cout] = filter.shape;
    const [sh, sw] = pair(a.strides, "strides", kernel);
    const channelsLast = a.dataFormat == null || a.dataFormat === "NHWC";
    if (
      kh !== sh || kw !== sw || !channelsLast || dy.dtype !== "float32" || dy.shape.length !== 4
    ) {
      return original(args);
    }
    const info = tf.backend_util.computeConv2DInfo(
      a.inputShape,
      filter.shape as [number, number, number, number],
      [sh, sw],
      1,
      a.pad,
      a.dimRoundingMode,
      false,
    );
    const [n, ho, wo] = dy.shape;
    const [, h, w] = a.inputShape;
    if (ho !== info.outHeight || wo !== info.outWidth || dy.shape[3] !== cout) {
      throw new Error(
        `${kernel}: dy shape [${dy.shape}] does not match the convolution's output ` +
          `[${n},${info.outHeight},${info.outWidth},${cout}]`,
      );
    }
    const p = n * ho * wo;
    const scope = new KernelScope(args.backend, backendName);
    try {
      // Each output pixel's patch of dx: dy [P, Cout] times the filter as a matrix,
      // transposed by its own small call (webgpu's matmul with transposeB is slower); a
      // transpose puts the patches' rows back into the map's rows.
      const k = kh * kw * cin;
      const wT = scope.transpose(scope.reshape(filter, [k, cout]), [1, 0]);
      const cols = scope.run("BatchMatMul", {
        a: scope.reshape(dy, [1, p, cout]),
        b: scope.reshape(wT, [1, cout, k]),
      }, { transposeA: false, transposeB: false });
      const rows = scope.reshape(cols, [n * ho, wo, kh, kw * cin]);
      const img = scope.reshape(scope.transpose(rows, [0, 2, 1, 3]), [n, ho * kh, wo * kw, cin]);
      // Padded coordinates -> input coordinates; rows no window covers get zero gradient.
      const dx = padCropSpatial(scope, img, [-info.padInfo.top, -info.padInfo.left], [h, w]);
      return scope.finish(dx);
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
}
