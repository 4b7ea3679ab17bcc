/**
 * Data-parallel training gradients: uses every core for training on the wasm backend, which
 * TF.js runs single-threaded under Deno.
 *
 * {@link ParallelGradients} keeps `threads - 1` worker threads (./parallel_worker.ts), each
 * with its own wasm backend, the training kernels of lib/backend/wasm_grads.ts and a replica
 * of the model; the main thread is the last participant and uses the model itself. Each
 * batch is split by images; every thread computes the loss gradients of its shard, scaled
 * by `shard / batch`, so their sum is the gradient of the whole batch's mean loss (up to
 * float rounding). The main thread sums them and the caller applies the optimizer; before
 * the next step the workers reload the weights that changed (see ./parallel_protocol.ts).
 *
 * Randomness: shard `k` runs its forward pass with `Math.random` seeded by
 * `hashSeed(seed, k)`, so drop-path masks are reproducible (for a given thread count) but
 * differ from those of a single-threaded step with the same seed. Without drop path the
 * gradients equal the single-threaded ones within float tolerance.
 *
 * Memory: each thread holds only its shard's activations, so a batch that overflows one
 * wasm heap (4 GiB) can fit when split; each worker also holds a copy of the weights.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { JobClient, splitEven, threadsFromEnv } from "../util/jobs.ts";
import { correctCount, crossEntropy } from "./losses.ts";
import type { AdamWParam } from "./optimizer.ts";
import { hashSeed, withSeededMathRandom } from "./rng.ts";
import { TCTRL, TOP, type TrainWorkerInit, TSCALAR } from "./parallel_protocol.ts";

/** How long to wait for a worker to start (wasm compile, model build) before giving up. */
const START_TIMEOUT_MS = 300_000;
/** How long one gradient job may take before the main thread assumes its worker died. */
const JOB_TIMEOUT_MS = 1_800_000;
/** Appended to errors: the way out when threads cannot work in an environment. */
const HINT = " (CONVNEXT_TRAIN_THREADS=1 trains on the main thread only)";

class TrainWorker extends JobClient {
  readonly scalars: Float64Array;
  readonly grads: Float32Array;
  input: Float32Array = new Float32Array(0);

  constructor(
    backend: string,
    shared: Pick<TrainWorkerInit, "topology" | "weightNames" | "weights" | "versions">,
    paramNames: string[],
    gradFloats: number,
  ) {
    const grads = new SharedArrayBuffer(gradFloats * 4);
    // Made before super(): the worker's data is built there, before `this` exists.
    const scalars = new Float64Array(new SharedArrayBuffer(TSCALAR.LENGTH * 8));
    super(TCTRL.LENGTH, {
      script: new URL("./parallel_worker.ts", import.meta.url),
      init: (port, ctrl): TrainWorkerInit => ({
        ...shared,
        ctrl,
        scalars,
        port,
        backend,
        paramNames,
        grads,
      }),
      label: "parallel training",
      hint: HINT,
      jobTimeoutMs: JOB_TIMEOUT_MS,
    });
    this.scalars = scalars;
    this.grads = new Float32Array(grads);
  }

  /** Resolves when the worker's backend and replica are up; rejects with its error. */
  async started(deadline: number): Promise<void> {
    while (Atomics.load(this.ctrl, TCTRL.READY) === 0) {
      if (performance.now() > deadline) {
        throw new Error(`parallel training: a worker thread did not start in time${HINT}`);
      }
      // Poll on the event loop: starting a worker must not block the main thread.
      await new Promise((r) => setTimeout(r, 20));
    }
    this.checkStarted();
  }

  /** Make sure the input buffer holds `floats` floats. */
  reserve(floats: number): void {
    if (this.input.length >= floats) return;
    const buffer = new SharedArrayBuffer(floats * 4);
    this.post(TOP.SETUP, { input: buffer });
    this.wait();
    this.input = new Float32Array(buffer);
  }

  override close(): Promise<void> {
    return super.close(TOP.EXIT);
  }
}

