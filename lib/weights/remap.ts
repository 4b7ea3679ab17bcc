/**
 * Converts a PyTorch ConvNeXt state dict (any of the layouts we meet) to TF.js weights
 * named after our layers (`stem_conv/kernel`, `stages_2_block_5_dwconv/depthwise_kernel`,
 * ...; the names come from `lib/model/names.ts`), and infers the architecture from the shapes
 * (`architectureOf` in `lib/model/architecture.ts`).
 *
 * Each source layout is one filter function (like timm's `checkpoint_filter_fn`) that
 * maps its keys to our layer names and a role; the role says how the tensor's layout
 * changes:
 * - conv: OIHW -> HWIO, transpose (2, 3, 1, 0) (reversing all axes would swap H and W);
 * - depthwise conv: (C, 1, kh, kw) -> (kh, kw, C, 1), transpose (2, 3, 0, 1);
 * - linear: (out, in) -> (in, out) (a 1x1 conv (out, in, 1, 1) is accepted too: timm's
 *   `conv_mlp` blocks of the small sizes);
 * - LayerNorm: weight -> gamma, bias -> beta; layer scale: (C) or (C, 1, 1) -> (C);
 * - GRN (ConvNeXt V2): gamma/weight -> gamma, beta/bias -> beta, from (C) or (1, 1, 1, C).
 *
 * FCMAE pre-trained encoders (ConvNeXt V2, sparse MinkowskiEngine layers) are first rewritten
 * to the official dense layout exactly as the official fine-tuning code does
 * (`remap_checkpoint_keys`, {@link remapCheckpointKeys}), then converted as official weights.
 *
 * @module
 */

import {
  architectureOf,
  CUSTOM_ARCHITECTURE,
  numClasses as headClasses,
} from "../model/architecture.ts";
import {
  blockName,
  type BlockPart,
  downsampleName,
  HEAD_FC,
  HEAD_NORM,
  STEM_CONV,
  STEM_NORM,
  weightPath,
} from "../model/names.ts";
import type { ArchitectureName, ArchitectureSpec } from "../model/variants.ts";
import { transpose } from "./transpose.ts";
import type { StateDict, TensorData } from "./types.ts";

/** A converted weight: TF.js layout, float32. */
export interface Weight {
  /** TF.js shape (HWIO kernels, [in, out] dense kernels). */
  readonly shape: number[];
  /** Values, row-major in that shape. */
  readonly data: Float32Array;
}

/**
 * The key layouts {@link remapStateDict} understands: `official` (ConvNeXt and ConvNeXt V2),
 * `torchvision`, `timm`, `huggingface` (`ConvNext*` and `ConvNextV2*`) and `fcmae` (the
 * official FCMAE pre-trained V2 encoders).
 */
export type Layout = "official" | "torchvision" | "timm" | "huggingface" | "fcmae";

/** What {@link remapStateDict} returns. */
export interface ConvertedWeights {
  /** Weights by TF.js path `<layer>/<weight>`, in model order. */
  readonly weights: Map<string, Weight>;
  /** The architecture, inferred from the shapes (or the one passed in the options). */
  readonly spec: ArchitectureSpec;
  /** The official architecture name when `spec` equals a row of `ARCHITECTURES`. */
  readonly architecture?: ArchitectureName;
  /** Classes of the converted head; 0 when there is no head (or it was dropped). */
  readonly numClasses: number;
  /** Classes of the checkpoint's head (0 when it has none), even when dropped. */
  readonly checkpointClasses: number;
  /** The detected (or given) source layout. */
  readonly layout: Layout;
  /**
   * Source keys that were not converted: unknown keys (only when `strict` is false) and the
   * FCMAE decoder (`decoder`, `mask_token`, `proj`, `pred`), which the official fine-tuning
   * drops too.
   */
  readonly ignored: string[];
  /**
   * Weights the checkpoint lacks that conversion initialized as the official fine-tuning
   * does: an FCMAE encoder has no final norm, so `head_norm` starts as a fresh LayerNorm
   * (gamma 1, beta 0). Empty for every other checkpoint.
   */
  readonly initialized: string[];
}

/** Options of {@link remapStateDict}. */
export interface RemapOptions {
  /** Missing/unexpected/mis-shaped weights are an error (default true). */
  readonly strict?: boolean;
  /** Drop the classifier (`head_fc`), e.g. to fine-tune with another class count. */
  readonly dropHead?: boolean;
  /** The source layout; default: detected from the keys. */
  readonly layout?: Layout;
  /** The architecture; default: inferred from the shapes. */
  readonly architecture?: ArchitectureName | ArchitectureSpec;
  /** What to call the checkpoint in error messages. */
  readonly label?: string;
}

