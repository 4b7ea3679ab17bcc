/**
 * Makes sure training can run on the WebGPU backend (tfjs-backend-webgpu 4.22).
 *
 * Unlike wasm (./wasm_grads.ts), tfjs-backend-webgpu 4.22 registers every kernel that a
 * ConvNeXt training step runs, gradients included (`Conv2DBackpropFilter` and
 * `Conv2DBackpropInput` of the stride-4 stem and stride-2 downsampling convs, the
 * `DepthwiseConv2dNative` backprops of the 7x7 convs, `Erf` of GELU, the `Mean`/`Sum`/
 * `Rsqrt`/`Square` family of LayerNorm, `BatchMatMul`/`_FusedMatMul` with transpose
 * flags), and tests/webgpu_grads_test.ts measures them equal to the cpu backend's (about
 * 1e-6 relative 2-norm, at most 1e-4 elementwise) on every trainable variable of small
 * hierarchical and isotropic ConvNeXts, with layer scale and with seeded drop path. So
 * {@link installWebGpuTrainingKernels} adds none; it registers this project's kernels
 * (./webgpu_kernels.ts: GELU and LayerNorm, one dispatch each where TF.js ops take five and
 * nine, and AdamW's and the EMA's updates), replaces the convolutions' gradients for speed
 * (./webgpu_conv_grads.ts: TF.js sums each filter value over the whole batch in one
 * invocation; ours are matrix products, split reductions and a forward depthwise conv), and
 * checks that the kernels a training step runs are registered for "webgpu" (a missing one
 * would otherwise surface as "kernel not registered" deep inside `fit()`), naming the import
 * that registers them.
 *
 * Of the backend-generic gradients of ./conv_grads.ts, which wasm needs, webgpu uses three
 * (./webgpu_conv_grads.ts runs them): the patchify convs' filter and input gradients and the
 * depthwise input gradient of ConvNeXt's 7x7. The depthwise filter gradient there calls
 * `DepthwiseConv2dNative` without a `dataFormat` attribute, which wasm ignores and webgpu's
 * kernel rejects ("Unknown dataFormat undefined"); ./webgpu_conv_grads.ts has its own.
 *
 * What training on webgpu does need, and is not a kernel: no synchronous reads. The
 * backend's `readSync` copies through `OffscreenCanvas.getContext("2d")` (tfjs PR #7576,
 * https://github.com/tensorflow/tfjs/pull/7576), which Deno lacks (its OffscreenCanvas
 * has only "bitmaprenderer" and "webgpu" contexts, denoland/deno#29357), so `dataSync()`
 * of a GPU-resident tensor throws "Cannot read properties of null (reading 'clearRect')".
 * Results under 1000 elements whose inputs are still on the CPU are computed on the CPU
 * (`WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD`) and read fine, which hides the problem at small
 * sizes.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { installWebGpuConvGrads, WEBGPU_CONV_GRAD_KERNELS } from "./webgpu_conv_grads.ts";
import { registerWebGpuKernels, WEBGPU_OWN_KERNELS } from "./webgpu_kernels.ts";

const BACKEND = "webgpu";

/**
 * Kernels that one training step of a ConvNeXt (forward with drop path, cross entropy,
 * backward, AdamW update) runs on webgpu, as `tf.profile` lists them (the test checks the
 * list against a profiled step). {@link installWebGpuTrainingKernels} requires them.
 */
export const WEBGPU_TRAINING_KERNELS = [
  ...WEBGPU_OWN_KERNELS,
  "Add",
  "BatchMatMul",
  "Cast",
  "Conv2DBackpropFilter",
  "Conv2DBackpropInput",
  "DepthwiseConv2dNative",
  "DepthwiseConv2dNativeBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "Erf",
  "Exp",
  "Floor",
  "FusedConv2D",
  "FusedDepthwiseConv2D",
  "Identity",
  "Log",
  "Max",
  "Mean",
  "Multiply",
  "Neg",
  "OneHot",
  "Pow",
  "RealDiv",
  "Reshape",
  "Rsqrt",
  "Sqrt",
  "Square",
  "Sub",
  "Sum",
  "Transpose",
  "_FusedMatMul",
] as const;

/** What {@link installWebGpuTrainingKernels} found. */
export interface WebGpuTrainingInstall {
  /** Backend kernels added now: always empty with tfjs-backend-webgpu 4.22 (it lacks none). */
  added: string[];
  /**
   * Backend kernels replaced by this call (./webgpu_conv_grads.ts: the convolutions'
   * filter and input gradients; empty when an earlier call did it).
   */
  replaced: string[];
  /** Kernels checked and left as the backend registered them. */
  unchanged: string[];
}

/**
 * Make sure the webgpu backend can run a ConvNeXt training step: check that every kernel
 * of {@link WEBGPU_TRAINING_KERNELS} is registered for "webgpu", after registering this
 * project's own (./webgpu_kernels.ts). tfjs-backend-webgpu 4.22 lacks none and gets none
 * wrong for ConvNeXt, so none is added; its convolution gradients are replaced by faster ones
 * (./webgpu_conv_grads.ts; see the module doc). The call is the webgpu counterpart of
 * `installWasmTrainingKernels` for callers that switch on the backend, and affects no other
 * backend. Idempotent. Works before or after `tf.setBackend("webgpu")`, but only after the
 * backend's module (`@tensorflow/tfjs-backend-webgpu`) was imported, which registers its
 * kernels.
 *
 * @returns the kernels added (none), replaced and checked (`unchanged`).
 * @throws Error naming the missing kernels when they are not registered for "webgpu" (the
 *   backend module was not imported).
 * @example
 * ```ts
 * import { selectBackend } from "./select.ts";
 * import { installWebGpuTrainingKernels } from "./webgpu_grads.ts";
 * await selectBackend("webgpu"); // imports the backend, which registers its kernels
 * console.log(installWebGpuTrainingKernels().unchanged.length); // the kernels checked
 * ```
 */
export function installWebGpuTrainingKernels(): WebGpuTrainingInstall {
  registerWebGpuKernels(); // this project's kernels (./webgpu_kernels.ts)
  const missing = WEBGPU_TRAINING_KERNELS.filter((name) => tf.getKernel(name, BACKEND) == null);
  if (missing.length > 0) {
    throw new Error(
      `installWebGpuTrainingKernels: kernels not registered for "webgpu": ${missing.join(", ")}; ` +
        `import "@tensorflow/tfjs-backend-webgpu" (or selectBackend("webgpu")) first`,
    );
  }
  const replaced = installWebGpuConvGrads();
  const ours = WEBGPU_CONV_GRAD_KERNELS as readonly string[];
  return {
    added: [],
    replaced,
    unchanged: WEBGPU_TRAINING_KERNELS.filter((name) => !ours.includes(name)),
  };
}

/** True when every kernel a ConvNeXt training step runs is registered for "webgpu". */
export function webGpuTrainingKernelsReady(): boolean {
  return WEBGPU_TRAINING_KERNELS.every((name) => tf.getKernel(name, BACKEND) != null);
}
