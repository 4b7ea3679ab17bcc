/**
 * Worker entry point of the preprocessing pool (see pool.ts): reads, decodes and
 * eval-transforms one image per message, off the main thread. sharp's native decoder
 * works inside Deno workers, so the whole per-image pipeline runs here and the main
 * thread only dispatches work and receives finished float buffers.
 *
 * @module
 */

import { decodeImage, readImage } from "./decode.ts";
import { evalTransform, type EvalTransformOptions } from "./transform.ts";

/** A request: one image (path or encoded bytes) to preprocess. */
export interface WorkerRequest {
  id: number;
  input: string | Uint8Array;
  name: string;
  size: number;
  options: EvalTransformOptions;
}

/** The reply: the HWC float32 pixels, or a one-line error message. */
export type WorkerReply =
  | { id: number; ok: true; data: Float32Array }
  | { id: number; ok: false; message: string };

/** Process one request (also used inline when the pool has no workers). */
export async function processRequest(req: WorkerRequest): Promise<Float32Array> {
  const rgb = typeof req.input === "string"
    ? await readImage(req.input)
    : await decodeImage(req.input, req.name);
  return evalTransform(rgb, req.size, req.options);
}

// Only install the message handler when running as a worker.
// deno-lint-ignore no-explicit-any
const scope = globalThis as any;
if (typeof scope.WorkerGlobalScope !== "undefined" && scope instanceof scope.WorkerGlobalScope) {
  scope.onmessage = async (event: MessageEvent<WorkerRequest>) => {
    const req = event.data;
    try {
      const data = await processRequest(req);
      scope.postMessage({ id: req.id, ok: true, data } satisfies WorkerReply, [data.buffer]);
    } catch (err) {
      const message = (err instanceof Error ? err.message : String(err)).split("\n")[0];
      scope.postMessage({ id: req.id, ok: false, message } satisfies WorkerReply);
    }
  };
}
