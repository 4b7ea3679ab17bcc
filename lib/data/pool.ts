/**
 * A small pool of Deno workers that run the per-image preprocessing (read, decode,
 * resize, normalize) in parallel with whatever the main thread does, typically the
 * model's forward pass.
 *
 * @module
 */

import { Float32WorkerPool } from "../util/worker_pool.ts";
import type { EvalTransformOptions } from "./transform.ts";
import { processRequest, type WorkerRequest } from "./worker.ts";

/** Default worker count: leave one core to the main thread, at most 4. */
export function defaultWorkerCount(): number {
  const cores = navigator.hardwareConcurrency ?? 2;
  return Math.max(1, Math.min(4, cores - 1));
}

/**
 * Runs preprocessing requests on `workers` threads (0: inline on the calling thread).
 * Call {@link PreprocessPool.close} when done, or the workers keep the process alive.
 *
 * @example
 * ```ts
 * import { PreprocessPool } from "./pool.ts";
 * const pool = new PreprocessPool(2);
 * try {
 *   const path = new URL("../../data/images/chelsea.png", import.meta.url).pathname;
 *   const x = await pool.run(path, 224); // Float32Array, HWC
 *   if (x.length !== 224 * 224 * 3) throw new Error(`length ${x.length}`);
 * } finally {
 *   await pool.close();
 * }
 * ```
 */
export class PreprocessPool {
  static #open = 0;
  readonly #pool: Float32WorkerPool<WorkerRequest>;

  /**
   * Starts the worker threads.
   *
   * @param workers number of worker threads (default {@link defaultWorkerCount})
   */
  constructor(workers: number = defaultWorkerCount()) {
    this.#pool = new Float32WorkerPool<WorkerRequest>({
      script: new URL("./worker.ts", import.meta.url),
      workers,
      inline: processRequest,
      name: "PreprocessPool",
    });
    PreprocessPool.#open++;
  }

  /** Number of pools created and not yet closed (to check that callers clean up). */
  static get openPools(): number {
    return PreprocessPool.#open;
  }

  /**
   * Preprocess one image (a path, or encoded bytes named `name` in errors) with the
   * official eval transform. Resolves to `size * size * 3` HWC float32 values.
   */
  run(
    input: string | Uint8Array,
    size: number,
    options: EvalTransformOptions = {},
    name = typeof input === "string" ? input : "<bytes>",
  ): Promise<Float32Array> {
    return this.#pool.submit({ input, name, size, options });
  }

  /**
   * Stops the pool: queued requests are rejected, started ones finish, then the workers
   * end. Await it before the program ends (a decode cut off at exit can crash the process).
   */
  close(): Promise<void> {
    if (!this.#pool.closed) PreprocessPool.#open--;
    return this.#pool.close();
  }
}
