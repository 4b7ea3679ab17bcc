/**
 * A model's configuration, attached to the model: what timm calls `pretrained_cfg`
 * (architecture, classes, input size, crop, interpolation, mean/std, labels, where the
 * weights came from and their license), stored in the model's `userDefinedMetadata` under
 * `convnext` (and so in a saved `model.json`, and as `convnext.json` next to a converted
 * model). Classification, evaluation, feature extraction and the notebooks read it from
 * here instead of rebuilding it.
 *
 * timm's fields and ours: `architecture` / `architecture`, `num_classes` / `numClasses`,
 * `input_size` / `preprocessing.size`, `crop_pct` / `preprocessing.cropPct`,
 * `interpolation` / `preprocessing.interpolation`, `mean`, `std` / `preprocessing.mean`,
 * `preprocessing.std`, `url` / `source.url`, `license` / `license`, `origin_url` /
 * `originUrl`.
 *
 * A model built with `includePreprocessing: true` normalizes its own input (Keras'
 * `include_preprocessing`): its configuration says so with `preprocessing.inModel`, which
 * always follows the graph (see {@link modelPreprocessing}), and {@link evalTransformOptions}
 * then gives it the resized and cropped 0..255 pixels instead of normalized ones.
 * `evalTransformOptions(modelPreprocessing(model, p))` is the one place where
 * classification, embedding and evaluation decide what to feed a model, so that no path
 * normalizes twice.
 *
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";
import {
  DEFAULT_CROP_PCT,
  type EvalTransformOptions,
  IMAGENET_MEAN,
  IMAGENET_STD,
  RAW_PIXELS,
} from "../data/transform.ts";
import { architectureOf, numClasses } from "./architecture.ts";
import { InputNormalization } from "./layers.ts";
import { PREPROCESSING } from "./names.ts";
import type { ArchitectureSpec } from "./variants.ts";

/** How inputs must be prepared for a model (the official evaluation transform). */
export interface Preprocessing {
  /** Square input size. */
  size: number;
  /**
   * `"resize-crop"`: shorter side to `int(size / cropPct)`, bicubic, then a center crop
   * (below 384); `"warp"`: resize to size x size, no crop (384 and above).
   */
  mode: "resize-crop" | "warp";
  /** Crop fraction for `"resize-crop"` (0.875 in the official evaluation). */
  cropPct: number;
  /** Resampling: PIL's bicubic with antialiasing. */
  interpolation: "bicubic";
  /** Per-channel mean, after scaling pixels to [0, 1]. */
  mean: number[];
  /** Per-channel standard deviation. */
  std: number[];
  /**
   * Present (true) when the model normalizes its own input with `mean` and `std` (built
   * with `includePreprocessing: true`): it takes resized and cropped RGB pixels in 0..255,
   * and {@link evalTransformOptions} leaves them so. Set from the model's graph by
   * {@link modelConfig}, {@link storedModelConfig} and {@link attachModelConfig}.
   */
  inModel?: true;
}

/**
 * The official evaluation transform for a resolution (facebookresearch/ConvNeXt
 * `datasets.py`; ConvNeXt-V2's `datasets.py` is the same, its 512 px checkpoint included):
 * resize + center crop below 384 px (crop 0.875 unless a checkpoint says otherwise, as timm's
 * `crop_pct`), a warp from 384 px on; ImageNet mean/std.
 *
 * @example
 * ```ts
 * import { preprocessingFor } from "./config.ts";
 * console.log(preprocessingFor(224).mode, preprocessingFor(384).mode); // "resize-crop" "warp"
 * console.log(preprocessingFor(512).cropPct, preprocessingFor(224, 0.95).cropPct); // 1 0.95
 * if (preprocessingFor(512).mode !== "warp") throw new Error("V2's 512 px evaluation warps");
 * ```
 */
export function preprocessingFor(size: number, cropPct = DEFAULT_CROP_PCT): Preprocessing {
  return {
    size,
    mode: size < 384 ? "resize-crop" : "warp",
    cropPct: size < 384 ? cropPct : 1,
    interpolation: "bicubic",
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
  };
}

