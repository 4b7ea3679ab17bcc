/**
 * Training gradients on the kernel engine (lib/infer/engine/train.ts): the fast path of
 * full fine-tuning on the wasm and cpu backends. {@link EngineGradients} has the interface
 * of ./parallel.ts's `ParallelGradients` (`gradients(x, labels, options)` returns the loss,
 * the correct count and the gradients by parameter name), so the fine-tuning loop, the
 * optimizer, EMA, layer decay and checkpoints stay as they are.
 *
 * Each thread runs a shard of the batch (whole images) from the pixels to the weight
 * gradients on the engine's shared memory: one copy of the weights, no copies of
 * activations, no meeting until the end, where the threads' gradients are summed. The
 * drop-path masks are drawn as the stock layer draws them, for the whole batch under the
 * step's seed, so they do not depend on the thread count (and equal the single-threaded
 * stock path's masks for the same seed).
 *
 * Which path training takes: {@link trainPath} (`CONVNEXT_TRAIN_PATH=stock|engine`, default
 * automatic: the engine on wasm and cpu when it can run the model).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { KernelEngine } from "../infer/engine/engine.ts";
import {
  allocTape,
  freeTape,
  imagesPerPass,
  runShard,
  runTasks,
  type Tape,
  TASK,
  TASK_INTS,
} from "../infer/engine/train.ts";
import { JobClient, splitEven } from "../util/jobs.ts";
import {
  buildTrainProgram,
  dropScales,
  engineTensor,
  engineTrainSupport,
  freeProgram,
  type LoadedProgram,
  syncWeights,
  type Task,
} from "./engine_program.ts";
import { EngineAdamW } from "./engine_adamw.ts";
import { ECTRL, type EngineWorkerInit, EOP, ESCALAR } from "./engine_protocol.ts";
import type { GradientStepOptions, GradientStepResult } from "./parallel.ts";
import type { AdamWParam } from "./optimizer.ts";
import { withSeededMathRandom } from "./rng.ts";

export { engineTrainSupport, EngineTrainUnsupported } from "./engine_program.ts";

/** How long to wait for a worker to start (wasm compile) before giving up. */
const START_TIMEOUT_MS = 120_000;
/** How long one shard may take before its worker is taken for dead. */
const JOB_TIMEOUT_MS = 1_800_000;
const HINT = " (CONVNEXT_TRAIN_THREADS=1 trains on the main thread only)";
/** Floats per task of the gradient sum (1 MiB: enough tasks to share, few enough to post). */
const REDUCE_CHUNK = 1 << 18;
/**
 * Bytes of engine memory the weights, the batch and the threads' tapes (activations,
 * gradients) may take together: WebAssembly's 4 GiB less room for the allocator's
 * fragmentation. A shard whose tape would not fit runs in several passes.
 */
const ENGINE_BYTES = 3.75 * 2 ** 30;

class EngineWorker extends JobClient {
  readonly scalars: Float64Array;
  /** The tape this worker holds. */
  tape: Tape | null = null;

  constructor(memory: WebAssembly.Memory, relaxed: boolean, stackTop: number) {
    const scalars = new Float64Array(new SharedArrayBuffer(ESCALAR.LENGTH * 8));
    super(ECTRL.LENGTH, {
      script: new URL("./engine_worker.ts", import.meta.url),
      init: (port, ctrl): EngineWorkerInit => ({ ctrl, scalars, port, memory, relaxed, stackTop }),
      label: "engine training",
      hint: HINT,
      jobTimeoutMs: JOB_TIMEOUT_MS,
    });
    this.scalars = scalars;
  }

