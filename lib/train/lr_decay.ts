/**
 * Parameter groups as the official ConvNeXt optimizer factories build them
 * (facebookresearch/ConvNeXt and ConvNeXt-V2 `optim_factory.py`): no weight decay on 1-D
 * parameters, biases, layer-scale gammas and GRN's gamma/beta, and the layer-wise
 * learning-rate decay of `get_num_layer_for_convnext` ("group": 12 layer groups plus the
 * head) or V2's `get_num_layer_for_convnext_single` ("single": one layer per block), on this
 * port's layer names.
 *
 * @module
 */
import { OptionError } from "../util/errors.ts";
import { parseLayerName } from "../model/names.ts";

/** Layer groups of the official layer decay (`num_layers` in main.py). */
export const CONVNEXT_NUM_LAYERS = 12;

/**
 * The official `get_num_layer_for_convnext` on a weight name of this port
 * (`<layer>/<weight>`):
 *
 * - stem (`stem_conv`, `stem_norm`; officially `downsample_layers.0`): 0;
 * - `stages_{i}_downsample_*` (officially `downsample_layers.i`): i + 1 for i = 1, 2; 12 for 3;
 * - `stages_{i}_block_{j}_*`: i + 1 for stages 0 and 1; 3 + floor(j / 3) for stage 2
 *   (blocks grouped by three); 12 for stage 3;
 * - anything else (`head_norm`, `head_fc`): 13.
 *
 * @throws Error for isotropic names (`blocks_{j}_*`): the official code defines layer decay
 *   for the hierarchical models only.
 * @example
 * ```ts
 * convnextLayerId("stages_2_block_7_pwconv1/kernel"); // 5
 * convnextLayerId("head_fc/bias"); // 13
 * ```
 */
export function convnextLayerId(weightName: string): number {
  const where = parseLayerName(weightName);
  if (where?.kind === "stem") return 0;
  if (where?.kind === "downsample") return where.stage === 3 ? 12 : where.stage + 1;
  if (where?.kind === "block" && where.stage !== undefined) {
    if (where.stage === 0 || where.stage === 1) return where.stage + 1;
    if (where.stage === 2) return 3 + Math.floor(where.block / 3);
    return 12;
  }
  if (where?.kind === "block") {
    throw new OptionError(
      "layerDecay",
      (name) =>
        `layer decay: "${weightName}" belongs to an isotropic ConvNeXt; the official layer decay is defined for the hierarchical models only (use ${
          name("layerDecay", 1)
        })`,
    );
  }
  return CONVNEXT_NUM_LAYERS + 1;
}

/**
 * ConvNeXt-V2's `get_num_layer_for_convnext_single` (the "single" layer decay, V2's default):
 * every block its own layer, counted through the stages with `depths`:
 *
 * - the stem (officially `downsample_layers.0`) and `stages_{i}_downsample_*`:
 *   sum(depths[:i]) + 1 (the stem shares layer 1 with the first block, as officially);
 * - `stages_{i}_block_{j}_*`: sum(depths[:i]) + j + 1;
 * - anything else (`head_norm`, `head_fc`): sum(depths) + 1.
 *
 * @throws Error for isotropic names, as {@link convnextLayerId}.
 * @example
 * ```ts
 * convnextLayerIdSingle("stages_2_block_7_pwconv1/kernel", [2, 2, 6, 2]); // 12
 * convnextLayerIdSingle("head_fc/bias", [2, 2, 6, 2]); // 13
 * ```
 */
export function convnextLayerIdSingle(weightName: string, depths: readonly number[]): number {
  const where = parseLayerName(weightName);
  const before = (stage: number) => depths.slice(0, stage).reduce((a, b) => a + b, 0);
  if (where?.kind === "stem") return 1;
  if (where?.kind === "downsample") return before(where.stage) + 1;
  if (where?.kind === "block" && where.stage !== undefined) {
    return before(where.stage) + where.block + 1;
  }
  if (where?.kind === "block") convnextLayerId(weightName); // the isotropic error
  return before(depths.length) + 1;
}

/** The two official layer decays: 12 groups of blocks (V1, V2's base/large recipes) or one per block (V2's default). */
export type LayerDecayType = "group" | "single";

/**
 * The official per-layer learning-rate scales:
 * `[decay ** (numLayers + 1 - i) for i in range(numLayers + 2)]`.
 *
 * @example
 * ```ts
 * layerScales(0.8)[13]; // 1 (head)
 * layerScales(0.8)[0]; // 0.8 ** 13 (stem)
 * ```
 */
export function layerScales(decay: number, numLayers = CONVNEXT_NUM_LAYERS): number[] {
  return Array.from({ length: numLayers + 2 }, (_, i) => decay ** (numLayers + 1 - i));
}

/** True for weights the official factory exempts from weight decay. */
export function isNoDecay(weightName: string, shape: readonly number[]): boolean {
  // GRN's gamma/beta are 1-D here ([1,1,1,C] officially: V2's "Fix gamma/beta wd" commit).
  return shape.length === 1 || /\/(bias|gamma|beta)$/.test(weightName);
}

/** One weight's optimizer settings. */
export interface ParamSetting {
  /** Weight decay coefficient (0 for no-decay weights). */
  weightDecay: number;
  /** Factor on the scheduled learning rate. */
  lrScale: number;
  /** Official layer id (only with layer decay). */
  layerId?: number;
  /** Group name as the official factory prints it (`layer_3_decay`, `no_decay`, ...). */
  group: string;
}

/** Options of {@link paramSettings}. */
export interface ParamSettingsOptions {
  /** Weight decay of the decayed weights (official default 0.05). */
  weightDecay: number;
  /** Layer-wise lr decay; 1 (default) turns it off, as the official `--layer_decay 1.0`. */
  layerDecay?: number;
  /** Which layer decay (`--layer_decay_type`); default "group". "single" needs `depths`. */
  layerDecayType?: LayerDecayType;
  /** The stages' depths of a hierarchical model (for the "single" layer decay). */
  depths?: readonly number[];
}

/**
 * Weight decay and lr scale for one weight, as `get_parameter_groups` decides them.
 *
 * @example
 * ```ts
 * paramSettings("stages_0_block_0_layer_scale/gamma", [96], { weightDecay: 0.05, layerDecay: 0.8 });
 * // { weightDecay: 0, lrScale: 0.8 ** 12, layerId: 1, group: "layer_1_no_decay" }
 * ```
 */
export function paramSettings(
  weightName: string,
  shape: readonly number[],
  options: ParamSettingsOptions,
): ParamSetting {
  const noDecay = isNoDecay(weightName, shape);
  const weightDecay = noDecay ? 0 : options.weightDecay;
  const base = noDecay ? "no_decay" : "decay";
  const decay = options.layerDecay ?? 1;
  if (decay === 1) return { weightDecay, lrScale: 1, group: base };
  if (!(decay > 0)) throw new RangeError(`layer decay must be > 0, got ${decay}`);
  const single = options.layerDecayType === "single";
  if (single && !options.depths) throw new Error(`the "single" layer decay needs depths`);
  const layerId = single
    ? convnextLayerIdSingle(weightName, options.depths!)
    : convnextLayerId(weightName);
  const numLayers = single ? options.depths!.reduce((a, b) => a + b, 0) : CONVNEXT_NUM_LAYERS;
  return {
    weightDecay,
    lrScale: layerScales(decay, numLayers)[layerId],
    layerId,
    group: `layer_${layerId}_${base}`,
  };
}
