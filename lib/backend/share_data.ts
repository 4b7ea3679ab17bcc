/**
 * `Identity` and same-dtype `Cast` that share the input's data instead of copying it.
 *
 * Why: tfjs-backend-wasm copies the whole tensor for both. The engine clones every tensor
 * that a custom gradient saves (fused matmul and conv save their inputs and outputs), so a
 * convnext_tiny training step made 1144 full copies of activations (measured 300 ms at
 * batch 2, and heap the 4 GiB cap can ill afford). Tensors are immutable in TF.js, and the
 * cpu backend's Identity already shares data by reference counting, as Reshape does on
 * every backend.
 *
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";

/** What sharing needs from the backend: reference counts on data. */
interface RefCountingBackend {
  incRef(dataId: tf.DataId): void;
}

function share(x: tf.TensorInfo, backend: unknown): tf.TensorInfo {
  (backend as RefCountingBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

/**
 * Wrap an `Identity` kernelFunc: numeric tensors share their data; strings go to `original`.
 *
 * @param original the backend's Identity kernelFunc.
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import "@tensorflow/tfjs-backend-wasm";
 * import { sharingIdentity } from "./share_data.ts";
 * await tf.setBackend("wasm");
 * const cfg = tf.getKernel("Identity", "wasm")!;
 * tf.unregisterKernel("Identity", "wasm");
 * tf.registerKernel({ ...cfg, kernelFunc: sharingIdentity(cfg.kernelFunc) });
 * ```
 */
export function sharingIdentity(original: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    if (
      x.dtype === "string" ||
      typeof (args.backend as Partial<RefCountingBackend>).incRef !== "function"
    ) {
      return original(args);
    }
    return share(x, args.backend);
  };
}

/**
 * Wrap a `Cast` kernelFunc: a cast to the tensor's own dtype shares the data; real
 * conversions go to `original`.
 *
 * @param original the backend's Cast kernelFunc.
 */
export function sharingCast(original: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { dtype } = args.attrs as { dtype?: tf.DataType };
    if (
      dtype !== x.dtype || x.dtype === "string" ||
      typeof (args.backend as Partial<RefCountingBackend>).incRef !== "function"
    ) {
      return original(args);
    }
    return share(x, args.backend);
  };
}
