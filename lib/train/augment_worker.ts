/**
 * Worker entry point of the training loader (see loader.ts): reads and decodes one image
 * and applies the training augmentation (seeded) or the evaluation transform, off the
 * main thread so that decoding overlaps the training step.
 *
 * @module
 */
import { readImage } from "../data/decode.ts";
import { serveFloat32Requests } from "../util/worker_pool.ts";
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

/** Load one image as the request says (also used inline without workers). */
export async function loadRequest(req: LoadRequest): Promise<Float32Array> {
  const rgb = await readImage(req.path);
  return req.mode === "train"
    ? trainTransform(rgb, req.size, mulberry32(req.seed))
    : evalTransform(rgb, req.size);
}

serveFloat32Requests(loadRequest);
