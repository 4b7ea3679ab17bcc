/**
 * AdamW with decoupled weight decay, exactly as `torch.optim.AdamW` (the optimizer of the
 * official ConvNeXt recipes), over `tf.Variable`s.
 *
 * Why not `tf.train.adam`: it has no decoupled weight decay, no per-parameter weight decay
 * or learning-rate scale (needed for no-decay groups and layer-wise lr decay), and its
 * state cannot be saved and restored for an exact resume.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { architectureOf } from "../model/architecture.ts";
import { webGpuAdamWUpdate, webGpuMovingAverage } from "../backend/webgpu_kernels.ts";
import { paramSettings, type ParamSettingsOptions } from "./lr_decay.ts";

/** One trained variable and its optimizer settings. */
export interface AdamWParam {
  /** Stable name (the model's weight path, e.g. `stem_conv/kernel`): keys grads and state. */
  name: string;
  /** The variable updated in place. */
  variable: tf.Variable;
  /** Decoupled weight decay coefficient (0: none). */
  weightDecay: number;
  /** Factor on the learning rate given to {@link AdamW.step}. */
  lrScale: number;
}

/** Hyper-parameters of {@link AdamW} (torch's defaults). */
export interface AdamWOptions {
  /** First-moment decay (default 0.9). */
  beta1?: number;
  /** Second-moment decay (default 0.999). */
  beta2?: number;
  /** Added to the denominator (default 1e-8). */
  eps?: number;
}

/** Optimizer state for a checkpoint: the step count and both moments of every parameter. */
export interface AdamWState {
  /** Updates done so far. */
  step: number;
  /** Moments by parameter name. */
  slots: { name: string; shape: number[]; m: Float32Array; v: Float32Array }[];
}

/** The hyper-parameters of one AdamW update, for an {@link AdamWKernel}. */
export interface AdamWStep {
  /** First-moment decay. */
  beta1: number;
  /** Second-moment decay. */
  beta2: number;
  /** Denominator epsilon. */
  eps: number;
  /** `1 - beta1^t`. */
  bc1: number;
  /** `sqrt(1 - beta2^t)`. */
  bc2Sqrt: number;
  /** Per parameter, in {@link AdamW.params} order: its learning rate and weight decay now. */
  params: { name: string; lr: number; weightDecay: number }[];
}

/**
 * Something other than TF.js that runs an {@link AdamW}'s updates where the gradients are
 * (lib/train/engine_grads.ts: the kernel engine). It holds the moments while it runs the
 * updates; {@link AdamW} hands them over and takes them back.
 */
export interface AdamWKernel {
  /**
   * Called at hand-over with the optimizer whose moments the kernel now holds: a kernel
   * that goes away first gives them back with `owner.release(kernel)`.
   */
  hold(owner: { release(kernel: AdamWKernel): void }): void;
  /** Take the moments of parameter `name` (at hand-over). */
  loadMoments(name: string, m: Float32Array, v: Float32Array): void;
  /** A copy of the moments of parameter `name`. */
  readMoments(name: string): { m: Float32Array; v: Float32Array };
  /** One update of every parameter's variable with the kernel's own gradients. */
  update(step: AdamWStep): void;
}

/** A parameter and its moments (before an update, or after it), and its gradient. */
interface AdamWTensors {
  p: tf.Tensor;
  m: tf.Tensor;
  v: tf.Tensor;
  g: tf.Tensor;
}

/** Parameter `i`'s update of `plan` as TF.js ops (any backend). */
function adamWOps(plan: AdamWStep, i: number, t: AdamWTensors): Omit<AdamWTensors, "g"> {
  const { lr, weightDecay: wd } = plan.params[i];
  const decayed = wd !== 0 ? tf.mul(t.p, 1 - lr * wd) : t.p;
  const m = tf.add(tf.mul(t.m, plan.beta1), tf.mul(t.g, 1 - plan.beta1));
  const v = tf.add(tf.mul(t.v, plan.beta2), tf.mul(tf.mul(t.g, t.g), 1 - plan.beta2));
  const denom = tf.add(tf.div(tf.sqrt(v), plan.bc2Sqrt), plan.eps);
  const update = tf.mul(tf.div(m, denom), lr / plan.bc1);
  return { m, v, p: tf.sub(decayed, update) };
}

