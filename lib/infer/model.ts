/**
 * `ConvNeXtModel`: a `tf.LayersModel` whose `predict` takes the optimized inference path
 * (compiled plan, folded weights) on the wasm, cpu and webgpu backends, and the stock Layers
 * path everywhere else (the native TensorFlow backend, WebGL...). On wasm and cpu the
 * optimized path runs on the fused WebAssembly kernels of ./engine/ on all cores (plans
 * they cannot run, or `CONVNEXT_EXECUTOR=tfjs`: on TF.js kernels, ./execute.ts); on webgpu
 * it runs ./execute.ts as GPU ops.
 *
 * Everything but `predict`/`predictOnBatch` is the stock LayersModel: `fit`, `evaluate`,
 * `apply`, `execute`, `getLayer`, `summary`, saving. The class is registered for
 * deserialization under its own class name `"ConvNeXtModel"` (the `class_name` of the
 * topologies it saves), so `tf.loadLayersModel` gives back a ConvNeXtModel for those and a
 * plain `tf.LayersModel` for every other model; `loadSavedModel` (../model/io.ts) also
 * recognizes ConvNeXt models saved as `"Model"` by earlier versions.
 *
 * Folded weights are cached per model and revalidated on every call: they are rebuilt as
 * soon as any source variable has been assigned (`setWeights`, `fit`, `loadWeights` all
 * replace the variables' data ids).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { executePlan } from "./execute.ts";
import {
  disposeWeights,
  type FoldedWeights,
  foldWeights,
  sameVersion,
  sourceVariables,
  weightsVersion,
} from "./fold.ts";
import { compilePlan, type Plan, PlanUnsupported } from "./plan.ts";
import { inferencePool } from "./pool.ts";
import { KernelEngine } from "./engine/engine.ts";
import { EnginePlan, EngineUnsupported, type WeightArrays } from "./engine/run.ts";
import { checkWebGpuLimits } from "../backend/webgpu_limits.ts";
import { useWebGpuLayers } from "../backend/webgpu_layers.ts";

/**
 * Backends on which {@link ConvNeXtModel.predict} takes the optimized path: the kernel
 * engine on wasm and cpu; on webgpu the plan as GPU ops (six dispatches per block, with the
 * one-dispatch GELU and LayerNorm of ../backend/webgpu_kernels.ts, against 7 on the Layers
 * graph with ../backend/webgpu_layers.ts).
 */
export const FAST_BACKENDS = ["wasm", "cpu", "webgpu"] as const;

/** Which path {@link ConvNeXtModel.predict} takes: "auto" (default), or forced. */
export type InferencePath = "auto" | "stock" | "optimized";

interface FoldCache {
  version: object[];
  weights: FoldedWeights;
  token: number;
}

interface EngineCache {
  version: object[];
  runner: EnginePlan;
  token: number;
}

let nextToken = 0;

/** Implementations of the optimized path: the kernel engine (default) or TF.js kernels. */
export type OptimizedExecutor = "kernels" | "tfjs";

/**
 * The implementation `CONVNEXT_EXECUTOR` asks the optimized path to use ("kernels", the
 * default: the fused WebAssembly kernels of ./engine/; "tfjs": the plan on TF.js kernels).
 * A model takes it when it can: see {@link ConvNeXtModel.optimizedExecutor}.
 *
 * @throws Error for any other value.
 */
export function requestedExecutor(): OptimizedExecutor {
  let value: string | undefined;
  try {
    value = Deno.env.get("CONVNEXT_EXECUTOR");
  } catch {
    value = undefined; // no env permission: the default
  }
  if (value === undefined || value === "" || value === "kernels") return "kernels";
  if (value === "tfjs") return "tfjs";
  throw new Error(`CONVNEXT_EXECUTOR: expected "kernels" or "tfjs", got "${value}"`);
}

let mainEngine: KernelEngine | null = null;
/** The main thread's kernel engine, shared by every model (each frees its own weights). */
function sharedEngine(): KernelEngine {
  mainEngine ??= KernelEngine.create();
  return mainEngine;
}

/** Options of `predict` (e.g. `batchSize`). */
export type PredictArgs = Parameters<tf.LayersModel["predict"]>[1];

/**
 * A ConvNeXt Layers model with a fast `predict`. Built by `createConvNeXt`; construct it as
 * `tf.model` (`new ConvNeXtModel({ inputs, outputs, name })`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { createConvNeXt } from "../model/convnext.ts";
 * const model = createConvNeXt("convnext_tiny"); // a ConvNeXtModel
 * const logits = model.predict(tf.zeros([8, 224, 224, 3])) as tf.Tensor; // optimized on wasm
 * ```
 */
export class ConvNeXtModel extends tf.LayersModel {
  /** Its own class name (TF.js's `LayersModel` is `"Model"`), as registered and saved. */
  static override className = "ConvNeXtModel";

