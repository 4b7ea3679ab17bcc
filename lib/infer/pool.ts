/**
 * Uses every core for inference: TF.js runs wasm single-threaded under Deno
 * (`WASM_HAS_MULTITHREAD_SUPPORT` is hard-coded false there), and the kernel engine is a
 * single-threaded WebAssembly module too.
 *
 * An {@link InferencePool} keeps `threads - 1` worker threads; the main thread is the last
 * participant. Everything stays synchronous: the main thread posts jobs through shared
 * memory, does its own share, then waits in `Atomics.wait`. The pool's threads serve the
 * two executors of the optimized path, one class each:
 *
 * - {@link KernelsExecutor} (`pool.kernels`, the kernel engine, the default executor):
 *   workers attach to the main thread's engine memory (a shared `WebAssembly.Memory`: one
 *   copy of the weights, no copies of activations). Each block is split over the threads
 *   (by images, a single image by rows with the halo its depthwise conv reads), and so are
 *   the stem's and downsampling layers' matmuls and LayerNorms (by rows).
 * - {@link TfjsExecutor} (`pool.tfjs`, the plan on TF.js kernels, `CONVNEXT_EXECUTOR=tfjs`,
 *   wasm backend only): each worker has its own wasm backend and a copy of the folded
 *   weights. A batch is split by images (each thread runs the whole plan on its share); a
 *   single image by rows, block by block, or by hidden units for blocks with large weights.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { blockOnSlab, executePlan, hiddenSlice, mlpPart } from "./execute.ts";
import type { FoldedWeights } from "./fold.ts";
import type { BlockStep, Plan } from "./plan.ts";
import { blockChunks, type EnginePlan } from "./engine/run.ts";
import type { KernelEngine } from "./engine/engine.ts";
import { JobClient, splitEven, threadsFromEnv } from "../util/jobs.ts";
import { CTRL, OP, type SetupMessage, type WorkerInit } from "./pool_protocol.ts";

export { splitEven };

/** How long to wait for a worker to start (wasm compile) before giving up. */
const START_TIMEOUT_MS = 120_000;
/** How long one job may take before the pool assumes its worker died. */
const JOB_TIMEOUT_MS = 600_000;
/**
 * Blocks whose first pointwise weight is larger than this (bytes) split a single image by
 * hidden units, not by rows: the matmul streams its whole weight matrix once per few rows,
 * so with weights beyond the 512 KiB L2 cache a row split leaves each thread as memory-bound
 * as one thread alone, while a hidden split halves the weights each thread reads.
 */
const HIDDEN_SPLIT_BYTES = 1 << 20;
/**
 * Row-wise kernels (matmuls, LayerNorms) with fewer rows run on the main thread alone: the
 * head's few rows are not worth a round trip.
 */
const MIN_SPLIT_ROWS = 64;
/** Appended to pool errors: the way out when threads cannot work in an environment. */
const HINT = " (CONVNEXT_THREADS=1 runs inference on the main thread only)";

class WorkerHandle extends JobClient {
  data: Float32Array<ArrayBufferLike> = new Float32Array(0);
  /** Token of the weights this worker holds. */
  token = -1;
  /** The kernel engine this worker's stack was allocated in, and the stack's top. */
  stack?: { engine: KernelEngine; top: number };
  private started = false;

  constructor(backend: string) {
    super(CTRL.LENGTH, {
      script: new URL("./pool_worker.ts", import.meta.url),
      init: (port, ctrl): WorkerInit => ({ ctrl, port, backend }),
      label: "inference pool",
      hint: HINT,
      jobTimeoutMs: JOB_TIMEOUT_MS,
    });
  }