/**
 * The `evalTransform` / `imageBatches` options of a {@link Preprocessing} (size, crop, mean
 * and std). The official transform is a resize + crop below 384 px and a warp from 384 px
 * on; a preprocessing record that says otherwise cannot be reproduced and is an error.
 *
 * For a model that normalizes itself (`p.inModel`), mean and std are `RAW_PIXELS`' (0 and
 * 1/255): the transform then yields the resized and cropped 0..255 pixels, and the model
 * applies `p.mean` and `p.std`. Pass {@link modelPreprocessing}'s record so that the flag
 * matches the model.
 *
 * @example
 * ```ts
 * import { evalTransformOptions, preprocessingFor } from "./config.ts";
 * const options = evalTransformOptions(preprocessingFor(224));
 * console.log(options); // { size: 224, cropPct: 0.875, mean: [...], std: [...] }
 * if (options.cropPct !== 0.875) throw new Error(`cropPct ${options.cropPct}`);
 * ```
 */
export function evalTransformOptions(p: Preprocessing): EvalTransformOptions & { size: number } {
  const official = p.size < 384 ? "resize-crop" : "warp";
  if (p.mode !== official) {
    throw new Error(
      `preprocessing: mode "${p.mode}" at ${p.size} px is not the official eval transform ("${official}" at that size)`,
    );
  }
  if (p.mean.length !== 3 || p.std.length !== 3) {
    throw new Error(`preprocessing: mean and std need 3 values, got ${p.mean} and ${p.std}`);
  }
  if (p.inModel) return { size: p.size, cropPct: p.cropPct, ...RAW_PIXELS };
  return {
    size: p.size,
    cropPct: p.cropPct,
    mean: p.mean as unknown as [number, number, number],
    std: p.std as unknown as [number, number, number],
  };
}

/** Which class names index a head: ImageNet-1k, ImageNet-22k, or unknown. */
export type LabelSet = "imagenet-1k" | "imagenet-22k" | null;

/** The label set a class count implies: 1000 ImageNet-1k, 21841 ImageNet-22k, else null. */
export function labelsFor(classes: number): LabelSet {
  return classes === 1000 ? "imagenet-1k" : classes === 21841 ? "imagenet-22k" : null;
}

/** Where a model's weights came from. */
export interface ModelSource {
  /** Zoo name, if any. */
  zoo?: string;
  /** Download URL, if any. */
  url?: string;
  /** File name of the checkpoint. */
  file: string;
  /** sha256 of the checkpoint file. */
  sha256: string;
  /** Key layout detected in the checkpoint (`"tfjs"` for models trained here). */
  layout: string;
}

/** A model's configuration: timm's `pretrained_cfg` for this kit. */
export interface ModelConfig {
  /** Official architecture name, or `"convnext_custom"`. */
  architecture: string;
  /** The architecture's shape. */
  spec: ArchitectureSpec;
  /** Classes of the head (0: none). */
  numClasses: number;
  /** Which class names index the head: ImageNet-1k, ImageNet-22k, or unknown. */
  labels: LabelSet;
  /** Input preparation: size, crop, interpolation, mean and std. */
  preprocessing: Preprocessing;
  /** Where the weights came from (converted and fine-tuned models). */
  source?: ModelSource;
  /** Official top-1 accuracy (zoo models). */
  officialTop1?: number | null;
  /** License of the weights, where known (e.g. `"MIT"` for the official checkpoints). */
  license?: string;
  /** Where the weights were published (e.g. the official repository). */
  originUrl?: string;
}

/** The `userDefinedMetadata` key that holds the {@link ModelConfig}. */
export const MODEL_CONFIG_KEY = "convnext";

/**
 * The configuration stored with a model (converted, fine-tuned or saved with one), or
 * undefined when it carries none.
 */
export function storedModelConfig(model: tf.LayersModel): ModelConfig | undefined {
  const meta = model.getUserDefinedMetadata() as Record<string, unknown> | undefined;
  const config = meta?.[MODEL_CONFIG_KEY];
  if (typeof config !== "object" || config === null) return undefined;
  return followGraph(model, config as ModelConfig);
}

/**
 * The mean and std of `model`'s own input normalization (the `InputNormalization` layer
 * `preprocessing` on its input, from `includePreprocessing: true`), or undefined when the
 * model takes normalized input.
 */