/** How a source tensor changes on its way to TF.js. */
type Role = "conv" | "dwconv" | "dense" | "norm" | "scale" | "grn";

/** Where a source key goes: our layer, its role, and which parameter it is. */
interface Target {
  readonly layer: string;
  readonly role: Role;
  readonly param: "weight" | "bias";
}

/** A layout's key filter: our target for a source key, or undefined when unknown. */
type KeyFilter = (key: string) => Target | undefined;

const PARAM = "(weight|bias)";

/** Builds a filter from (pattern, target) rules; the last capture group is the param. */
function rules(list: [RegExp, (m: RegExpMatchArray) => [string, Role] | undefined][]): KeyFilter {
  return (key) => {
    for (const [re, to] of list) {
      const m = key.match(re);
      if (!m) continue;
      const t = to(m);
      if (!t) return undefined;
      const last = m[m.length - 1];
      // GRN's official names are gamma (scale) and beta (shift).
      const param = last === "bias" || last === "beta" ? "bias" : "weight";
      return { layer: t[0], role: t[1], param };
    }
    return undefined;
  };
}

const BLOCK_ROLES: Record<string, [BlockPart, Role]> = {
  dwconv: ["dwconv", "dwconv"],
  norm: ["norm", "norm"],
  pwconv1: ["pwconv1", "dense"],
  pwconv2: ["pwconv2", "dense"],
};

/**
 * facebookresearch/ConvNeXt: `downsample_layers.0.{0,1}` (stem conv, norm),
 * `downsample_layers.i.{0,1}` (norm, conv), `stages.i.j.{dwconv,norm,pwconv1,pwconv2,gamma}`,
 * `norm`, `head`; isotropic: `stem`, `blocks.j.*`, `norm`, `head`. ConvNeXt V2
 * (facebookresearch/ConvNeXt-V2): the same without `gamma`, plus `stages.i.j.grn.{gamma,beta}`
 * of shape (1, 1, 1, 4C).
 */
export const filterOfficial: KeyFilter = rules([
  [new RegExp(`^downsample_layers\\.0\\.0\\.${PARAM}$`), () => [STEM_CONV, "conv"]],
  [new RegExp(`^downsample_layers\\.0\\.1\\.${PARAM}$`), () => [STEM_NORM, "norm"]],
  [
    new RegExp(`^downsample_layers\\.([1-3])\\.([01])\\.${PARAM}$`),
    (m) =>
      m[2] === "0"
        ? [downsampleName(Number(m[1]), "norm"), "norm"]
        : [downsampleName(Number(m[1]), "conv"), "conv"],
  ],
  [
    new RegExp(`^stages\\.([0-3])\\.(\\d+)\\.(dwconv|norm|pwconv1|pwconv2)\\.${PARAM}$`),
    (m) => [blockName(Number(m[1]), Number(m[2]), BLOCK_ROLES[m[3]][0]), BLOCK_ROLES[m[3]][1]],
  ],
  [
    /^stages\.([0-3])\.(\d+)\.(gamma)$/,
    (m) => [blockName(Number(m[1]), Number(m[2]), "layer_scale"), "scale"],
  ],
  [
    /^stages\.([0-3])\.(\d+)\.grn\.(gamma|beta)$/,
    (m) => [blockName(Number(m[1]), Number(m[2]), "grn"), "grn"],
  ],
  [new RegExp(`^stem\\.${PARAM}$`), () => [STEM_CONV, "conv"]],
  [
    new RegExp(`^blocks\\.(\\d+)\\.(dwconv|norm|pwconv1|pwconv2)\\.${PARAM}$`),
    (m) => [blockName(undefined, Number(m[1]), BLOCK_ROLES[m[2]][0]), BLOCK_ROLES[m[2]][1]],
  ],
  [
    /^blocks\.(\d+)\.(gamma)$/,
    (m) => [blockName(undefined, Number(m[1]), "layer_scale"), "scale"],
  ],
  [new RegExp(`^norm\\.${PARAM}$`), () => [HEAD_NORM, "norm"]],
  [new RegExp(`^head\\.${PARAM}$`), () => [HEAD_FC, "dense"]],
]);

const TORCHVISION_BLOCK: Record<string, [BlockPart, Role]> = {
  "0": ["dwconv", "dwconv"],
  "2": ["norm", "norm"],
  "3": ["pwconv1", "dense"],
  "5": ["pwconv2", "dense"],
};

