/**
 * The ConvNeXt architectures of the official release, declared as data.
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
}

/** Either kind of ConvNeXt architecture. */
export type ArchitectureSpec = HierarchicalSpec | IsotropicSpec;

/**
 * Every architecture of the official release (facebookresearch/ConvNeXt,
 * `models/convnext.py` and `models/convnext_isotropic.py`).
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
} as const satisfies Record<string, ArchitectureSpec>;

/** Name of an official architecture, e.g. `"convnext_tiny"`. */
export type ArchitectureName = keyof typeof ARCHITECTURES;

/** All official architecture names, in table order. */
export const ARCHITECTURE_NAMES: readonly ArchitectureName[] = Object.keys(
  ARCHITECTURES,
) as ArchitectureName[];

/** True when `name` is one of {@link ARCHITECTURE_NAMES}. */
export function isArchitectureName(name: string): name is ArchitectureName {
  return Object.hasOwn(ARCHITECTURES, name);
}
