/**
 * Which ConvNeXt is this, and how many classes does it have: the one answer for a model, a
 * set of converted weights, an architecture name or a spec.
 *
 * Inference reads the weight shapes under the names of `./names.ts` (dims from the stem,
 * downsampling and first-block kernels, depths from the block indices, layer scale from the
 * presence of `_layer_scale` weights, ConvNeXt V2 from the presence of `_grn` weights), so it
 * works for any model built by `createConvNeXt` (with or without metadata) and for
 * checkpoints converted by `weights/remap.ts`. V1 and V2 sizes share depths and dims (atto ..
 * huge): the GRN weights tell `convnextv2_atto` from `convnext_atto`.
 *
 * @module
 */
import { didYouMean } from "../util/suggest.ts";
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";
import {
  blockName,
  downsampleName,
  HEAD_FC,
  layerOfWeight,
  parseLayerName,
  STEM_CONV,
  weightPath,
} from "./names.ts";
import {
  ARCHITECTURE_NAMES,
  type ArchitectureName,
  ARCHITECTURES,
  type ArchitectureSpec,
  hasGrn,
  isArchitectureName,
} from "./variants.ts";

/** Name of an architecture that is no row of `ARCHITECTURES`. */
export const CUSTOM_ARCHITECTURE = "convnext_custom";

/** An architecture: its official name (or {@link CUSTOM_ARCHITECTURE}) and its spec. */
export interface Architecture {
  /** Official name when the spec is a row of `ARCHITECTURES`, else `"convnext_custom"`. */
  readonly name: ArchitectureName | typeof CUSTOM_ARCHITECTURE;
  /** The architecture's shape. */
  readonly spec: ArchitectureSpec;
}

/** Weight shapes by TF.js weight path (`<layer>/<weight>`), e.g. converted weights. */
export type WeightShapes = ReadonlyMap<string, { readonly shape: readonly number[] }>;

/** What {@link architectureOf} and {@link numClasses} read. */
export type ArchitectureSource =
  | tf.LayersModel
  | WeightShapes
  | ArchitectureName
  | ArchitectureSpec
  | string;

function isModel(x: unknown): x is tf.LayersModel {
  return typeof x === "object" && x !== null && Array.isArray((x as tf.LayersModel).layers) &&
    Array.isArray((x as tf.LayersModel).weights);
}

/** A model's weight shapes, by `originalName` (the `<layer>/<weight>` path). */
function shapesOf(source: tf.LayersModel | WeightShapes): WeightShapes {
  if (!isModel(source)) return source;
  return new Map(source.weights.map((w) => [w.originalName, { shape: w.shape as number[] }]));
}

/**
 * The official name of `spec` (same kind, depths and dims, or depth and dim, and the same
 * presence of layer scale and of GRN), or undefined.
 */
function officialName(spec: ArchitectureSpec): ArchitectureName | undefined {
  return ARCHITECTURE_NAMES.find((name) => {
    const a: ArchitectureSpec = ARCHITECTURES[name];
    if (a.kind !== spec.kind || (a.layerScaleInit > 0) !== (spec.layerScaleInit > 0)) return false;
    if (hasGrn(a) !== hasGrn(spec)) return false;
    if (a.kind === "isotropic" && spec.kind === "isotropic") {
      return a.depth === spec.depth && a.dim === spec.dim;
    }
    if (a.kind === "hierarchical" && spec.kind === "hierarchical") {
      return a.depths.every((d, i) => d === spec.depths[i]) &&
        a.dims.every((d, i) => d === spec.dims[i]);
    }
    return false;
  });
}

