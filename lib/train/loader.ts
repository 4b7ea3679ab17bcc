/**
 * Background loading of training and validation batches: a pool of worker threads
 * decodes and augments the next batches while the main thread runs the training step.
 * Unreadable images are left out of their batch and reported, never fatal.
 *
 * @module
 */
import { defaultWorkerCount } from "../data/pool.ts";
import type { Sample } from "./data.ts";
import { type LoadReply, type LoadRequest, loadRequest } from "./augment_worker.ts";

/** Requests each worker holds at once (decode of one overlaps the resize of the other). */
const SLOTS_PER_WORKER = 2;

/**
 * Worker threads running {@link loadRequest}; 0 workers runs inline. Counts the images it
 * was asked to load (`loads`), which tests use to check that cached features need none.
 *
 * @example
 * ```ts
 * const pool = new LoadPool(1);
 * try {
 *   const x = await pool.load({ path: "a.jpg", size: 224, mode: "eval", seed: 0 });
 * } finally {
 *   pool.close();
 * }
 * ```
 */
export class LoadPool {
  /** Images requested from all pools of this process (reads + decodes). */
  static totalLoads = 0;
  /** Images requested from this pool. */
  loads = 0;
  #workers: Worker[] = [];
  #free: Worker[] = [];
  #queue: { req: LoadRequest; resolve: (d: Float32Array) => void; reject: (e: Error) => void }[] =
    [];
  #pending = new Map<number, { resolve: (d: Float32Array) => void; reject: (e: Error) => void }>();
  #nextId = 0;
  #closed = false;

  /** @param workers threads (default: cores - 1, at most 4; 0 = inline). */
  constructor(workers: number = defaultWorkerCount()) {
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`LoadPool: workers must be an integer >= 0, got ${workers}`);
    }
    const url = new URL("./augment_worker.ts", import.meta.url).href;
    for (let i = 0; i < workers; i++) {
      const w = new Worker(url, { type: "module" });
      w.onmessage = (e: MessageEvent<LoadReply>) => this.#reply(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        this.#failAll(new Error(`image loading worker failed: ${e.message}`));
      };
      this.#workers.push(w);
      for (let k = 0; k < SLOTS_PER_WORKER; k++) this.#free.push(w);
    }
  }

  /** Load one image (HWC float32). Rejects with a one-line message naming the file. */
  load(request: Omit<LoadRequest, "id">): Promise<Float32Array> {
    if (this.#closed) return Promise.reject(new Error("LoadPool: pool is closed"));
    this.loads++;
    LoadPool.totalLoads++;
    const req: LoadRequest = { ...request, id: this.#nextId++ };
    if (this.#workers.length === 0) return loadRequest(req);
    return new Promise((resolve, reject) => {
      this.#queue.push({ req, resolve, reject });
      this.#pump();
    });
  }

  /** Stop the workers; pending loads are rejected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#workers) w.terminate();
    this.#failAll(new Error("LoadPool: pool closed"));
  }

  #pump(): void {
    while (this.#free.length > 0 && this.#queue.length > 0) {
      const w = this.#free.pop()!;
      const { req, resolve, reject } = this.#queue.shift()!;
      this.#pending.set(req.id, { resolve, reject });
      w.postMessage(req);
    }
  }

  #reply(w: Worker, reply: LoadReply): void {
    const p = this.#pending.get(reply.id);
    this.#pending.delete(reply.id);
    this.#free.push(w);
    if (p) reply.ok ? p.resolve(reply.data) : p.reject(new Error(reply.message));
    this.#pump();
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const q of this.#queue) q.reject(err);
    this.#queue = [];
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
 * @example
 * ```ts
 * for await (const b of loadBatches(pool, [[s0, s1], [s2, s3]], { size: 224, mode: "eval" })) {
 *   const x = tf.tensor4d(b.data, [b.samples.length, 224, 224, 3]);
 * }
 * ```
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
  while (true) {
    launch(prefetch + 1);
    if (inFlight.length === 0) return;
    const current = await inFlight.shift()!;
    launch(prefetch);
    yield current;
  }
}