  /** Block until the worker's backend is up; throws its error when it failed. */
  waitStarted(): void {
    if (this.started) return;
    const deadline = performance.now() + START_TIMEOUT_MS;
    while (Atomics.load(this.ctrl, CTRL.READY) === 0) {
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(`inference pool: a worker thread did not start in time${HINT}`);
      }
      Atomics.wait(this.ctrl, CTRL.READY, 0, left);
    }
    this.checkStarted();
    this.started = true;
  }

  /** Post a job (the header slots are already written), once the worker is up. */
  override post(op: number, message?: SetupMessage): void {
    this.waitStarted();
    super.post(op, message);
  }

  /** Make sure the data buffer holds `floats` floats. */
  reserve(floats: number): void {
    if (this.data.length >= floats) return;
    // Grow geometrically, so that a run of growing inputs does not resend every time.
    const size = Math.max(floats, Math.ceil(this.data.length * 1.5));
    const buffer = new SharedArrayBuffer(size * 4);
    this.post(OP.SETUP, { data: buffer });
    this.wait();
    this.data = new Float32Array(buffer);
  }

  /** Write `x` as the job input. */
  writeInput(x: tf.Tensor, outFloats: number): void {
    this.writeValues(x.dataSync() as Float32Array, x.shape, outFloats);
  }

  /** Write `values` (of `shape`) as the job input; the buffer also fits `outFloats`. */
  writeValues(values: Float32Array<ArrayBufferLike>, shape: number[], outFloats: number): void {
    this.reserve(Math.max(values.length, outFloats));
    this.data.set(values);
    shape.forEach((d, i) => Atomics.store(this.ctrl, CTRL.SHAPE + i, d));
  }

  /** The job output's shape and a view of its values (valid until the next job). */
  outputView(): { data: Float32Array<ArrayBufferLike>; shape: number[] } {
    const rank = Atomics.load(this.ctrl, CTRL.OUT_RANK);
    const shape = Array.from(
      { length: rank },
      (_, i) => Atomics.load(this.ctrl, CTRL.OUT_SHAPE + i),
    );
    return { data: this.data.subarray(0, shape.reduce((a, b) => a * b, 1)), shape };
  }

  /** The job output as a new tensor. */
  readOutput(): tf.Tensor {
    const { data, shape } = this.outputView();
    return tf.tensor(data.slice(), shape, "float32");
  }

  override close(): Promise<void> {
    return super.close(OP.EXIT);
  }
}

/**
 * Waits for the workers' shares (in order), then the main thread's own, and joins them
 * along `axis`; `busy` is emptied, so a caller's cleanup does not wait for them again.
 */
function gather(busy: WorkerHandle[], own: tf.Tensor, axis: number): tf.Tensor {
  const parts: tf.Tensor[] = [];
  try {
    for (const w of busy) {
      w.wait();
      parts.push(w.readOutput());
    }
    busy.length = 0;
    parts.push(own);
    return tf.concat(parts, axis);
  } finally {
    parts.forEach((p) => p.dispose());
  }
}

/**
 * The inference threads: `threads - 1` workers (each on a TF.js `backend`, only "wasm"
 * being useful) and the main thread, shared by the two executors of the optimized path,
 * {@link InferencePool.kernels} and {@link InferencePool.tfjs}. Created by
 * {@link inferencePool}; every method is synchronous.
 *
 * `ConvNeXtModel.predict` (./model.ts) uses it as `inferencePool()?.kernels.run(runner,
 * token, pixels, shape)`, and runs `runner.run(pixels, shape)` itself when no pool is open.
 */
export class InferencePool {
  /** The worker threads (the main thread is the last participant); for the executors. */
  readonly workers: readonly WorkerHandle[];
  /** The kernel engine on these threads. */
  readonly kernels: KernelsExecutor;
  /** The plan on TF.js kernels on these threads. */
  readonly tfjs: TfjsExecutor;

  /**
   * @param threads total threads taking part, the main thread included (>= 2).
   * @param backend backend each worker must run; a worker that ends up on another is an error.
   */
  constructor(readonly threads: number, readonly backend = "wasm") {
    if (!(Number.isInteger(threads) && threads >= 2)) {
      throw new Error(`InferencePool: threads must be an integer >= 2, got ${threads}`);
    }
    this.workers = Array.from({ length: threads - 1 }, () => new WorkerHandle(backend));
    this.kernels = new KernelsExecutor(this);
    this.tfjs = new TfjsExecutor(this);
  }

  /**
   * Stop the worker threads; resolves once they have exited. The pool cannot be used
   * afterwards.
   */
  close(): Promise<void> {
    this.tfjs.dropSlices();
    return Promise.all(this.workers.map((w) => w.close())).then(() => {});
  }
}

