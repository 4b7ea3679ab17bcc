/**
 * The training kit: AdamW with the official parameter groups and layer-wise lr decay,
 * warmup + cosine schedules, label smoothing, EMA, ImageFolder data with augmentation and
 * background loading, linear probing on cached features, and the fine-tuning loop with
 * gradient accumulation, checkpoints and exact resume.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { finetune } from "./mod.ts";
 * await selectBackend("cpu");
 * // The real run: finetune({ model: "convnext_tiny_1k_224", data: "flowers/", out, epochs: 5 }).
 * // Here: the tests' small checkpoint and a 5-class image folder, a linear probe.
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * const out = `${await Deno.makeTempDir()}/run`;
 * const result = await finetune({
 *   model: `${fix}tiny10.pth`, data: `${fix}imagefolder`, out, mode: "probe", epochs: 2,
 *   size: 64, valSplit: 0.34, workers: 0, quiet: true,
 * });
 * console.log(result.best?.valAccuracy, result.bestDir); // the best model is saved there
 * await Deno.remove(out, { recursive: true });
 * ```
 *
 * @module
 */
export {
  AdamW,
  type AdamWOptions,
  type AdamWParam,
  type AdamWState,
  modelParams,
} from "./optimizer.ts";
export { cosineSchedule, type CosineScheduleOptions } from "./schedule.ts";
export {
  CONVNEXT_NUM_LAYERS,
  convnextLayerId,
  isNoDecay,
  layerScales,
  type ParamSetting,
  paramSettings,
  type ParamSettingsOptions,
} from "./lr_decay.ts";
export { correctCount, countCorrect, crossEntropy } from "./losses.ts";
export { ModelEma } from "./ema.ts";
export { limitSamples, type Sample, type Split, splitStratified } from "./data.ts";
export {
  type CropBox,
  cropImage,
  flipHorizontal,
  randomResizedCropBox,
  type RandomResizedCropOptions,
  trainTransform,
  type TrainTransformOptions,
} from "./augment.ts";
export { loadBatches, type LoadBatchesOptions, type LoadedBatch, LoadPool } from "./loader.ts";
export {
  backboneKey,
  clearFeatureMemoryCache,
  createProbeHead,
  extractFeatures,
  type ExtractOptions,
  type FeatureStats,
  type ProbeHeadOptions,
} from "./probe.ts";
export { loadBaseModel, rebuildForTraining, type RebuildOptions } from "./model_setup.ts";
export {
  type Checkpoint,
  type CheckpointTensor,
  loadCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
export { formatReport, type ValidationReport, validationReport } from "./report.ts";
export {
  hashSeed,
  mulberry32,
  permutation,
  STREAM,
  type Uniform,
  withSeededMathRandom,
} from "./rng.ts";
export {
  type EpochMetrics,
  finetune,
  type FinetuneOptions,
  type FinetuneResult,
} from "./finetune.ts";
export {
  type GradientStepOptions,
  type GradientStepResult,
  ParallelGradients,
  trainThreads,
} from "./parallel.ts";
export type { LoadRequest } from "./augment_worker.ts";
export {
  EngineGradients,
  engineGradientsFor,
  type EngineGradientsOptions,
  engineTrainSupport,
  EngineTrainUnsupported,
  type TrainPath,
  trainPath,
  useEngineTraining,
} from "./engine_grads.ts";
