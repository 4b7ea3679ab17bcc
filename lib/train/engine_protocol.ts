/**
 * The shared-memory protocol between the kernel engine's training step (./engine_grads.ts)
 * and its worker threads (./engine_worker.ts). Each worker attaches a kernel instance to
 * the main thread's engine memory (a shared `WebAssembly.Memory`) and runs whole shards
 * there: weights, images, activations and gradients never leave that memory, so a job is
 * a handful of pointers in the control array.
 *
 * @module
 */
import { JOB_SLOTS } from "../util/jobs.ts";
import type { Tape, TrainProgram } from "../infer/engine/train.ts";

/** Slots of a worker's control `Int32Array` (pointers as int32 bits: read with `>>> 0`). */
export const ECTRL = {
  ...JOB_SLOTS,
  /** The shard's images. */
  X: 9,
  /** The batch's labels (int32). */
  LABELS: 10,
  /** The drop-path scale table, or 0. */
  SCALES: 11,
  /** Index of the shard's first image in the batch. */
  FIRST: 12,
  /** Images in the batch. */
  BATCH: 13,
  /** TASKS jobs: the task table, its record count and the shared counter (see runTasks). */
  TASK_TABLE: 14,
  /** See TASK_TABLE. */
  TASK_COUNT: 15,
  /** See TASK_TABLE. */
  TASK_COUNTER: 16,
  /** Length of the control array. */
  LENGTH: 20,
} as const;

/** Slots of a worker's `Float64Array` of scalars. */
export const ESCALAR = {
  /** Label smoothing. */
  SMOOTHING: 0,
  /** Factor on the batch's mean loss. */
  SCALE: 1,
  /** Output: the shard's summed loss. */
  LOSS: 2,
  /** Output: the shard's correctly classified images. */
  CORRECT: 3,
  /** Output: the shard's wall time, ms. */
  MS: 4,
  /** Length. */
  LENGTH: 5,
} as const;

/** Job opcodes. */
export const EOP = {
  /** Pull an {@link EngineSetupMessage} from the port. */
  SETUP: 1,
  /** Run the shard described by the control slots on the worker's tape. */
  STEP: 2,
  /** Leave the job loop. */
  EXIT: 3,
  /**
   * Take tasks (weight packing, gradient sums) from the table at TASK_TABLE until none is
   * left (lib/infer/engine/train.ts `runTasks`).
   */
  TASKS: 4,
} as const;

/** Sent with {@link EOP.SETUP}: the program (once) and the worker's tape (on a new shape). */
export interface EngineSetupMessage {
  /** The training program (weight pointers into the shared memory). */
  program?: TrainProgram;
  /** The worker's buffers. */
  tape?: Tape;
}

/** What an engine training worker receives as `workerData`. */
export interface EngineWorkerInit {
  /** Control array ({@link ECTRL.LENGTH} slots over a SharedArrayBuffer). */
  ctrl: Int32Array;
  /** Scalars ({@link ESCALAR.LENGTH} float64 slots over a SharedArrayBuffer). */
  scalars: Float64Array;
  /** The worker's end of the message channel. */
  port: MessagePort;
  /** The engine's shared memory. */
  memory: WebAssembly.Memory;
  /** Which kernel build the main thread runs. */
  relaxed: boolean;
  /** Top of the stack allocated for this worker's instance. */
  stackTop: number;
}
