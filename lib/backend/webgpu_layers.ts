/**
 * The model's layers on the webgpu backend, in this project's kernels and without TF.js's
 * detours (issue #12, the fast formulation on a GPU). {@link useWebGpuLayers} changes three
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
 *   Backward, the input's gradient multiplies by the kernel transposed in a dispatch of its own
 *   rather than with `transposeB` (faster: see {@link webGpuDense}).
 * - DepthwiseConv2D layers (NHWC, no dilation) run with their bias fused into the convolution,
 *   where tfjs-layers adds it as a separate op: one dispatch fewer forward.
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

/** What the wrappers below read of a tfjs-layers layer (structurally). */
interface LayerLike {
  call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[];
  invokeCallHook(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): void;
}

/** A tfjs-layers Dense layer (structurally). */
interface DenseLike extends LayerLike {
  kernel?: { read(): tf.Tensor };
  bias?: { read(): tf.Tensor } | null;
  activation?: ActivationLike;
}

/** A tfjs-layers DepthwiseConv2D layer (structurally). */
interface DepthwiseLike extends LayerLike {
  depthwiseKernel?: { read(): tf.Tensor };
  bias?: { read(): tf.Tensor } | null;
  activation?: ActivationLike;
  strides: number[];
  padding: "valid" | "same";
  dataFormat: string;
  dilationRate: number[] | number;
}

/** Marks a layer whose `call` {@link wrapCall} has wrapped. */
const WRAPPED = Symbol("convnext-tfjs webgpu call");

/**
 * Wraps a layer's `call`: on webgpu, `fast(x)` of its one input, unless `fast` returns
 * undefined (a case it does not take), when the layer's own `call` runs.
 */
function wrapCall(layer: LayerLike, fast: (x: tf.Tensor) => tf.Tensor | undefined): void {
  const holder = layer as unknown as Record<symbol, boolean>;
  if (holder[WRAPPED]) return;
  holder[WRAPPED] = true;
  const stock = layer.call.bind(layer);
  layer.call = (inputs, kwargs) => {
    const x = Array.isArray(inputs) && inputs.length === 1 ? inputs[0] : inputs;
    const y = tf.getBackend() === "webgpu" && !Array.isArray(x)
      ? tf.tidy(() => fast(x))
      : undefined;
    if (y) {
      layer.invokeCallHook(inputs, kwargs);
      return y;
    }
    return stock(inputs, kwargs);
  };
}

/** The layer's activation on `y`, skipping a linear one (as tfjs-layers computes it). */
function activate(activation: ActivationLike | undefined, y: tf.Tensor): tf.Tensor {
  return activation && activation.getClassName() !== "linear" ? activation.apply(y) : y;
}

function webGpuDense_(rows: tf.Tensor2D, kernel: tf.Tensor2D, bias?: tf.Tensor): tf.Tensor2D {
  const dense = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [a, w, b] = args.slice(0, -1) as tf.Tensor2D[];
    save([a, w]);
    return {
      value: tf.fused.matMul({ a, b: w, bias: b }),
      gradFunc: (dy: tf.Tensor, [x, k]: tf.Tensor[]) => {
        const grads = [tf.matMul(dy, tf.transpose(k)), tf.matMul(x, dy, true, false)];
        return b ? [...grads, tf.sum(dy, 0)] : grads;
      },
    };
  });
  return (bias ? dense(rows, kernel, bias) : dense(rows, kernel)) as tf.Tensor2D;
}

/**
 * `rows kernel (+ bias)` as one fused product, whose gradient takes the input's as `dy` times
 * the kernel transposed by its own (small) dispatch: TF.js's gradient multiplies by the
 * kernel with `transposeB`, which ran 25-35% slower than a transpose and a plain product on
 * the software adapter (all four stages' shapes, batch 2 at 128 and batch 8 at 224). The
 * kernel's gradient is `rows^T dy` as in TF.js, the bias's the column sums of `dy`. A TF.js op:
 * `tf.profile` lists it as "webGpuDense__op" around its kernels.
 */
const webGpuDense: typeof webGpuDense_ = tf.op({ webGpuDense_ });

/**
 * Dense on `x` (rank >= 3) as tfjs-layers computes it, in fewer dispatches: the rows of `x`
 * times the kernel with the bias fused in ({@link webGpuDense}), then the activation, reshaped
 * back.
 */
function denseRows(layer: DenseLike, x: tf.Tensor): tf.Tensor | undefined {
  const kernel = layer.kernel?.read();
  if (x.rank < 3 || kernel?.rank !== 2) return undefined;
  const rows = tf.reshape(x, [-1, x.shape[x.rank - 1]]) as tf.Tensor2D;
  const bias = layer.bias?.read();
  const y = webGpuDense(rows, kernel as tf.Tensor2D, bias);
  const shape = [...x.shape.slice(0, -1), kernel.shape[1]] as number[];
  return tf.reshape(activate(layer.activation, y), shape);
}

/**
 * DepthwiseConv2D on an NHWC `x` as tfjs-layers computes it, with the bias fused into the
 * convolution (tfjs-layers adds it as a separate op).
 */
function depthwiseWithBias(layer: DepthwiseLike, x: tf.Tensor): tf.Tensor | undefined {
  const filter = layer.depthwiseKernel?.read();
  const dilation = [layer.dilationRate].flat();
  if (
    x.rank !== 4 || filter?.rank !== 4 || layer.dataFormat !== "channelsLast" ||
    dilation.some((d) => d !== 1)
  ) {
    return undefined;
  }
  const y = tf.fused.depthwiseConv2d({
    x: x as tf.Tensor4D,
    filter: filter as tf.Tensor4D,
    strides: layer.strides as [number, number],
    pad: layer.padding,
    dataFormat: "NHWC",
    bias: layer.bias?.read(),
  });
  return activate(layer.activation, y);
}

/**
 * Lets `layers` run on this project's webgpu kernels whenever the webgpu backend is active
 * (see the module doc): GELU activations as one kernel each way, Dense layers on feature maps
 * as one fused matrix product, depthwise convolutions with their bias fused. On other
 * backends, and in saved models, they stay TF.js's own. Idempotent.
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
    const like = layer as unknown as DenseLike & DepthwiseLike;
    if (layer.getClassName() === "Dense") wrapCall(like, (x) => denseRows(like, x));
    if (layer.getClassName() === "DepthwiseConv2D") {
      wrapCall(like, (x) => depthwiseWithBias(like, x));
    }
  }
}
