/**
 * convnext-tfjs: ConvNeXt ("A ConvNet for the 2020s", Liu et al. 2022) for Deno and
 * TensorFlow.js.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { createConvNeXt, selectBackend } from "./mod.ts";
 * await selectBackend();
 * const model = createConvNeXt("convnext_tiny");
 * const logits = model.predict(tf.zeros([1, 224, 224, 3])) as tf.Tensor;
 * ```
 *
 * @module
 */
export {
  ARCHITECTURE_NAMES,
  type ArchitectureName,
  ARCHITECTURES,
  type ArchitectureSpec,
  type HierarchicalSpec,
  isArchitectureName,
  type IsotropicSpec,
} from "./model/variants.ts";
export {
  CLASSIFIER_ACTIVATIONS,
  type ConvNeXtOptions,
  createConvNeXt,
  resolveArchitecture,
  type ResolvedArchitecture,
} from "./model/convnext.ts";
export { LayerNorm, LayerScale, StochasticDepth, TruncatedNormal } from "./model/layers.ts";
export { createFeatureExtractor, type FeatureOptions, stageOutputNames } from "./model/features.ts";
export { type LoadedModel, loadSavedModel, saveModel, type SaveOptions } from "./model/io.ts";
export {
  activeBackend,
  BACKEND_REQUESTS,
  type BackendName,
  type BackendRequest,
  selectBackend,
} from "./backend/select.ts";
export {
  applyWeights,
  convertCheckpoint,
  type Converted,
  type ConvertOptions,
  convertToDirectory,
  type ConvertToDirectoryOptions,
  loadModel,
  type LoadOptions,
  type ModelInfo,
  modelInfo,
  type Preprocessing,
  preprocessingFor,
} from "./weights/pretrained.ts";
export { getZooEntry, ZOO, ZOO_NAMES, type ZooEntry, zooUrl } from "./weights/zoo.ts";
export { fetchLabels22k } from "./weights/fetch.ts";
export { readStateDict } from "./weights/state_dict.ts";
export { type Layout, remapStateDict } from "./weights/remap.ts";
export * from "./data/mod.ts";
export { gradCam, type GradCamOptions, type GradCamResult } from "./model/gradcam.ts";
export {
  type Classification,
  type ClassifiedItem,
  classify,
  classifyEach,
  type ClassifyInput,
  type ClassifyOptions,
  classLabels,
  modelPreprocessing,
  numClassesOf,
  type Prediction,
  softmax,
  topIndices,
  transformOptions,
} from "./classify.ts";
export * from "./eval/mod.ts";
export * from "./train/mod.ts";
export {
  ConvNeXtModel,
  FAST_BACKENDS,
  type InferencePath,
  type OptimizedExecutor,
  requestedExecutor,
} from "./infer/model.ts";
export { closeInferencePool, inferenceThreads } from "./infer/pool.ts";
// Types that public signatures use, so that documentation and callers can name them.
export type { Kwargs, LayerArgs } from "./model/layers.ts";
export type { PredictArgs } from "./infer/model.ts";
export type { DownloadOptions, DownloadProgress, VerifyMode } from "./util/download.ts";
export type { StateDict, TensorData } from "./weights/types.ts";
export type { TorchCheckpointOptions } from "./weights/torch.ts";
export type { ConvertedWeights, RemapOptions, Weight } from "./weights/remap.ts";
export type { Pretraining } from "./weights/zoo.ts";
export type { ProgressOptions } from "./util/progress.ts";
