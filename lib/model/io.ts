/**
 * Save and load TF.js Layers models on disk from Deno, in the standard TF.js layers
 * format (`model.json` + binary weight shards), without tfjs-node's `file://` handler.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { exists, withTempDir } from "../util/fs.ts";
// Importing the custom layers and ConvNeXtModel registers them, so saved ConvNeXt models
// deserialize (as ConvNeXtModels).
import { LayerNorm } from "./layers.ts";
import { ConvNeXtModel } from "../infer/model.ts";

/** Weight shards are split at this size (whole shards load into one buffer each). */
const SHARD_BYTES = 64 * 1024 * 1024;

/** Size and sha256 of a file written by {@link saveModel}, to tell later whether it is intact. */
export interface FileRecord {
  /** Size in bytes. */
  bytes: number;
  /** sha256, lowercase hex. */
  sha256: string;
}

/** {@link FileRecord}s by file name (relative to the model's directory). */
export type FileRecords = Record<string, FileRecord>;

/** Options of {@link saveModel}. */
export interface SaveOptions {
  /** Extra JSON stored as `userDefinedMetadata` in model.json (e.g. classes, preprocessing). */
  metadata?: Record<string, unknown>;
  /** Replace an existing directory. Default false: an existing directory is an error. */
  overwrite?: boolean;
  /**
   * Extra text files written into the directory with the model (name -> content), or a
   * function that makes them from the records of the model's files (model.json and the
   * shards), e.g. to keep those records next to the model.
   */
  files?: Record<string, string> | ((written: FileRecords) => Record<string, string>);
}

/**
 * A file of a saved model that is missing, truncated or altered (its size or sha256 differs
 * from what was recorded, or its shards hold fewer bytes than its weights need). `path` is
 * the file at fault, `reason` what is wrong with it.
 */
