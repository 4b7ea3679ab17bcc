/**
 * Makes training work on the wasm backend (tfjs-backend-wasm 4.22).
 *
 * Out of the box `fit()` on wasm fails: `Conv2DBackpropFilter`,
 * `DepthwiseConv2dNativeBackpropFilter` and `DepthwiseConv2dNativeBackpropInput` are not
 * registered. Its matmul uses XNNPACK only without transpose flags and at batch 1; otherwise
 * a plain C++ loop runs, so matmuls with transpose flags (every Dense gradient) are 10 to
 * 20 times slower than with explicit transposes, and that loop indexes the bias by
 * row * columns + column, so `_FusedMatMul` with a flag or a batch plus a bias is wrong.
 * {@link installWasmTrainingKernels}:
 *
 * - registers the missing kernels, built from kernels wasm has (./conv_grads.ts);
 * - wraps `BatchMatMul` and `_FusedMatMul` to transpose explicitly (./matmul_fix.ts);
 * - wraps `Conv2DBackpropInput` with a matmul fast path for kernel == stride convs;
 * - wraps `DepthwiseConv2dNative` to compute 7x7 filters as four 5x5 ones, which wasm
 *   runs 6x faster per multiply-add (./depthwise_split.ts);
 * - wraps `Sum` and `Mean` to reduce outer axes (bias and LayerNorm gradients) with an
 *   average pooling instead of wasm's transpose-then-reduce (./reduce_fix.ts);
 * - wraps `Identity` and same-dtype `Cast` to share data instead of copying it
 *   (./share_data.ts): the engine clones every tensor a custom gradient saves.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
// Registers the wasm backend and its kernels, which the installer wraps.
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import {
  conv2DBackpropFilter,
  depthwiseBackpropFilter,
  depthwiseBackpropInput,
  patchifyConv2DBackpropInput,
} from "./conv_grads.ts";
import { splitDepthwiseConv2D } from "./depthwise_split.ts";
import { explicitTransposeMatMul } from "./matmul_fix.ts";
import { poolReduction } from "./reduce_fix.ts";
import { sharingCast, sharingIdentity } from "./share_data.ts";

const BACKEND = "wasm";

/** Kernels {@link installWasmTrainingKernels} adds when the wasm backend lacks them. */
export const WASM_ADDED_KERNELS = [
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
] as const;

/**
 * Kernels {@link installWasmTrainingKernels} wraps (the original still runs every case the
 * wrapper does not handle itself).
 */
export const WASM_WRAPPED_KERNELS = [
  "BatchMatMul",
  "_FusedMatMul",
  "Conv2DBackpropInput",
  "DepthwiseConv2dNative",
  "Sum",
  "Mean",
  "Identity",
  "Cast",
] as const;

/** The wrapped kernels that make up the matMul fix (see {@link WasmTrainingOptions}). */
const MATMUL_KERNELS: readonly string[] = ["BatchMatMul", "_FusedMatMul"];

const WRAPPERS: Record<
  (typeof WASM_WRAPPED_KERNELS)[number],
  (original: tf.KernelFunc, backendName: string) => tf.KernelFunc
> = {
  BatchMatMul: explicitTransposeMatMul,
  _FusedMatMul: explicitTransposeMatMul,
  Conv2DBackpropInput: patchifyConv2DBackpropInput,
  DepthwiseConv2dNative: (original, backendName) => splitDepthwiseConv2D(original, backendName),
  Sum: (original, backendName) => poolReduction(original, backendName, false),
  Mean: (original, backendName) => poolReduction(original, backendName, true),
  Identity: sharingIdentity,
  Cast: sharingCast,
};

// A global symbol marks our kernelFuncs, so that a second copy of this module (another
// import path) still sees that the registry was already patched.
const MARK = Symbol.for("convnext-tfjs.wasmTrainingKernel");

type Marked = tf.KernelFunc & { [MARK]?: true };

function mark(f: tf.KernelFunc): tf.KernelFunc {
  (f as Marked)[MARK] = true;
  return f;
}

function isOurs(config: tf.KernelConfig | undefined): boolean {
  return config != null && (config.kernelFunc as Marked)[MARK] === true;
}

