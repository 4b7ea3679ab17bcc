/**
 * Worker entry point of the training loader (see loader.ts): reads and decodes one image
 * and applies the training augmentation (seeded) or the evaluation transform, off the
 * main thread so that decoding overlaps the training step.
 *
 * @module
 */
import { readImage } from "../data/decode.ts";
import { evalTransform } from "../data/transform.ts";
import { trainTransform } from "./augment.ts";
import { mulberry32 } from "./rng.ts";

/** One image to load. */
export interface LoadRequest {
  /** Request id (echoed in the reply). */
  id: number;
  /** Image path. */
  path: string;
  /** Output size. */
  size: number;
  /** `"train"`: seeded random resized crop + flip; `"eval"`: the official eval transform. */
  mode: "train" | "eval";
  /** Seed of the augmentation's random numbers (train mode). */
  seed: number;
}

/** The HWC float32 pixels, or a one-line error naming the file. */
export type LoadReply =
  | { id: number; ok: true; data: Float32Array }
  | { id: number; ok: false; message: string };

/** Load one image as the request says (also used inline without workers). */
export async function loadRequest(req: LoadRequest): Promise<Float32Array> {
  const rgb = await readImage(req.path);
  return req.mode === "train"
    ? trainTransform(rgb, req.size, mulberry32(req.seed))
    : evalTransform(rgb, req.size);
}

// deno-lint-ignore no-explicit-any
const scope = globalThis as any;
if (typeof scope.WorkerGlobalScope !== "undefined" && scope instanceof scope.WorkerGlobalScope) {
  scope.onmessage = async (event: MessageEvent<LoadRequest>) => {
    const req = event.data;
    try {
      const data = await loadRequest(req);
      scope.postMessage({ id: req.id, ok: true, data } satisfies LoadReply, [data.buffer]);
    } catch (err) {
      const message = (err instanceof Error ? err.message : String(err)).split("\n")[0];
      scope.postMessage({ id: req.id, ok: false, message } satisfies LoadReply);
    }
  };
}
