/**
 * The layer-naming scheme of the ConvNeXt models: the one place that spells the names
 * `createConvNeXt` gives its layers, that weight conversion maps checkpoints onto, and that
 * feature extraction, layer decay and fine-tuning look up.
 *
 * Names are deterministic (weights map by name, never by position) and must never change:
 * saved models and converted checkpoints depend on them.
 *
 * - input: `input`;
 * - input normalization (models built with `includePreprocessing: true`): `preprocessing`,
 *   right after the input (no weights: its mean and std are in its configuration);
 * - hierarchical stem: `stem_conv`, `stem_norm`;
 * - downsampling before stage i (i = 1..3): `stages_{i}_downsample_norm`,
 *   `stages_{i}_downsample_conv`;
 * - blocks: `stages_{i}_block_{j}` (hierarchical) or `blocks_{j}` (isotropic) is the residual
 *   add, i.e. the block's output; its sublayers append `_dwconv`, `_norm`, `_pwconv1`,
 *   `_grn` (ConvNeXt V2: Global Response Normalization, weights `gamma` and `beta`),
 *   `_pwconv2`, `_layer_scale`, `_drop_path`;
 * - isotropic stem: `stem_conv` (no norm);
 * - head: `head_pool`, `head_norm`, `head_fc`.
 *
 * Weight paths are TF.js's `<layer>/<weight>`, e.g. `stem_conv/kernel`.
 *
 * @example
 * ```ts
 * import { blockName, layerName, parseLayerName } from "./names.ts";
 * console.log(blockName(2, 5), blockName(undefined, 3, "pwconv1"));
 * // "stages_2_block_5" "blocks_3_pwconv1"
 * const where = parseLayerName("stages_2_block_5_dwconv");
 * console.log(where); // { kind: "block", stage: 2, block: 5, part: "dwconv" }
 * if (layerName(where!) !== "stages_2_block_5_dwconv") throw new Error("no round trip");
 * ```
 *
 * @module
 */

/** Name of the model's input layer. */
export const INPUT_NAME = "input";
/**
 * The input normalization of a model that takes 0..255 pixels (`includePreprocessing`): the
 * layer the optimized plan folds into the stem and that `modelConfig` looks for.
 */
export const PREPROCESSING = "preprocessing";
/** The patchify stem convolution (4x4/4 hierarchical, 16x16/16 isotropic). */
export const STEM_CONV = "stem_conv";
/** The stem's LayerNorm (hierarchical models only). */
export const STEM_NORM = "stem_norm";
/** The head's global pooling. */
export const HEAD_POOL = "head_pool";
/** The head's LayerNorm: its output is the pooled embedding (`forward_features`). */
export const HEAD_NORM = "head_norm";
/** The classifier (Dense); its width is the class count. */
export const HEAD_FC = "head_fc";

/** Sublayers of a block, in order (`grn` only in ConvNeXt V2 blocks). */
export const BLOCK_PARTS = [
  "dwconv",
  "norm",
  "pwconv1",
  "grn",
  "pwconv2",
  "layer_scale",
  "drop_path",
] as const;

/** A sublayer of a block. */
export type BlockPart = (typeof BLOCK_PARTS)[number];

/** Sublayers of a downsampling layer, in order. */
export const DOWNSAMPLE_PARTS = ["norm", "conv"] as const;

/** A sublayer of a downsampling layer. */
export type DownsamplePart = (typeof DOWNSAMPLE_PARTS)[number];

/** Sublayers of the stem. */
export const STEM_PARTS = ["conv", "norm"] as const;

/** A sublayer of the stem. */
export type StemPart = (typeof STEM_PARTS)[number];

/** Sublayers of the head. */
export const HEAD_PARTS = ["pool", "norm", "fc"] as const;

/** A sublayer of the head. */
export type HeadPart = (typeof HEAD_PARTS)[number];

/**
 * Where a layer sits in a ConvNeXt: what {@link parseLayerName} returns and
 * {@link layerName} takes. A block without `stage` is an isotropic block; a block without
 * `part` is the residual add (the block's output).
 */
export type LayerLocation =
  | { readonly kind: "input" }
  | { readonly kind: "preprocessing" }
  | { readonly kind: "stem"; readonly part: StemPart }
  | { readonly kind: "downsample"; readonly stage: number; readonly part: DownsamplePart }
  | {
    readonly kind: "block";
    readonly stage?: number;
    readonly block: number;
    readonly part?: BlockPart;
  }
  | { readonly kind: "head"; readonly part: HeadPart };

function index(n: number, what: string): number {
  if (!(Number.isInteger(n) && n >= 0)) {
    throw new RangeError(`layer names: ${what} must be an integer >= 0, got ${n}`);
  }
  return n;
}

/**
 * The name of a block's output (the residual add), or of one of its sublayers:
 * `stages_{stage}_block_{block}[_part]`, or `blocks_{block}[_part]` when `stage` is
 * undefined (isotropic models).
 *
 * @example
 * ```ts
 * import { blockName } from "./names.ts";
 * console.log(blockName(0, 2, "layer_scale")); // "stages_0_block_2_layer_scale"
 * ```
 */
