/**
 * Linear probing: the backbone is frozen, each image's pooled embedding (`head_norm`, eval
 * transform, no augmentation) is computed once and cached, in memory and on disk, and only
 * a Dense head is trained on the cached features.
 *
 * The disk cache (`<cacheDir>/<model key>/<image key>.f32`) is keyed by a hash of the
 * backbone's weights, and per image by its path, modification time and the input size, so
 * a changed image or model never reuses a stale feature.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { createFeatureExtractor } from "../model/features.ts";
import { TruncatedNormal } from "../model/layers.ts";
import { HEAD_FC } from "../model/names.ts";
import { writeFileAtomic } from "../util/fs.ts";
import type { Sample } from "./data.ts";
import { loadBatches, type LoadPool } from "./loader.ts";

/** What {@link extractFeatures} had to do. */
export interface FeatureStats {
  /** Images asked for. */
  requested: number;
  /** Features found in the in-memory cache. */
  memoryHits: number;
  /** Features read from the disk cache. */
  diskHits: number;
  /** Images read and decoded. */
  decoded: number;
  /** Forward passes (batches) of the backbone. */
  forwardBatches: number;
  /** Images that could not be loaded. */
  failed: number;
}

const memoryCache = new Map<string, Float32Array>();

/** Empties the in-memory feature cache (the disk cache stays). */
export function clearFeatureMemoryCache(): void {
  memoryCache.clear();
}

