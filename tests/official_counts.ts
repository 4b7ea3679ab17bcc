// The official parameter counts of every architecture with a 1000-class head, copied from
// their sources (facebookresearch/ConvNeXt's model zoo; timm/models/convnext.py for the small
// V1 sizes; facebookresearch/ConvNeXt-V2's models/convnextv2.py), never computed here.
import type { ArchitectureName } from "../lib/model/variants.ts";

/** Parameters of each architecture with a 1000-class head. */
export const PARAMS_1K: Readonly<Record<ArchitectureName, number>> = {
  convnext_tiny: 28_589_128,
  convnext_small: 50_223_688,
  convnext_base: 88_591_464,
  convnext_large: 197_767_336,
  convnext_xlarge: 350_196_968,
  convnext_iso_small: 22_308_712,
  convnext_iso_base: 87_083_752,
  convnext_iso_large: 305_942_504,
  // timm's small V1 sizes and ConvNeXt V2 (its official models/convnextv2.py), 1000 classes.
  convnext_atto: 3_695_520,
  convnext_femto: 5_217_784,
  convnext_pico: 9_045_672,
  convnext_nano: 15_593_560,
  convnextv2_atto: 3_708_400,
  convnextv2_femto: 5_233_240,
  convnextv2_pico: 9_066_280,
  convnextv2_nano: 15_623_800,
  convnextv2_tiny: 28_635_496,
  convnextv2_base: 88_717_800,
  convnextv2_large: 197_956_840,
  convnextv2_huge: 660_289_640,
};
