/**
 * The worker side of the shared-memory job protocol that the inference pool (./worker.ts)
 * and the data-parallel training step (../train/parallel_worker.ts) both use: a control
 * `Int32Array` whose first slots are {@link JOB_SLOTS}, a message port for setup data and
 * error texts, and a blocking job loop (the main thread waits synchronously).
 *
 * @module
 */
import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import * as tf from "npm:@tensorflow/tfjs@4.22.0";

/** Control slots every job protocol starts with; protocols add their own after these. */
export const JOB_SLOTS = {
  /** Job sequence number; the main thread increments it to post a job. */
  JOB: 0,
  /** Sequence number of the last finished job (written by the worker). */
  DONE: 1,
  /** Status of the last job: 0 ok, 1 error (the error text follows on the port). */
  STATUS: 2,
  /** 0 while starting, 1 ready, 2 failed to start (the error text follows on the port). */
  READY: 3,
  /** Opcode of the posted job. */
  OP: 4,
  /** Input shape `[n, h, w, c]` (4 slots). */
  SHAPE: 5,
  /**
   * The exit job's answer: the thread's Linux id, 0 where it cannot be read. Shares SHAPE's
   * first slot, which no job reads once the worker leaves.
   */
  EXIT_TID: 5,
} as const;

/** The message port of a worker (structurally; node's and Deno's types differ). */
export interface JobPort {
  postMessage(message: unknown): void;
  close(): void;
}

/** One worker's end of the protocol. */
export class JobServer {
  constructor(
    private readonly ctrl: Int32Array,
    private readonly port: JobPort,
    /** Name used in error messages, e.g. "inference worker". */
    private readonly label: string,
  ) {}

  /** Sends the error text and flags `slot` (READY: failed to start; STATUS: job failed). */
  fail(slot: number, e: unknown): void {
    this.port.postMessage({ error: (e as Error)?.message ?? String(e) });
    Atomics.store(this.ctrl, slot, slot === JOB_SLOTS.READY ? 2 : 1);
  }

  /**
   * Selects `backend` (an error, never a fallback, if TF.js ends up on another), runs
   * `prepare`, and signals READY (or the failure).
   */
  async start(backend: string, prepare?: () => Promise<void> | void): Promise<boolean> {
    try {
      const ok = await tf.setBackend(backend);
      await tf.ready();
      if (!ok || tf.getBackend() !== backend) {
        throw new Error(
          `${this.label}: backend "${backend}" failed to initialize (TF.js is on "${tf.getBackend()}"); refusing to fall back`,
        );
      }
      await prepare?.();
      Atomics.store(this.ctrl, JOB_SLOTS.READY, 1);
      return true;
    } catch (e) {
      this.fail(JOB_SLOTS.READY, e);
      return false;
    } finally {
      Atomics.notify(this.ctrl, JOB_SLOTS.READY);
    }
  }

  /** Takes the message the main thread posted just before the job (waits up to a minute). */
  pull<T>(): T {
    for (let waited = 0; waited < 60_000; waited++) {
      const got = receiveMessageOnPort(
        this.port as unknown as Parameters<typeof receiveMessageOnPort>[0],
      );
      if (got) return got.message as T;
      Atomics.wait(this.ctrl, this.ctrl.length - 1, 0, 1); // sleep 1 ms on a slot nobody wakes
    }
    throw new Error(`${this.label}: setup message did not arrive`);
  }

  /**
   * Serves jobs until `run` returns false: a plain blocking loop, because the thread does
   * nothing else and the main thread waits synchronously, so jobs must not depend on this
   * thread's event loop.
   */
  serve(run: (op: number) => boolean): void {
    let seen = 0;
    for (;;) {
      while (Atomics.load(this.ctrl, JOB_SLOTS.JOB) === seen) {
        Atomics.wait(this.ctrl, JOB_SLOTS.JOB, seen);
      }
      seen = Atomics.load(this.ctrl, JOB_SLOTS.JOB);
      let more = true;
      try {
        more = run(Atomics.load(this.ctrl, JOB_SLOTS.OP));
        Atomics.store(this.ctrl, JOB_SLOTS.STATUS, 0);
      } catch (e) {
        this.fail(JOB_SLOTS.STATUS, e);
      }
      if (!more) Atomics.store(this.ctrl, JOB_SLOTS.EXIT_TID, threadId());
      Atomics.store(this.ctrl, JOB_SLOTS.DONE, seen);
      Atomics.notify(this.ctrl, JOB_SLOTS.DONE);
      if (!more) break;
    }
    this.port.close();
  }
}

/** This thread's Linux id, or 0 (another OS, or /proc not readable without asking). */
function threadId(): number {
  try {
    if (Deno.permissions.querySync({ name: "read", path: "/proc" }).state !== "granted") return 0;
    return Number(Deno.readLinkSync("/proc/thread-self").split("/").pop()) || 0;
  } catch {
    return 0;
  }
}

/**
 * Resolves once the thread `tid` is gone from /proc/self/task (polled; at most `limitMs`),
 * at once for tid 0.
 */
function threadGone(tid: number, limitMs: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  return new Promise((resolve) => {
    const poll = () => {
      let alive = false;
      try {
        if (tid > 0) alive = Deno.statSync(`/proc/self/task/${tid}`).isDirectory;
      } catch { /* gone (or unreadable): either way nothing left to wait for */ }
      if (!alive || performance.now() > deadline) resolve();
      else setTimeout(poll, 2);
    };
    poll();
  });
}

type Port = InstanceType<typeof MessageChannel>["port1"];