/**
 * The same update in this project's webgpu kernels (lib/backend/webgpu_kernels.ts): each
 * moment in one dispatch, the parameter in one. The same float32 operations in the same
 * order, but the GPU's compiler may fuse a multiply and an add: within a rounding of
 * {@link adamWOps} (tests/webgpu_kernels_test.ts).
 */
function adamWKernels(plan: AdamWStep, i: number, t: AdamWTensors): Omit<AdamWTensors, "g"> {
  const { lr, weightDecay: wd } = plan.params[i];
  const m = webGpuMovingAverage(t.m, t.g, plan.beta1);
  const v = webGpuMovingAverage(t.v, t.g, plan.beta2, true);
  const p = webGpuAdamWUpdate(t.p, m, v, {
    keep: 1 - lr * wd,
    stepSize: lr / plan.bc1,
    bc2Sqrt: plan.bc2Sqrt,
    eps: plan.eps,
  });
  return { m, v, p };
}

/**
 * AdamW as `torch.optim.AdamW` (non-foreach path of torch 1.13):
 *
 * ```
 * p *= 1 - lr * wd
 * m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
 * p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * ```
 *
 * with `lr = scheduledLr * lrScale` per parameter (the official param groups' `lr_scale`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { AdamW, modelParams } from "./optimizer.ts";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const params = modelParams(model, { weightDecay: 0.05, layerDecay: 0.8 });
 * const opt = new AdamW(params);
 * const x = tf.randomNormal([2, 32, 32, 3]);
 * const loss = () => tf.mean(tf.square(model.apply(x) as tf.Tensor)) as tf.Scalar;
 * const { grads } = tf.variableGrads(loss, opt.variables);
 * // grads are keyed by variable name; the optimizer keys them by parameter name
 * opt.step(new Map(params.map((p) => [p.name, grads[p.variable.name]])), 4e-3);
 * ```
 */
export class AdamW {
  /** The parameters, in order. */
  readonly params: AdamWParam[];
  /** First-moment decay. */
  readonly beta1: number;
  /** Second-moment decay. */
  readonly beta2: number;
  /** Denominator epsilon. */
  readonly eps: number;
  /** Updates done so far (torch's `state["step"]`). */
  stepCount = 0;
  #m = new Map<string, tf.Variable>();
  #v = new Map<string, tf.Variable>();
  /** The kernel holding the moments, if one does (the variables above are then freed). */
  #kernel: AdamWKernel | null = null;

  /**
   * An AdamW optimizer over `params`.
   *
   * @throws Error on duplicate parameter names or invalid hyper-parameters.
   */
  constructor(params: AdamWParam[], options: AdamWOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    for (const [k, v] of [["beta1", this.beta1], ["beta2", this.beta2]] as const) {
      if (!(v >= 0 && v < 1)) throw new RangeError(`AdamW: ${k} must be in [0, 1), got ${v}`);
    }
    if (!(this.eps >= 0)) throw new RangeError(`AdamW: eps must be >= 0, got ${this.eps}`);
    const seen = new Set<string>();
    for (const p of params) {
      if (seen.has(p.name)) throw new Error(`AdamW: duplicate parameter name "${p.name}"`);
      seen.add(p.name);
      this.#m.set(p.name, tf.variable(tf.zerosLike(p.variable), false));
      this.#v.set(p.name, tf.variable(tf.zerosLike(p.variable), false));
    }
    this.params = params;
  }