export class DamagedModelError extends Error {
  /** The file at fault. */
  readonly path: string;
  /** What is wrong with it, e.g. `1095728 bytes, expected 4194304`. */
  readonly reason: string;
  /** Constructs the error; the message is `loadSavedModel: <path>: <reason>`. */
  constructor(path: string, reason: string) {
    super(`loadSavedModel: ${path}: ${reason}`);
    this.name = "DamagedModelError";
    this.path = path;
    this.reason = reason;
  }
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function weightChunks(data: ArrayBuffer | ArrayBuffer[]): Uint8Array[] {
  return (Array.isArray(data) ? data : [data]).map((b) => new Uint8Array(b));
}

/**
 * Write `model` to `dir` as `model.json` plus `group1-shardKofN.bin` files.
 *
 * The directory is written under a temporary name next to it and renamed into place, so
 * an interrupted save never leaves a half-written model behind (an existing directory is
 * only replaced with `overwrite`).
 *
 * @returns the size and sha256 of `model.json` and of each shard, which
 *   {@link loadSavedModel} can check them against later.
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { saveModel } from "./io.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * const dir = await Deno.makeTempDir();
 * await saveModel(model, `${dir}/tiny`);
 * console.log([...Deno.readDirSync(`${dir}/tiny`)].map((e) => e.name).sort());
 * // ["group1-shard1of1.bin", "model.json"]: larger models get more shards
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveModel(
  model: tf.LayersModel,
  dir: string,
  options: SaveOptions = {},
): Promise<FileRecords> {
  if (!options.overwrite && await exists(dir)) {
    throw new Error(`saveModel: ${dir} already exists (pass { overwrite: true } to replace it)`);
  }
  // Hashed as written, from memory: recording costs no second read of the shards.
  const written: FileRecords = {};
  return await withTempDir(dir, async (tmp) => {
    await model.save(tf.io.withSaveHandler(async (artifacts) => {
      const data = weightChunks(artifacts.weightData ?? new ArrayBuffer(0));
      const total = data.reduce((n, c) => n + c.byteLength, 0);
      const shardCount = Math.max(1, Math.ceil(total / SHARD_BYTES));
      const paths = Array.from(
        { length: shardCount },
        (_, i) => `group1-shard${i + 1}of${shardCount}.bin`,
      );
      // Stream the (possibly several) weight buffers into fixed-size shard files.
      let chunk = 0, offset = 0;
      for (let s = 0; s < shardCount; s++) {
        const file = await Deno.open(join(tmp, paths[s]), { write: true, createNew: true });
        const hash = createHash("sha256");
        const bytes = Math.min(SHARD_BYTES, total - s * SHARD_BYTES);
        try {
          let left = bytes;
          while (left > 0) {
            const piece = data[chunk].subarray(offset, offset + left);
            hash.update(piece);
            for (let w = 0; w < piece.length;) w += await file.write(piece.subarray(w));
            left -= piece.length;
            offset += piece.length;
            if (offset === data[chunk].length) {
              chunk++;
              offset = 0;
            }
          }
        } finally {
          file.close();
        }
        written[paths[s]] = { bytes, sha256: hash.digest("hex") };
      }
      const modelJson = {
        format: "layers-model",
        generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
        convertedBy: "convnext-tfjs",
        modelTopology: artifacts.modelTopology,
        trainingConfig: artifacts.trainingConfig,
        weightsManifest: [{ paths, weights: artifacts.weightSpecs ?? [] }],
        // The model's own metadata (model.setUserDefinedMetadata) plus what the caller adds.
        userDefinedMetadata: artifacts.userDefinedMetadata || options.metadata
          ? { ...artifacts.userDefinedMetadata, ...options.metadata }
          : undefined,
      };
      const json = new TextEncoder().encode(JSON.stringify(modelJson));
      await Deno.writeFile(join(tmp, "model.json"), json);
      written["model.json"] = { bytes: json.length, sha256: sha256Hex(json) };
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }));
    const files = typeof options.files === "function"
      ? options.files({ ...written })
      : options.files;
    for (const [name, text] of Object.entries(files ?? {})) {
      if (name !== basename(name) || name === "model.json") {
        throw new Error(
          `saveModel: extra file name must be a plain name other than model.json, got ${name}`,
        );
      }
      await Deno.writeTextFile(join(tmp, name), text);
    }
    return written;
  });
}

/** A model loaded from disk and its `userDefinedMetadata` (also `model.getUserDefinedMetadata()`). */
export interface LoadedModel {
  /** The model. */
  model: tf.LayersModel;
  /** Metadata saved with {@link saveModel}, if any. */
  metadata?: Record<string, unknown>;
}

/**
 * The topology to deserialize: a ConvNeXt saved by an earlier version of the kit (which
 * registered ConvNeXtModel as TF.js's `"Model"`) gets its own class name back, so it loads
 * as a ConvNeXtModel. Such a model is a functional `"Model"` that carries the kit's
 * `convnext` metadata or is built from the kit's LayerNorm; any other topology is unchanged.
 */
function upgradeTopology(topology: object, metadata: Record<string, unknown> | undefined): object {
  const t = topology as { class_name?: unknown; config?: { layers?: unknown } };
  if (t.class_name !== "Model") return topology;
  const layers = Array.isArray(t.config?.layers) ? t.config.layers : [];
  const convnext = metadata?.convnext !== undefined ||
    layers.some((l) => (l as { class_name?: unknown })?.class_name === LayerNorm.className);
  return convnext ? { ...topology, class_name: ConvNeXtModel.className } : topology;
}

/**
 * Load a model written by {@link saveModel} (or by the TF.js converter / tfjs-node) from a
 * directory or its `model.json` path. ConvNeXt models come back as `ConvNeXtModel`s (those
 * saved by earlier versions of the kit as a `"Model"` too), any other model as TF.js
 * builds it (`tf.LayersModel`, `tf.Sequential`).
 *
 * A damaged file is an error that names it: a missing or short weight shard, a model.json
 * that is not JSON ({@link DamagedModelError}), and with `expect` any file whose size or
 * sha256 differs from its record; TF.js's own loading errors get the model.json path.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { loadSavedModel, saveModel } from "./io.ts";
 * await selectBackend("cpu");
 * const dir = `${await Deno.makeTempDir()}/tiny`;
 * await saveModel(
 *   createConvNeXt({
 *     kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 *   }, { numClasses: 3 }),
 *   dir,
 * );
 * const { model } = await loadSavedModel(dir);
 * console.log(model.constructor.name, model.outputs[0].shape); // ConvNeXtModel [null, 3]
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadSavedModel(
  path: string,
  options: LoadSavedModelOptions = {},
): Promise<LoadedModel> {
  const jsonPath = path.endsWith(".json") ? path : join(path, "model.json");
  const base = dirname(jsonPath);
  const expect = options.expect;
  if (expect) await checkSizes(base, expect);
  const json = await readModelJson(jsonPath, expect?.["model.json"]);
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    const shards = await readShards(base, group.paths, expect);
    checkShardBytes(jsonPath, group, shards);
    for (const { bytes } of shards) {
      const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
      buffers.push(
        whole
          ? bytes.buffer
          : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
      );
    }
  }
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: upgradeTopology(json.modelTopology, json.userDefinedMetadata),
      weightSpecs,
      weightData: buffers.length === 1 ? buffers[0] : buffers,
      trainingConfig: json.trainingConfig,
      userDefinedMetadata: json.userDefinedMetadata,
    }));
  } catch (e) {
    // TF.js's own errors ("the tensor should have 2359296 values but has ...") name no file.
    throw new Error(`loadSavedModel: ${jsonPath}: ${(e as Error).message.split("\n")[0]}`, {
      cause: e,
    });
  }
  return { model, metadata: json.userDefinedMetadata };
}

/** Options of {@link loadSavedModel}. */
export interface LoadSavedModelOptions {
  /**
   * The records {@link saveModel} returned: every file listed must have its recorded size
   * (checked first, before anything is read) and sha256 (checked on the bytes as they are
   * loaded, so no second read), else a {@link DamagedModelError} names it.
   */
  expect?: FileRecords;
}

/** What model.json holds. */
interface ModelJson {
  modelTopology: object;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  trainingConfig?: tf.io.TrainingConfig;
  userDefinedMetadata?: Record<string, unknown>;
}

/** The recorded files all exist with their recorded sizes (a stat each: cheap). */
async function checkSizes(base: string, expect: FileRecords): Promise<void> {
  for (const [name, record] of Object.entries(expect)) {
    const file = join(base, name);
    let size: number;
    try {
      size = (await Deno.stat(file)).size;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new DamagedModelError(file, "missing");
      throw e;
    }
    if (size !== record.bytes) {
      throw new DamagedModelError(file, `${size} bytes, expected ${record.bytes}`);
    }
  }
}

/** `bytes` match the sha256 recorded for `file` (when there is a record). */
function checkHash(file: string, bytes: Uint8Array, record: FileRecord | undefined): void {
  if (record && sha256Hex(bytes) !== record.sha256) {
    throw new DamagedModelError(
      file,
      `sha256 differs from the one recorded when it was written (${record.sha256.slice(0, 12)}…)`,
    );
  }
}

/** model.json, checked against its record and for the fields of a layers model. */
async function readModelJson(jsonPath: string, record?: FileRecord): Promise<ModelJson> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(jsonPath);
  } catch (e) {
    throw new Error(
      `loadSavedModel: cannot read ${jsonPath}: ${(e as Error).message.split("\n")[0]}`,
    );
  }
  checkHash(jsonPath, bytes, record);
  let json: Partial<ModelJson>;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new DamagedModelError(jsonPath, `not valid JSON: ${(e as Error).message}`);
  }
  if (!json?.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new Error(
      `loadSavedModel: ${jsonPath} is not a TF.js layers model (expected modelTopology and weightsManifest)`,
    );
  }
  return json as ModelJson;
}

