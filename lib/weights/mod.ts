/**
 * The published weights: the model zoo (every official ConvNeXt and ConvNeXt V2 checkpoint
 * and timm's small V1 sizes, with URL and license), downloads into the cache, the PyTorch
 * checkpoint and safetensors readers (a safe unpickler that builds only what a state dict
 * needs), the key layouts (official V1 and V2, torchvision, timm, Hugging Face, FCMAE) and
 * the conversion into TF.js models.
 *
 * @example
 * ```ts
 * import { formatZooTable, getZooEntry, zooUrl } from "./mod.ts";
 * console.log(zooUrl(getZooEntry("convnext_tiny_1k_224")));
 * console.log(formatZooTable());
 * ```
 *
 * @module
 */
export {
  applyWeights,
  convertCheckpoint,
  type Converted,
  type ConvertOptions,
  convertToDirectory,
  type ConvertToDirectoryOptions,
  loadModel,
  type LoadOptions,
} from "./pretrained.ts";
export {
  BASE_URL_ENV,
  DEFAULT_BASE_URL,
  formatZooTable,
  getZooEntry,
  isZooName,
  labels22kUrl,
  licenseNotice,
  type Pretraining,
  TIMM_LICENSE,
  TIMM_ORIGIN_URL,
  V2_LICENSE,
  V2_ORIGIN_URL,
  ZOO,
  ZOO_LICENSE,
  ZOO_NAMES,
  ZOO_ORIGIN_URL,
  zooBaseUrl,
  type ZooEntry,
  zooPreprocessing,
  zooUrl,
} from "./zoo.ts";
export { ensureCheckpoint, fetchLabels22k, parseLabels } from "./fetch.ts";
export { readStateDict } from "./state_dict.ts";
export {
  type CheckpointFormat,
  readTorchCheckpoint,
  sniffFormat,
  STATE_DICT_KEYS,
  type TorchCheckpointOptions,
} from "./torch.ts";
export { readSafetensors } from "./safetensors.ts";
export type { StateDict, TensorData } from "./types.ts";
export {
  assertWeightsMatch,
  compareWeights,
  type ConvertedWeights,
  detectLayout,
  expectedWeightShapes,
  type Layout,
  LAYOUT_FILTERS,
  remapCheckpointKeys,
  type RemapOptions,
  remapStateDict,
  type Weight,
  type WeightReport,
} from "./remap.ts";