/**
 * torchvision `ConvNeXt`: `features.0.{0,1}` stem; odd `features.(2i+1).j.block.{0,2,3,5}`
 * and `.layer_scale` (C,1,1) are stage i's blocks; even `features.(2i).{0,1}` (i >= 1)
 * downsample; `classifier.0` norm, `classifier.2` linear.
 */
export const filterTorchvision: KeyFilter = rules([
  [new RegExp(`^features\\.0\\.0\\.${PARAM}$`), () => [STEM_CONV, "conv"]],
  [new RegExp(`^features\\.0\\.1\\.${PARAM}$`), () => [STEM_NORM, "norm"]],
  [
    new RegExp(`^features\\.([246])\\.([01])\\.${PARAM}$`),
    (m) => {
      const i = Number(m[1]) / 2;
      return m[2] === "0"
        ? [downsampleName(i, "norm"), "norm"]
        : [downsampleName(i, "conv"), "conv"];
    },
  ],
  [
    new RegExp(`^features\\.([1357])\\.(\\d+)\\.block\\.(\\d+)\\.${PARAM}$`),
    (m) => {
      const r = TORCHVISION_BLOCK[m[3]];
      return r ? [blockName((Number(m[1]) - 1) / 2, Number(m[2]), r[0]), r[1]] : undefined;
    },
  ],
  [
    /^features\.([1357])\.(\d+)\.(layer_scale)$/,
    (m) => [blockName((Number(m[1]) - 1) / 2, Number(m[2]), "layer_scale"), "scale"],
  ],
  [new RegExp(`^classifier\\.0\\.${PARAM}$`), () => [HEAD_NORM, "norm"]],
  [new RegExp(`^classifier\\.2\\.${PARAM}$`), () => [HEAD_FC, "dense"]],
]);

const TIMM_BLOCK: Record<string, [BlockPart, Role]> = {
  conv_dw: ["dwconv", "dwconv"],
  norm: ["norm", "norm"],
  "mlp.fc1": ["pwconv1", "dense"],
  "mlp.fc2": ["pwconv2", "dense"],
};

/**
 * timm `convnext_*` and `convnextv2_*`: `stem.{0,1}`, `stages.i.downsample.{0,1}`,
 * `stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`, V2's
 * `stages.i.blocks.j.mlp.grn.{weight,bias}` (C), `head.norm`, `head.fc`. The small sizes
 * (atto..nano, `conv_mlp=True`) store `mlp.fc1`/`mlp.fc2` as 1x1 convolutions (out, in, 1, 1).
 */
export const filterTimm: KeyFilter = rules([
  [new RegExp(`^stem\\.0\\.${PARAM}$`), () => [STEM_CONV, "conv"]],
  [new RegExp(`^stem\\.1\\.${PARAM}$`), () => [STEM_NORM, "norm"]],
  [
    new RegExp(`^stages\\.([1-3])\\.downsample\\.([01])\\.${PARAM}$`),
    (m) =>
      m[2] === "0"
        ? [downsampleName(Number(m[1]), "norm"), "norm"]
        : [downsampleName(Number(m[1]), "conv"), "conv"],
  ],
  [
    new RegExp(
      `^stages\\.([0-3])\\.blocks\\.(\\d+)\\.(conv_dw|norm|mlp\\.fc1|mlp\\.fc2)\\.${PARAM}$`,
    ),
    (m) => [blockName(Number(m[1]), Number(m[2]), TIMM_BLOCK[m[3]][0]), TIMM_BLOCK[m[3]][1]],
  ],
  [
    /^stages\.([0-3])\.blocks\.(\d+)\.(gamma)$/,
    (m) => [blockName(Number(m[1]), Number(m[2]), "layer_scale"), "scale"],
  ],
  [
    new RegExp(`^stages\\.([0-3])\\.blocks\\.(\\d+)\\.mlp\\.grn\\.${PARAM}$`),
    (m) => [blockName(Number(m[1]), Number(m[2]), "grn"), "grn"],
  ],
  [new RegExp(`^head\\.norm\\.${PARAM}$`), () => [HEAD_NORM, "norm"]],
  [new RegExp(`^head\\.fc\\.${PARAM}$`), () => [HEAD_FC, "dense"]],
]);

const HF_BLOCK: Record<string, [BlockPart, Role]> = {
  dwconv: ["dwconv", "dwconv"],
  layernorm: ["norm", "norm"],
  pwconv1: ["pwconv1", "dense"],
  pwconv2: ["pwconv2", "dense"],
};

