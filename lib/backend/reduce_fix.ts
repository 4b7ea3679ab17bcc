/**
 * `Sum` and `Mean` wrappers that reduce outer axes with an average pooling instead of a
 * transpose.
 *
 * Why: tfjs-backend-wasm reduces only innermost axes; for any other axis it first
 * transposes the whole tensor, and its transposes that move the innermost axis cost about
 * 10 ns per element. Training reduces outer axes all the time (bias, LayerNorm and layer
 * scale gradients sum over batch and space): [2*56*56, 384] over axis 0 took 10 ms. Viewed
 * as an NHWC image [B, R, 1, C], the same reduction is one XNNPACK average pooling with an
 * R x 1 window (2 ms), times R for a sum. (A matmul with a row of ones is no better: the
 * wasm matmul repacks its right operand on every call, 14 ns per element.)
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { KernelScope } from "./kernel_scope.ts";

/**
 * The reduction as [B, R, C] (kept outer, reduced, kept inner sizes) when the reduced
 * axes are one contiguous block that is not innermost; otherwise null.
 */
function outerBlock(shape: number[], axes: number[]): [number, number, number] | null {
  const rank = shape.length;
  if (axes.length === 0) return null;
  const first = axes[0];
  const last = axes[axes.length - 1];
  if (last - first + 1 !== axes.length || last === rank - 1) return null;
  const size = (from: number, to: number) => shape.slice(from, to).reduce((p, q) => p * q, 1);
  return [size(0, first), size(first, last + 1), size(last + 1, rank)];
}

/**
 * Wrap a reduction kernelFunc (`Sum` or `Mean`: input `x`, attrs `axis`, `keepDims`) so
 * that float32 reductions over a contiguous block of non-innermost axes run as an average
 * pooling (times R for Sum). Other cases go to `original`.
 *
 * @param original the backend's kernelFunc.
 * @param backendName registry name of the backend the kernels run on.
 * @param mean true to average (Mean) instead of summing (Sum).
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import "@tensorflow/tfjs-backend-wasm";
 * import { poolReduction } from "./reduce_fix.ts";
 * await tf.setBackend("wasm");
 * const cfg = tf.getKernel("Sum", "wasm")!;
 * tf.unregisterKernel("Sum", "wasm");
 * tf.registerKernel({ ...cfg, kernelFunc: poolReduction(cfg.kernelFunc, "wasm", false) });
 * ```
 */
export function poolReduction(
  original: tf.KernelFunc,
  backendName: string,
  mean: boolean,
): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { axis, keepDims } = args.attrs as {
      axis?: number | number[] | null;
      keepDims?: boolean;
    };
    if (x.dtype !== "float32") return original(args);
    // null/undefined axis means all axes, as in tfjs-core; negative axes count from the end.
    const axes = [
      ...new Set(tf.util.parseAxisParam(axis ?? (null as unknown as number[]), x.shape)),
    ].sort((p, q) => p - q);
    const block = outerBlock(x.shape, axes);
    if (block == null || block[1] < 2) return original(args);
    const [b, r, c] = block;
    const outShape = x.shape.flatMap((d, i) => axes.includes(i) ? (keepDims ? [1] : []) : [d]);
    const scope = new KernelScope(args.backend, backendName);
    try {
      const pooled = scope.run("AvgPool", { x: scope.reshape(x, [b, r, 1, c]) }, {
        filterSize: [r, 1],
        strides: [r, 1],
        pad: "valid",
      });
      const product = mean ? pooled : scope.run("Multiply", {
        a: pooled,
        b: scope.run("Fill", {}, { shape: [], value: r, dtype: "float32" }),
      });
      return scope.finish(scope.reshape(product, outShape));
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
}
