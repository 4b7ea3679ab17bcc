/**
 * Save and load TF.js Layers models on disk from Deno, in the standard TF.js layers
 * format (`model.json` + binary weight shards), without tfjs-node's `file://` handler.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { basename, dirname, join } from "node:path";
import { exists, withTempDir } from "../util/fs.ts";
// Importing the custom layers and ConvNeXtModel registers them, so saved ConvNeXt models
// deserialize (as ConvNeXtModels).
import { LayerNorm } from "./layers.ts";
import { ConvNeXtModel } from "../infer/model.ts";

/** Weight shards are split at this size (whole shards load into one buffer each). */
const SHARD_BYTES = 64 * 1024 * 1024;

/** Options of {@link saveModel}. */
export interface SaveOptions {
  /** Extra JSON stored as `userDefinedMetadata` in model.json (e.g. classes, preprocessing). */
  metadata?: Record<string, unknown>;
  /** Replace an existing directory. Default false: an existing directory is an error. */
  overwrite?: boolean;
  /** Extra text files written into the directory with the model (name -> content). */
  files?: Record<string, string>;
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
): Promise<void> {
  if (!options.overwrite && await exists(dir)) {
    throw new Error(`saveModel: ${dir} already exists (pass { overwrite: true } to replace it)`);
  }
  await withTempDir(dir, async (tmp) => {
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
        try {
          let left = Math.min(SHARD_BYTES, total - s * SHARD_BYTES);
          while (left > 0) {
            const piece = data[chunk].subarray(offset, offset + left);
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
      await Deno.writeTextFile(join(tmp, "model.json"), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }));
    for (const [name, text] of Object.entries(options.files ?? {})) {
      if (name !== basename(name) || name === "model.json") {
        throw new Error(
          `saveModel: extra file name must be a plain name other than model.json, got ${name}`,
        );
      }
      await Deno.writeTextFile(join(tmp, name), text);
    }
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
export async function loadSavedModel(path: string): Promise<LoadedModel> {
  const jsonPath = path.endsWith(".json") ? path : join(path, "model.json");
  let text: string;
  try {
    text = await Deno.readTextFile(jsonPath);
  } catch (e) {
    throw new Error(
      `loadSavedModel: cannot read ${jsonPath}: ${(e as Error).message.split("\n")[0]}`,
    );
  }
  let json: {
    modelTopology?: object;
    weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
    trainingConfig?: tf.io.TrainingConfig;
    userDefinedMetadata?: Record<string, unknown>;
  };
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`loadSavedModel: ${jsonPath} is not valid JSON: ${(e as Error).message}`);
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new Error(
      `loadSavedModel: ${jsonPath} is not a TF.js layers model (expected modelTopology and weightsManifest)`,
    );
  }
  const base = dirname(jsonPath);
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: ArrayBuffer[] = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) {
      const bytes = await Deno.readFile(join(base, p)).catch((e) => {
        throw new Error(
          `loadSavedModel: missing weight shard ${join(base, p)}: ${(e as Error).message}`,
        );
      });
      buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    }
  }
  const model = await tf.loadLayersModel(tf.io.fromMemory({
    modelTopology: upgradeTopology(json.modelTopology, json.userDefinedMetadata),
    weightSpecs,
    weightData: buffers.length === 1 ? buffers[0] : buffers,
    trainingConfig: json.trainingConfig,
    userDefinedMetadata: json.userDefinedMetadata,
  }));
  return { model, metadata: json.userDefinedMetadata };
}
