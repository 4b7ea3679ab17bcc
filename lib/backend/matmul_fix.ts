/**
 * Wrappers for a backend's `BatchMatMul` and `_FusedMatMul` kernels that never pass
 * transpose flags down: a transposed operand is transposed explicitly first.
 *
 * Why (tfjs-backend-wasm 4.22, measured): with `transposeA` or `transposeB` its matmul
 * is 8 to 20 times slower than an explicit Transpose followed by a plain matmul, and
 * `_FusedMatMul` with a transpose flag plus a bias returns wrong values. Dense layers'
 * gradients use both flags on every step.
 *
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { KernelScope } from "./kernel_scope.ts";

/** Relative cost per element of a wasm transpose that moves the innermost axis (12 ns). */
const TRANSPOSE_COST = 12;
/** Relative cost per element of the wasm matmul's packing of its right operand (14 ns). */
const PACK_COST = 14;

function swapLastTwo(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

function batchSize(t: tf.TensorInfo): number {
  return t.shape.slice(0, -2).reduce((x, y) => x * y, 1);
}

/** Applies a fused activation (as named by `_FusedMatMul`'s `activation` attr) with kernels. */
function activate(
  scope: KernelScope,
  x: tf.TensorInfo,
  activation: string | undefined,
  prelu: tf.TensorInfo | undefined,
  leakyreluAlpha: number | undefined,
): tf.TensorInfo {
  switch (activation ?? "linear") {
    case "linear":
      return x;
    case "relu":
      return scope.run("Relu", { x });
    case "relu6":
      return scope.run("Relu6", { x });
    case "elu":
      return scope.run("Elu", { x });
    case "sigmoid":
      return scope.run("Sigmoid", { x });
    case "leakyrelu":
      return scope.run("LeakyRelu", { x }, { alpha: leakyreluAlpha ?? 0.2 });
    case "prelu":
      if (prelu == null) throw new Error("_FusedMatMul: prelu activation without its weights");
      return scope.run("Prelu", { x, alpha: prelu });
    default:
      throw new Error(`_FusedMatMul: unsupported fused activation '${activation}'`);
  }
}

/**
 * Whether out^T = op(b)^T op(a)^T, transposed back, moves less data than transposing the
 * flagged operands. Both ways cost data movement on top of the same multiply-adds: a
 * transpose that moves the innermost axis (about 12 ns per element on wasm) for each operand
 * that is not in place, and the packing of the right operand, which the wasm matmul redoes
 * for every new tensor (about 14 ns per element). The swapped way transposes the unflagged
 * operands and the output, and packs op(a)^T; it needs a plain product (no bias or
 * activation to apply after it), which the caller checks.
 */
function swapPays(a: tf.TensorInfo, b: tf.TensorInfo, tA: boolean, tB: boolean): boolean {
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = tA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = tA ? a.shape[ra - 2] : a.shape[ra - 1];
  const n = tB ? b.shape[rb - 2] : b.shape[rb - 1];
  const batchA = batchSize(a);
  const batchB = batchSize(b);
  const sizeA = k * m * batchA;
  const sizeB = k * n * batchB;
  const direct = TRANSPOSE_COST * ((tA ? sizeA : 0) + (tB ? sizeB : 0)) + PACK_COST * sizeB;
  const swapped = TRANSPOSE_COST *
      ((tA ? 0 : sizeA) + (tB ? 0 : sizeB) + m * n * Math.max(batchA, batchB)) +
    PACK_COST * sizeA;
  return swapped < direct;
}

/**
 * Wrap a matmul kernelFunc (`BatchMatMul` or `_FusedMatMul`: inputs `a`, `b`, ...;
 * attrs `transposeA`, `transposeB`, ...) so that it transposes flagged operands with the
 * backend's Transpose kernel and calls `original` without flags.
 *
 * For `_FusedMatMul` with a bias (or prelu weights) on batched operands, which the wasm
 * kernel also gets wrong (measured: max error 1.15 at batch 3), the wrapper runs the plain
 * product and adds the bias and activation with separate kernels.
 *
 * @param original the kernelFunc to delegate to (kept, not looked up, so the wrapper can
 *   replace it in the registry).
 * @param backendName registry name of the backend (for the Transpose kernel).
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import "@tensorflow/tfjs-backend-wasm";
 * import { explicitTransposeMatMul } from "./matmul_fix.ts";
 * await tf.setBackend("wasm");
 * const cfg = tf.getKernel("BatchMatMul", "wasm")!;
 * tf.unregisterKernel("BatchMatMul", "wasm");
 * tf.registerKernel({ ...cfg, kernelFunc: explicitTransposeMatMul(cfg.kernelFunc, "wasm") });
 * ```
 */
export function explicitTransposeMatMul(
  original: tf.KernelFunc,
  backendName: string,
): tf.KernelFunc {
  return (args) => {
    const attrs = args.attrs as {
      transposeA?: boolean;
      transposeB?: boolean;
      activation?: string;
      leakyreluAlpha?: number;
    };
    const inputs = args.inputs as Record<string, tf.TensorInfo | undefined> & {
      a: tf.TensorInfo;
      b: tf.TensorInfo;
    };
    const { bias, preluActivationWeights: prelu } = inputs;
    const tA = attrs?.transposeA === true;
    const tB = attrs?.transposeB === true;
    const batchA = batchSize(inputs.a);
    const batchB = batchSize(inputs.b);
    const unfuse = (batchA > 1 || batchB > 1) && (bias != null || prelu != null);
    if (!tA && !tB && !unfuse) return original(args);
    const scope = new KernelScope(args.backend, backendName);
    try {
      const flags = { transposeA: false, transposeB: false };
      const ra = inputs.a.shape.length;
      const rb = inputs.b.shape.length;
      const plain = bias == null && prelu == null &&
        (attrs.activation == null || attrs.activation === "linear");
      if (plain && swapPays(inputs.a, inputs.b, tA, tB)) {
        // out^T = op(b)^T op(a)^T, transposed back.
        const bT = tB ? inputs.b : scope.transpose(inputs.b, swapLastTwo(rb));
        const aT = tA ? inputs.a : scope.transpose(inputs.a, swapLastTwo(ra));
        const outT = scope.adopt(
          original({
            inputs: { a: bT, b: aT },
            backend: args.backend,
            attrs: { ...args.attrs, ...flags },
          }) as tf.TensorInfo,
        );
        return scope.finish(scope.transpose(outT, swapLastTwo(outT.shape.length)));
      }
      const a = tA ? scope.transpose(inputs.a, swapLastTwo(ra)) : inputs.a;
      const b = tB ? scope.transpose(inputs.b, swapLastTwo(rb)) : inputs.b;
      if (!unfuse) {
        const out = original({
          inputs: { ...inputs, a, b } as tf.NamedTensorInfoMap,
          backend: args.backend,
          attrs: { ...args.attrs, ...flags },
        });
        // Matmul kernels return one tensor; a list would be passed through untouched.
        scope.finish(Array.isArray(out) ? out[0] : out);
        return out;
      }
      let out = scope.adopt(
        original({
          inputs: { a, b },
          backend: args.backend,
          attrs: { ...args.attrs, ...flags, activation: "linear" },
        }) as tf.TensorInfo,
      );
      if (bias != null) out = scope.run("Add", { a: out, b: bias });
      out = activate(scope, out, attrs.activation, prelu, attrs.leakyreluAlpha);
      return scope.finish(out);
    } catch (e) {
      scope.disposeAll();
      throw e;
    }
  };
}
