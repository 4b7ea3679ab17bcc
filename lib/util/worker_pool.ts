/**
 * A small pool of Deno workers that each turn a request into a `Float32Array` (an image read,
 * decoded and transformed off the main thread), and the worker-side loop that answers them.
 * Shared by the preprocessing pool (lib/data/pool.ts) and the training loader
 * (lib/train/loader.ts).
 *
 * @module
 */

/** A request: anything structured-cloneable with an id the reply echoes. */
export interface PoolRequest {
  /** Request id. */
  id: number;
}

/** The reply: the values, or a one-line error message. */
export type PoolReply =
  | { id: number; ok: true; data: Float32Array }
  | { id: number; ok: false; message: string };

/**
 * Requests each worker holds at once: the native decode of one (sharp's own threads)
 * overlaps the JS resize of the other.
 */
const SLOTS_PER_WORKER = 2;

/** How long {@link Float32WorkerPool.close} waits for started requests before terminating. */
const CLOSE_WAIT_MS = 60_000;

interface Pending {
  resolve: (data: Float32Array) => void;
  reject: (err: Error) => void;
}

/** Options of {@link Float32WorkerPool}. */
export interface Float32WorkerPoolOptions<R extends PoolRequest> {
  /** The worker module (it calls {@link serveFloat32Requests}). */
  script: URL;
  /** Worker threads; 0 runs requests inline on the calling thread. */
  workers: number;
  /** The same work as the worker does, for 0 workers. */
  inline: (request: R) => Promise<Float32Array>;
  /** Name used in error messages, e.g. "PreprocessPool". */
  name: string;
}

/**
 * Dispatches requests to worker threads, at most {@link SLOTS_PER_WORKER} in flight per
 * worker, in submission order. Call {@link Float32WorkerPool.close} when done, or the
 * workers keep the process alive, and await it before the program ends: a native decode
 * (sharp) still running when its thread or the process goes away can crash the process.
 *
 * For example (lib/data/pool.ts): `new Float32WorkerPool({ script: new URL("./worker.ts",
 * import.meta.url), workers: 2, inline: load, name: "loader" })`, then
 * `await pool.submit({ path })` for each image and `pool.close()`.
 */
export class Float32WorkerPool<R extends PoolRequest> {
  #workers: Worker[] = [];
  /** Free request slots, one entry per slot (a worker appears SLOTS_PER_WORKER times). */
  #slots: Worker[] = [];
  #queue: { req: R; pending: Pending }[] = [];
  #pending = new Map<number, Pending>();
  /** Requests started (inline or posted to a worker) and not yet settled. */
  #running = new Set<Promise<void>>();
  #nextId = 0;
  #closing: Promise<void> | null = null;
  readonly #options: Float32WorkerPoolOptions<R>;

  constructor(options: Float32WorkerPoolOptions<R>) {
    const { workers, name } = options;
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`${name}: workers must be an integer >= 0, got ${workers}`);
    }
    this.#options = options;
    for (let i = 0; i < workers; i++) {
      const w = new Worker(options.script.href, { type: "module" });
      w.onmessage = (e: MessageEvent<PoolReply>) => this.#onReply(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        // A crashed worker fails everything in flight rather than hanging the caller.
        e.preventDefault();
        this.#failAll(new Error(`${name}: worker failed: ${e.message}`));
      };
      this.#workers.push(w);
      for (let k = 0; k < SLOTS_PER_WORKER; k++) this.#slots.push(w);
    }
  }

  /** Runs one request; rejects with the worker's one-line message. */
  submit(request: Omit<R, "id">): Promise<Float32Array> {
    if (this.#closing) return Promise.reject(new Error(`${this.#options.name}: pool is closed`));
    const req = { ...request, id: this.#nextId++ } as R;
    if (this.#workers.length === 0) {
      const p = this.#options.inline(req);
      this.#track(p);
      return p;
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ req, pending: { resolve, reject } });
      this.#pump();
    });
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closing !== null;
  }

  /**
   * Takes no more requests and rejects those still queued, lets the started ones finish
   * (for at most a minute), then terminates the workers. Resolves when all that is done
   * (the same promise on every call).
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    const err = new Error(`${this.#options.name}: pool closed`);
    for (const { pending } of this.#queue) pending.reject(err);
    this.#queue = [];
    // A request that never ends (it should not: reads and decodes) must not hang the caller.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_WAIT_MS));
    this.#closing = Promise.race([Promise.allSettled([...this.#running]), limit]).then(() => {
      clearTimeout(timer);
      for (const w of this.#workers) w.terminate();
    });
    return this.#closing;
  }

  /** Keeps `work` in {@link #running} until it settles. */
  #track(work: Promise<unknown>): void {
    const settled: Promise<void> = work.then(() => {}, () => {}).finally(() => {
      this.#running.delete(settled);
    });
    this.#running.add(settled);
  }

  #pump(): void {
    while (this.#slots.length > 0 && this.#queue.length > 0) {
      const w = this.#slots.pop()!;
      const { req, pending } = this.#queue.shift()!;
      this.#track(
        new Promise<Float32Array>((resolve, reject) =>
          this.#pending.set(req.id, { resolve, reject })
        )
          .then(pending.resolve, pending.reject),
      );
      w.postMessage(req);
    }
  }

  #onReply(w: Worker, reply: PoolReply): void {
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

/**
 * In a worker module: answers each request with `handle`'s values (transferred, not
 * copied) or its error's first line. Does nothing when not running as a worker, so the
 * module can also be imported for its inline use.
 */
export function serveFloat32Requests<R extends PoolRequest>(
  handle: (request: R) => Promise<Float32Array>,
): void {
  // deno-lint-ignore no-explicit-any
  const scope = globalThis as any;
  if (
    typeof scope.WorkerGlobalScope === "undefined" || !(scope instanceof scope.WorkerGlobalScope)
  ) {
    return;
  }
  scope.onmessage = async (event: MessageEvent<R>) => {
    const req = event.data;
    try {
      const data = await handle(req);
      scope.postMessage({ id: req.id, ok: true, data } satisfies PoolReply, [data.buffer]);
    } catch (err) {
      const message = (err instanceof Error ? err.message : String(err)).split("\n")[0];
      scope.postMessage({ id: req.id, ok: false, message } satisfies PoolReply);
    }
  };
}
