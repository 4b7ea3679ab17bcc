/**
 * convnext-tfjs: ConvNeXt ("A ConvNet for the 2020s", Liu et al. 2022) for Deno and
 * TensorFlow.js. This root module is what a user of the kit needs: backends, models, the
 * official weights, classification, evaluation and fine-tuning. The rest lives in subpath
 * modules: `lib/model/mod.ts` (naming scheme, layers, configuration), `lib/weights/mod.ts`
 * (zoo, checkpoint readers, layouts), `lib/data/mod.ts` (decoding, PIL-exact resizing,
 * transforms), `lib/eval/mod.ts`, `lib/train/mod.ts` (optimizer, schedules, probe, ...) and
 * `lib/viz/mod.ts` (images and charts for notebooks).
 *
 * Importing this module selects a backend when none is active yet: the one
 * `selectBackend()` picks ("auto": native TensorFlow if mapped, else WebGPU on a hardware
 * adapter, else wasm; `CONVNEXT_BACKEND` overrides it). So a model can be built right after
 * the import; `await selectBackend(name)` switches at any time. If that backend cannot be
 * initialized, the import still succeeds: one line on stderr says why, and the next
 * `selectBackend` call reports the error.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { activeBackend, createConvNeXt } from "./mod.ts";
 * console.log(activeBackend()); // "tensorflow", "webgpu" or "wasm": the fastest here
 * // convnext_tiny's layers, weights left at zero (loadModel("convnext_tiny_1k_224") gives the
 * // official ones, downloaded once).
 * const model = createConvNeXt("convnext_tiny", { randomInit: false });
 * // Any size from 32 px up runs; the official weights are trained at 224 (and 384).
 * const logits = model.predict(tf.zeros([1, 64, 64, 3])) as tf.Tensor;
 * console.log(logits.shape); // [1, 1000]
 * ```
 *
 * @module
 */
import { ensureBackend } from "./backend/select.ts";

// The backend selectBackend() would pick, unless one is active already (see above).
await ensureBackend().catch((e: unknown) => {
  const why = (e instanceof Error ? e.message : String(e)).split("\n")[0];
  console.error(`convnext-tfjs: no backend selected on import (${why})`);
});

// Backends.
export {
  activeBackend,
  BACKEND_REQUESTS,
  type BackendName,
  type BackendRequest,
  selectBackend,
  type WebGpuAdapterDescription,
  webGpuAdapterInfo,
} from "./backend/select.ts";
// Architectures and models.
export {
  ARCHITECTURE_NAMES,
  type ArchitectureName,
  type ArchitectureSpec,
  isArchitectureName,
} from "./model/variants.ts";
export { type ConvNeXtOptions, createConvNeXt } from "./model/convnext.ts";
export { type Architecture, architectureOf, numClasses } from "./model/architecture.ts";
export { type ModelConfig, modelConfig, type Preprocessing } from "./model/config.ts";
export { ConvNeXtModel, type InferencePath, type PredictArgs } from "./infer/model.ts";
export { closeInferencePool, inferenceThreads } from "./infer/pool.ts";
export { createFeatureExtractor, type FeatureOptions, stageOutputNames } from "./model/features.ts";
export { gradCam, type GradCamOptions, type GradCamResult } from "./model/gradcam.ts";
export { type LoadedModel, loadSavedModel, saveModel, type SaveOptions } from "./model/io.ts";
// The official weights.
export {
  convertCheckpoint,
  type Converted,
  type ConvertOptions,
  convertToDirectory,
  type ConvertToDirectoryOptions,
  loadModel,
  type LoadOptions,
} from "./weights/pretrained.ts";
export { getZooEntry, ZOO_NAMES, type ZooEntry } from "./weights/zoo.ts";
export type { DownloadOptions, DownloadProgress } from "./util/download.ts";
// Images and classification.
export type { RgbImage } from "./util/image.ts";
export { decodeImage, readImage } from "./data/decode.ts";
export { evalResizeCrop, evalTransform } from "./data/transform.ts";
export { imagenetClasses } from "./data/imagenet.ts";
export {
  type Classification,
  type ClassifiedItem,
  classify,
  classifyEach,
  type ClassifyImages,
  type ClassifyInput,
  type ClassifyOptions,
  classLabels,
  type Prediction,
} from "./classify.ts";
export { embed, type EmbedOptions } from "./embed.ts";
// Evaluation and fine-tuning.
export { type EvalResult, evaluate, type EvaluateOptions } from "./eval/evaluate.ts";
export { loadEvalDataset } from "./eval/dataset.ts";
export { accuracyTable } from "./eval/table.ts";
export { finetune, type FinetuneOptions, type FinetuneResult } from "./train/finetune.ts";
export { listImageFolder } from "./data/image_folder.ts";
export { ensureFlowerPhotos } from "./data/datasets.ts";