/** What {@link installWasmTrainingKernels} did, kernel by kernel. */
export interface WasmTrainingInstall {
  /** Kernels registered now (missing before). */
  added: string[];
  /** Kernels whose registration was replaced by a wrapper now. */
  wrapped: string[];
  /** Kernels left alone: already ours, or (for added kernels) provided by tfjs itself. */
  unchanged: string[];
}

/** Options of {@link installWasmTrainingKernels}. */
export interface WasmTrainingOptions {
  /**
   * Replace BatchMatMul/_FusedMatMul by the explicit-transpose wrappers. Default true;
   * false only to measure the difference (a later call with true still installs them).
   */
  matMulFix?: boolean;
}

/**
 * Register, for the wasm backend, the gradient kernels that training needs, the matMul
 * fix and the other wrappers listed in the module doc. Idempotent: a second call changes nothing. Works before or after
 * `tf.setBackend("wasm")`, and affects only the wasm backend.
 *
 * @param options see {@link WasmTrainingOptions}.
 * @returns what was added, wrapped or left unchanged.
 * @throws Error if a wasm kernel to wrap (e.g. BatchMatMul) is missing
 *   (i.e. `@tensorflow/tfjs-backend-wasm` did not register its kernels).
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import "@tensorflow/tfjs-backend-wasm";
 * import { installWasmTrainingKernels } from "./wasm_grads.ts";
 * await tf.setBackend("wasm");
 * installWasmTrainingKernels();
 * const x = tf.randomUniform([1, 8, 8, 4]) as tf.Tensor4D;
 * const filter = tf.variable(tf.randomUniform([3, 3, 4, 1]) as tf.Tensor4D);
 * // the depthwise filter gradient is one of the kernels tfjs-backend-wasm lacks
 * const { grads } = tf.variableGrads(() => tf.depthwiseConv2d(x, filter, 1, "same").sum());
 * if (grads[filter.name].shape.join() !== "3,3,4,1") throw new Error("no gradient");
 * ```
 */
export function installWasmTrainingKernels(
  options: WasmTrainingOptions = {},
): WasmTrainingInstall {
  const result: WasmTrainingInstall = { added: [], wrapped: [], unchanged: [] };
  const factories: Record<(typeof WASM_ADDED_KERNELS)[number], (b: string) => tf.KernelFunc> = {
    Conv2DBackpropFilter: conv2DBackpropFilter,
    DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter,
    DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput,
  };
  for (const name of WASM_ADDED_KERNELS) {
    if (tf.getKernel(name, BACKEND) != null) {
      // Ours from an earlier call, or a future tfjs that ships the kernel: keep it.
      result.unchanged.push(name);
      continue;
    }
    tf.registerKernel({
      kernelName: name,
      backendName: BACKEND,
      kernelFunc: mark(factories[name](BACKEND)),
    });
    result.added.push(name);
  }
  for (const name of WASM_WRAPPED_KERNELS) {
    if (options.matMulFix === false && MATMUL_KERNELS.includes(name)) {
      result.unchanged.push(name);
      continue;
    }
    const original = tf.getKernel(name, BACKEND);
    if (original == null) {
      throw new Error(
        `installWasmTrainingKernels: kernel '${name}' is not registered for 'wasm'; ` +
          `import "@tensorflow/tfjs-backend-wasm" first`,
      );
    }
    if (isOurs(original)) {
      result.unchanged.push(name);
      continue;
    }
    // The registry refuses duplicates; replace the entry, keeping setupFunc/disposeFunc so
    // that a backend initialized later still sets up the original kernel.
    tf.unregisterKernel(name, BACKEND);
    tf.registerKernel({
      ...original,
      kernelFunc: mark(WRAPPERS[name](original.kernelFunc, BACKEND)),
    });
    result.wrapped.push(name);
  }
  return result;
}

/** True when {@link installWasmTrainingKernels} has patched the wasm kernel registry. */
export function wasmTrainingKernelsInstalled(): boolean {
  return WASM_ADDED_KERNELS.every((name) => tf.getKernel(name, BACKEND) != null) &&
    WASM_WRAPPED_KERNELS.every((name) => isOurs(tf.getKernel(name, BACKEND)));
}