/** Throws a one-line error for a spec object that is not a valid architecture. */
function validateSpec(spec: ArchitectureSpec, label: string): void {
  const positiveInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (spec?.kind === "hierarchical") {
    if (
      spec.depths?.length !== 4 || spec.dims?.length !== 4 || !spec.depths.every(positiveInt) ||
      !spec.dims.every(positiveInt)
    ) {
      throw new Error(
        `${label}: a hierarchical spec needs 4 positive integer depths and dims, got depths ${
          JSON.stringify(spec.depths)
        } dims ${JSON.stringify(spec.dims)}`,
      );
    }
  } else if (spec?.kind === "isotropic") {
    if (!positiveInt(spec.depth) || !positiveInt(spec.dim)) {
      throw new Error(
        `${label}: an isotropic spec needs positive integer depth and dim, got ${spec.depth}/${spec.dim}`,
      );
    }
  } else {
    throw new Error(
      `${label}: architecture must be a name (${
        ARCHITECTURE_NAMES.join(", ")
      }) or a spec with kind "hierarchical" or "isotropic"`,
    );
  }
  if (!(Number.isFinite(spec.layerScaleInit) && spec.layerScaleInit >= 0)) {
    throw new Error(`${label}: spec.layerScaleInit must be >= 0, got ${spec.layerScaleInit}`);
  }
  if (spec.grn !== undefined && typeof spec.grn !== "boolean") {
    throw new Error(`${label}: spec.grn must be a boolean, got ${JSON.stringify(spec.grn)}`);
  }
}

/** The initial layer-scale value a model's LayerScale layers were built with, if any. */
function layerScaleInitOf(model: tf.LayersModel): number | undefined {
  for (const layer of model.layers) {
    if (parseLayerName(layer.name)?.kind === "block" && layer.name.endsWith("_layer_scale")) {
      const v = (layer.getConfig() as { initValue?: unknown }).initValue;
      if (typeof v === "number" && v > 0) return v;
    }
  }
  return undefined;
}

/** Infers the spec from weight shapes; `layerScaleInit` is the value to record for gammas. */
function inferSpec(
  shapes: WeightShapes,
  layerScaleInit: number,
  label: string,
): ArchitectureSpec {
  const fail = (what: string): never => {
    throw new Error(`${label}: cannot infer the architecture: ${what}`);
  };
  const width = (name: string, axis: number): number | undefined => shapes.get(name)?.shape[axis];
  let isotropic = false;
  let hasScale = false;
  let grn = false;
  const depths = [0, 0, 0, 0];
  let depth = 0;
  for (const path of shapes.keys()) {
    const where = parseLayerName(layerOfWeight(path));
    if (where?.kind !== "block") continue;
    if (where.part === "layer_scale") hasScale = true;
    if (where.part === "grn") grn = true;
    if (where.stage === undefined) {
      isotropic = true;
      depth = Math.max(depth, where.block + 1);
    } else if (where.stage < 4) {
      depths[where.stage] = Math.max(depths[where.stage], where.block + 1);
    }
  }
  if (!isotropic && depths.every((d) => d === 0)) {
    fail("no ConvNeXt blocks (stages_{i}_block_{j} or blocks_{j} weights)");
  }
  const scale = hasScale ? layerScaleInit : 0;
  // `grn` only when present, so that V1 specs keep their exact shape.
  const v2 = grn ? { grn: true } : {};
  if (isotropic) {
    const dim = width(weightPath(STEM_CONV, "kernel"), 3) ??
      width(weightPath(blockName(undefined, 0, "dwconv"), "depthwise_kernel"), 2) ??
      fail("no stem conv or first block");
    return { kind: "isotropic", depth, dim, layerScaleInit: scale, ...v2 };
  }
  const dims = [0, 1, 2, 3].map((i) =>
    (i === 0
      ? width(weightPath(STEM_CONV, "kernel"), 3)
      : width(weightPath(downsampleName(i, "conv"), "kernel"), 3)) ??
      width(weightPath(blockName(i, 0, "dwconv"), "depthwise_kernel"), 2) ??
      fail(`no width for stage ${i} (no downsample conv or blocks)`)
  );
  return {
    kind: "hierarchical",
    depths: depths as [number, number, number, number],
    dims: dims as [number, number, number, number],
    layerScaleInit: scale,
    ...v2,
  };
}

