/**
 * Compose a backend's registered kernels inside another kernel, the way
 * tfjs-backend-wasm's own kernels do (they call `transpose({inputs, backend, attrs})`
 * directly and free intermediates with `backend.disposeData`).
 *
 * Why not tf ops: a kernelFunc runs inside the engine's `runKernel`; calling tf ops
 * from there would record them on the gradient tape and allocate engine tensors.
 * Calling kernelFuncs directly keeps everything at the backend level.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";

/** What a kernel needs from its backend here: reference-counted data disposal. */
export interface DisposingBackend {
  /** Decrement the data's reference count, freeing it at zero (as every tfjs backend). */
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
}

/** Inputs of a kernel: named tensors, or a list for kernels such as Concat. */
export type KernelInputs = Record<string, tf.TensorInfo> | tf.TensorInfo[];

/**
 * Runs kernels of one backend and remembers every output, so that all
 * intermediates are freed in one place ({@link KernelScope.finish}).
 *
 * Inside a kernelFunc (`backend` is the backend it received):
 * `const scope = new KernelScope(backend, "wasm"); const t = scope.transpose(x, [0, 2, 1]);`
 * then `return scope.finish(scope.run("BatchMatMul", { a: t, b }, attrs));`.
 */
export class KernelScope {
  private readonly outputs: tf.TensorInfo[] = [];

  /**
   * @param backend the backend instance the enclosing kernelFunc received.
   * @param backendName the name kernels are registered under (e.g. "wasm").
   */
  constructor(readonly backend: unknown, readonly backendName: string) {}

  /**
   * Run the kernel currently registered as `kernelName` for this backend.
   * Looked up at call time, so wrappers registered later (e.g. the matMul fix) are used.
   *
   * @throws Error naming the kernel when it is not registered for the backend.
   */
  run(
    kernelName: string,
    inputs: KernelInputs,
    attrs: Record<string, unknown> = {},
  ): tf.TensorInfo {
    const config = tf.getKernel(kernelName, this.backendName);
    if (config == null) {
      throw new Error(
        `KernelScope: kernel '${kernelName}' is not registered for backend '${this.backendName}'`,
      );
    }
    const out = config.kernelFunc({
      inputs: inputs as tf.NamedTensorInfoMap,
      backend: this.backend as tf.KernelBackend,
      attrs: attrs as tf.NamedAttrMap,
    });
    if (Array.isArray(out)) {
      this.outputs.push(...out);
      return out[0];
    }
    this.outputs.push(out);
    return out;
  }

  /** Track a tensor made outside {@link KernelScope.run} (e.g. by a kept kernelFunc) for disposal. */
  adopt(t: tf.TensorInfo): tf.TensorInfo {
    this.outputs.push(t);
    return t;
  }

  /** Reshape (free on every backend: shares data and bumps its reference count). */
  reshape(x: tf.TensorInfo, shape: number[]): tf.TensorInfo {
    return this.run("Reshape", { x }, { shape });
  }

  /** Transpose with an explicit permutation. */
  transpose(x: tf.TensorInfo, perm: number[]): tf.TensorInfo {
    return this.run("Transpose", { x }, { perm });
  }

  /**
   * Free every intermediate output except `result`, and return `result`.
   * A reshape of an intermediate shares its data; reference counting keeps it alive.
   */
  finish(result: tf.TensorInfo): tf.TensorInfo {
    const backend = this.backend as DisposingBackend;
    for (const t of this.outputs) {
      if (t !== result) backend.disposeData(t.dataId);
    }
    this.outputs.length = 0;
    return result;
  }

  /** Free every intermediate (on error paths). */
  disposeAll(): void {
    const backend = this.backend as DisposingBackend;
    for (const t of this.outputs) backend.disposeData(t.dataId);
    this.outputs.length = 0;
  }
}

/**
 * Pad (with zeros) or crop the two spatial axes of an NHWC tensor so that the result
 * has `outH` rows whose row r is input row `r - before[0]` (likewise for columns).
 * `before` may be negative (crop at the start); the end is padded or cropped to fit.
 *
 * For example, the 'same' 7x7 padding of a 56x56 map, 3 zero rows and columns on each side,
 * is `padCropSpatial(scope, x, [3, 3], [62, 62])`.
 */
export function padCropSpatial(
  scope: KernelScope,
  x: tf.TensorInfo,
  before: [number, number],
  outSize: [number, number],
): tf.TensorInfo {
  const [n, h, w, c] = x.shape;
  const begin = [0, 0, 0, 0];
  const size = [n, h, w, c];
  const paddings: [number, number][] = [[0, 0], [0, 0], [0, 0], [0, 0]];
  let needSlice = false;
  let needPad = false;
  for (let d = 0; d < 2; d++) {
    const axis = d + 1;
    const extent = x.shape[axis];
    const start = Math.max(0, -before[d]);
    const padBefore = Math.max(0, before[d]);
    const take = Math.min(extent - start, outSize[d] - padBefore);
    if (take <= 0) {
      throw new Error(
        `padCropSpatial: window of ${
          outSize[d]
        } starting at ${-before[d]} misses an axis of ${extent}`,
      );
    }
    begin[axis] = start;
    size[axis] = take;
    paddings[axis] = [padBefore, outSize[d] - padBefore - take];
    if (start !== 0 || take !== extent) needSlice = true;
    if (paddings[axis][0] !== 0 || paddings[axis][1] !== 0) needPad = true;
  }
  let out = x;
  if (needSlice) out = scope.run("Slice", { x: out }, { begin, size });
  if (needPad) out = scope.run("PadV2", { x: out }, { paddings, constantValue: 0 });
  return out;
}
