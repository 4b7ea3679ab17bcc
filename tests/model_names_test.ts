// The layer-naming scheme (lib/model/names.ts) and the one architecture inference / class
// count (lib/model/architecture.ts): round trips over every layer of small models, and
// inference checked against the official parameter table, not against itself.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { architectureOf, numClasses } from "../lib/model/architecture.ts";
import { attachModelConfig, modelConfig, preprocessingFor } from "../lib/model/config.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { createFeatureExtractor } from "../lib/model/features.ts";
import {
  blockName,
  downsampleName,
  HEAD_FC,
  type LayerLocation,
  layerName,
  parseLayerName,
  weightPath,
} from "../lib/model/names.ts";
import {
  ARCHITECTURE_NAMES,
  type ArchitectureName,
  type ArchitectureSpec,
} from "../lib/model/variants.ts";
import { expectedWeightShapes } from "../lib/weights/remap.ts";
import { PARAMS_1K } from "./official_counts.ts";

await tf.setBackend("cpu");

const HIER: ArchitectureSpec = {
  kind: "hierarchical",
  depths: [1, 2, 1, 1],
  dims: [8, 16, 24, 32],
  layerScaleInit: 0.5,
};
const ISO: ArchitectureSpec = { kind: "isotropic", depth: 3, dim: 16, layerScaleInit: 1e-6 };

Deno.test("names: every layer and weight of a small model round-trips name -> parse -> name", () => {
  for (const spec of [HIER, ISO, { ...HIER, layerScaleInit: 0, grn: true }]) {
    const model = createConvNeXt(spec, { numClasses: 5, dropPathRate: 0.2, randomInit: false });
    for (const layer of model.layers) {
      const where = parseLayerName(layer.name);
      assert.ok(where, `${layer.name} parses`);
      assert.equal(layerName(where), layer.name);
    }
    for (const w of model.weights) {
      const [layer, weight] = w.originalName.split("/");
      assert.equal(weightPath(layerName(parseLayerName(w.originalName)!), weight), w.originalName);
      assert.equal(parseLayerName(layer)?.kind === "input", false);
    }
    model.dispose();
  }
});

Deno.test("names: the scheme, spelled out", () => {
  const cases: [LayerLocation, string][] = [
    [{ kind: "input" }, "input"],
    [{ kind: "stem", part: "conv" }, "stem_conv"],
    [{ kind: "stem", part: "norm" }, "stem_norm"],
    [{ kind: "downsample", stage: 3, part: "norm" }, "stages_3_downsample_norm"],
    [{ kind: "downsample", stage: 1, part: "conv" }, "stages_1_downsample_conv"],
    [{ kind: "block", stage: 2, block: 26 }, "stages_2_block_26"],
    [{ kind: "block", stage: 0, block: 0, part: "pwconv1" }, "stages_0_block_0_pwconv1"],
    [{ kind: "block", stage: 1, block: 2, part: "layer_scale" }, "stages_1_block_2_layer_scale"],
    [{ kind: "block", stage: 3, block: 1, part: "grn" }, "stages_3_block_1_grn"],
    [{ kind: "block", block: 17 }, "blocks_17"],
    [{ kind: "block", block: 3, part: "drop_path" }, "blocks_3_drop_path"],
    [{ kind: "head", part: "pool" }, "head_pool"],
    [{ kind: "head", part: "norm" }, "head_norm"],
    [{ kind: "head", part: "fc" }, "head_fc"],
  ];
  for (const [where, name] of cases) {
    assert.equal(layerName(where), name);
    assert.deepEqual(parseLayerName(name), where);
  }
  assert.equal(blockName(2, 5, "dwconv"), "stages_2_block_5_dwconv");
  assert.equal(blockName(undefined, 4), "blocks_4");
  assert.equal(downsampleName(2, "conv"), "stages_2_downsample_conv");
  assert.equal(weightPath(HEAD_FC, "kernel"), "head_fc/kernel");
  assert.deepEqual(parseLayerName("stages_0_block_1_grn/beta"), {
    kind: "block",
    stage: 0,
    block: 1,
    part: "grn",
  });
  assert.deepEqual(parseLayerName("stages_2_block_7_pwconv1/kernel"), {
    kind: "block",
    stage: 2,
    block: 7,
    part: "pwconv1",
  });
  for (const other of ["features", "head", "stages_1_block_x", "blocks_01", "stem_conv2", ""]) {
    assert.equal(parseLayerName(other), undefined, other);
  }
  assert.throws(() => blockName(-1, 0), RangeError);
});