/**
 * The kernel engine's executor on an {@link InferencePool}'s threads: runs an
 * {@link EnginePlan} with every thread on its engine's shared memory.
 */
export class KernelsExecutor {
  /** The int32 in the engine's memory that block chunks are counted with. */
  private counter?: { engine: KernelEngine; ptr: number };

  /** @param pool the threads to run on. */
  constructor(private readonly pool: InferencePool) {}

  /** Attach workers that do not run `runner` (identified by `token`) yet to its engine. */
  private sync(runner: EnginePlan, token: number): void {
    const stale = this.pool.workers.filter((w) => w.token !== token);
    for (const w of stale) {
      if (w.stack?.engine !== runner.engine) {
        w.stack = { engine: runner.engine, top: runner.engine.allocStack() };
      }
      w.post(OP.SETUP, {
        plan: runner.plan,
        engine: {
          memory: runner.engine.memory,
          relaxed: runner.engine.relaxed,
          stackTop: w.stack.top,
          steps: runner.steps,
        },
      });
    }
    for (const w of stale) {
      w.wait();
      w.token = token;
    }
  }

  /**
   * Run `runner`'s plan with every thread on its engine's shared memory: each block is
   * shared out in chunks (images, or bands of rows of a single image) and run in place; the
   * threads meet after each block, so they stream the same weights through the shared
   * L3 cache at the same time. The matmuls and LayerNorms of the stem, the downsampling
   * layers and the head are split by rows; patchify and pooling run on the main thread.
   * `token` identifies `runner`'s weights (a new token re-attaches the workers).
   */
  run(
    runner: EnginePlan,
    token: number,
    x: Float32Array<ArrayBufferLike>,
    shape: number[],
  ): { data: Float32Array<ArrayBufferLike>; shape: number[] } {
    this.sync(runner, token);
    return runner.run(x, shape, {
      block: (i, _step, xp, s, out) => this.block(runner, i, xp, s, out),
      gemm: (job) =>
        this.rows(runner, job.m, OP.GEMM, (first, count, ints) => {
          const part = {
            ...job,
            a: job.a + first * job.lda * 4,
            c: job.c + first * job.ldc * 4,
            m: count,
          };
          if (!ints) {
            runner.gemm(part); // with scratch of its own
            return [];
          }
          // The worker's scratch, freed after its job.
          const pack = runner.engine.alloc(runner.engine.kernels.gemm_scratch(job.k));
          const { a, lda, m, k, b, n, bias, c, ldc, mode } = part;
          ints.push(a, lda, m, k, b, n, bias, c, ldc, mode, pack);
          return [pack];
        }),
      layerNorm: (job) =>
        this.rows(runner, job.m, OP.LAYER_NORM, (first, count, ints) => {
          const part = {
            ...job,
            x: job.x + first * job.c * 4,
            out: job.out + first * job.c * 4,
            m: count,
          };
          if (!ints) {
            runner.layerNorm(part);
            return [];
          }
          const epsBits = new Int32Array(new Float32Array([part.eps]).buffer)[0];
          ints.push(part.x, part.m, part.c, epsBits, part.gamma, part.beta, part.out);
          return [];
        }),
    });
  }

  /**
   * Rows 0..m-1 of a row-wise engine kernel, split over the threads. `part(first, count,
   * ints)` either fills `ints` with a worker job's arguments (returning buffers to free
   * after the job) or, with `ints` null, runs the main thread's share itself. Fewer than
   * {@link MIN_SPLIT_ROWS} rows run on the main thread alone.
   */
  private rows(
    runner: EnginePlan,
    m: number,
    op: number,
    part: (first: number, count: number, ints: number[] | null) => number[],
  ): void {
    const shares = m < MIN_SPLIT_ROWS ? [m] : splitEven(m, this.pool.threads).filter((r) => r > 0);
    const busy: WorkerHandle[] = [];
    const buffers: number[] = [];
    let first = 0;
    try {
      for (let i = 0; i < shares.length - 1; i++) {
        const w = this.pool.workers[i];
        const ints: number[] = [];
        buffers.push(...part(first, shares[i], ints));
        ints.forEach((v, k) => Atomics.store(w.ctrl, CTRL.ARGS + k, v | 0));
        w.post(op);
        busy.push(w);
        first += shares[i];
      }
      part(first, shares[shares.length - 1], null);
      for (const w of busy.splice(0)) w.wait();
    } finally {
      for (const w of busy) {
        try {
          w.wait();
        } catch { /* already failing */ }
      }
      for (const p of buffers) runner.engine.free(p);
    }
  }