/**
 * Hugging Face `ConvNextForImageClassification` (or `ConvNextModel` without the
 * `convnext.` prefix) and `ConvNextV2ForImageClassification` (prefix `convnextv2.`):
 * `embeddings.{patch_embeddings,layernorm}`, `encoder.stages.i.downsampling_layer.{0,1}`,
 * `encoder.stages.i.layers.j.{dwconv,layernorm,pwconv1,pwconv2,layer_scale_parameter}`,
 * V2's `encoder.stages.i.layers.j.grn.{weight,bias}` (1, 1, 1, 4C), `layernorm`,
 * `classifier`.
 */
export const filterHuggingFace: KeyFilter = rules([
  [
    new RegExp(`^(?:convnext(?:v2)?\\.)?embeddings\\.patch_embeddings\\.${PARAM}$`),
    () => [STEM_CONV, "conv"],
  ],
  [
    new RegExp(`^(?:convnext(?:v2)?\\.)?embeddings\\.layernorm\\.${PARAM}$`),
    () => [STEM_NORM, "norm"],
  ],
  [
    new RegExp(
      `^(?:convnext(?:v2)?\\.)?encoder\\.stages\\.([1-3])\\.downsampling_layer\\.([01])\\.${PARAM}$`,
    ),
    (m) =>
      m[2] === "0"
        ? [downsampleName(Number(m[1]), "norm"), "norm"]
        : [downsampleName(Number(m[1]), "conv"), "conv"],
  ],
  [
    new RegExp(
      `^(?:convnext(?:v2)?\\.)?encoder\\.stages\\.([0-3])\\.layers\\.(\\d+)\\.(dwconv|layernorm|pwconv1|pwconv2)\\.${PARAM}$`,
    ),
    (m) => [blockName(Number(m[1]), Number(m[2]), HF_BLOCK[m[3]][0]), HF_BLOCK[m[3]][1]],
  ],
  [
    /^(?:convnext(?:v2)?\.)?encoder\.stages\.([0-3])\.layers\.(\d+)\.(layer_scale_parameter)$/,
    (m) => [blockName(Number(m[1]), Number(m[2]), "layer_scale"), "scale"],
  ],
  [
    new RegExp(
      `^(?:convnext(?:v2)?\\.)?encoder\\.stages\\.([0-3])\\.layers\\.(\\d+)\\.grn\\.${PARAM}$`,
    ),
    (m) => [blockName(Number(m[1]), Number(m[2]), "grn"), "grn"],
  ],
  [new RegExp(`^(?:convnext(?:v2)?\\.)?layernorm\\.${PARAM}$`), () => [HEAD_NORM, "norm"]],
  [new RegExp(`^classifier\\.${PARAM}$`), () => [HEAD_FC, "dense"]],
]);

/** Keys of the FCMAE decoder, which the official fine-tuning deletes before remapping. */
const FCMAE_DECODER = ["decoder", "mask_token", "proj", "pred"];

/** True for a key the official `main_finetune.py` drops from an FCMAE checkpoint. */
function isFcmaeDecoderKey(key: string): boolean {
  return FCMAE_DECODER.some((part) => key.includes(part));
}

/**
 * The dense key `remap_checkpoint_keys` gives an FCMAE key (the official ConvNeXt-V2
 * `utils.py`, ported literally): `encoder.` removed, `kernel` renamed `weight`, the `ln` /
 * `linear` wrapper level dropped (the official test is a substring test on the whole key).
 */
function fcmaeDenseKey(key: string): string {
  let k = key.startsWith("encoder") ? key.split(".").slice(1).join(".") : key;
  if (k.endsWith("kernel")) return k.split(".").slice(0, -1).join(".") + ".weight";
  if (k.includes("ln") || k.includes("linear")) {
    const parts = k.split(".");
    parts.splice(parts.length - 2, 1);
    k = parts.join(".");
  }
  return k;
}

/**
 * The dense tensor `remap_checkpoint_keys` makes of an FCMAE tensor: Minkowski kernels
 * `[k*k, in, out]` become OIHW `v.permute(2, 1, 0).reshape(out, in, k, k).transpose(3, 2)`,
 * depthwise `[k*k, C]` become `(C, 1, k, k)` the same way (the kernel offset `a * k + b` is
 * column `a`, row `b`); biases of another rank are flattened; GRN `(1, C)` gets two leading
 * axes, `(1, 1, 1, C)` as the dense GRN.
 */
