/**
 * Background loading of training and validation batches: a pool of worker threads
 * decodes and augments the next batches while the main thread runs the training step.
 * Unreadable images are left out of their batch and reported, never fatal.
 *
 * @module
 */
import { defaultWorkerCount } from "../data/pool.ts";
import type { Sample } from "./data.ts";
import { Float32WorkerPool } from "../util/worker_pool.ts";
import { type LoadRequest, loadRequest } from "./augment_worker.ts";

/**
 * Worker threads running {@link loadRequest}; 0 workers runs inline. Counts the images it
 * was asked to load (`loads`), which tests use to check that cached features need none.
 *
 * @example
 * ```ts
 * import { LoadPool } from "./loader.ts";
 * const pool = new LoadPool(1);
 * try {
 *   const path = new URL("../../data/images/chelsea.png", import.meta.url).pathname;
 *   const x = await pool.load({ path, size: 64, mode: "eval", seed: 0 });
 *   if (x.length !== 64 * 64 * 3) throw new Error(`length ${x.length}`);
 * } finally {
 *   await pool.close();
 * }
 * ```
 */
export class LoadPool {
  /** Images requested from all pools of this process (reads + decodes). */
  static totalLoads = 0;
  /** Images requested from this pool. */
  loads = 0;
  readonly #pool: Float32WorkerPool<LoadRequest>;

  /**
   * Starts the worker threads.
   *
   * @param workers threads (default: cores - 1, at most 4; 0 = inline).
   */
  constructor(workers: number = defaultWorkerCount()) {
    this.#pool = new Float32WorkerPool<LoadRequest>({
      script: new URL("./augment_worker.ts", import.meta.url),
      workers,
      inline: loadRequest,
      name: "LoadPool",
    });
  }

  /** Load one image (HWC float32). Rejects with a one-line message naming the file. */
  load(request: Omit<LoadRequest, "id">): Promise<Float32Array> {
    this.loads++;
    LoadPool.totalLoads++;
    return this.#pool.submit(request);
  }

  /**
   * Stops the pool: queued loads are rejected, started ones finish, then the workers end.
   * Await it before the program ends (a decode cut off at exit can crash the process).
   */
  close(): Promise<void> {
    return this.#pool.close();
  }
}

/** A loaded batch. */
export interface LoadedBatch {
  /** Position of the batch in the epoch. */
  index: number;
  /** Samples that loaded, in order. */
  samples: Sample[];
  /** Their class indices. */
  labels: Int32Array;
  /** NHWC float32 pixels of the loaded samples. */
  data: Float32Array;
  /** Samples that failed, with a one-line reason each. */
  failures: { sample: Sample; message: string }[];
}

/** Options of {@link loadBatches}. */
export interface LoadBatchesOptions {
  /** Output size. */
  size: number;
  /** `"train"` (augmented) or `"eval"`. */
  mode: "train" | "eval";
  /** Seed of sample `k` of batch `b` (train mode). */
  seedOf?: (batch: number, k: number) => number;
  /** Batches loading ahead of the consumer (default 2). */
  prefetch?: number;
}

/**
 * Yields the given batches of samples loaded (and augmented), keeping `prefetch` batches in
 * preparation while the consumer works on the current one.
 *
 * With `pool` a {@link LoadPool} and `s0..s3` samples:
 * `for await (const b of loadBatches(pool, [[s0, s1], [s2, s3]], { size: 224, mode: "eval" }))`
 * yields `b.data` holding `b.samples.length` HWC images of 224x224.
 */
export async function* loadBatches(
  pool: LoadPool,
  batches: readonly (readonly Sample[])[],
  options: LoadBatchesOptions,
): AsyncGenerator<LoadedBatch, void, undefined> {
  const prefetch = options.prefetch ?? 2;
  const per = options.size * options.size * 3;
  const start = async (index: number): Promise<LoadedBatch> => {
    const list = batches[index];
    const results = await Promise.allSettled(list.map((sample, k) =>
      pool.load({
        path: sample.path,
        size: options.size,
        mode: options.mode,
        seed: options.seedOf?.(index, k) ?? 0,
      })
    ));
    const ok = results.filter((r) => r.status === "fulfilled").length;
    const batch: LoadedBatch = {
      index,
      samples: [],
      labels: new Int32Array(ok),
      data: new Float32Array(ok * per),
      failures: [],
    };
    results.forEach((r, k) => {
      if (r.status === "fulfilled") {
        batch.labels[batch.samples.length] = list[k].label;
        batch.data.set(r.value, batch.samples.length * per);
        batch.samples.push(list[k]);
      } else {
        const message = r.reason instanceof Error ? r.reason.message : String(r.reason);
        batch.failures.push({ sample: list[k], message });
      }
    });
    return batch;
  };
  const inFlight: Promise<LoadedBatch>[] = [];
  let next = 0;
  const launch = (limit: number) => {
    while (next < batches.length && inFlight.length < limit) {
      const p = start(next++);
      p.catch(() => {}); // the consumer may stop early; errors surface when awaited
      inFlight.push(p);
    }
  };
  try {
    while (true) {
      launch(prefetch + 1);
      if (inFlight.length === 0) return;
      const current = await inFlight.shift()!;
      launch(prefetch);
      yield current;
    }
  } finally {
    // A consumer that stops early waits for the loads it started: none outlives the loop.
    await Promise.allSettled(inFlight);
  }
}