/** Options of {@link ParallelGradients.start}. */
export interface ParallelGradientsOptions {
  /** Threads taking part, the main thread included (>= 2). */
  threads: number;
  /** Backend every worker must run (default: the current backend, i.e. "wasm"). */
  backend?: string;
}

/** Options of one {@link ParallelGradients.gradients} call. */
export interface GradientStepOptions {
  /** Label smoothing of the cross entropy (default 0). */
  smoothing?: number;
  /** Factor on the batch's mean loss, e.g. `1 / updateFreq` (default 1). */
  scale?: number;
  /** Seed of the step's drop-path masks (shard k uses `hashSeed(seed, k)`; default 0). */
  seed?: number;
}

/** What {@link ParallelGradients.gradients} returns. */
export interface GradientStepResult {
  /** The batch's mean loss (before `scale`). */
  loss: number;
  /** Correctly classified images of the batch (training-mode logits). */
  correct: number;
  /** Gradient of `scale * loss` for every parameter, by parameter name (caller disposes). */
  grads: Map<string, tf.Tensor>;
}

/**
 * Data-parallel loss gradients over worker threads (see the module doc). Synchronous per
 * step; close it (or `dispose()`) to stop the threads.
 *
 * One step, with `params` from `modelParams(model, ...)` and an `AdamW` over them:
 * `const parallel = await ParallelGradients.start(model, params, { threads: 2 })`, then
 * `const { grads } = parallel.gradients(x, labels, { smoothing: 0.1, seed: step })`,
 * `optimizer.step(grads, lr)`, dispose `grads`, and `parallel.close()` when done.
 */
export class ParallelGradients {
  private closed = false;

  private constructor(
    /** Threads taking part, the main thread included. */
    readonly threads: number,
    private readonly model: tf.LayersModel,
    private readonly workers: TrainWorker[],
    private readonly params: AdamWParam[],
    private readonly modelVars: tf.Variable[],
    private readonly weights: Float32Array,
    private readonly versions: Int32Array,
    private readonly offsets: number[],
  ) {}

  /**
   * Where the last {@link gradients} call spent its time (ms): writing changed weights to
   * shared memory, posting the workers' shards, the main thread's own shard, waiting for
   * the workers, and summing their gradients.
   */
  timings = { publish: 0, post: 0, own: 0, wait: 0, sum: 0 };

  /** The data of each model variable last written to the shared weights. */
  private written: unknown[] = [];

  /**
   * Start `threads - 1` workers, each with a replica of `model` on `options.backend`.
   *
   * @param model the model trained on the main thread (its topology is sent to the workers).
   * @param params the trained parameters (gradients are returned for these, by name).
   * @throws Error when threads is not an integer >= 2, or a worker fails to start (e.g. its
   *   backend does not initialize: there is no silent fallback).
   */
  static async start(
    model: tf.LayersModel,
    params: AdamWParam[],
    options: ParallelGradientsOptions,
  ): Promise<ParallelGradients> {
    const { threads } = options;
    if (!(Number.isInteger(threads) && threads >= 2)) {
      throw new Error(`ParallelGradients: threads must be an integer >= 2, got ${threads}`);
    }
    const backend = options.backend ?? tf.getBackend();
    const modelVars = model.weights.map((w) => w.read() as tf.Variable);
    const weightNames = model.weights.map((w) => w.originalName);
    const names = new Set(weightNames);
    for (const p of params) {
      if (!names.has(p.name)) {
        throw new Error(`ParallelGradients: parameter "${p.name}" is not a weight of the model`);
      }
    }
    const offsets: number[] = [];
    let total = 0;
    for (const v of modelVars) {
      offsets.push(total);
      total += v.size;
    }
    const weights = new SharedArrayBuffer(total * 4);
    const versions = new SharedArrayBuffer(Math.max(1, modelVars.length) * 4);
    const gradFloats = params.reduce((s, p) => s + p.variable.size, 0);
    const shared = {
      topology: model.toJSON(null, false),
      weightNames,
      weights,
      versions,
    };
    const workers: TrainWorker[] = [];
    try {
      for (let i = 0; i < threads - 1; i++) {
        workers.push(
          new TrainWorker(backend, shared, params.map((p) => p.name), gradFloats),
        );
      }
      const deadline = performance.now() + START_TIMEOUT_MS;
      for (const w of workers) await w.started(deadline);
    } catch (e) {
      for (const w of workers) w.close();
      throw e;
    }
    return new ParallelGradients(
      threads,
      model,
      workers,
      params,
      modelVars,
      new Float32Array(weights),
      new Int32Array(versions),
      offsets,
    );
  }

