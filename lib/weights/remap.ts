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
 * - linear: (out, in) -> (in, out) (a 1x1 conv (out, in, 1, 1) is accepted too);
 * - LayerNorm: weight -> gamma, bias -> beta; layer scale: (C) or (C, 1, 1) -> (C).
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

/** The key layouts {@link remapStateDict} understands. */
export type Layout = "official" | "torchvision" | "timm" | "huggingface";

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
  /** Source keys that were not converted (only non-empty when `strict` is false). */
  readonly ignored: string[];
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
type Role = "conv" | "dwconv" | "dense" | "norm" | "scale";

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
      const param = last === "bias" ? "bias" : "weight";
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
 * `norm`, `head`; isotropic: `stem`, `blocks.j.*`, `norm`, `head`.
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
 * timm `convnext_*`: `stem.{0,1}`, `stages.i.downsample.{0,1}`,
 * `stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`, `head.norm`, `head.fc`.
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
 * `convnext.` prefix): `embeddings.{patch_embeddings,layernorm}`,
 * `encoder.stages.i.downsampling_layer.{0,1}`,
 * `encoder.stages.i.layers.j.{dwconv,layernorm,pwconv1,pwconv2,layer_scale_parameter}`,
 * `layernorm`, `classifier`.
 */
export const filterHuggingFace: KeyFilter = rules([
  [
    new RegExp(`^(?:convnext\\.)?embeddings\\.patch_embeddings\\.${PARAM}$`),
    () => [STEM_CONV, "conv"],
  ],
  [new RegExp(`^(?:convnext\\.)?embeddings\\.layernorm\\.${PARAM}$`), () => [STEM_NORM, "norm"]],
  [
    new RegExp(
      `^(?:convnext\\.)?encoder\\.stages\\.([1-3])\\.downsampling_layer\\.([01])\\.${PARAM}$`,
    ),
    (m) =>
      m[2] === "0"
        ? [downsampleName(Number(m[1]), "norm"), "norm"]
        : [downsampleName(Number(m[1]), "conv"), "conv"],
  ],
  [
    new RegExp(
      `^(?:convnext\\.)?encoder\\.stages\\.([0-3])\\.layers\\.(\\d+)\\.(dwconv|layernorm|pwconv1|pwconv2)\\.${PARAM}$`,
    ),
    (m) => [blockName(Number(m[1]), Number(m[2]), HF_BLOCK[m[3]][0]), HF_BLOCK[m[3]][1]],
  ],
  [
    /^(?:convnext\.)?encoder\.stages\.([0-3])\.layers\.(\d+)\.(layer_scale_parameter)$/,
    (m) => [blockName(Number(m[1]), Number(m[2]), "layer_scale"), "scale"],
  ],
  [new RegExp(`^(?:convnext\\.)?layernorm\\.${PARAM}$`), () => [HEAD_NORM, "norm"]],
  [new RegExp(`^classifier\\.${PARAM}$`), () => [HEAD_FC, "dense"]],
]);

/** The key filter of each layout. */
export const LAYOUT_FILTERS: Readonly<Record<Layout, KeyFilter>> = {
  official: filterOfficial,
  torchvision: filterTorchvision,
  timm: filterTimm,
  huggingface: filterHuggingFace,
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
        `expected official, torchvision, timm or Hugging Face keys`,
    );
  }
  return best;
}

function squeezeTo(t: TensorData, rank: number): number[] {
  const shape = [...t.shape];
  while (shape.length > rank && shape[shape.length - 1] === 1) shape.pop();
  return shape;
}

/** Converts one tensor to TF.js layout; returns the weight name and value. */
function convert(t: TensorData, target: Target, key: string, label: string): [string, Weight] {
  const bad = (want: string): never => {
    throw new Error(`${label}: "${key}" has shape [${t.shape}], expected ${want}`);
  };
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
  const filter = LAYOUT_FILTERS[layout];
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
  const checkpointClasses = headClasses(weights);
  if (options.dropHead) {
    weights.delete(weightPath(HEAD_FC, "kernel"));
    weights.delete(weightPath(HEAD_FC, "bias"));
  }
  const { name, spec } = architectureOf(options.architecture ?? weights, label);
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
    ignored: unmapped,
  };
}
