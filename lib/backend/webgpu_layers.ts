/**
 * The model's layers on the webgpu backend, in this project's kernels and without TF.js's
 * detours (issue #12, the fast formulation on a GPU). {@link useWebGpuLayers} changes two
 * things of a model's layers, at run time only and only while the webgpu backend is active;
 * on other backends, and in saved models, they are TF.js's own:
 *
 * - GELU activations (TF.js's `"gelu"`) run as `webGpuGeluTrainable` (./webgpu_kernels.ts):
 *   one dispatch forward and one backward, where TF.js's ops take 5 and about 10.
 * - Dense layers on inputs of rank 3 and more (ConvNeXt's pointwise layers on NHWC maps) run
 *   as one matrix product with the bias fused in, on the input's rows. tfjs-layers' `dot`
 *   transposes the 2-D kernel with an identity permutation first (a copy of the kernel on
 *   webgpu, and its gradient another) and adds the bias of a layer whose activation it cannot
 *   fuse (GELU) as a separate op: per ConvNeXt block 3 dispatches fewer forward, 3 backward.
 *
 * The model's LayerNorm layer (lib/model/layers.ts) takes `webGpuLayerNorm` itself.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { webGpuGeluTrainable } from "./webgpu_kernels.ts";

/** What Dense layers call their activation with (tfjs-layers' `Activation`, structurally). */
interface ActivationLike {
  apply(x: tf.Tensor, axis?: number): tf.Tensor;
  getClassName(): string;
  getConfig(): tf.serialization.ConfigDict;
}

/** The "gelu" activation that runs {@link webGpuGeluTrainable} on webgpu, `stock` elsewhere. */
class GeluOnWebGpu implements ActivationLike {
  constructor(readonly stock: ActivationLike) {}
  apply(x: tf.Tensor, axis?: number): tf.Tensor {
    return tf.getBackend() === "webgpu" ? webGpuGeluTrainable(x) : this.stock.apply(x, axis);
  }
  /** Saved as TF.js's own (`"gelu"`): models save and load as before. */
  getClassName(): string {
    return this.stock.getClassName();
  }
  getConfig(): tf.serialization.ConfigDict {
    return this.stock.getConfig();
  }
}

/** What {@link denseRows} reads of a tfjs-layers Dense layer (structurally). */
interface DenseLike {
  kernel?: { read(): tf.Tensor };
  bias?: { read(): tf.Tensor } | null;
  activation?: ActivationLike;
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
  invokeCallHook(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): void;
}

/** Marks a Dense layer whose `call` {@link useWebGpuLayers} has wrapped. */
const WRAPPED = Symbol("convnext-tfjs webgpu dense");

/**
 * Dense on `x` (rank >= 3) as tfjs-layers computes it, in fewer dispatches: the rows of `x`
 * times the kernel with the bias fused in, then the activation, reshaped back.
 */
function denseRows(layer: DenseLike, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const kernel = layer.kernel!.read() as tf.Tensor2D;
    const rows = tf.reshape(x, [-1, x.shape[x.rank - 1]]) as tf.Tensor2D;
    let y: tf.Tensor = tf.fused.matMul({ a: rows, b: kernel, bias: layer.bias?.read() });
    const activation = layer.activation;
    if (activation && activation.getClassName() !== "linear") y = activation.apply(y);
    return tf.reshape(y, [...x.shape.slice(0, -1), kernel.shape[1]]);
  });
}

/** Wraps a Dense layer's `call`: {@link denseRows} on webgpu for inputs of rank >= 3. */
function wrapDense(layer: DenseLike): void {
  const holder = layer as unknown as Record<symbol, boolean>;
  if (holder[WRAPPED]) return;
  holder[WRAPPED] = true;
  const stock = layer.call.bind(layer);
  layer.call = (inputs, kwargs) => {
    const x = Array.isArray(inputs) && inputs.length === 1 ? inputs[0] : inputs;
    if (
      tf.getBackend() !== "webgpu" || Array.isArray(x) || x.rank < 3 ||
      layer.kernel?.read().rank !== 2
    ) {
      return stock(inputs, kwargs);
    }
    layer.invokeCallHook(inputs, kwargs);
    return denseRows(layer, x);
  };
}

/**
 * Lets `layers` run on this project's webgpu kernels whenever the webgpu backend is active
 * (see the module doc): GELU activations as one kernel each way, Dense layers on feature maps
 * as one fused matrix product. On other backends, and in saved models, they stay TF.js's own.
 * Idempotent.
 *
 * @example
 * ```ts
 * import * as tf from "npm:@tensorflow/tfjs@4.22.0";
 * import { useWebGpuLayers } from "./webgpu_layers.ts";
 * const dense = tf.layers.dense({ units: 4, activation: "gelu" });
 * useWebGpuLayers([dense]);
 * console.log(dense.getConfig().activation); // "gelu": saved as before
 * ```
 */
export function useWebGpuLayers(layers: readonly tf.layers.Layer[]): void {
  for (const layer of layers) {
    const holder = layer as unknown as { activation?: ActivationLike };
    const act = holder.activation;
    if (act && !(act instanceof GeluOnWebGpu) && act.getClassName() === "gelu") {
      holder.activation = new GeluOnWebGpu(act);
    }
    if (layer.getClassName() === "Dense") wrapDense(layer as unknown as DenseLike);
  }
}