  /** Write the model variables that changed since the last step (assign replaces data). */
  private publishWeights(): void {
    this.modelVars.forEach((v, i) => {
      // `Variable.assign` gives the variable a new dataId: an unchanged id means unchanged
      // values, so only weights the optimizer (or a restore) touched are copied.
      const id = (v as unknown as { dataId: unknown }).dataId;
      if (this.written[i] === id) return;
      this.weights.set(v.dataSync() as Float32Array, this.offsets[i]);
      Atomics.add(this.versions, i, 1);
      this.written[i] = id;
    });
  }

  /**
   * The loss gradients of one batch, split over the threads: the gradient of
   * `scale * crossEntropy(model(x, training), labels, smoothing)` (mean over the batch).
   *
   * @param x images `[n, h, w, c]` (not disposed).
   * @param labels class indices, `n` of them.
   */
  gradients(
    x: tf.Tensor4D | tf.Tensor,
    labels: Int32Array,
    options: GradientStepOptions = {},
  ): GradientStepResult {
    if (this.closed) throw new Error("ParallelGradients: used after close()");
    if (x.rank !== 4) {
      throw new Error(`ParallelGradients: x must be [n, h, w, c], got [${x.shape}]`);
    }
    const n = x.shape[0];
    if (labels.length !== n) {
      throw new Error(`ParallelGradients: ${labels.length} labels for ${n} images`);
    }
    const smoothing = options.smoothing ?? 0;
    const scale = options.scale ?? 1;
    const seed = options.seed ?? 0;
    const shares = splitEven(n, this.threads).filter((s) => s > 0);
    const t0 = performance.now();
    this.publishWeights();
    const t1 = performance.now();
    const busy: { worker: TrainWorker; n: number }[] = [];
    let start = 0;
    try {
      // Workers take the first shares; the main thread the last.
      for (let k = 0; k < shares.length - 1; k++) {
        const worker = this.workers[k];
        const m = shares[k];
        this.postShare(worker, x, labels, start, m, {
          smoothing,
          scale: scale * m / n,
          seed: hashSeed(seed, k),
        });
        busy.push({ worker, n: m });
        start += m;
      }
      const t2 = performance.now();
      const own = this.ownGradients(x, labels, start, n, {
        smoothing,
        scale: scale * (n - start) / n,
        seed: hashSeed(seed, shares.length - 1),
      });
      let lossSum = own.loss * (n - start);
      let correct = own.correct;
      const grads = own.grads;
      const t3 = performance.now();
      for (const { worker, n: m } of busy) {
        worker.wait();
        lossSum += worker.scalars[TSCALAR.LOSS] * m;
        correct += worker.scalars[TSCALAR.CORRECT];
      }
      const t4 = performance.now();
      this.addWorkerGradients(grads, busy.map((b) => b.worker));
      busy.length = 0;
      const t5 = performance.now();
      this.timings = { publish: t1 - t0, post: t2 - t1, own: t3 - t2, wait: t4 - t3, sum: t5 - t4 };
      return { loss: lossSum / n, correct, grads };
    } finally {
      for (const { worker } of busy) {
        try {
          worker.wait();
        } catch { /* already failing */ }
      }
    }
  }

