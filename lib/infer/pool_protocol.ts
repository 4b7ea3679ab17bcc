/**
 * The shared-memory protocol between the inference pool (./pool.ts) and its worker threads
 * (./worker.ts).
 *
 * Why shared memory and not messages: `predict` is synchronous, so the main thread cannot
 * wait for a message event. It blocks in `Atomics.wait` instead, and jobs travel through a
 * `SharedArrayBuffer` (a round trip costs well under a millisecond; a message round trip in
 * Deno's worker_threads took about 70 ms). Rare, large setups (weights) go as a message that
 * the worker pulls synchronously with `receiveMessageOnPort`.
 *
 * @module
 */
import { JOB_SLOTS } from "../util/jobs.ts";

/** Slots of the control `Int32Array`. */
export const CTRL = {
  ...JOB_SLOTS,
  /** Block jobs: index of the step in the plan. */
  STEP: 9,
  /** Block jobs: zero-padding rows outside the slab, top and bottom. */
  PAD_TOP: 10,
  /** See PAD_TOP. */
  PAD_BOTTOM: 11,
  /** Output rank, then the output shape (up to 4 slots), written by the worker. */
  OUT_RANK: 12,
  /** See OUT_RANK. */
  OUT_SHAPE: 13,
  /** Hidden-split jobs: which share of the hidden units, and of how many shares. */
  PART: 17,
  /** See PART. */
  PARTS: 18,
  /**
   * Engine block jobs: byte offsets of the map, the output map and the thread's scratch in
   * the shared engine memory (stored as int32 bits: read back with `>>> 0`).
   */
  X_PTR: 19,
  /** See X_PTR. */
  OUT_PTR: 20,
  /** See X_PTR. */
  SCRATCH_PTR: 21,
  /**
   * GEMM and LAYER_NORM jobs: the kernel's arguments, in order (pointers as int32 bits;
   * LayerNorm's epsilon as float32 bits), up to 12 slots.
   */
  ARGS: 24,
  /** Length of the control array. */
  LENGTH: 40,
} as const;

/** Job opcodes. */
export const OP = {
  /** Pull a {@link SetupMessage} from the port. */
  SETUP: 1,
  /** Run the whole plan on the input in the data buffer; write the output there. */
  RUN: 2,
  /**
   * TF.js executor: run one block step on the slab in the data buffer; write the band's rows
   * there.
   */
  BLOCK: 3,
  /**
   * Run a share of one block's MLP (hidden units split) on the normalized rows `[1, 1, M, C]`
   * in the data buffer; write the un-biased partial output `[M, C]` there.
   */
  HIDDEN: 5,
  /** Leave the job loop (the thread then ends). */
  EXIT: 4,
  /**
   * Run the engine's gemm on the rows given in ARGS (a, lda, m, k, b, n, bias, c, ldc,
   * mode, pack), in place in the shared engine memory.
   */
  GEMM: 6,
  /** Run the engine's layer_norm on ARGS (x, m, c, eps, gamma, beta, out), in place. */
  LAYER_NORM: 7,
  /**
   * Take chunks of block STEP on the map at X_PTR (SHAPE) into OUT_PTR until none is left,
   * with SCRATCH_PTR; ARGS: counter pointer, by images (0/1), chunk size, chunk count (see
   * `EnginePlan.runBlockChunks`).
   */
  BLOCK_CHUNKS: 8,
} as const;

/**
 * Folded weights for a message: names and shapes, values back to back in shared memory
 * (cloning a hundred megabytes of typed arrays through a message took seconds in Deno).
 */
export interface WeightArrays {
  /** Weight keys. */
  names: string[];
  /** Shapes, by key order. */
  shapes: number[][];
  /** All values, by key order, float32. */
  buffer: SharedArrayBuffer;
}

/** Message sent with {@link OP.SETUP}: new weights and/or a new data buffer. */
export interface SetupMessage {
  /** Plan (JSON) the weights belong to; absent: keep the current one. */
  plan?: import("./plan.ts").Plan;
  /** New weights; absent: keep the current ones. */
  weights?: WeightArrays;
  /** New data buffer; absent: keep the current one. */
  data?: SharedArrayBuffer;
  /**
   * Attach to the main thread's kernel engine (../infer/engine/): GEMM, LAYER_NORM and
   * BLOCK_CHUNKS jobs then run on its shared memory, in place (the TF.js weights, if any,
   * are dropped).
   */
  engine?: EngineSetup;
}

/** What a worker needs to run blocks on the main thread's kernel engine. */
export interface EngineSetup {
  /** The engine's shared memory. */
  memory: WebAssembly.Memory;
  /** Which build the main thread runs (the worker runs the same one). */
  relaxed: boolean;
  /** Top of the stack the main thread allocated for this worker's instance. */
  stackTop: number;
  /** The loaded plan steps (weight pointers). */
  steps: import("./engine/run.ts").EngineStep[];
}

/** What a worker receives as `workerData`. */
export interface WorkerInit {
  /** Control array (`Int32Array` over a SharedArrayBuffer of {@link CTRL.LENGTH} slots). */
  ctrl: Int32Array;
  /** The worker's end of the message channel. */
  port: MessagePort;
  /** Backend the worker must run ("wasm"); anything else is an error, never a fallback. */
  backend: string;
}