  /** Resolves when the worker is up; rejects with its error. */
  async started(deadline: number): Promise<void> {
    while (Atomics.load(this.ctrl, ECTRL.READY) === 0) {
      if (performance.now() > deadline) {
        throw new Error(`engine training: a worker thread did not start in time${HINT}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    this.checkStarted();
  }

  override close(): Promise<void> {
    return super.close(EOP.EXIT);
  }
}

/** Options of {@link EngineGradients.start}. */
export interface EngineGradientsOptions {
  /** Threads taking part, the main thread included (default 1). */
  threads?: number;
  /**
   * Bytes the threads' activations and gradients may take (default: what the weights leave
   * of 3.75 GiB, under WebAssembly's 4 GiB): a thread whose share of a batch needs more
   * runs it in several passes, adding up the gradients.
   */
  tapeBudget?: number;
  /**
   * Run AdamW's updates on the engine too ({@link EngineGradients.adamw}): the moments take
   * another 8 bytes per parameter of engine memory. Default false.
   */
  adamw?: boolean;
}

/** Options of {@link EngineGradients.gradients}. */
export interface EngineStepOptions extends GradientStepOptions {
  /**
   * false: no gradient tensors (`grads` is empty); the gradients stay in the engine for its
   * AdamW update ({@link EngineGradients.adamw}). Default true.
   */
  tensors?: boolean;
}

/** Where the last step spent its time (ms). */
export interface EngineTimings {
  /** Copying changed weights into the engine and packing them. */
  weights: number;
  /** Drop-path masks, images and labels into the engine. */
  inputs: number;
  /** The shards (forward, loss, backward), until the last thread finished. */
  shards: number;
  /**
   * Each thread's time on its shard, the workers' then the main thread's: the batch is
   * split evenly, so a thread the machine slows makes the others wait.
   */
  threadMs: number[];
  /** Summing the threads' gradients and reading them out as tensors. */
  gradients: number;
}

/**
 * Loss gradients of a ConvNeXt on the kernel engine, over `threads` threads (see the
 * module doc). Synchronous per step; `close()` frees the engine's buffers and the threads.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * import { EngineGradients } from "./engine_grads.ts";
 * import { modelParams } from "./optimizer.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], layerScaleInit: 1e-6,
 * }, { numClasses: 3, dropPathRate: 0.1 });
 * const params = modelParams(model, { weightDecay: 0.05 });
 * const engine = await EngineGradients.start(model, params, { threads: 1 });
 * const x = tf.randomNormal([2, 32, 32, 3]);
 * const { loss, grads } = engine.gradients(x, Int32Array.from([0, 2]), { seed: 1 });
 * console.log(loss, grads.get("head_fc/kernel")?.shape); // ~1.1 [64, 3]
 * tf.dispose([...grads.values(), x]);
 * engine.close();
 * ```
 */
export class EngineGradients {
  /** Where the last step spent its time. */
  timings: EngineTimings = { weights: 0, inputs: 0, shards: 0, threadMs: [], gradients: 0 };
  private closed = false;
  private readonly mainTapes = new Map<string, Tape>();
  private inputBuffer = { ptr: 0, floats: 0 };
  private taskBuffer = { ptr: 0, ints: 0 };
  /** The workers' gradient buffers, for the sum's tasks (int32 pointers). */
  private readonly sourceTable: number;
  private readonly slotByName: Map<string, { offset: number; shape: number[] }>;
  /** The summed gradients of the last step, until an AdamW update takes them. */
  private pendingGrads: number | null = null;
  /**
   * AdamW on the engine (`optimizer.stepWith(engine.adamw, lr)`: see ./engine_adamw.ts);
   * null unless started with `adamw: true`.
   */
  readonly adamw: EngineAdamW | null;

  private constructor(
    /** Threads taking part, the main thread included. */
    readonly threads: number,
    private readonly engine: KernelEngine,
    private readonly loaded: LoadedProgram,
    private readonly params: AdamWParam[],
    private readonly workers: EngineWorker[],
    private readonly tapeBudget: number,
    adamw: boolean,
  ) {
    this.slotByName = new Map(loaded.program.slots.map((s) => [s.name, s]));
    this.sourceTable = engine.alloc(Math.max(1, workers.length));
    this.adamw = adamw
      ? new EngineAdamW(engine, loaded, params, {
        run: (tasks) => this.shareTasks(tasks),
        takeGradients: () => {
          const at = this.pendingGrads;
          if (at === null) {
            throw new Error(
              "EngineGradients.adamw: no gradients to update with (call gradients())",
            );
          }
          this.pendingGrads = null;
          return at;
        },
      })
      : null;
  }

  /**
   * Build `model`'s training program on a new engine and start `threads - 1` workers.
   *
   * @throws EngineTrainUnsupported when the kernels cannot run the model (the caller keeps
   *   the TF.js path); Error when a parameter is not a weight of the model, or a worker
   *   fails to start.
   */
  static async start(
    model: tf.LayersModel,
    params: AdamWParam[],
    options: EngineGradientsOptions = {},
  ): Promise<EngineGradients> {
    const threads = options.threads ?? 1;
    if (!(Number.isInteger(threads) && threads >= 1)) {
      throw new Error(`EngineGradients: threads must be a positive integer, got ${threads}`);
    }
    const engine = KernelEngine.create();
    const loaded = buildTrainProgram(model, engine);
    const names = new Set(loaded.program.slots.map((s) => s.name));
    const missing = params.find((p) => !names.has(p.name));
    if (missing) {
      freeProgram(engine, loaded);
      throw new Error(`EngineGradients: parameter "${missing.name}" is not a weight of the model`);
    }
    const workers: EngineWorker[] = [];
    try {
      for (let i = 0; i < threads - 1; i++) {
        workers.push(new EngineWorker(engine.memory, engine.relaxed, engine.allocStack()));
      }
      const deadline = performance.now() + START_TIMEOUT_MS;
      for (const w of workers) await w.started(deadline);
      for (const w of workers) w.post(EOP.SETUP, { program: loaded.program });
      for (const w of workers) w.wait();
    } catch (e) {
      for (const w of workers) w.close();
      throw e;
    }
    // What the weights leave (convnext_tiny: 0.3 GiB of them; convnext_base 1 GiB).
    const moments = options.adamw ? 4 * EngineAdamW.floats(loaded, params) : 0;
    const budget = options.tapeBudget ?? ENGINE_BYTES - engine.byteLength - moments;
    return new EngineGradients(threads, engine, loaded, params, workers, budget, !!options.adamw);
  }

  /** Bytes of engine memory in use (weights, tapes, gradients). */
  get engineBytes(): number {
    return this.engine.byteLength;
  }

  /** The main thread's tape for passes of `shape` (kept per shape; at most two kept). */
  private mainTape(shape: number[]): Tape {
    const key = shape.join();
    let tape = this.mainTapes.get(key);
    if (!tape) {
      if (this.mainTapes.size >= 2) this.dropTapes();
      tape = allocTape(this.engine, this.loaded.program, shape);
      this.mainTapes.set(key, tape);
    }
    return tape;
  }

  private dropTapes(): void {
    for (const t of this.mainTapes.values()) freeTape(this.engine, t);
    this.mainTapes.clear();
  }

  /** Make worker `w`'s tape fit passes of `shape`. */
  private workerTape(w: EngineWorker, shape: number[]): Tape {
    if (w.tape && w.tape.shape.join() === shape.join()) return w.tape;
    if (w.tape) freeTape(this.engine, w.tape);
    w.tape = null;
    const tape = allocTape(this.engine, this.loaded.program, shape);
    w.post(EOP.SETUP, { tape });
    w.wait();
    w.tape = tape;
    return tape;
  }

  /** A buffer of the batch's images, labels and drop-path scales (grown on demand). */
  private inputs(floats: number): number {
    if (this.inputBuffer.floats < floats) {
      if (this.inputBuffer.ptr) this.engine.free(this.inputBuffer.ptr);
      this.inputBuffer = { ptr: this.engine.alloc(floats), floats };
    }
    return this.inputBuffer.ptr;
  }

  /**
   * The loss gradients of one batch: the gradient of `scale * crossEntropy(model(x,
   * training), labels, smoothing)` (mean over the batch) for every parameter.
   *
   * @param x images `[n, h, w, c]` (not disposed).
   * @param labels class indices, `n` of them.
   */
  gradients(
    x: tf.Tensor,
    labels: Int32Array,
    options: EngineStepOptions = {},
  ): GradientStepResult {
    if (this.closed) throw new Error("EngineGradients: used after close()");
    if (x.rank !== 4) throw new Error(`EngineGradients: x must be [n, h, w, c], got [${x.shape}]`);
    const [n, h, w, c] = x.shape;
    if (labels.length !== n) {
      throw new Error(`EngineGradients: ${labels.length} labels for ${n} images`);
    }
    const { program, dropRates } = this.loaded;
    for (const l of labels) {
      if (!(Number.isInteger(l) && l >= 0 && l < program.classes)) {
        throw new Error(`EngineGradients: label ${l} outside 0..${program.classes - 1}`);
      }
    }
    const t0 = performance.now();
    this.shareTasks(syncWeights(this.engine, this.loaded));
    const t1 = performance.now();
    const scales = dropRates.length
      ? withSeededMathRandom(options.seed ?? 0, () => dropScales(dropRates, n))
      : new Float32Array(0);
    const image = n * h * w * c;
    const base = this.inputs(image + n + scales.length);
    const pixels = x.dataSync();
    this.engine.write(base, pixels instanceof Float32Array ? pixels : Float32Array.from(pixels));
    new Int32Array(this.engine.memory.buffer, base + 4 * image, n).set(labels);
    this.engine.write(base + 4 * (image + n), scales);
    const job = {
      labels: base + 4 * image,
      scales: scales.length ? base + 4 * (image + n) : 0,
      batch: n,
      smoothing: options.smoothing ?? 0,
      scale: options.scale ?? 1,
    };
    const t2 = performance.now();
    const { lossSum, correct, tape, threadMs } = this.runShards(base, [n, h, w, c], job);
    const t3 = performance.now();
    this.pendingGrads = tape.grads;
    const grads = options.tensors === false ? new Map<string, tf.Tensor>() : this.collect(tape);
    this.timings = {
      weights: t1 - t0,
      inputs: t2 - t1,
      shards: t3 - t2,
      threadMs,
      gradients: performance.now() - t3,
    };
    return { loss: lossSum / n, correct, grads };
  }

  /** Run `tasks` (lib/infer/engine/train.ts `runTasks`) on every thread. */
  private shareTasks(tasks: Task[]): void {
    if (tasks.length === 0) return;
    const ints = tasks.length * TASK_INTS + 1;
    if (this.taskBuffer.ints < ints) {
      if (this.taskBuffer.ptr) this.engine.free(this.taskBuffer.ptr);
      this.taskBuffer = { ptr: this.engine.alloc(ints), ints };
    }
    const table = this.taskBuffer.ptr;
    const view = new Int32Array(this.engine.memory.buffer, table, ints);
    tasks.forEach((t, i) => view.set(t, i * TASK_INTS));
    const counter = table + 4 * tasks.length * TASK_INTS;
    view[tasks.length * TASK_INTS] = 0;
    const helpers = this.workers.slice(0, Math.min(this.workers.length, tasks.length - 1));
    const busy: EngineWorker[] = [];
    try {
      for (const w of helpers) {
        Atomics.store(w.ctrl, ECTRL.TASK_TABLE, table | 0);
        Atomics.store(w.ctrl, ECTRL.TASK_COUNT, tasks.length);
        Atomics.store(w.ctrl, ECTRL.TASK_COUNTER, counter | 0);
        w.post(EOP.TASKS);
        busy.push(w);
      }
      runTasks(this.engine, table, tasks.length, counter);
      for (const w of busy.splice(0)) w.wait();
    } finally {
      for (const w of busy) {
        try {
          w.wait();
        } catch { /* already failing */ }
      }
    }
  }

  /** Add the gradient buffers at `sources` into `dst`, in chunks shared by the threads. */
  private sumGradients(dst: number, sources: number[]): void {
    if (sources.length === 0) return;
    new Int32Array(this.engine.memory.buffer, this.sourceTable, sources.length).set(sources);
    const floats = this.loaded.program.gradFloats;
    const tasks: Task[] = [];
    for (let at = 0; at < floats; at += REDUCE_CHUNK) {
      const len = Math.min(REDUCE_CHUNK, floats - at);
      tasks.push([TASK.REDUCE, dst, 4 * at, len, this.sourceTable, sources.length]);
    }
    this.shareTasks(tasks);
  }

  /** Post the workers' shards, run the main thread's (the last), wait, sum the gradients. */
  private runShards(
    base: number,
    shape: number[],
    job: { labels: number; scales: number; batch: number; smoothing: number; scale: number },
  ): { lossSum: number; correct: number; tape: Tape; threadMs: number[] } {
    const [n, h, w, c] = shape;
    const shares = splitEven(n, Math.min(this.threads, n)).filter((s) => s > 0);
    const budget = this.tapeBudget - this.inputBuffer.floats * 4;
    const room = Math.min(
      shares[0],
      imagesPerPass(this.loaded.program, [h, w, c], shares.length, budget),
    );
    const busy: EngineWorker[] = [];
    let first = 0;
    try {
      for (let k = 0; k < shares.length - 1; k++) {
        const worker = this.workers[k];
        this.workerTape(worker, [room, h, w, c]);
        const slots: [number, number][] = [
          [ECTRL.X, base + 4 * first * h * w * c],
          [ECTRL.LABELS, job.labels],
          [ECTRL.SCALES, job.scales],
          [ECTRL.FIRST, first],
          [ECTRL.BATCH, n],
          [ECTRL.SHAPE, shares[k]],
        ];
        for (const [slot, v] of slots) Atomics.store(worker.ctrl, slot, v | 0);
        worker.scalars[ESCALAR.SMOOTHING] = job.smoothing;
        worker.scalars[ESCALAR.SCALE] = job.scale;
        worker.post(EOP.STEP);
        busy.push(worker);
        first += shares[k];
      }
      const tape = this.mainTape([room, h, w, c]);
      const t0 = performance.now();
      const own = runShard(this.engine, this.loaded.program, tape, {
        ...job,
        x: base + 4 * first * h * w * c,
        count: n - first,
        first,
      });
      const ownMs = performance.now() - t0;
      let { lossSum, correct } = own;
      const sources: number[] = [];
      const threadMs: number[] = [];
      for (const worker of busy.splice(0)) {
        worker.wait();
        lossSum += worker.scalars[ESCALAR.LOSS];
        correct += worker.scalars[ESCALAR.CORRECT];
        threadMs.push(worker.scalars[ESCALAR.MS]);
        sources.push(worker.tape!.grads);
      }
      this.sumGradients(tape.grads, sources);
      return { lossSum, correct, tape, threadMs: [...threadMs, ownMs] };
    } finally {
      for (const worker of busy) {
        try {
          worker.wait();
        } catch { /* already failing */ }
      }
    }
  }

  /** The summed gradients of the trained parameters as tensors, by parameter name. */
  private collect(tape: Tape): Map<string, tf.Tensor> {
    const grads = new Map<string, tf.Tensor>();
    for (const p of this.params) {
      const slot = this.slotByName.get(p.name)!;
      grads.set(p.name, engineTensor(this.engine, tape.grads + 4 * slot.offset, slot.shape));
    }
    return grads;
  }

  /** Stop the threads and free the engine's buffers. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.adamw?.free();
    for (const w of this.workers) w.close();
    for (const w of this.workers) if (w.tape) freeTape(this.engine, w.tape);
    this.dropTapes();
    if (this.inputBuffer.ptr) this.engine.free(this.inputBuffer.ptr);
    if (this.taskBuffer.ptr) this.engine.free(this.taskBuffer.ptr);
    this.engine.free(this.sourceTable);
    freeProgram(this.engine, this.loaded);
  }

  /** Same as {@link close}. */
  dispose(): void {
    this.close();
  }
}

/** Which path the training step takes: `CONVNEXT_TRAIN_PATH`. */
export type TrainPath = "auto" | "engine" | "stock";

/**
 * The path `CONVNEXT_TRAIN_PATH` asks for: "engine" (the kernel engine; an error when it
 * cannot run the model), "stock" (TF.js's kernels, ./parallel.ts), or "auto" (unset: the
 * engine on the wasm and cpu backends when it can run the model, else TF.js).
 *
 * @throws Error for any other value.
 */
export function trainPath(): TrainPath {
  let value: string | undefined;
  try {
    value = Deno.env.get("CONVNEXT_TRAIN_PATH");
  } catch {
    value = undefined; // no env permission: the default
  }
  if (value === undefined || value === "" || value === "auto") return "auto";
  if (value === "engine" || value === "stock") return value;
  throw new Error(`CONVNEXT_TRAIN_PATH: expected "engine", "stock" or "auto", got "${value}"`);
}

/** Backends whose training the engine takes by default (it runs beside any backend). */
export const ENGINE_TRAIN_BACKENDS = ["wasm", "cpu"] as const;

let noticed = false;

/** The one-line fallback notice, once per process. */
function notice(reason: string): void {
  if (noticed) return;
  noticed = true;
  console.error(`training takes the TF.js path (the kernel engine cannot: ${reason})`);
}

/**
 * Whether full fine-tuning of `model` takes the kernel engine now (see {@link trainPath}).
 * When the automatic choice falls back to TF.js for a model or backend the engine does not
 * take, a one-line notice says why on stderr, once per process.
 *
 * @throws Error when `CONVNEXT_TRAIN_PATH=engine` and the engine cannot run the model.
 */
export function useEngineTraining(
  model: tf.LayersModel,
  backend: string = tf.getBackend(),
): boolean {
  const path = trainPath();
  if (path === "stock") return false;
  // Beside another backend the engine runs only when asked to, and never on webgpu: it
  // reads the weights synchronously, which webgpu cannot under Deno.
  const backendOk = (ENGINE_TRAIN_BACKENDS as readonly string[]).includes(backend) ||
    (path === "engine" && backend !== "webgpu");
  const reason = backendOk ? engineTrainSupport(model) : `backend ${backend}`;
  if (reason === null) return true;
  if (path === "engine") {
    throw new Error(`CONVNEXT_TRAIN_PATH=engine: the kernel engine cannot train here: ${reason}`);
  }
  notice(reason);
  return false;
}

/**
 * The engine's gradients for full fine-tuning of `model` when {@link useEngineTraining}
 * says so, started on `threads` threads; null when training takes the TF.js path. A start
 * that fails (e.g. a `ulimit -v` forbids the engine's 4 GiB memory reservation) falls back
 * to TF.js with the notice, unless `CONVNEXT_TRAIN_PATH=engine` asked for the engine.
 */
export async function engineGradientsFor(
  model: tf.LayersModel,
  params: AdamWParam[],
  threads: number,
  options: Omit<EngineGradientsOptions, "threads"> = {},
): Promise<EngineGradients | null> {
  if (!useEngineTraining(model)) return null;
  try {
    return await EngineGradients.start(model, params, { ...options, threads });
  } catch (e) {
    if (trainPath() === "engine") throw e;
    notice((e as Error)?.message ?? String(e));
    return null;
  }
}
