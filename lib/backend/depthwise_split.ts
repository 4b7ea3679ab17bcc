/**
 * A `DepthwiseConv2dNative` wrapper that computes large filters (ConvNeXt's 7x7) as a
 * sum of 5x5 depthwise convolutions.
 *
 * Why: the wasm backend's XNNPACK has fast depthwise micro-kernels only for 3, 4, 9 and 25
 * taps; other sizes fall back to a generic path about 6x slower per multiply-add
 * (measured at 56x56x96, batch 2: 7x7 in 78 ms = 0.38 GMAC/s, 5x5 in 6.3 ms = 2.4 GMAC/s).
 * A 7x7 filter split into four zero-padded 5x5 pieces does 100 instead of 49 multiply-adds
 * per output, at the fast rate: about 2-3x faster overall. The depthwise gradients
 * (./conv_grads.ts) run through this wrapper too.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { KernelScope, padCropSpatial } from "./kernel_scope.ts";

/** Where a split wrapper keeps the kernelFunc it wraps. */
const UNSPLIT = Symbol.for("convnext-tfjs.unsplitDepthwise");

/** Side of the pieces: the largest filter with a fast micro-kernel. */
const PIECE = 5;

/**
 * Starts of the pieces along one filter axis of size k, and the first row each piece
 * adds (earlier rows of an overlapping last piece are zero in it).
 */
function pieceStarts(k: number): { start: number; first: number }[] {
  const out: { start: number; first: number }[] = [];
  for (let first = 0; first < k; first += PIECE) {
    out.push({ start: Math.min(first, k - PIECE), first });
  }
  return out;
}

/** Attributes of DepthwiseConv2dNative. */
interface DepthwiseAttrs {
  strides: number | [number, number];
  pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
  dilations?: number | [number, number];
  dimRoundingMode?: "floor" | "round" | "ceil";
  dataFormat?: "NHWC" | "NCHW";
}

function isOne(v: number | number[] | undefined): boolean {
  return v == null || (typeof v === "number" ? v === 1 : v.every((x) => x === 1));
}

/**
 * Wrap a backend's `DepthwiseConv2dNative`: stride-1, undilated NHWC convolutions with a
 * filter of at least 5x5 other than exactly 5x5, and at most `maxPieces` pieces, become a
 * sum of 5x5 depthwise convolutions; everything else goes to `original`.
 *
 * @param original the backend's kernelFunc.
 * @param backendName registry name of the backend the kernels run on.
 * @param maxPieces largest number of 5x5 pieces worth splitting into (default 9: 7x7 needs 4,
 *   up to 15x15 qualifies).
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import "@tensorflow/tfjs-backend-wasm";
 * import { splitDepthwiseConv2D } from "./depthwise_split.ts";
 * await tf.setBackend("wasm");
 * const cfg = tf.getKernel("DepthwiseConv2dNative", "wasm")!;
 * tf.unregisterKernel("DepthwiseConv2dNative", "wasm");
 * tf.registerKernel({ ...cfg, kernelFunc: splitDepthwiseConv2D(cfg.kernelFunc, "wasm") });
 * ```
 */
export function splitDepthwiseConv2D(
  original: tf.KernelFunc,
  backendName: string,
  maxPieces = 9,
): tf.KernelFunc {
  const wrapper: tf.KernelFunc & { [UNSPLIT]?: tf.KernelFunc } = (args) => {
    const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
    const a = args.attrs as unknown as DepthwiseAttrs;
    const [kh, kw, c, m] = filter.shape;
    const rows = pieceStarts(kh);
    const cols = pieceStarts(kw);
    const eligible = kh >= PIECE && kw >= PIECE && (kh > PIECE || kw > PIECE) &&
      rows.length * cols.length <= maxPieces && isOne(a.strides) && isOne(a.dilations) &&
      (a.dataFormat == null || a.dataFormat === "NHWC") && x.shape.length === 4 &&
      x.dtype === "float32" && filter.dtype === "float32";
    if (!eligible) return original(args);
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filter.shape as [number, number, number, number],
      1,
      1,
      a.pad,
      a.dimRoundingMode,
      true,
    );
    const { outHeight: ho, outWidth: wo } = info;
    const [, h, w] = x.shape;
    const scope = new KernelScope(args.backend, backendName);
    try {
      const parts: tf.TensorInfo[] = [];
      for (const r of rows) {
        for (const q of cols) {
          // The piece's filter: the rows/cols it adds, zero-padded at the start to 5x5.
          let f = scope.run("Slice", { x: filter }, {
            begin: [r.first, q.first, 0, 0],
            size: [r.start + PIECE - r.first, q.start + PIECE - q.first, c, m],
          });
          if (r.first > r.start || q.first > q.start) {
            f = scope.run("PadV2", { x: f }, {
              paddings: [[r.first - r.start, 0], [q.first - q.start, 0], [0, 0], [0, 0]],
              constantValue: 0,
            });
          }
          // Output (y, x) reads padded rows y + r.start .. y + r.start + 4: the same
          // convolution with the padding shifted by the piece's offset.
          const top = info.padInfo.top - r.start;
          const left = info.padInfo.left - q.start;
          const bottom = ho + PIECE - 1 - h - top;
          const right = wo + PIECE - 1 - w - left;
          let input = x;
          let pad: tf.backend_util.ExplicitPadding = [[0, 0], [top, bottom], [left, right], [0, 0]];
          if (top < 0 || left < 0 || bottom < 0 || right < 0) {
            input = padCropSpatial(scope, x, [top, left], [ho + PIECE - 1, wo + PIECE - 1]);
            pad = [[0, 0], [0, 0], [0, 0], [0, 0]];
          }
          parts.push(scope.adopt(
            original({
              inputs: { x: input, filter: f },
              backend: args.backend,
              attrs: { ...args.attrs, pad, strides: [1, 1], dilations: [1, 1] },
            }) as tf.TensorInfo,
          ));
        }
      }
      const sum = parts.length === 1 ? parts[0] : scope.run("AddN", parts);
      return scope.finish(sum);
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
  wrapper[UNSPLIT] = original;
  return wrapper;
}

/**
 * The backend's depthwise kernel without the 5x5 splitting: for convolutions whose
 * "filter" is a large gradient map and whose output is tiny (the filter gradient), where
 * splitting costs more calls than it saves (measured 2-7x slower there).
 *
 * @param backendName registry name of the backend.
 * @throws Error when the backend has no DepthwiseConv2dNative kernel.
 */
export function unsplitDepthwiseKernel(backendName: string): tf.KernelFunc {
  const config = tf.getKernel("DepthwiseConv2dNative", backendName);
  if (config == null) {
    throw new Error(`unsplitDepthwiseKernel: no DepthwiseConv2dNative kernel for '${backendName}'`);
  }
  const f = config.kernelFunc as tf.KernelFunc & { [UNSPLIT]?: tf.KernelFunc };
  return f[UNSPLIT] ?? f;
}
