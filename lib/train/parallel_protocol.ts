/**
 * The shared-memory protocol between the data-parallel gradient step (./parallel.ts) and
 * its worker threads (./parallel_worker.ts).
 *
 * Why shared memory: the step is synchronous on the main thread (it computes its own shard
 * while the workers compute theirs, then blocks in `Atomics.wait`), and cloning a hundred
 * megabytes of weights or gradients through messages took seconds in Deno. Each job is a
 * sequence number in a control `Int32Array`; weights live in one shared `Float32Array`
 * with a version counter per weight, so a worker reloads only the weights that changed.
 *
 * @module
 */
import { JOB_SLOTS } from "../util/jobs.ts";

/** Slots of a worker's control `Int32Array`. */
export const TCTRL = {
  ...JOB_SLOTS,
  /** Seed of `Math.random` (drop-path masks) for the shard's forward pass. */
  SEED: 9,
  /** Length of the control array. */
  LENGTH: 16,
} as const;

/** Slots of a worker's `Float64Array` of scalars. */
export const TSCALAR = {
  /** Label smoothing of the loss. */
  SMOOTHING: 0,
  /** Factor on the shard's mean loss before the gradient (shard / batch / updateFreq). */
  SCALE: 1,
  /** Output: the shard's mean loss (unscaled). */
  LOSS: 2,
  /** Output: correctly classified images of the shard. */
  CORRECT: 3,
  /** Length of the scalar array. */
  LENGTH: 4,
} as const;

/** Job opcodes. */
export const TOP = {
  /** Pull a {@link TrainSetupMessage} from the port (a larger input buffer). */
  SETUP: 1,
  /** Load changed weights, compute the shard's loss gradients into the gradient buffer. */
  GRADS: 2,
  /** Leave the job loop (the thread then ends). */
  EXIT: 3,
} as const;

/** Message sent with {@link TOP.SETUP}. */
export interface TrainSetupMessage {
  /** New input buffer: the shard's images (float32), then its labels (as float32). */
  input: SharedArrayBuffer;
}

/** What a training worker receives as `workerData`. */
export interface TrainWorkerInit {
  /** Control array (`Int32Array` over a SharedArrayBuffer of {@link TCTRL.LENGTH} slots). */
  ctrl: Int32Array;
  /** Scalars (`Float64Array` over a SharedArrayBuffer of {@link TSCALAR.LENGTH} slots). */
  scalars: Float64Array;
  /** The worker's end of the message channel (errors, setup messages). */
  port: MessagePort;
  /** Backend the worker must run ("wasm"); anything else is an error, never a fallback. */
  backend: string;
  /** The model's topology (`model.toJSON(null, false)`), rebuilt in the worker. */
  topology: unknown;
  /** Every model weight (`originalName`), in the order of {@link weights}. */
  weightNames: string[];
  /** All weight values back to back, float32, written by the main thread. */
  weights: SharedArrayBuffer;
  /** One version counter per weight (`Int32Array`); a bump means "reload this weight". */
  versions: SharedArrayBuffer;
  /** The trained weights (`originalName`), in the order of {@link grads}. */
  paramNames: string[];
  /** This worker's gradients, back to back, float32, in {@link paramNames} order. */
  grads: SharedArrayBuffer;
}