export function blockName(stage: number | undefined, block: number, part?: BlockPart): string {
  const base = stage === undefined
    ? `blocks_${index(block, "block")}`
    : `stages_${index(stage, "stage")}_block_${index(block, "block")}`;
  return part === undefined ? base : `${base}_${part}`;
}

/**
 * The name of a downsampling layer's sublayer before stage `stage` (1..3):
 * `stages_{stage}_downsample_{part}`.
 *
 * @example
 * ```ts
 * import { downsampleName } from "./names.ts";
 * console.log(downsampleName(1, "conv")); // "stages_1_downsample_conv"
 * ```
 */
export function downsampleName(stage: number, part: DownsamplePart): string {
  return `stages_${index(stage, "stage")}_downsample_${part}`;
}

/**
 * The name of any layer of a ConvNeXt, from its location.
 *
 * @example
 * ```ts
 * import { layerName } from "./names.ts";
 * console.log(layerName({ kind: "head", part: "fc" }), layerName({ kind: "block", block: 4 }));
 * // "head_fc" "blocks_4"
 * ```
 */
export function layerName(where: LayerLocation): string {
  switch (where.kind) {
    case "input":
      return INPUT_NAME;
    case "preprocessing":
      return PREPROCESSING;
    case "stem":
      return `stem_${where.part}`;
    case "downsample":
      return downsampleName(where.stage, where.part);
    case "block":
      return blockName(where.stage, where.block, where.part);
    case "head":
      return `head_${where.part}`;
  }
}

const PART = `(?:_(${BLOCK_PARTS.join("|")}))?`;
const STAGE_BLOCK = new RegExp(`^stages_(\\d+)_block_(\\d+)${PART}$`);
const ISO_BLOCK = new RegExp(`^blocks_(\\d+)${PART}$`);
const DOWNSAMPLE = new RegExp(`^stages_(\\d+)_downsample_(${DOWNSAMPLE_PARTS.join("|")})$`);
const STEM = new RegExp(`^stem_(${STEM_PARTS.join("|")})$`);
const HEAD = new RegExp(`^head_(${HEAD_PARTS.join("|")})$`);

/** A decimal index as the names write it (no leading zeros), else NaN. */
function parseIndex(s: string): number {
  return s === String(Number(s)) ? Number(s) : NaN;
}

/**
 * The location of a layer from its name (a weight path `<layer>/<weight>` is accepted
 * too), or undefined when the name is not one of the scheme's.
 * `layerName(parseLayerName(n)!) === n` for every name the model uses.
 *
 * @example
 * ```ts
 * import { parseLayerName } from "./names.ts";
 * console.log(parseLayerName("stages_2_block_7_pwconv1/kernel"));
 * // { kind: "block", stage: 2, block: 7, part: "pwconv1" }
 * console.log(parseLayerName("stages_1_downsample_norm"));
 * // { kind: "downsample", stage: 1, part: "norm" }
 * console.log(parseLayerName("stages_0_block_1_grn/gamma")); // a ConvNeXt V2 GRN weight
 * // { kind: "block", stage: 0, block: 1, part: "grn" }
 * if (parseLayerName("features") !== undefined) throw new Error("not a ConvNeXt name");
 * ```
 */
export function parseLayerName(name: string): LayerLocation | undefined {
  const layer = name.split("/")[0];
  if (layer === INPUT_NAME) return { kind: "input" };
  if (layer === PREPROCESSING) return { kind: "preprocessing" };
  let m = STAGE_BLOCK.exec(layer);
  if (m) {
    const stage = parseIndex(m[1]), block = parseIndex(m[2]);
    if (Number.isNaN(stage) || Number.isNaN(block)) return undefined;
    return m[3] === undefined
      ? { kind: "block", stage, block }
      : { kind: "block", stage, block, part: m[3] as BlockPart };
  }
  m = ISO_BLOCK.exec(layer);
  if (m) {
    const block = parseIndex(m[1]);
    if (Number.isNaN(block)) return undefined;
    return m[2] === undefined
      ? { kind: "block", block }
      : { kind: "block", block, part: m[2] as BlockPart };
  }
  m = DOWNSAMPLE.exec(layer);
  if (m) {
    const stage = parseIndex(m[1]);
    return Number.isNaN(stage)
      ? undefined
      : { kind: "downsample", stage, part: m[2] as DownsamplePart };
  }
  m = STEM.exec(layer);
  if (m) return { kind: "stem", part: m[1] as StemPart };
  m = HEAD.exec(layer);
  if (m) return { kind: "head", part: m[1] as HeadPart };
  return undefined;
}

/**
 * A TF.js weight path, `<layer>/<weight>` (e.g. `stem_conv/kernel`, `head_norm/gamma`).
 *
 * @example
 * ```ts
 * import { HEAD_FC, weightPath } from "./names.ts";
 * console.log(weightPath(HEAD_FC, "bias")); // "head_fc/bias"
 * ```
 */
export function weightPath(layer: string, weight: string): string {
  return `${layer}/${weight}`;
}

/** The layer part of a weight path (`"stem_conv/kernel"` -> `"stem_conv"`). */
export function layerOfWeight(path: string): string {
  return path.split("/")[0];
}
