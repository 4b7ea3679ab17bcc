/**
 * The ConvNeXt architectures, declared as data: the official V1 release, timm's small V1
 * sizes (atto..nano) and ConvNeXt V2 (atto..huge).
 *
 * One table, like timm's `model_args` per variant, so that construction, weight
 * conversion (architecture inference) and documentation all read the same facts.
 *
 * @module
 */

/** A hierarchical ConvNeXt (four stages with downsampling between them). */
export interface HierarchicalSpec {
  /** Discriminant: four stages with downsampling. */
  readonly kind: "hierarchical";
  /** Number of blocks in each of the four stages. */
  readonly depths: readonly [number, number, number, number];
  /** Channel width of each of the four stages. */
  readonly dims: readonly [number, number, number, number];
  /** Default layer-scale init; > 0 means every block has a `gamma`. */
  readonly layerScaleInit: number;
  /**
   * Global Response Normalization after the GELU of every block (ConvNeXt V2). Absent or
   * false: the V1 block.
   */
  readonly grn?: boolean;
}

/** An isotropic ConvNeXt (a 16x16 patchify stem, then blocks of one width). */
export interface IsotropicSpec {
  /** Discriminant: one stage at a single resolution. */
  readonly kind: "isotropic";
  /** Number of blocks. */
  readonly depth: number;
  /** Channel width of every block. */
  readonly dim: number;
  /** Default layer-scale init; 0 means the blocks have no `gamma` (iso small/base). */
  readonly layerScaleInit: number;
  /** Global Response Normalization in every block, as ConvNeXt V2 (no official model). */
  readonly grn?: boolean;
}

/** Either kind of ConvNeXt architecture. */
export type ArchitectureSpec = HierarchicalSpec | IsotropicSpec;

/**
 * Every architecture of the official V1 release (facebookresearch/ConvNeXt,
 * `models/convnext.py` and `models/convnext_isotropic.py`), timm's small V1 sizes
 * (`timm/models/convnext.py`: `convnext_atto` .. `convnext_nano`) and ConvNeXt V2
 * (facebookresearch/ConvNeXt-V2, `models/convnextv2.py`).
 *
 * timm builds its small V1 sizes with `conv_mlp=True`: 1x1 convolutions and a channels-first
 * LayerNorm, which compute exactly what the Linear layers and channels-last LayerNorm of the
 * official block do; layer scale is timm's default (1e-6), the head pools then normalizes.
 * V2 drops layer scale and adds GRN (the official file names the pico builder
 * `convnext_pico`; timm and transformers call it `convnextv2_pico`, as here).
 *
 * @example
 * ```ts
 * import { ARCHITECTURES } from "./variants.ts";
 * console.log(ARCHITECTURES.convnext_tiny.depths); // [3, 3, 9, 3]
 * ```
 */
export const ARCHITECTURES = {
  convnext_tiny: {
    kind: "hierarchical",
    depths: [3, 3, 9, 3],
    dims: [96, 192, 384, 768],
    layerScaleInit: 1e-6,
  },
  convnext_small: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [96, 192, 384, 768],
    layerScaleInit: 1e-6,
  },
  convnext_base: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [128, 256, 512, 1024],
    layerScaleInit: 1e-6,
  },
  convnext_large: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [192, 384, 768, 1536],
    layerScaleInit: 1e-6,
  },
  convnext_xlarge: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [256, 512, 1024, 2048],
    layerScaleInit: 1e-6,
  },
  convnext_iso_small: { kind: "isotropic", depth: 18, dim: 384, layerScaleInit: 0 },
  convnext_iso_base: { kind: "isotropic", depth: 18, dim: 768, layerScaleInit: 0 },
  // The released iso-large checkpoint carries `blocks.N.gamma`, so layer scale is on.
  convnext_iso_large: { kind: "isotropic", depth: 36, dim: 1024, layerScaleInit: 1e-6 },
  // timm's small V1 sizes.
  convnext_atto: {
    kind: "hierarchical",
    depths: [2, 2, 6, 2],
    dims: [40, 80, 160, 320],
    layerScaleInit: 1e-6,
  },
  convnext_femto: {
    kind: "hierarchical",
    depths: [2, 2, 6, 2],
    dims: [48, 96, 192, 384],
    layerScaleInit: 1e-6,
  },
  convnext_pico: {
    kind: "hierarchical",
    depths: [2, 2, 6, 2],
    dims: [64, 128, 256, 512],
    layerScaleInit: 1e-6,
  },
  convnext_nano: {
    kind: "hierarchical",
    depths: [2, 2, 8, 2],
    dims: [80, 160, 320, 640],
    layerScaleInit: 1e-6,
  },
  // ConvNeXt V2.
  convnextv2_atto: {
    kind: "hierarchical",
    depths: [2, 2, 6, 2],
    dims: [40, 80, 160, 320],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_femto: {
    kind: "hierarchical",
    depths: [2, 2, 6, 2],
    dims: [48, 96, 192, 384],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_pico: {
    kind: "hierarchical",
    depths: [2, 2, 6, 2],
    dims: [64, 128, 256, 512],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_nano: {
    kind: "hierarchical",
    depths: [2, 2, 8, 2],
    dims: [80, 160, 320, 640],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_tiny: {
    kind: "hierarchical",
    depths: [3, 3, 9, 3],
    dims: [96, 192, 384, 768],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_base: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [128, 256, 512, 1024],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_large: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [192, 384, 768, 1536],
    layerScaleInit: 0,
    grn: true,
  },
  convnextv2_huge: {
    kind: "hierarchical",
    depths: [3, 3, 27, 3],
    dims: [352, 704, 1408, 2816],
    layerScaleInit: 0,
    grn: true,
  },
} as const satisfies Record<string, ArchitectureSpec>;

/** Name of an official architecture, e.g. `"convnext_tiny"` or `"convnextv2_tiny"`. */
export type ArchitectureName = keyof typeof ARCHITECTURES;

/** All official architecture names, in table order. */
export const ARCHITECTURE_NAMES: readonly ArchitectureName[] = Object.keys(
  ARCHITECTURES,
) as ArchitectureName[];

/** True when `name` is one of {@link ARCHITECTURE_NAMES}. */
export function isArchitectureName(name: string): name is ArchitectureName {
  return Object.hasOwn(ARCHITECTURES, name);
}

/**
 * True when blocks of `spec` have Global Response Normalization (ConvNeXt V2).
 *
 * @example
 * ```ts
 * import { ARCHITECTURES, hasGrn } from "./variants.ts";
 * console.log(hasGrn(ARCHITECTURES.convnextv2_tiny), hasGrn(ARCHITECTURES.convnext_tiny));
 * // true false
 * ```
 */
export function hasGrn(spec: ArchitectureSpec): boolean {
  return spec.grn === true;
}