function fcmaeDenseTensor(key: string, t: TensorData, label: string): TensorData {
  const { dtype } = t;
  if (key.endsWith("kernel")) {
    const ks = Math.round(Math.sqrt(t.shape[0]));
    if (ks * ks !== t.shape[0] || (t.shape.length !== 3 && t.shape.length !== 2)) {
      throw new Error(
        `${label}: "${key}" has shape [${t.shape}], expected a Minkowski kernel [k*k, in, out] or [k*k, C]`,
      );
    }
    if (t.shape.length === 3) {
      const [, cin, cout] = t.shape;
      const w = transpose(t.data, [ks, ks, cin, cout], [3, 2, 1, 0]);
      return { dtype, shape: w.shape, data: w.data };
    }
    const c = t.shape[1];
    const w = transpose(t.data, [ks, ks, c], [2, 1, 0]);
    return { dtype, shape: [c, 1, ks, ks], data: w.data };
  }
  const dense = fcmaeDenseKey(key);
  if (dense.endsWith("bias") && t.shape.length !== 1) {
    return { dtype, shape: [t.data.length], data: t.data };
  }
  if (dense.includes("grn")) return { dtype, shape: [1, 1, ...t.shape], data: t.data };
  return t;
}

/**
 * An FCMAE pre-trained checkpoint (ConvNeXt V2 `pt_only/*_fcmae.pt`: the sparse encoder
 * under `encoder.`, MinkowskiEngine kernels `[k*k, in, out]` and `[k*k, C]`, `.ln.` /
 * `.linear.` wrappers, GRN `(1, C)`, plus the decoder) rewritten to the official dense V2
 * layout as the official fine-tuning does: the decoder keys (`decoder`, `mask_token`,
 * `proj`, `pred`) dropped as `main_finetune.py` drops them, then `remap_checkpoint_keys`
 * (`utils.py`). Other keys pass through unchanged.
 *
 * @example
 * ```ts
 * import { remapCheckpointKeys } from "./remap.ts";
 * const t = (shape: number[]) => ({
 *   dtype: "float32",
 *   shape,
 *   data: new Float32Array(shape.reduce((a, b) => a * b)),
 * });
 * const dense = remapCheckpointKeys(
 *   new Map([
 *     ["encoder.stages.0.0.dwconv.kernel", t([49, 8])],
 *     ["encoder.stages.0.0.pwconv1.linear.weight", t([32, 8])],
 *     ["encoder.stages.0.0.grn.gamma", t([1, 32])],
 *     ["mask_token", t([1, 16, 1, 1])],
 *   ]),
 * );
 * console.log([...dense].map(([k, v]) => `${k} [${v.shape}]`));
 * // ["stages.0.0.dwconv.weight [8,1,7,7]", "stages.0.0.pwconv1.weight [32,8]",
 * //  "stages.0.0.grn.gamma [1,1,1,32]"]
 * if (dense.size !== 3 || dense.has("mask_token")) throw new Error("the decoder stays out");
 * ```
 */
export function remapCheckpointKeys(sd: StateDict, label = "checkpoint"): StateDict {
  const out: StateDict = new Map();
  for (const [key, t] of sd) {
    if (isFcmaeDecoderKey(key)) continue;
    out.set(fcmaeDenseKey(key), fcmaeDenseTensor(key, t, label));
  }
  return out;
}

/**
 * FCMAE pre-trained encoders: an `encoder.` key is recognised when its dense name
 * ({@link remapCheckpointKeys}) is an official V2 key. Only `encoder.` keys count, so that
 * detection never confuses a dense checkpoint with an FCMAE one.
 */
export const filterFcmae: KeyFilter = (key) =>
  key.startsWith("encoder.") ? filterOfficial(fcmaeDenseKey(key)) : undefined;

/** The key filter of each layout. */
export const LAYOUT_FILTERS: Readonly<Record<Layout, KeyFilter>> = {
  official: filterOfficial,
  torchvision: filterTorchvision,
  timm: filterTimm,
  huggingface: filterHuggingFace,
  fcmae: filterFcmae,
};

/** Removes a `module.` prefix that DistributedDataParallel adds to every key. */
function stripModulePrefix(sd: StateDict): StateDict {
  const keys = [...sd.keys()];
  if (keys.length === 0 || !keys.every((k) => k.startsWith("module."))) return sd;
  return new Map([...sd].map(([k, v]) => [k.slice("module.".length), v]));
}

/**
 * Detects a state dict's key layout: the layout whose filter maps the most keys
 * (so a stray extra key does not change the verdict). Throws when none maps any.
 *
 * @example
 * ```ts
 * import { detectLayout } from "./remap.ts";
 * detectLayout(["features.0.0.weight", "classifier.2.weight"]); // "torchvision"
 * ```
 */