export function inputNormalization(
  model: tf.LayersModel,
): { mean: number[]; std: number[] } | undefined {
  const layer = model.layers.find((l) => l.name === PREPROCESSING);
  // By class name, not instanceof: a model loaded through another copy of this module.
  if (layer?.getClassName() !== InputNormalization.className) return undefined;
  const { mean, std } = layer.getConfig() as { mean: number[]; std: number[] };
  return { mean: [...mean], std: [...std] };
}

/**
 * `p` (default: the model's, `modelConfig(model).preprocessing`) as it applies to `model`:
 * with `inModel` and the model's mean and std when the model normalizes its own input,
 * without `inModel` otherwise. The graph decides, not the record, so that a record made for
 * another model (e.g. `preprocessingFor(384)` passed to `classify`) cannot make a caller
 * normalize twice, or not at all. `evalTransformOptions(modelPreprocessing(model, p))` is
 * what to feed the model.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { evalTransformOptions, modelPreprocessing, preprocessingFor } from "./config.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt("convnext_atto", {
 *   includePreprocessing: true,
 *   inputShape: [32, 32, 3],
 *   randomInit: false,
 * });
 * const p = modelPreprocessing(model, preprocessingFor(384));
 * console.log(p.inModel, evalTransformOptions(p).mean); // true [0, 0, 0]: 0..255 pixels
 * if (!p.inModel) throw new Error("the model normalizes itself");
 * ```
 */
export function modelPreprocessing(model: tf.LayersModel, p?: Preprocessing): Preprocessing {
  const { inModel: _, ...rest } = p ?? modelConfig(model).preprocessing;
  const own = inputNormalization(model);
  return own ? { ...rest, ...own, inModel: true } : rest;
}

/** `config` with its preprocessing as it applies to `model` ({@link modelPreprocessing}). */
function followGraph(model: tf.LayersModel, config: ModelConfig): ModelConfig {
  if (typeof config.preprocessing !== "object" || config.preprocessing === null) return config;
  return { ...config, preprocessing: modelPreprocessing(model, config.preprocessing) };
}

/**
 * The configuration of a model built without one: its architecture and class count read
 * from its weights, the official eval transform at its input size (when fixed and square,
 * else 224), labels by class count (1000: ImageNet-1k, 21841: ImageNet-22k).
 */
export function defaultModelConfig(model: tf.LayersModel): ModelConfig {
  const { name, spec } = architectureOf(model);
  const classes = numClasses(model);
  const [, h, w] = model.inputs[0]?.shape ?? [];
  const size = typeof h === "number" && h === w ? h : 224;
  return {
    architecture: name,
    spec,
    numClasses: classes,
    labels: labelsFor(classes),
    preprocessing: modelPreprocessing(model, preprocessingFor(size)),
  };
}

/**
 * A model's configuration: the one stored with it (see {@link attachModelConfig}), else
 * {@link defaultModelConfig}. Read it instead of rebuilding preprocessing or labels.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { modelConfig } from "./config.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt({ kind: "isotropic", depth: 1, dim: 8, layerScaleInit: 0 }, {
 *   numClasses: 1000,
 *   randomInit: false,
 * });
 * const { preprocessing, labels } = modelConfig(model);
 * console.log(preprocessing.size, preprocessing.mode, labels); // 224 "resize-crop" "imagenet-1k"
 * ```
 */
export function modelConfig(model: tf.LayersModel): ModelConfig {
  return storedModelConfig(model) ?? defaultModelConfig(model);
}

/**
 * Attach `config` to `model` (its `userDefinedMetadata.convnext`, kept by `saveModel`),
 * keeping the model's other metadata; `preprocessing.inModel` is set as the model's graph
 * says ({@link modelPreprocessing}).
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { attachModelConfig, modelConfig, preprocessingFor } from "./config.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt("convnext_tiny", { randomInit: false });
 * attachModelConfig(model, { ...modelConfig(model), preprocessing: preprocessingFor(384) });
 * console.log(modelConfig(model).preprocessing.size); // 384
 * if (modelConfig(model).preprocessing.size !== 384) throw new Error("not attached");
 * ```
 */
export function attachModelConfig(model: tf.LayersModel, config: ModelConfig): void {
  const meta = (model.getUserDefinedMetadata() ?? {}) as Record<string, unknown>;
  // What is stored (and saved) says whether the model normalizes itself, as its graph does.
  model.setUserDefinedMetadata({ ...meta, [MODEL_CONFIG_KEY]: followGraph(model, config) });
}
