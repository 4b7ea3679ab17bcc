/**
 * Exponential moving average of model weights, as timm's `ModelEma` used by the official
 * ConvNeXt training (`--model_ema`): after each optimizer step,
 * `ema = decay * ema + (1 - decay) * weight`.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { webGpuMovingAverage } from "../backend/webgpu_kernels.ts";

/**
 * EMA copies of a model's weights.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { ModelEma } from "./ema.ts";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const ema = new ModelEma(model, 0.9999);
 * // after each optimizer step:
 * ema.update();
 * // evaluate with the averaged weights:
 * const x = tf.zeros([1, 32, 32, 3]);
 * await ema.withAveraged(async () => tf.dispose(model.predict(x)));
 * x.dispose();
 * ```
 */
export class ModelEma {
  /** The averaging factor. */
  readonly decay: number;
  #model: tf.LayersModel;
  #shadow = new Map<string, tf.Variable>();

  /** Starts the average at the model's current weights. */
  constructor(model: tf.LayersModel, decay = 0.9999) {
    if (!(decay >= 0 && decay < 1)) {
      throw new RangeError(`ModelEma: decay must be in [0, 1), got ${decay}`);
    }
    this.decay = decay;
    this.#model = model;
    for (const w of model.weights) {
      this.#shadow.set(w.originalName, tf.variable(tf.clone(w.read()), false));
    }
  }

  /** Moves the average toward the model's current weights. */
  update(): void {
    // On webgpu one dispatch a weight (this project's kernel), where the ops take three.
    const webgpu = tf.getBackend() === "webgpu";
    for (const w of this.#model.weights) {
      const s = this.#shadow.get(w.originalName)!;
      tf.tidy(() =>
        s.assign(
          webgpu && s.dtype === "float32"
            ? webGpuMovingAverage(s, w.read(), this.decay)
            : tf.add(tf.mul(s, this.decay), tf.mul(w.read(), 1 - this.decay)),
        )
      );
    }
  }

  /** The averaged weights by name (the variables themselves; do not dispose). */
  get weights(): ReadonlyMap<string, tf.Variable> {
    return this.#shadow;
  }

  /** Runs `fn` with the averaged weights loaded into the model, then puts the trained ones back. */
  async withAveraged<T>(fn: () => Promise<T>): Promise<T> {
    const saved = this.#model.weights.map((w) => tf.clone(w.read()));
    try {
      this.#model.weights.forEach((w) => w.write(this.#shadow.get(w.originalName)!));
      return await fn();
    } finally {
      this.#model.weights.forEach((w, i) => w.write(saved[i]));
      saved.forEach((t) => t.dispose());
    }
  }

  /** Reads the averaged weights (for a checkpoint). */
  async getState(): Promise<{ name: string; shape: number[]; data: Float32Array }[]> {
    const out = [];
    for (const [name, v] of this.#shadow) {
      out.push({ name, shape: v.shape, data: await v.data() as Float32Array });
    }
    return out;
  }

  /** Restores averaged weights written by {@link getState}. */
  setState(state: { name: string; shape: number[]; data: Float32Array }[]): void {
    const byName = new Map(state.map((s) => [s.name, s]));
    for (const [name, v] of this.#shadow) {
      const s = byName.get(name);
      if (!s || s.shape.join() !== v.shape.join()) {
        throw new Error(`ModelEma.setState: no saved average of shape [${v.shape}] for "${name}"`);
      }
      tf.tidy(() => v.assign(tf.tensor(s.data, s.shape, "float32")));
    }
  }

  /** Frees the averaged copies. */
  dispose(): void {
    for (const v of this.#shadow.values()) v.dispose();
    this.#shadow.clear();
  }
}
