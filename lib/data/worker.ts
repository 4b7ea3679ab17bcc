/**
 * Worker entry point of the preprocessing pool (see pool.ts): reads, decodes and
 * eval-transforms one image per message, off the main thread. sharp's native decoder
 * works inside Deno workers, so the whole per-image pipeline runs here and the main
 * thread only dispatches work and receives finished float buffers.
 *
 * @module
 */

import { serveFloat32Requests } from "../util/worker_pool.ts";
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

/** Process one request (also used inline when the pool has no workers). */
export async function processRequest(req: WorkerRequest): Promise<Float32Array> {
  const rgb = typeof req.input === "string"
    ? await readImage(req.input)
    : await decodeImage(req.input, req.name);
  return evalTransform(rgb, req.size, req.options);
}

serveFloat32Requests(processRequest);