  /**
   * As `tf.model(args)`; on webgpu the layers then run on this project's kernels
   * (../backend/webgpu_layers.ts).
   */
  constructor(args: ConstructorParameters<typeof tf.LayersModel>[0]) {
    super(args);
    useWebGpuLayers(this.layers);
  }

  /**
   * Path taken by `predict`: "auto" picks the optimized path on wasm/cpu/webgpu when the graph
   * compiles; "stock" and "optimized" force one (for benchmarks and tests; "optimized"
   * throws when the graph does not compile).
   */
  inferencePath: InferencePath = "auto";

  private plan?: Plan | null;
  private planError?: string;
  private cache?: FoldCache;
  private variables?: tf.Tensor[];
  private engineCache?: EngineCache;
  private engineError?: string;

  /** The compiled plan, or null (with {@link ConvNeXtModel.planUnsupportedReason}). */
  inferencePlan(): Plan | null {
    if (this.plan === undefined) {
      try {
        this.plan = compilePlan(this, { grn: true });
      } catch (e) {
        // A graph the compiler cannot read (any model can be built as a ConvNeXtModel)
        // keeps the stock path rather than failing predict.
        this.plan = null;
        this.planError = e instanceof PlanUnsupported
          ? e.message
          : `plan compiler failed: ${(e as Error)?.message ?? e}`;
      }
    }
    return this.plan;
  }

  /** Why the graph has no optimized plan (undefined when it has one). */
  planUnsupportedReason(): string | undefined {
    this.inferencePlan();
    return this.planError;
  }

  /** Whether `predict` would take the optimized path on the active backend now. */
  usesOptimizedPath(): boolean {
    if (this.inferencePath === "stock") return false;
    if (this.inferencePath === "optimized") return true;
    return (FAST_BACKENDS as readonly string[]).includes(tf.getBackend()) &&
      this.inferencePlan() !== null;
  }

  /** Folded weights for the current variables (rebuilt when any variable was assigned). */
  private folded(plan: Plan): FoldCache {
    // The variables' identities are stable; their data ids change on assignment.
    this.variables ??= sourceVariables(this, plan);
    const version = weightsVersion(this.variables);
    if (this.cache && sameVersion(this.cache.version, version)) return this.cache;
    if (this.cache) disposeWeights(this.cache.weights);
    this.cache = undefined;
    const weights = tf.tidy(() => foldWeights(this, plan));
    for (const t of Object.values(weights)) tf.keep(t);
    this.cache = { version, weights, token: nextToken++ };
    return this.cache;
  }

  /**
   * The plan with the current weights loaded into the kernel engine (reloaded when any
   * variable was assigned), or null when the engine cannot run this plan.
   */
  private engine(plan: Plan): EngineCache | null {
    if (this.engineError !== undefined) return null;
    this.variables ??= sourceVariables(this, plan);
    const version = weightsVersion(this.variables);
    if (this.engineCache && sameVersion(this.engineCache.version, version)) {
      return this.engineCache;
    }
    this.engineCache?.runner.dispose();
    this.engineCache = undefined;
    const folded = foldWeights(this, plan);
    const arrays: WeightArrays = {};
    try {
      for (const [key, t] of Object.entries(folded)) {
        arrays[key] = { data: t.dataSync() as Float32Array, shape: t.shape };
      }
    } finally {
      disposeWeights(folded);
    }
    try {
      const runner = new EnginePlan(plan, arrays, sharedEngine());
      this.engineCache = { version, runner, token: nextToken++ };
      return this.engineCache;
    } catch (e) {
      if (!(e instanceof EngineUnsupported)) throw e;
      this.engineError = e.message;
      return null;
    }
  }

  /**
   * Which implementation `predict`'s optimized path takes for this model now: the
   * {@link requestedExecutor}, or "tfjs" when the kernels cannot run this plan.
   */
  optimizedExecutor(): OptimizedExecutor {
    const plan = this.inferencePlan();
    // On webgpu the plan runs as GPU ops: the engine would read the input synchronously.
    if (!plan || requestedExecutor() === "tfjs" || tf.getBackend() === "webgpu") return "tfjs";
    return this.engine(plan) ? "kernels" : "tfjs";
  }

