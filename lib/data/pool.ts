/**
 * A small pool of Deno workers that run the per-image preprocessing (read, decode,
 * resize, normalize) in parallel with whatever the main thread does, typically the
 * model's forward pass.
 *
 * @module
 */

import type { EvalTransformOptions } from "./transform.ts";
import { processRequest, type WorkerReply, type WorkerRequest } from "./worker.ts";

/** Default worker count: leave one core to the main thread, at most 4. */
export function defaultWorkerCount(): number {
  const cores = navigator.hardwareConcurrency ?? 2;
  return Math.max(1, Math.min(4, cores - 1));
}

/**
 * Requests a worker holds at once: with two, the native decode of the next image (in
 * sharp's own threads) overlaps the JS resize of the current one.
 */
const SLOTS_PER_WORKER = 2;

interface Pending {
  resolve: (data: Float32Array) => void;
  reject: (err: Error) => void;
}

/**
 * Runs preprocessing requests on `workers` threads (0: inline on the calling thread).
 * Call {@link PreprocessPool.close} when done, or the workers keep the process alive.
 *
 * @example
 * ```ts
 * const pool = new PreprocessPool(2);
 * try {
 *   const x = await pool.run("data/images/chelsea.jpg", 224); // Float32Array HWC
 * } finally {
 *   pool.close();
 * }
 * ```
 */
export class PreprocessPool {
  static #open = 0;
  #workers: Worker[] = [];
  /** Free request slots, one entry per slot (a worker appears SLOTS_PER_WORKER times). */
  #slots: Worker[] = [];
  #queue: { req: WorkerRequest; pending: Pending }[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;

  /** @param workers number of worker threads (default {@link defaultWorkerCount}) */
  constructor(workers: number = defaultWorkerCount()) {
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`PreprocessPool: workers must be an integer >= 0, got ${workers}`);
    }
    PreprocessPool.#open++;
    const url = new URL("./worker.ts", import.meta.url).href;
    for (let i = 0; i < workers; i++) {
      const w = new Worker(url, { type: "module" });
      w.onmessage = (e: MessageEvent<WorkerReply>) => this.#onReply(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        // A crashed worker fails everything in flight rather than hanging the caller.
        e.preventDefault();
        this.#failAll(new Error(`preprocessing worker failed: ${e.message}`));
      };
      this.#workers.push(w);
      for (let k = 0; k < SLOTS_PER_WORKER; k++) this.#slots.push(w);
    }
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
    if (this.#closed) return Promise.reject(new Error("PreprocessPool: pool is closed"));
    const req: WorkerRequest = { id: this.#nextId++, input, name, size, options };
    if (this.#workers.length === 0) return processRequest(req);
    return new Promise((resolve, reject) => {
      this.#queue.push({ req, pending: { resolve, reject } });
      this.#pump();
    });
  }

  /** Terminate the workers; pending requests are rejected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    PreprocessPool.#open--;
    for (const w of this.#workers) w.terminate();
    this.#failAll(new Error("PreprocessPool: pool closed"));
  }

  #pump(): void {
    while (this.#slots.length > 0 && this.#queue.length > 0) {
      const w = this.#slots.pop()!;
      const { req, pending } = this.#queue.shift()!;
      this.#pending.set(req.id, pending);
      w.postMessage(req);
    }
  }

  #onReply(w: Worker, reply: WorkerReply): void {
    const pending = this.#pending.get(reply.id);
    this.#pending.delete(reply.id);
    this.#slots.push(w);
    if (pending) {
      if (reply.ok) pending.resolve(reply.data);
      else pending.reject(new Error(reply.message));
    }
    this.#pump();
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const { pending } of this.#queue) pending.reject(err);
    this.#queue = [];
  }
}