  /** The variables, in parameter order (for `tf.variableGrads`). */
  get variables(): tf.Variable[] {
    return this.params.map((p) => p.variable);
  }

  /**
   * One update. Every parameter needs a gradient in `grads` (by name).
   *
   * @param lr the scheduled learning rate (multiplied by each parameter's `lrScale`).
   * @param weightDecay optional override of the decay of parameters whose decay is not 0
   *   (the official weight-decay schedule); default: each parameter's own.
   */
  step(grads: ReadonlyMap<string, tf.Tensor>, lr: number, weightDecay?: number): void {
    for (const p of this.params) {
      if (!grads.has(p.name)) throw new Error(`AdamW.step: no gradient for "${p.name}"`);
    }
    this.#takeBack();
    const plan = this.#plan(lr, weightDecay);
    this.stepCount++;
    // On webgpu, this project's kernels: 3 dispatches a parameter where the ops take 13-14.
    const update = tf.getBackend() === "webgpu" ? adamWKernels : adamWOps;
    for (const [i, p] of this.params.entries()) {
      const m = this.#m.get(p.name)!;
      const v = this.#v.get(p.name)!;
      tf.tidy(() => {
        const next = update(plan, i, { p: p.variable, m, v, g: grads.get(p.name)! });
        m.assign(next.m);
        v.assign(next.v);
        p.variable.assign(next.p);
      });
    }
  }

