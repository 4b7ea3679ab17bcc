/**
 * Size checks before a forward pass on webgpu. Each tensor lives in one GPU buffer, which
 * must fit the device's `maxBufferSize` to be created and its `maxStorageBufferBindingSize`
 * to be read by a shader (128 MiB on many adapters). A tensor above either fails deep inside
 * a shader dispatch with a validation error that names neither the tensor nor the limit;
 * {@link checkWebGpuLimits} says which layer, how many bytes and which limit, first.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";

/** The device limits that bound one tensor's size. */
export interface BufferLimits {
  /** Largest GPU buffer, in bytes. */
  maxBufferSize: number;
  /** Largest buffer a shader may bind, in bytes. */
  maxStorageBufferBindingSize: number;
}

let override: BufferLimits | undefined;

/**
 * Replaces the device's limits in {@link checkWebGpuLimits} (tests use tiny ones to trigger
 * the check without large tensors); `undefined` restores the device's.
 */
export function overrideWebGpuLimits(limits: BufferLimits | undefined): void {
  override = limits;
}

/** The active webgpu device's buffer limits, or undefined when webgpu is not active. */
export function webGpuLimits(): BufferLimits | undefined {
  if (tf.engine().backendName !== "webgpu") return undefined;
  if (override) return { ...override };
  const device = (tf.backend() as unknown as { device?: GPUDevice }).device;
  if (!device) return undefined;
  return {
    maxBufferSize: device.limits.maxBufferSize,
    maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
  };
}

/** One tensor a forward pass holds: what it is, its shape and bytes. */
export interface BufferNeed {
  /** e.g. `output of layer "stem_conv"` or `weight "head_fc/kernel"`. */
  what: string;
  /** Its shape. */
  shape: number[];
  /** Its size in bytes (float32). */
  bytes: number;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * The largest tensors of one forward pass of `model` on a batch of `inputShape`: the input,
 * every layer's output (shapes computed layer by layer from the input's, so models with
 * free spatial dimensions are sized for this input) and every weight, largest first.
 */
export function bufferNeeds(model: tf.LayersModel, inputShape: readonly number[]): BufferNeed[] {
  const needs: BufferNeed[] = [];
  const shapes = new Map<string, number[]>();
  const inputNames = new Set(model.inputLayers.map((l) => l.name));
  for (const layer of model.layers) {
    let shape: number[] | undefined;
    if (inputNames.has(layer.name)) {
      shape = [...inputShape];
      needs.push({ what: `input "${layer.name}"`, shape, bytes: size(shape) * 4 });
    } else {
      const inbound = (layer.inboundNodes[0]?.inboundLayers ?? []).map((l) => shapes.get(l.name));
      if (inbound.length === 0 || inbound.some((s) => s === undefined)) continue;
      const out = layer.computeOutputShape(
        inbound.length === 1 ? inbound[0]! : inbound as number[][],
      );
      // Multi-output layers (none in ConvNeXt) are sized by their first output.
      shape = (Array.isArray(out[0]) ? out[0] : out) as number[];
      if (shape.some((d) => d === null || !(d >= 0))) continue;
      needs.push({ what: `output of layer "${layer.name}"`, shape, bytes: size(shape) * 4 });
    }
    shapes.set(layer.name, shape);
  }
  for (const w of model.weights) {
    const shape = w.shape as number[];
    needs.push({ what: `weight "${w.originalName}"`, shape, bytes: size(shape) * 4 });
  }
  return needs.sort((a, b) => b.bytes - a.bytes);
}

/**
 * Throws when a tensor of a forward pass of `model` on `input` (a tensor or its shape)
 * would not fit the webgpu device's buffer limits; does nothing on other backends.
 *
 * @param batchSize the batch size `predict` splits the input into (default: the whole
 *   input's batch).
 * @param limits the limits to check against (default: the active device's).
 * @throws Error naming the tensor, the bytes it needs and the limit it exceeds.
 */
export function checkWebGpuLimits(
  model: tf.LayersModel,
  input: tf.Tensor | tf.Tensor[] | readonly number[],
  batchSize?: number,
  limits: BufferLimits | undefined = webGpuLimits(),
): void {
  if (!limits) return;
  const first = Array.isArray(input) && input[0] instanceof tf.Tensor ? input[0] : input;
  const shape = first instanceof tf.Tensor ? [...first.shape] : [...first as number[]];
  if (shape.length === 0) return;
  if (batchSize !== undefined && batchSize > 0) shape[0] = Math.min(shape[0], batchSize);
  const [largest] = bufferNeeds(model, shape);
  if (!largest) return;
  const exceeded = largest.bytes > limits.maxBufferSize
    ? ["maxBufferSize", limits.maxBufferSize] as const
    : largest.bytes > limits.maxStorageBufferBindingSize
    ? ["maxStorageBufferBindingSize", limits.maxStorageBufferBindingSize] as const
    : undefined;
  if (!exceeded) return;
  throw new Error(
    `webgpu: the ${largest.what} [${largest.shape.join(", ")}] needs ${largest.bytes} bytes, ` +
      `above this adapter's ${exceeded[0]} of ${exceeded[1]} bytes; use a smaller batch or ` +
      `input size, or another backend (CONVNEXT_BACKEND=wasm)`,
  );
}
