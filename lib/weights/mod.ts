/**
 * The official weights: the model zoo (every official checkpoint with its URL), downloads
 * into the cache, the PyTorch checkpoint and safetensors readers (a safe unpickler that
 * builds only what a state dict needs), the key layouts (official, torchvision, timm,
 * Hugging Face) and the conversion into TF.js models.
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
  type Pretraining,
  ZOO,
  ZOO_NAMES,
  zooBaseUrl,
  type ZooEntry,
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
  type RemapOptions,
  remapStateDict,
  type Weight,
  type WeightReport,
} from "./remap.ts";