/** How long {@link JobClient.close} lets an idle worker take to leave before terminating it. */
const EXIT_WAIT_MS = 10_000;

/** What a {@link JobClient} needs to start its worker. */
export interface JobClientOptions {
  /** The worker module. */
  script: URL;
  /** Its `workerData`, given the worker's end of the message channel and the control array. */
  init: (port: MessagePort, ctrl: Int32Array) => unknown;
  /** Name used in error messages, e.g. "inference pool". */
  label: string;
  /** Appended to error messages: how to do without threads. */
  hint: string;
  /** How long one job may take before the worker is taken for dead. */
  jobTimeoutMs: number;
}

/**
 * The main thread's end of the job protocol: starts the worker, posts jobs through the
 * control array and waits for them synchronously (`Atomics.wait`).
 */
export class JobClient {
  /** The control array shared with the worker. */
  readonly ctrl: Int32Array;
  /** The main thread's end of the message channel (setup data out, error texts in). */
  readonly port: Port;
  /** The worker thread. */
  readonly worker: Worker;
  private seq = 0;
  /** The thread's exit once {@link close} was called. */
  #closing: Promise<void> | null = null;

  constructor(ctrlSlots: number, protected readonly options: JobClientOptions) {
    this.ctrl = new Int32Array(new SharedArrayBuffer(ctrlSlots * 4));
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    try {
      this.worker = new Worker(options.script, {
        workerData: options.init(port2 as unknown as MessagePort, this.ctrl),
        transferList: [port2],
      });
    } catch (e) {
      throw new Error(
        `${options.label}: cannot start a worker thread: ${
          (e as Error)?.message ?? e
        }${options.hint}`,
      );
    }
    // The threads must not keep a finished program alive.
    this.worker.unref();
  }

  /** The worker's error text (or `fallback`), with the hint. */
  error(fallback: string): Error {
    const got = receiveMessageOnPort(this.port);
    const text = (got?.message as { error?: string } | undefined)?.error;
    return new Error((text ?? fallback) + this.options.hint);
  }

  /** Throws the start failure, if the worker reported one (READY = 2). */
  checkStarted(): void {
    if (Atomics.load(this.ctrl, JOB_SLOTS.READY) === 2) {
      throw this.error(`${this.options.label}: a worker thread failed to start`);
    }
  }

  /** Posts a job (its other control slots already written), with an optional setup message. */
  post(op: number, message?: unknown): void {
    if (message) this.port.postMessage(message);
    Atomics.store(this.ctrl, JOB_SLOTS.OP, op);
    this.seq++;
    Atomics.store(this.ctrl, JOB_SLOTS.JOB, this.seq);
    Atomics.notify(this.ctrl, JOB_SLOTS.JOB);
  }

  /** Blocks until the posted job is done; throws the worker's error. */
  wait(): void {
    const deadline = performance.now() + this.options.jobTimeoutMs;
    for (;;) {
      const done = Atomics.load(this.ctrl, JOB_SLOTS.DONE);
      if (done === this.seq) break;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.options.label}: a worker thread stopped answering`);
      Atomics.wait(this.ctrl, JOB_SLOTS.DONE, done, left);
    }
    if (Atomics.load(this.ctrl, JOB_SLOTS.STATUS) !== 0) {
      throw this.error(`${this.options.label}: a worker job failed`);
    }
  }

  /**
   * Ends the worker: an idle running worker gets the exit job and leaves on its own (within
   * {@link EXIT_WAIT_MS}, else it is terminated); one still starting or busy is terminated.
   * Resolves once the thread has left (on Linux: once it is gone from /proc, since the exit
   * event comes before the thread has torn down its isolate), and the program does not end
   * before: a thread torn down while the process exits can crash it (Deno's `terminate()`
   * returns before the thread has stopped). Idempotent.
   */
  close(exitOp: number): Promise<void> {
    if (this.#closing) return this.#closing;
    this.port.close();
    const idle = Atomics.load(this.ctrl, JOB_SLOTS.DONE) === this.seq;
    if (Atomics.load(this.ctrl, JOB_SLOTS.READY) !== 1 || !idle) {
      this.worker.terminate();
      return this.#closing = Promise.resolve();
    }
    this.#closing = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.worker.terminate();
        resolve();
      }, EXIT_WAIT_MS);
      this.worker.once("exit", () => {
        clearTimeout(timer);
        // "exit" arrives before the thread has dropped its V8 isolate and tokio runtime;
        // the thread itself is gone only after that.
        threadGone(Atomics.load(this.ctrl, JOB_SLOTS.EXIT_TID), EXIT_WAIT_MS).then(resolve);
      });
    });
    this.worker.ref(); // the program waits for the thread
    this.post(exitOp);
    return this.#closing;
  }
}

/** Split `total` into `parts` near-equal counts (earlier parts take the remainder). */
export function splitEven(total: number, parts: number): number[] {
  const base = Math.floor(total / parts);
  return Array.from({ length: parts }, (_, i) => base + (i < total % parts ? 1 : 0));
}

/**
 * A thread count from the environment variable `name`, or undefined when it is unset (or
 * the environment is not readable).
 *
 * @throws Error when it is set but not a positive integer.
 */
export function threadsFromEnv(name: string): number | undefined {
  let env: string | undefined;
  try {
    env = Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
  if (env === undefined) return undefined;
  const n = Number(env);
  if (!(Number.isInteger(n) && n >= 1)) {
    throw new Error(`${name}: expected a positive integer, got "${env}"`);
  }
  return n;
}
