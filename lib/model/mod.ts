/**
 * The ConvNeXt architectures (V1, timm's small V1 sizes, V2) as TF.js Layers models: the
 * variant table, `createConvNeXt`, the one naming scheme of their layers, architecture
 * inference and class counts, the model configuration (input size, crop, mean/std, labels),
 * the custom layers, feature maps, Grad-CAM and saving/loading on disk.
 *
 * @example
 * ```ts
 * import { architectureOf, createConvNeXt, numClasses } from "./mod.ts";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt("convnext_tiny", { numClasses: 10, randomInit: false });
 * console.log(architectureOf(model).name, numClasses(model)); // "convnext_tiny" 10
 * ```
 *
 * @module
 */
export {
  ARCHITECTURE_NAMES,
  type ArchitectureName,
  ARCHITECTURES,
  type ArchitectureSpec,
  hasGrn,
  type HierarchicalSpec,
  isArchitectureName,
  type IsotropicSpec,
} from "./variants.ts";
export { CLASSIFIER_ACTIVATIONS, type ConvNeXtOptions, createConvNeXt } from "./convnext.ts";
export {
  type Architecture,
  architectureOf,
  type ArchitectureSource,
  CUSTOM_ARCHITECTURE,
  numClasses,
  type WeightShapes,
} from "./architecture.ts";
export {
  BLOCK_PARTS,
  blockName,
  type BlockPart,
  DOWNSAMPLE_PARTS,
  downsampleName,
  type DownsamplePart,
  HEAD_FC,
  HEAD_NORM,
  HEAD_PARTS,
  HEAD_POOL,
  type HeadPart,
  INPUT_NAME,
  type LayerLocation,
  layerName,
  layerOfWeight,
  parseLayerName,
  PREPROCESSING,
  STEM_CONV,
  STEM_NORM,
  STEM_PARTS,
  type StemPart,
  weightPath,
} from "./names.ts";
export {
  attachModelConfig,
  defaultModelConfig,
  evalTransformOptions,
  type LabelSet,
  labelsFor,
  MODEL_CONFIG_KEY,
  type ModelConfig,
  modelConfig,
  modelPreprocessing,
  type ModelSource,
  type Preprocessing,
  preprocessingFor,
  storedModelConfig,
} from "./config.ts";
export {
  GlobalResponseNorm,
  type GlobalResponseNormArgs,
  InputNormalization,
  type Kwargs,
  type LayerArgs,
  LayerNorm,
  type LayerNormArgs,
  LayerScale,
  type LayerScaleArgs,
  StochasticDepth,
  type StochasticDepthArgs,
  TruncatedNormal,
  type TruncatedNormalArgs,
} from "./layers.ts";
export { createFeatureExtractor, type FeatureOptions, stageOutputNames } from "./features.ts";
export { gradCam, type GradCamOptions, type GradCamResult } from "./gradcam.ts";
export {
  DamagedModelError,
  type FileRecord,
  type FileRecords,
  type LoadedModel,
  loadSavedModel,
  type LoadSavedModelOptions,
  saveModel,
  type SaveOptions,
} from "./io.ts";