  /** `predict` through the compiled plan (and the thread pool on wasm). */
  private predictFast(x: tf.Tensor | tf.Tensor[], args: PredictArgs): tf.Tensor {
    const plan = this.inferencePlan();
    if (!plan) {
      throw new Error(
        `ConvNeXtModel(${this.name}): no optimized plan for this graph: ${this.planError}`,
      );
    }
    const input = Array.isArray(x) ? x : [x];
    if (input.length !== 1) {
      throw new Error(`ConvNeXtModel(${this.name}).predict: expected 1 input, got ${input.length}`);
    }
    const images = input[0];
    const expected = this.inputs[0].shape;
    if (
      images.rank !== 4 ||
      !expected.every((d, i) => i === 0 || d == null || d === images.shape[i])
    ) {
      throw new Error(
        `ConvNeXtModel(${this.name}).predict: expected input of shape ${
          JSON.stringify(expected)
        }, got ${JSON.stringify(images.shape)}`,
      );
    }
    const batchSize = args?.batchSize ?? 32;
    // On webgpu: a clear error for tensors above the adapter's buffer limits.
    checkWebGpuLimits(this, images, batchSize);
    let run: (chunk: tf.Tensor4D) => tf.Tensor;
    // Not once the engine has refused this graph: a pool for the engine, then one for TF.js,
    // would restart the threads on every call where their counts differ.
    const wantKernels = requestedExecutor() === "kernels" && this.engineError === undefined &&
      tf.getBackend() !== "webgpu";
    // The threads start before the weights are folded into the engine, so that they load
    // meanwhile (on a first call both take a few hundred ms). The engine is independent of
    // the TF.js backend: threads help on every backend.
    const pool = wantKernels ? inferencePool("kernels") : null;
    const kernels = wantKernels ? this.engine(plan) : null;
    if (kernels) {
      run = (chunk) => {
        const x = chunk.dataSync() as Float32Array;
        const { data, shape } = pool
          ? pool.kernels.run(kernels.runner, kernels.token, x, chunk.shape)
          : kernels.runner.run(x, chunk.shape);
        return tf.tensor(data, shape, "float32");
      };
    } else {
      const { weights, token } = this.folded(plan);
      // A graph the engine does not take: the TF.js executor's pool (the same threads unless
      // its cap of 4 is lower than the core count, when the pool restarts with fewer).
      const tfjsPool = tf.getBackend() === "wasm" ? inferencePool("tfjs") : null;
      run = (chunk) => {
        if (!tfjsPool) return executePlan(plan, weights, chunk);
        // The workers' buffers must hold their share of the output, which can be larger
        // than the input (a graph that widens the channels without downsampling).
        const out = this.computeOutputShape(chunk.shape) as number[];
        const perImage = out.slice(1).reduce((a, b) => a * b, 1);
        return tfjsPool.tfjs.run(plan, weights, token, chunk, perImage);
      };
    }
    const cast = images.dtype === "float32" ? images : tf.cast(images, "float32");
    try {
      const n = images.shape[0];
      if (n <= batchSize) return run(cast as tf.Tensor4D);
      // Chunks of batchSize as the stock predict does, to bound activation memory.
      const parts: tf.Tensor[] = [];
      for (let start = 0; start < n; start += batchSize) {
        const chunk = tf.slice(cast, start, Math.min(batchSize, n - start));
        parts.push(run(chunk as tf.Tensor4D));
        chunk.dispose();
      }
      const out = tf.concat(parts, 0);
      parts.forEach((p) => p.dispose());
      return out;
    } finally {
      if (cast !== images) cast.dispose();
    }
  }

  /**
   * Predictions, as `tf.LayersModel.predict`; on wasm/cpu through the optimized plan
   * (outputs equal to the stock path within float rounding: 1e-4 on logits is tested).
   */
  override predict(x: tf.Tensor | tf.Tensor[], args: PredictArgs = {}): tf.Tensor | tf.Tensor[] {
    if (!this.usesOptimizedPath()) {
      // On webgpu: a clear error for tensors above the adapter's buffer limits.
      checkWebGpuLimits(this, x, args.batchSize ?? 32);
      return super.predict(x, args);
    }
    return this.predictFast(x, args);
  }

  /** As `tf.LayersModel.predictOnBatch`, through the optimized path when it applies. */
  override predictOnBatch(x: tf.Tensor | tf.Tensor[]): tf.Tensor | tf.Tensor[] {
    if (!this.usesOptimizedPath()) {
      checkWebGpuLimits(this, x);
      return super.predictOnBatch(x);
    }
    const n = (Array.isArray(x) ? x[0] : x).shape[0];
    return this.predictFast(x, { batchSize: Math.max(1, n) });
  }

  /** Frees the folded weights too. */
  override dispose(): ReturnType<tf.LayersModel["dispose"]> {
    if (this.cache) disposeWeights(this.cache.weights);
    this.cache = undefined;
    this.engineCache?.runner.dispose();
    this.engineCache = undefined;
    this.variables = undefined;
    return super.dispose();
  }
}

// Beside TF.js's own "Model" (tf.LayersModel): loadLayersModel builds a ConvNeXtModel for
// topologies saved with class_name "ConvNeXtModel" only.
tf.serialization.registerClass(ConvNeXtModel);