  /** Reads the state (step count and moments) for a checkpoint. */
  async getState(): Promise<AdamWState> {
    const slots: AdamWState["slots"] = [];
    for (const p of this.params) {
      if (this.#kernel) {
        slots.push({ name: p.name, shape: p.variable.shape, ...this.#kernel.readMoments(p.name) });
        continue;
      }
      slots.push({
        name: p.name,
        shape: p.variable.shape,
        m: await this.#m.get(p.name)!.data() as Float32Array,
        v: await this.#v.get(p.name)!.data() as Float32Array,
      });
    }
    return { step: this.stepCount, slots };
  }

  /**
   * Restores a state written by {@link getState}.
   *
   * @throws Error when a parameter is missing from the state or its shape differs.
   */
  setState(state: AdamWState): void {
    const byName = new Map(state.slots.map((s) => [s.name, s]));
    for (const p of this.params) {
      const s = byName.get(p.name);
      if (!s) throw new Error(`AdamW.setState: the saved state has no moments for "${p.name}"`);
      if (s.shape.join() !== p.variable.shape.join()) {
        throw new Error(
          `AdamW.setState: "${p.name}" has shape [${p.variable.shape}], the saved moments [${s.shape}]`,
        );
      }
    }
    // The restored moments are the variables': a kernel reloads them on its next update.
    this.#kernel = null;
    for (const p of this.params) {
      const s = byName.get(p.name)!;
      this.#setMoments(p, s.m, s.v);
    }
    this.stepCount = state.step;
  }

  /**
   * One update run by `kernel` on its own gradients (see {@link AdamWKernel}); the same
   * arithmetic as {@link step}. The first such update hands the moments to the kernel; a
   * later {@link step}, {@link release} or {@link setState} takes them back.
   */
  stepWith(kernel: AdamWKernel, lr: number, weightDecay?: number): void {
    if (this.#kernel !== kernel) {
      this.#takeBack();
      for (const p of this.params) {
        kernel.loadMoments(
          p.name,
          this.#m.get(p.name)!.dataSync() as Float32Array,
          this.#v.get(p.name)!.dataSync() as Float32Array,
        );
      }
      this.#kernel = kernel;
      kernel.hold(this);
      // The kernel's copy is the one: no second copy in the TF.js heap meanwhile (for
      // convnext_large 1.6 GB of a wasm heap limited to 4 GiB).
      for (const v of [...this.#m.values(), ...this.#v.values()]) v.dispose();
      this.#m.clear();
      this.#v.clear();
    }
    kernel.update(this.#plan(lr, weightDecay));
    this.stepCount++;
  }

  /** Takes the moments back from `kernel` if it holds them (before it goes away). */
  release(kernel: AdamWKernel): void {
    if (this.#kernel === kernel) this.#takeBack();
  }

  /** The hyper-parameters of the next update (step count `stepCount + 1`). */
  #plan(lr: number, weightDecay: number | undefined): AdamWStep {
    const t = this.stepCount + 1;
    return {
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      bc1: 1 - this.beta1 ** t,
      bc2Sqrt: Math.sqrt(1 - this.beta2 ** t),
      params: this.params.map((p) => ({
        name: p.name,
        lr: lr * p.lrScale,
        weightDecay: p.weightDecay !== 0 && weightDecay !== undefined ? weightDecay : p.weightDecay,
      })),
    };
  }

  /** Moves the moments from the kernel holding them back into the variables. */
  #takeBack(): void {
    const kernel = this.#kernel;
    if (!kernel) return;
    this.#kernel = null;
    for (const p of this.params) {
      const { m, v } = kernel.readMoments(p.name);
      this.#setMoments(p, m, v);
    }
  }

  /** Sets a parameter's moment variables to `m` and `v`, creating them where there are none. */
  #setMoments(p: AdamWParam, m: Float32Array, v: Float32Array): void {
    tf.tidy(() => {
      for (const [store, values] of [[this.#m, m], [this.#v, v]] as const) {
        const value = tf.tensor(values, p.variable.shape, "float32");
        const current = store.get(p.name);
        if (current) current.assign(value);
        else store.set(p.name, tf.variable(value, false));
      }
    });
  }

  /** Frees the moment variables. */
  dispose(): void {
    this.#kernel = null;
    for (const v of [...this.#m.values(), ...this.#v.values()]) v.dispose();
    this.#m.clear();
    this.#v.clear();
  }
}

/**
 * The layer decay a model's official recipe uses unless `options` says otherwise: ConvNeXt V2
 * (GRN blocks) the "single" one over its depths (V2's main_finetune.py default), V1 "group".
 */
function withArchitectureDefaults(
  model: tf.LayersModel,
  options: ParamSettingsOptions,
): ParamSettingsOptions {
  if ((options.layerDecay ?? 1) === 1) return options;
  let spec;
  try {
    spec = architectureOf(model).spec;
  } catch {
    return options; // not a ConvNeXt's weights: group decay by names
  }
  if (spec.kind !== "hierarchical") return options;
  return {
    ...options,
    layerDecayType: options.layerDecayType ?? (spec.grn ? "single" : "group"),
    depths: options.depths ?? spec.depths,
  };
}

/**
 * The trainable weights of a Layers model as {@link AdamWParam}s, grouped as the official
 * optimizer factory does (see {@link paramSettings}; ConvNeXt V2 models get V2's default
 * "single" layer decay unless `options.layerDecayType` says otherwise).
 *
 * @example
 * ```ts
 * import { modelParams } from "./optimizer.ts";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const params = modelParams(model, { weightDecay: 0.05, layerDecay: 0.8 });
 * console.log(params.find((p) => p.name.startsWith("head_fc"))?.lrScale); // 1 (the head)
 * ```
 */
export function modelParams(
  model: tf.LayersModel,
  options: ParamSettingsOptions,
  filter: (name: string) => boolean = () => true,
): AdamWParam[] {
  const settings = withArchitectureDefaults(model, options);
  return model.trainableWeights.filter((w) => filter(w.originalName)).map((w) => {
    const s = paramSettings(w.originalName, w.shape as number[], settings);
    return {
      name: w.originalName,
      // LayerVariable.read() returns its backing tf.Variable itself (as model.fit uses it).
      variable: w.read() as tf.Variable,
      weightDecay: s.weightDecay,
      lrScale: s.lrScale,
    };
  });
}