/**
 * Which ConvNeXt `source` is: the one architecture inference of the kit.
 *
 * - a model (`tf.LayersModel` built by `createConvNeXt`, loaded or converted): inferred from
 *   its weight shapes; its layer-scale value is read from its LayerScale layers;
 * - weight shapes by TF.js path (e.g. converted checkpoint weights): inferred from the
 *   shapes; blocks with `_layer_scale` weights get `layerScaleInit` 1e-6 (the value does not
 *   matter for loaded weights, only that the blocks have a gamma), blocks with `_grn`
 *   weights `grn: true` (ConvNeXt V2);
 * - an official name: its row of `ARCHITECTURES` (an unknown name is an error listing them);
 * - a spec: validated, and named when it equals an official row.
 *
 * @param label what to call the source in error messages.
 * @throws Error (one line) for an unknown name, an invalid spec, or shapes without
 *   ConvNeXt's layer names.
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { architectureOf } from "./architecture.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * await selectBackend("cpu");
 * const model = createConvNeXt("convnext_tiny", { randomInit: false });
 * const spec = { kind: "isotropic", depth: 18, dim: 384, layerScaleInit: 0 } as const;
 * console.log(architectureOf(model).name, architectureOf(spec).name);
 * // "convnext_tiny" "convnext_iso_small"
 * if (architectureOf(model).name !== "convnext_tiny") throw new Error("not inferred");
 * ```
 */
export function architectureOf(source: ArchitectureSource, label = "architecture"): Architecture {
  if (typeof source === "string") {
    if (!isArchitectureName(source)) {
      throw new Error(
        `${label}: unknown architecture "${source}"${
          didYouMean(source, ARCHITECTURE_NAMES) ||
          `; expected one of: ${ARCHITECTURE_NAMES.join(", ")}`
        }`,
      );
    }
    return { name: source, spec: ARCHITECTURES[source] };
  }
  let spec: ArchitectureSpec;
  if (isModel(source)) {
    spec = inferSpec(shapesOf(source), layerScaleInitOf(source) ?? 1e-6, `model "${source.name}"`);
    if (spec.kind === "hierarchical" && spec.depths.includes(0)) {
      throw new Error(`model "${source.name}": incomplete ConvNeXt stages (depths ${spec.depths})`);
    }
  } else if (source instanceof Map) {
    spec = inferSpec(source, 1e-6, label);
    return { name: officialName(spec) ?? CUSTOM_ARCHITECTURE, spec };
  } else {
    spec = source as ArchitectureSpec;
  }
  validateSpec(spec, label);
  return { name: officialName(spec) ?? CUSTOM_ARCHITECTURE, spec };
}

/**
 * The class count of a model (or of converted weights): the width of its classifier
 * `head_fc`, or 0 when it has none (a backbone built with `includeTop: false`, a feature
 * extractor, a checkpoint whose head was dropped). Callers that need a classifier check for
 * 0 and say so in their own words.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * import { numClasses } from "./architecture.ts";
 * await selectBackend("cpu");
 * const spec = { kind: "isotropic", depth: 1, dim: 8, layerScaleInit: 0 } as const;
 * const classifier = numClasses(createConvNeXt(spec, { numClasses: 5 }));
 * const backbone = numClasses(createConvNeXt(spec, { includeTop: false }));
 * console.log(classifier, backbone); // 5 0
 * if (classifier !== 5 || backbone !== 0) throw new Error(`${classifier} ${backbone}`);
 * ```
 */
export function numClasses(source: tf.LayersModel | WeightShapes): number {
  const kernel = shapesOf(source).get(weightPath(HEAD_FC, "kernel"))?.shape;
  return kernel ? kernel[kernel.length - 1] : 0;
}