  /**
   * One block on the engine, shared by the threads through a queue of chunks (images, or
   * bands of rows of a single image with the halo their depthwise conv reads), in place.
   */
  private block(
    runner: EnginePlan,
    index: number,
    x: number,
    shape: number[],
    out: number,
  ): void {
    const e = runner.engine;
    const chunks = blockChunks(shape, this.pool.threads);
    if (this.counter?.engine !== e) this.counter = { engine: e, ptr: e.alloc(1) };
    const counter = this.counter.ptr;
    new Int32Array(e.memory.buffer, counter, 1)[0] = 0;
    const floats = runner.chunkScratch(index, shape, chunks);
    const helpers = this.pool.workers.slice(
      0,
      Math.min(this.pool.workers.length, chunks.count - 1),
    );
    const scratches = [e.alloc(floats), ...helpers.map(() => e.alloc(floats))];
    const busy: WorkerHandle[] = [];
    try {
      helpers.forEach((w, i) => {
        shape.forEach((d, k) => Atomics.store(w.ctrl, CTRL.SHAPE + k, d));
        Atomics.store(w.ctrl, CTRL.STEP, index);
        Atomics.store(w.ctrl, CTRL.X_PTR, x | 0);
        Atomics.store(w.ctrl, CTRL.OUT_PTR, out | 0);
        Atomics.store(w.ctrl, CTRL.SCRATCH_PTR, scratches[i + 1] | 0);
        const args = [counter, chunks.byImages ? 1 : 0, chunks.size, chunks.count];
        args.forEach((v, k) => Atomics.store(w.ctrl, CTRL.ARGS + k, v | 0));
        w.post(OP.BLOCK_CHUNKS);
        busy.push(w);
      });
      runner.runBlockChunks(index, x, shape, out, chunks, counter, scratches[0]);
      for (const w of busy.splice(0)) w.wait();
    } finally {
      for (const w of busy) {
        try {
          w.wait();
        } catch { /* already failing */ }
      }
      for (const p of scratches) e.free(p);
    }
  }
}

/**
 * The TF.js executor on an {@link InferencePool}'s threads (`CONVNEXT_EXECUTOR=tfjs`):
 * runs a {@link Plan} with its folded weights, each worker on its own TF.js backend with a
 * copy of the weights.
 */
export class TfjsExecutor {
  /** @param pool the threads to run on. */
  constructor(private readonly pool: InferencePool) {}

  /** Send `weights` (identified by `token`) to workers that do not hold them yet. */
  private sync(plan: Plan, weights: FoldedWeights, token: number): void {
    const stale = this.pool.workers.filter((w) => w.token !== token);
    if (stale.length === 0) return;
    const names = Object.keys(weights);
    const shapes = names.map((n) => weights[n].shape);
    const total = names.reduce((sum, n) => sum + weights[n].size, 0);
    const buffer = new SharedArrayBuffer(total * 4);
    const all = new Float32Array(buffer);
    let offset = 0;
    for (const n of names) {
      all.set(weights[n].dataSync() as Float32Array, offset);
      offset += weights[n].size;
    }
    // Every stale worker reads the same shared copy.
    for (const w of stale) w.post(OP.SETUP, { plan, weights: { names, shapes, buffer } });
    for (const w of stale) {
      w.wait();
      w.token = token;
    }
  }

  /**
   * Run `plan` on `x` (`[batch, h, w, c]`) with every thread: a batch is split by images,
   * a single image by rows. `token` identifies `weights` (a new token resends them);
   * `outFloats` is the output's size per image (default: the input's), for which the
   * workers' buffers are made room.
   */
  run(
    plan: Plan,
    weights: FoldedWeights,
    token: number,
    x: tf.Tensor4D,
    outFloats?: number,
  ): tf.Tensor {
    this.sync(plan, weights, token);
    if (x.shape[0] === 1) {
      return executePlan(
        plan,
        weights,
        x,
        (slab, step, w) => this.runBlock(plan, token, slab, step, w),
      );
    }
    return this.runBatch(plan, weights, x, outFloats ?? x.size / x.shape[0]);
  }