/** The shards of one weight group, each checked against its record. */
async function readShards(
  base: string,
  paths: string[],
  expect: FileRecords | undefined,
): Promise<{ path: string; bytes: Uint8Array<ArrayBuffer> }[]> {
  const out: { path: string; bytes: Uint8Array<ArrayBuffer> }[] = [];
  for (const p of paths) {
    const path = join(base, p);
    const bytes = await Deno.readFile(path).catch((e) => {
      if (e instanceof Deno.errors.NotFound) {
        throw new DamagedModelError(path, "missing weight shard");
      }
      throw new Error(`loadSavedModel: cannot read weight shard ${path}: ${(e as Error).message}`);
    });
    checkHash(path, bytes, expect?.[p]);
    out.push({ path, bytes });
  }
  return out;
}

/** Bytes per value of each stored dtype (strings have no fixed size). */
const DTYPE_BYTES: Record<string, number> = {
  float32: 4,
  int32: 4,
  bool: 1,
  complex64: 8,
  uint8: 1,
  uint16: 2,
  float16: 2,
};

/**
 * A group's shards hold at least the bytes its weights need. TF.js splits a group into
 * shards of one size, the last one shorter: a shard that breaks this pattern is named as
 * the damaged one (all of them when the pattern cannot tell).
 */
function checkShardBytes(
  jsonPath: string,
  group: { weights: tf.io.WeightsManifestEntry[] },
  shards: { path: string; bytes: Uint8Array }[],
): void {
  let need = 0;
  for (const w of group.weights) {
    const size = DTYPE_BYTES[w.quantization?.dtype ?? w.dtype];
    if (size === undefined) return; // string weights: sizes unknown, TF.js checks them
    need += w.shape.reduce((a, b) => a * b, 1) * size;
  }
  const sizes = shards.map((s) => s.bytes.length);
  const have = sizes.reduce((a, b) => a + b, 0);
  if (have >= need || shards.length === 0) return;
  const k = sizes.length;
  const full = k > 1 ? Math.max(...sizes.slice(0, -1)) : need;
  const expected = sizes.map((_, i) => i < k - 1 ? full : need - full * i);
  const last = expected.at(-1)!;
  const bad = last > 0 && last <= full ? shards.filter((_, i) => sizes[i] !== expected[i]) : [];
  const culprit = bad.length === 1 ? bad[0] : undefined;
  const reason = culprit
    ? `truncated: ${culprit.bytes.length} bytes, expected ${expected[shards.indexOf(culprit)]}`
    : `weight shards truncated: ${
      shards.map((s) => `${basename(s.path)} ${s.bytes.length}`).join(", ")
    } bytes`;
  throw new DamagedModelError(
    culprit?.path ?? jsonPath,
    `${reason} (the weights of ${basename(jsonPath)} need ${need} bytes)`,
  );
}