export function detectLayout(keys: Iterable<string>, label = "checkpoint"): Layout {
  const list = [...keys].map((k) => k.startsWith("module.") ? k.slice(7) : k);
  let best: Layout | undefined;
  let bestCount = 0;
  for (const [layout, filter] of Object.entries(LAYOUT_FILTERS) as [Layout, KeyFilter][]) {
    const n = list.filter((k) => filter(k) !== undefined).length;
    if (n > bestCount) [best, bestCount] = [layout, n];
  }
  if (!best) {
    throw new Error(
      `${label}: unrecognised ConvNeXt key layout (first keys: ${list.slice(0, 5).join(", ")}); ` +
        `expected official, torchvision, timm, Hugging Face or FCMAE keys`,
    );
  }
  return best;
}

function squeezeTo(t: TensorData, rank: number): number[] {
  const shape = [...t.shape];
  while (shape.length > rank && shape[shape.length - 1] === 1) shape.pop();
  return shape;
}

/** GRN parameters are (C) in timm, (1, 1, 1, C) in the official code and Hugging Face. */
function grnVector(t: TensorData): number[] | undefined {
  const lead = t.shape.slice(0, -1);
  return t.shape.length >= 1 && lead.every((d) => d === 1)
    ? [t.shape[t.shape.length - 1]]
    : undefined;
}

/** Converts one tensor to TF.js layout; returns the weight name and value. */
function convert(t: TensorData, target: Target, key: string, label: string): [string, Weight] {
  const bad = (want: string): never => {
    throw new Error(`${label}: "${key}" has shape [${t.shape}], expected ${want}`);
  };
  if (target.role === "grn") {
    const shape = grnVector(t) ?? bad("(C) or (1, 1, 1, C)");
    const name = target.param === "bias" ? "beta" : "gamma";
    return [weightPath(target.layer, name), { shape, data: t.data }];
  }
  if (target.param === "bias") {
    if (t.shape.length !== 1) bad("a vector");
    const name = target.role === "norm" ? "beta" : "bias";
    return [weightPath(target.layer, name), { shape: [...t.shape], data: t.data }];
  }
  switch (target.role) {
    case "conv":
      if (t.shape.length !== 4) bad("OIHW (4 dims)");
      return [weightPath(target.layer, "kernel"), transpose(t.data, t.shape, [2, 3, 1, 0])];
    case "dwconv":
      if (t.shape.length !== 4 || t.shape[1] !== 1) bad("(C, 1, kh, kw)");
      return [
        weightPath(target.layer, "depthwise_kernel"),
        transpose(t.data, t.shape, [2, 3, 0, 1]),
      ];
    case "dense": {
      const shape = squeezeTo(t, 2);
      if (shape.length !== 2) bad("(out, in)");
      return [weightPath(target.layer, "kernel"), transpose(t.data, shape, [1, 0])];
    }
    case "norm":
    case "scale": {
      const shape = squeezeTo(t, 1);
      if (shape.length !== 1) bad("a vector (C) or (C, 1, 1)");
      return [weightPath(target.layer, "gamma"), { shape, data: t.data }];
    }
  }
}

/**
 * The TF.js weights (name -> shape, in model order) a ConvNeXt of `spec` has, per the
 * naming scheme of `lib/model/names.ts`. `numClasses` 0 means no `head_fc`.
 *
 * @example
 * ```ts
 * import { ARCHITECTURES } from "../model/variants.ts";
 * import { expectedWeightShapes } from "./remap.ts";
 * expectedWeightShapes(ARCHITECTURES.convnext_tiny, 1000).get("head_fc/kernel"); // [768, 1000]
 * ```
 */