  private runBatch(
    plan: Plan,
    weights: FoldedWeights,
    x: tf.Tensor4D,
    outFloats: number,
  ): tf.Tensor {
    const n = x.shape[0];
    const shares = splitEven(n, this.pool.threads).filter((s) => s > 0);
    const busy: WorkerHandle[] = [];
    let start = 0;
    try {
      // Workers take the first shares; the main thread the last.
      for (let i = 0; i < shares.length - 1; i++) {
        const part = tf.slice(x, [start, 0, 0, 0], [shares[i], -1, -1, -1]);
        const w = this.pool.workers[i];
        w.writeInput(part, shares[i] * outFloats);
        part.dispose();
        w.post(OP.RUN);
        busy.push(w);
        start += shares[i];
      }
      const mine = tf.slice(x, [start, 0, 0, 0], [-1, -1, -1, -1]);
      const own = executePlan(plan, weights, mine);
      mine.dispose();
      return gather(busy, own, 0);
    } finally {
      for (const w of busy) {
        try {
          w.wait();
        } catch { /* already failing */ }
      }
    }
  }

  /** Hidden-unit slices on the main thread, by `token|prefix|part|parts`. */
  private readonly slices = new Map<string, ReturnType<typeof hiddenSlice>>();

  private slice(
    token: number,
    weights: FoldedWeights,
    prefix: string,
    part: number,
    parts: number,
  ): ReturnType<typeof hiddenSlice> {
    const key = `${token}|${prefix}|${part}|${parts}`;
    let found = this.slices.get(key);
    if (!found) {
      if (!this.slices.keys().next().value?.startsWith(`${token}|`)) this.dropSlices();
      found = tf.tidy(() => hiddenSlice(weights, prefix, part, parts));
      Object.values(found).forEach((t) => tf.keep(t));
      this.slices.set(key, found);
    }
    return found;
  }

  /** Free the cached hidden-unit slices (when the pool closes). */
  dropSlices(): void {
    for (const s of this.slices.values()) tf.dispose(Object.values(s));
    this.slices.clear();
  }

  /** One block of a single image, its MLP's hidden units split over the threads. */
  private runHidden(
    token: number,
    x: tf.Tensor4D,
    step: BlockStep,
    stepIndex: number,
    weights: FoldedWeights,
  ): tf.Tensor {
    const half = (step.kernelSize - 1) / 2;
    const parts = this.pool.threads;
    return blockOnSlab(x, weights, step, half, half, (a) => {
      const [m, c] = a.shape;
      const busy: WorkerHandle[] = [];
      try {
        this.pool.workers.forEach((w, i) => {
          w.writeInput(a, m * c);
          [1, 1, m, c].forEach((d, k) => Atomics.store(w.ctrl, CTRL.SHAPE + k, d));
          Atomics.store(w.ctrl, CTRL.STEP, stepIndex);
          Atomics.store(w.ctrl, CTRL.PART, i);
          Atomics.store(w.ctrl, CTRL.PARTS, parts);
          w.post(OP.HIDDEN);
          busy.push(w);
        });
        const mine = this.slice(token, weights, step.prefix, parts - 1, parts);
        const partials = [mlpPart(a, mine.w1, mine.b1, mine.w2)];
        for (const w of busy) {
          w.wait();
          partials.push(w.readOutput());
        }
        busy.length = 0;
        return tf.add(tf.addN(partials), weights[`${step.prefix}/b2`]);
      } finally {
        for (const w of busy) {
          try {
            w.wait();
          } catch { /* already failing */ }
        }
      }
    });
  }