function sha256Hex(...parts: (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/**
 * A key identifying a backbone by its weights (names, shapes and values of every weight up
 * to the embedding) and input size.
 */
export async function backboneKey(extractor: tf.LayersModel, size: number): Promise<string> {
  const h = createHash("sha256");
  h.update(`size=${size}\n`);
  for (const w of extractor.weights) {
    h.update(`${w.originalName}:${w.shape.join("x")}\n`);
    // Read with await: webgpu cannot read synchronously under Deno.
    const data = await w.read().data() as Float32Array;
    h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return h.digest("hex").slice(0, 24);
}

/** Options of {@link extractFeatures}. */
export interface ExtractOptions {
  /** Input size of the eval transform. */
  size: number;
  /** Directory of the disk cache (e.g. `OUT/features-cache`); none: memory only. */
  cacheDir?: string;
  /** Images per forward pass (default 32). */
  batch?: number;
  /** Called once for each image that cannot be loaded. */
  onFailure?: (sample: Sample, message: string) => void;
  /** Called after each image is done (for a progress bar). */
  onProgress?: (done: number) => void;
}

/** A sample's cache key: the model's, the file's absolute path and its modification time. */
async function featureKey(modelKey: string, path: string): Promise<string> {
  let mtime = "?";
  try {
    mtime = String((await Deno.stat(path)).mtime?.getTime() ?? "?");
  } catch {
    // Unreadable: the loader reports it.
  }
  return sha256Hex(modelKey, "\0", resolve(path), "\0", mtime).slice(0, 32);
}

/**
 * The features cached under `key`, in memory or else in `dir` (then kept in memory too),
 * counted in `stats`; null when neither has them.
 */
async function cachedFeature(
  key: string,
  dir: string | undefined,
  dim: number,
  stats: FeatureStats,
): Promise<Float32Array | null> {
  const inMemory = memoryCache.get(key);
  if (inMemory) {
    stats.memoryHits++;
    return inMemory;
  }
  if (!dir) return null;
  try {
    const bytes = await Deno.readFile(join(dir, `${key}.f32`));
    if (bytes.byteLength !== dim * 4) return null;
    const f = new Float32Array(bytes.buffer, bytes.byteOffset, dim).slice();
    memoryCache.set(key, f);
    stats.diskHits++;
    return f;
  } catch {
    return null; // not cached yet
  }
}

/**
 * Pooled embeddings of `samples` from `model`'s `head_norm` output, from the caches when
 * possible; the rest are loaded with the eval transform and run through the backbone.
 *
 * @returns one feature vector per sample (`null` for images that failed) and stats.
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * import { LoadPool } from "./loader.ts";
 * import { extractFeatures } from "./probe.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const dir = new URL("../../data/images/", import.meta.url);
 * const samples = ["coffee.jpg", "chelsea.png"].map((f, label) => ({
 *   path: new URL(f, dir).pathname,
 *   label,
 * }));
 * const cacheDir = await Deno.makeTempDir(); // features are cached per image and model
 * const pool = new LoadPool(0);
 * const { features, dim } = await extractFeatures(model, pool, samples, { size: 64, cacheDir });
 * console.log(features.length, dim); // 2 16
 * await pool.close();
 * await Deno.remove(cacheDir, { recursive: true });
 * ```
 */
export async function extractFeatures(
  model: tf.LayersModel,
  pool: LoadPool,
  samples: readonly Sample[],
  options: ExtractOptions,
): Promise<{ features: (Float32Array | null)[]; stats: FeatureStats; dim: number }> {
  const extractor = createFeatureExtractor(model, { stages: false, embedding: true });
  const dim = extractor.outputs[0].shape[1] as number;
  const modelKey = await backboneKey(extractor, options.size);
  const dir = options.cacheDir ? join(options.cacheDir, modelKey) : undefined;
  const stats: FeatureStats = {
    requested: samples.length,
    memoryHits: 0,
    diskHits: 0,
    decoded: 0,
    forwardBatches: 0,
    failed: 0,
  };
  const features: (Float32Array | null)[] = new Array(samples.length).fill(null);
  const keys: string[] = [];
  const missing: number[] = [];
  let done = 0;
  for (const [i, s] of samples.entries()) {
    const key = await featureKey(modelKey, s.path);
    keys.push(key);
    features[i] = await cachedFeature(key, dir, dim, stats);
    if (features[i]) options.onProgress?.(++done);
    else missing.push(i);
  }
  const batch = options.batch ?? 32;
  const groups: Sample[][] = [];
  const groupIndices: number[][] = [];
  for (let k = 0; k < missing.length; k += batch) {
    groupIndices.push(missing.slice(k, k + batch));
    groups.push(groupIndices[groupIndices.length - 1].map((i) => samples[i]));
  }
  for await (const b of loadBatches(pool, groups, { size: options.size, mode: "eval" })) {
    stats.decoded += b.samples.length + b.failures.length;
    for (const f of b.failures) {
      stats.failed++;
      options.onFailure?.(f.sample, f.message);
    }
    if (b.samples.length === 0) continue;
    const out = tf.tidy(() => {
      const x = tf.tensor4d(b.data, [b.samples.length, options.size, options.size, 3]);
      return extractor.predict(x) as tf.Tensor;
    });
    stats.forwardBatches++;
    const values = await out.data() as Float32Array;
    out.dispose();
    const indices = groupIndices[b.index];
    let row = 0;
    for (const [k, s] of groups[b.index].entries()) {
      if (!b.samples.includes(s)) continue;
      const i = indices[k];
      const f = values.slice(row * dim, (row + 1) * dim);
      row++;
      features[i] = f;
      memoryCache.set(keys[i], f);
      if (dir) await writeFileAtomic(join(dir, `${keys[i]}.f32`), new Uint8Array(f.buffer));
      options.onProgress?.(++done);
    }
  }
  // The extractor shares the model's layers (disposing it would free them): nothing to free.
  return { features, stats, dim };
}

/** Options of {@link createProbeHead}. */
export interface ProbeHeadOptions {
  /** Factor on the initial weights (std 0.02 * scale). Default 1. */
  headInitScale?: number;
  /** Seed of the initialization. */
  seed?: number;
}

/**
 * The trainable part of a linear probe: `[batch, dim]` features to `numClasses` logits, one
 * Dense layer named `head_fc` (like the full model's head, so its weights transfer by name).
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createProbeHead } from "./probe.ts";
 * await selectBackend("cpu");
 * const head = createProbeHead(768, 5); // convnext_tiny's embedding to 5 classes
 * console.log(head.outputs[0].shape); // [null, 5]
 * ```
 */
export function createProbeHead(
  dim: number,
  numClasses: number,
  options: ProbeHeadOptions = {},
): tf.LayersModel {
  const scale = options.headInitScale ?? 1;
  const input = tf.input({ shape: [dim], name: "features" });
  const output = tf.layers.dense({
    units: numClasses,
    name: HEAD_FC,
    kernelInitializer: new TruncatedNormal({
      stddev: 0.02 * scale,
      minval: -2 * scale,
      maxval: 2 * scale,
      seed: options.seed,
    }) as unknown as ReturnType<typeof tf.initializers.zeros>,
  }).apply(input) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output, name: "probe_head" });
}