export function expectedWeightShapes(
  spec: ArchitectureSpec,
  numClasses: number,
  inChannels = 3,
): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const set = (layer: string, weight: string, shape: number[]) =>
    out.set(weightPath(layer, weight), shape);
  const block = (stage: number | undefined, j: number, c: number) => {
    const name = (part: BlockPart) => blockName(stage, j, part);
    set(name("dwconv"), "depthwise_kernel", [7, 7, c, 1]);
    set(name("dwconv"), "bias", [c]);
    set(name("norm"), "gamma", [c]);
    set(name("norm"), "beta", [c]);
    set(name("pwconv1"), "kernel", [c, 4 * c]);
    set(name("pwconv1"), "bias", [4 * c]);
    if (spec.grn) {
      set(name("grn"), "gamma", [4 * c]);
      set(name("grn"), "beta", [4 * c]);
    }
    set(name("pwconv2"), "kernel", [4 * c, c]);
    set(name("pwconv2"), "bias", [c]);
    if (spec.layerScaleInit > 0) set(name("layer_scale"), "gamma", [c]);
  };
  let last: number;
  if (spec.kind === "hierarchical") {
    const [c0] = spec.dims;
    set(STEM_CONV, "kernel", [4, 4, inChannels, c0]);
    set(STEM_CONV, "bias", [c0]);
    set(STEM_NORM, "gamma", [c0]);
    set(STEM_NORM, "beta", [c0]);
    for (let i = 0; i < 4; i++) {
      const c = spec.dims[i];
      if (i > 0) {
        const p = spec.dims[i - 1];
        set(downsampleName(i, "norm"), "gamma", [p]);
        set(downsampleName(i, "norm"), "beta", [p]);
        set(downsampleName(i, "conv"), "kernel", [2, 2, p, c]);
        set(downsampleName(i, "conv"), "bias", [c]);
      }
      for (let j = 0; j < spec.depths[i]; j++) block(i, j, c);
    }
    last = spec.dims[3];
  } else {
    set(STEM_CONV, "kernel", [16, 16, inChannels, spec.dim]);
    set(STEM_CONV, "bias", [spec.dim]);
    for (let j = 0; j < spec.depth; j++) block(undefined, j, spec.dim);
    last = spec.dim;
  }
  set(HEAD_NORM, "gamma", [last]);
  set(HEAD_NORM, "beta", [last]);
  if (numClasses > 0) {
    set(HEAD_FC, "kernel", [last, numClasses]);
    set(HEAD_FC, "bias", [numClasses]);
  }
  return out;
}

/** Differences between converted weights and a model's weights. */
export interface WeightReport {
  /** Expected by the model, absent from the checkpoint. */
  readonly missing: string[];
  /** In the checkpoint, not in the model (or source keys no filter maps). */
  readonly unexpected: string[];
  /** Present in both with different shapes: `name: [got] vs expected [want]`. */
  readonly mismatched: string[];
}

/**
 * Compares converted weights with a model's expected weights (name -> shape).
 *
 * @example
 * ```ts
 * import { compareWeights, expectedWeightShapes, remapStateDict } from "./remap.ts";
 * import { readStateDict } from "./state_dict.ts";
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const sd = await readStateDict(file.pathname);
 * const converted = remapStateDict(sd);
 * const expected = expectedWeightShapes(converted.spec, converted.numClasses);
 * const report = compareWeights(converted.weights, expected);
 * console.log(report); // what is missing, unexpected or mis-shaped (nothing here)
 * ```
 */
export function compareWeights(
  weights: ReadonlyMap<string, { readonly shape: readonly number[] }>,
  expected: ReadonlyMap<string, readonly number[]>,
): WeightReport {
  const missing: string[] = [];
  const unexpected: string[] = [];
  const mismatched: string[] = [];
  for (const [name, shape] of expected) {
    const w = weights.get(name);
    if (!w) missing.push(name);
    else if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      mismatched.push(`${name}: [${w.shape}] vs expected [${shape}]`);
    }
  }
  for (const name of weights.keys()) if (!expected.has(name)) unexpected.push(name);
  return { missing, unexpected, mismatched };
}

/** Formats a report as one error message, or undefined when there is nothing to report. */
function reportMessage(report: WeightReport, label: string): string | undefined {
  const parts: string[] = [];
  if (report.missing.length) {
    parts.push(`missing ${report.missing.length}: ${report.missing.join(", ")}`);
  }
  if (report.unexpected.length) {
    parts.push(`unexpected ${report.unexpected.length}: ${report.unexpected.join(", ")}`);
  }
  if (report.mismatched.length) {
    parts.push(`shape mismatch ${report.mismatched.length}: ${report.mismatched.join("; ")}`);
  }
  return parts.length
    ? `${label}: weights do not match the model (${parts.join(" | ")})`
    : undefined;
}

/**
 * Throws one error listing every missing, unexpected and mis-shaped weight, if any.
 *
 * @example
 * ```ts
 * import { assertWeightsMatch, expectedWeightShapes, remapStateDict } from "./remap.ts";
 * import { readStateDict } from "./state_dict.ts";
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const sd = await readStateDict(file.pathname);
 * const converted = remapStateDict(sd);
 * assertWeightsMatch(converted.weights, expectedWeightShapes(converted.spec, converted.numClasses));
 * ```
 */