  private runBlock(
    plan: Plan,
    token: number,
    x: tf.Tensor4D,
    step: BlockStep,
    weights: FoldedWeights,
  ): tf.Tensor {
    const [n, h, width, c] = x.shape;
    const w1 = weights[`${step.prefix}/w1`];
    if (w1 && w1.size * 4 > HIDDEN_SPLIT_BYTES) {
      return this.runHidden(token, x, step, plan.steps.indexOf(step), weights);
    }
    const half = (step.kernelSize - 1) / 2;
    const bands = splitEven(h, this.pool.threads).filter((r) => r > 0);
    const stepIndex = plan.steps.indexOf(step);
    const slab = (r0: number, r1: number) => {
      const a = Math.max(0, r0 - half);
      const b = Math.min(h, r1 + half);
      return {
        slab: tf.slice(x, [0, a, 0, 0], [n, b - a, width, c]),
        padTop: half - (r0 - a),
        padBottom: half - (b - r1),
      };
    };
    const busy: WorkerHandle[] = [];
    let r0 = 0;
    try {
      for (let i = 0; i < bands.length - 1; i++) {
        const w = this.pool.workers[i];
        const s = slab(r0, r0 + bands[i]);
        w.writeInput(s.slab, s.slab.size);
        s.slab.dispose();
        Atomics.store(w.ctrl, CTRL.STEP, stepIndex);
        Atomics.store(w.ctrl, CTRL.PAD_TOP, s.padTop);
        Atomics.store(w.ctrl, CTRL.PAD_BOTTOM, s.padBottom);
        w.post(OP.BLOCK);
        busy.push(w);
        r0 += bands[i];
      }
      const s = slab(r0, h);
      const own = blockOnSlab(s.slab, weights, step, s.padTop, s.padBottom);
      s.slab.dispose();
      return gather(busy, own, 1);
    } finally {
      for (const w of busy) {
        try {
          w.wait();
        } catch { /* already failing */ }
      }
    }
  }
}

let shared: InferencePool | null = null;
/**
 * Most threads the TF.js executor uses unless `CONVNEXT_THREADS` asks for more: each of its
 * threads holds its own copy of the folded weights.
 */
export const DEFAULT_MAX_THREADS = 4;

/**
 * Threads for inference by `executor`: `CONVNEXT_THREADS` when set (1 disables the pool),
 * else the machine's logical cores (`navigator.hardwareConcurrency`): all of them for the
 * kernel engine, whose threads share one copy of the weights, at most
 * {@link DEFAULT_MAX_THREADS} for the TF.js executor.
 *
 * @throws Error for a `CONVNEXT_THREADS` that is not a positive integer.
 */
export function inferenceThreads(executor: "kernels" | "tfjs" = "kernels"): number {
  const fromEnv = threadsFromEnv("CONVNEXT_THREADS");
  if (fromEnv !== undefined) return fromEnv;
  const cores = navigator.hardwareConcurrency || 1;
  // Under the TF.js executor each thread holds its own copy of the folded (and packed)
  // weights: the cap keeps many-core machines from multiplying the memory of large models.
  return Math.max(1, executor === "tfjs" ? Math.min(DEFAULT_MAX_THREADS, cores) : cores);
}

/**
 * The process-wide pool for `executor`'s threads ({@link inferenceThreads}), started on
 * first use (and restarted when the thread count changes); null when only one thread is
 * available (then the caller runs on the main thread alone).
 */
export function inferencePool(executor: "kernels" | "tfjs" = "kernels"): InferencePool | null {
  const threads = inferenceThreads(executor);
  if (shared && shared.threads !== threads) closeInferencePool();
  if (threads < 2) return null;
  if (!shared) {
    shared = new InferencePool(threads, "wasm");
    if (!unloadHooked) hookUnload();
    unloadHooked = true;
  }
  return shared;
}

let unloadHooked = false;

/**
 * Stop the threads before the program ends rather than have the process torn down under
 * them: when the event loop runs dry (`beforeunload`), close the pool and let the loop
 * run until the threads have exited; `unload` is the last resort, where nothing can be
 * awaited any more.
 */
function hookUnload(): void {
  globalThis.addEventListener("beforeunload", () => {
    if (shared) void closeInferencePool();
  });
  globalThis.addEventListener("unload", () => void closeInferencePool());
}

/**
 * Stop the shared pool's threads (the next parallel predict starts a new pool); resolves
 * once they have exited. Tests call it to leave no threads behind; programs need not: the
 * threads never keep a process alive, and they are stopped when the program ends.
 */
export function closeInferencePool(): Promise<void> {
  const pool = shared;
  shared = null;
  return pool ? pool.close() : Promise.resolve();
}