// The architecture table of the paper (Liu et al. 2022, section 2.6 and appendix A).
const PAPER: Record<ArchitectureName, string> = {
  convnext_tiny: "C=(96,192,384,768) B=(3,3,9,3)",
  convnext_small: "C=(96,192,384,768) B=(3,3,27,3)",
  convnext_base: "C=(128,256,512,1024) B=(3,3,27,3)",
  convnext_large: "C=(192,384,768,1536) B=(3,3,27,3)",
  convnext_xlarge: "C=(256,512,1024,2048) B=(3,3,27,3)",
  convnext_iso_small: "C=384 B=18",
  convnext_iso_base: "C=768 B=18",
  convnext_iso_large: "C=1024 B=36",
  // timm's small sizes, and ConvNeXt V2 (Woo et al. 2023, table of model sizes): GRN blocks.
  convnext_atto: "C=(40,80,160,320) B=(2,2,6,2)",
  convnext_femto: "C=(48,96,192,384) B=(2,2,6,2)",
  convnext_pico: "C=(64,128,256,512) B=(2,2,6,2)",
  convnext_nano: "C=(80,160,320,640) B=(2,2,8,2)",
  convnextv2_atto: "C=(40,80,160,320) B=(2,2,6,2) GRN",
  convnextv2_femto: "C=(48,96,192,384) B=(2,2,6,2) GRN",
  convnextv2_pico: "C=(64,128,256,512) B=(2,2,6,2) GRN",
  convnextv2_nano: "C=(80,160,320,640) B=(2,2,8,2) GRN",
  convnextv2_tiny: "C=(96,192,384,768) B=(3,3,9,3) GRN",
  convnextv2_base: "C=(128,256,512,1024) B=(3,3,27,3) GRN",
  convnextv2_large: "C=(192,384,768,1536) B=(3,3,27,3) GRN",
  convnextv2_huge: "C=(352,704,1408,2816) B=(3,3,27,3) GRN",
};

function describe(spec: ArchitectureSpec): string {
  const text = spec.kind === "hierarchical"
    ? `C=(${spec.dims}) B=(${spec.depths})`
    : `C=${spec.dim} B=${spec.depth}`;
  return spec.grn ? `${text} GRN` : text;
}

Deno.test("architectureOf: weight shapes with the official parameter counts give the paper's architectures", () => {
  for (const name of ARCHITECTURE_NAMES) {
    const shapes = new Map(
      [...expectedWeightShapes(architectureOf(name).spec, 1000)].map(([k, shape]) => [
        k,
        { shape },
      ]),
    );
    const params = [...shapes.values()].reduce(
      (n, { shape }) => n + shape.reduce((a, b) => a * b),
      0,
    );
    assert.equal(params, PARAMS_1K[name], `${name}: parameter count`);
    const got = architectureOf(shapes);
    assert.equal(got.name, name);
    assert.equal(describe(got.spec), PAPER[name]);
    assert.equal(numClasses(shapes), 1000);
  }
});

Deno.test("architectureOf: models, names and specs; numClasses: the head's width or 0", () => {
  const tiny = createConvNeXt("convnext_tiny", { randomInit: false });
  assert.equal(architectureOf(tiny).name, "convnext_tiny");
  assert.equal(describe(architectureOf(tiny).spec), PAPER.convnext_tiny);
  assert.equal(numClasses(tiny), 1000);
  tiny.dispose();

  const hier = createConvNeXt(HIER, { numClasses: 7, randomInit: false });
  assert.deepEqual(architectureOf(hier), { name: "convnext_custom", spec: HIER });
  assert.equal(numClasses(hier), 7);
  const features = createFeatureExtractor(hier);
  assert.equal(numClasses(features), 0);
  hier.dispose();

  const iso = createConvNeXt(ISO, { includeTop: false, randomInit: false });
  assert.deepEqual(architectureOf(iso).spec, ISO);
  assert.equal(numClasses(iso), 0);
  iso.dispose();
  const noScale = createConvNeXt({ ...ISO, layerScaleInit: 0 }, { randomInit: false });
  assert.equal(architectureOf(noScale).spec.layerScaleInit, 0);
  noScale.dispose();

  assert.equal(
    architectureOf({ kind: "isotropic", depth: 18, dim: 384, layerScaleInit: 0 }).name,
    "convnext_iso_small",
  );
  assert.throws(() => architectureOf("convnext_huge"), /unknown architecture "convnext_huge"/);
  assert.throws(
    () =>
      architectureOf({ kind: "hierarchical", depths: [1, 1, 1], dims: [8, 16, 32, 64] } as never),
    /4 positive integer depths/,
  );
  const other = tf.sequential({ layers: [tf.layers.dense({ units: 3, inputShape: [4] })] });
  assert.throws(() => architectureOf(other), /cannot infer the architecture/);
  assert.equal(numClasses(other), 0);
  other.dispose();
});

Deno.test("modelConfig: stored when attached, else derived from the model", () => {
  const model = createConvNeXt(HIER, { numClasses: 1000, randomInit: false });
  const derived = modelConfig(model);
  assert.equal(derived.architecture, "convnext_custom");
  assert.deepEqual(derived.spec, HIER);
  assert.equal(derived.numClasses, 1000);
  assert.equal(derived.labels, "imagenet-1k");
  assert.deepEqual(derived.preprocessing, preprocessingFor(224));
  model.setUserDefinedMetadata({ classes: ["a"] });
  attachModelConfig(model, { ...derived, preprocessing: preprocessingFor(384), license: "MIT" });
  assert.equal(modelConfig(model).preprocessing.mode, "warp");
  assert.equal(modelConfig(model).license, "MIT");
  assert.deepEqual((model.getUserDefinedMetadata() as { classes: string[] }).classes, ["a"]);
  model.dispose();
  const fixed = createConvNeXt(ISO, { inputShape: [64, 64, 3], numClasses: 3, randomInit: false });
  assert.equal(modelConfig(fixed).preprocessing.size, 64);
  assert.equal(modelConfig(fixed).labels, null);
  fixed.dispose();
});