export function assertWeightsMatch(
  weights: ReadonlyMap<string, { readonly shape: readonly number[] }>,
  expected: ReadonlyMap<string, readonly number[]>,
  label = "checkpoint",
): void {
  const msg = reportMessage(compareWeights(weights, expected), label);
  if (msg) throw new Error(msg);
}

/**
 * Converts a state dict to TF.js weights named after our layers, detecting the layout
 * and inferring the architecture. Strict by default: every missing, unexpected or
 * mis-shaped weight is reported in one error.
 *
 * @example
 * ```ts
 * import { remapStateDict } from "./remap.ts";
 * // An official checkpoint (here a small one from the tests, shaped like them).
 * import { readStateDict } from "./state_dict.ts";
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const sd = await readStateDict(file.pathname);
 * const { weights, layout, numClasses } = remapStateDict(sd);
 * console.log(layout, numClasses, weights.get("stem_conv/kernel")!.shape); // HWIO kernel
 * ```
 */
export function remapStateDict(sd: StateDict, options: RemapOptions = {}): ConvertedWeights {
  const label = options.label ?? "checkpoint";
  const strict = options.strict ?? true;
  const source = stripModulePrefix(sd);
  const layout = options.layout ?? detectLayout(source.keys(), label);
  // FCMAE: the official fine-tuning's rewrite to the dense V2 layout, then official keys.
  const fcmae = layout === "fcmae";
  const decoder = fcmae ? [...source.keys()].filter(isFcmaeDecoderKey) : [];
  const { weights, unmapped, from } = mapKeys(
    fcmae ? remapCheckpointKeys(source, label) : source,
    fcmae ? filterOfficial : LAYOUT_FILTERS[layout],
    label,
  );
  const checkpointClasses = headClasses(weights);
  if (options.dropHead) {
    weights.delete(weightPath(HEAD_FC, "kernel"));
    weights.delete(weightPath(HEAD_FC, "bias"));
  }
  const { name, spec } = architectureOf(options.architecture ?? weights, label);
  const initialized = fcmae ? freshHeadNorm(weights, spec) : [];
  const numClasses = options.dropHead ? 0 : checkpointClasses;
  const expected = expectedWeightShapes(spec, numClasses);
  // Model order, then whatever else the checkpoint had (non-strict mode keeps it).
  const ordered = new Map<string, Weight>();
  for (const name of expected.keys()) if (weights.has(name)) ordered.set(name, weights.get(name)!);
  for (const [name, w] of weights) if (!ordered.has(name)) ordered.set(name, w);
  if (strict) {
    const report = compareWeights(ordered, expected);
    const msg = reportMessage(
      {
        ...report,
        unexpected: [...unmapped, ...report.unexpected.map((n) => `${from.get(n)} (-> ${n})`)],
      },
      `${label} (${layout} layout)`,
    );
    if (msg) throw new Error(msg);
  }
  return {
    weights: ordered,
    spec,
    architecture: name === CUSTOM_ARCHITECTURE ? undefined : name,
    numClasses,
    checkpointClasses,
    layout,
    ignored: [...decoder, ...unmapped],
    initialized,
  };
}

/** Converts every key `filter` maps; the rest is returned as `unmapped`. */
function mapKeys(source: StateDict, filter: KeyFilter, label: string) {
  const weights = new Map<string, Weight>();
  const unmapped: string[] = [];
  const from = new Map<string, string>();
  for (const [key, t] of source) {
    const target = filter(key);
    if (!target) {
      unmapped.push(key);
      continue;
    }
    const [name, w] = convert(t, target, key, label);
    if (weights.has(name)) {
      throw new Error(`${label}: "${key}" and "${from.get(name)}" both map to ${name}`);
    }
    weights.set(name, w);
    from.set(name, key);
  }
  return { weights, unmapped, from };
}

/**
 * Adds a fresh `head_norm` (gamma 1, beta 0) when the weights have none: an FCMAE encoder
 * ends at the last stage, and the official fine-tuning starts from the model's freshly
 * initialized final LayerNorm (loaded with `strict=False`). Returns the names it added.
 */
function freshHeadNorm(weights: Map<string, Weight>, spec: ArchitectureSpec): string[] {
  const gamma = weightPath(HEAD_NORM, "gamma");
  const beta = weightPath(HEAD_NORM, "beta");
  if (weights.has(gamma) || weights.has(beta)) return [];
  const c = spec.kind === "hierarchical" ? spec.dims[3] : spec.dim;
  weights.set(gamma, { shape: [c], data: new Float32Array(c).fill(1) });
  weights.set(beta, { shape: [c], data: new Float32Array(c) });
  return [gamma, beta];
}