  /** Hand images `[start, start + m)` of `x` and their labels to `worker` and start it. */
  private postShare(
    worker: TrainWorker,
    x: tf.Tensor,
    labels: Int32Array,
    start: number,
    m: number,
    options: { smoothing: number; scale: number; seed: number },
  ): void {
    const [, h, w, c] = x.shape;
    const floats = m * h * w * c;
    worker.reserve(floats + m);
    const part = tf.slice(x, [start, 0, 0, 0], [m, -1, -1, -1]);
    worker.input.set(part.dataSync() as Float32Array);
    part.dispose();
    for (let i = 0; i < m; i++) worker.input[floats + i] = labels[start + i];
    [m, h, w, c].forEach((d, i) => Atomics.store(worker.ctrl, TCTRL.SHAPE + i, d));
    Atomics.store(worker.ctrl, TCTRL.SEED, options.seed | 0);
    worker.scalars[TSCALAR.SMOOTHING] = options.smoothing;
    worker.scalars[TSCALAR.SCALE] = options.scale;
    worker.post(TOP.GRADS);
  }

  /** Add the finished `workers`' gradients into `grads` (the main thread's, by name). */
  private addWorkerGradients(grads: Map<string, tf.Tensor>, workers: TrainWorker[]): void {
    // Parameter order; each worker's gradients lie back to back in its buffer.
    let offset = 0;
    for (const p of this.params) {
      const size = p.variable.size;
      const parts = [grads.get(p.name)!];
      for (const worker of workers) {
        parts.push(
          tf.tensor(worker.grads.subarray(offset, offset + size), p.variable.shape, "float32"),
        );
      }
      offset += size;
      if (parts.length > 1) {
        grads.set(p.name, tf.addN(parts));
        tf.dispose(parts);
      }
    }
  }

  /** The main thread's shard `[from, n)`: its loss, correct count and scaled gradients. */
  private ownGradients(
    x: tf.Tensor,
    labels: Int32Array,
    from: number,
    n: number,
    o: { smoothing: number; scale: number; seed: number },
  ): GradientStepResult {
    const xs = from === 0 ? x : tf.slice(x, [from, 0, 0, 0], [n - from, -1, -1, -1]);
    const ls = tf.tensor1d(labels.subarray(from, n), "int32");
    let logits: tf.Tensor | undefined;
    const variables = this.params.map((p) => p.variable);
    const { value, grads } = withSeededMathRandom(
      o.seed,
      () =>
        tf.variableGrads(() => {
          const y = this.model.apply(xs, { training: true }) as tf.Tensor;
          logits = tf.keep(y);
          return tf.mul(crossEntropy(y, ls, o.smoothing), o.scale) as tf.Scalar;
        }, variables),
    );
    try {
      const loss = value.dataSync()[0] / o.scale;
      const correct = correctCount(logits!, ls);
      const named = new Map(this.params.map((p) => [p.name, grads[p.variable.name]]));
      return { loss, correct, grads: named };
    } finally {
      tf.dispose([value, logits!, ls]);
      if (xs !== x) xs.dispose();
    }
  }

  /** Stop the worker threads. The object cannot be used afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.workers) w.close();
  }

  /** Same as {@link close} (so that it fits a list of disposables). */
  dispose(): void {
    this.close();
  }
}

/**
 * Training threads: `CONVNEXT_TRAIN_THREADS` when set (1 = the single-threaded path), else
 * `min(cores, batch)` (a thread without an image would only cost memory).
 *
 * @throws Error for a `CONVNEXT_TRAIN_THREADS` that is not a positive integer.
 * @example
 * ```ts
 * import { trainThreads } from "./parallel.ts";
 * const threads = trainThreads(32); // one per core (2 on a 2-core machine)
 * if (trainThreads(1) !== 1) throw new Error("one image needs one thread");
 * ```
 */
export function trainThreads(batch: number): number {
  const fromEnv = threadsFromEnv("CONVNEXT_TRAIN_THREADS");
  if (fromEnv !== undefined) return fromEnv;
  return Math.max(1, Math.min(navigator.hardwareConcurrency || 1, batch));
}
