// State-dict conversion: every layout's fixture (written from real PyTorch modules by
// tools/fixtures/make_checkpoints.py) maps to our TF.js names with the right layouts;
// architecture inference; strict errors; dropping the head.

import assert from "node:assert/strict";
import { architectureOf, numClasses } from "../lib/model/architecture.ts";
import { ARCHITECTURE_NAMES, ARCHITECTURES } from "../lib/model/variants.ts";
import {
  compareWeights,
  detectLayout,
  expectedWeightShapes,
  remapStateDict,
} from "../lib/weights/remap.ts";
import { readStateDict } from "../lib/weights/state_dict.ts";
import type { StateDict, TensorData } from "../lib/weights/types.ts";
import { transpose } from "../lib/weights/transpose.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);
const path = (f: string) => new URL(f, DIR).pathname;
const { models } = JSON.parse(await Deno.readTextFile(new URL("models.json", DIR))) as {
  models: {
    name: string;
    file: string;
    layout: string;
    spec: Record<string, unknown>;
    numClasses: number;
  }[];
};

/** Element of a row-major tensor at a multi-index, computed independently of transpose(). */
function at(t: { shape: readonly number[]; data: Float32Array }, idx: number[]): number {
  let o = 0;
  for (let d = 0; d < idx.length; d++) o = o * t.shape[d] + idx[d];
  return t.data[o];
}

// Which source key holds each converted weight, per layout (spot checks of the mapping).
const SOURCES: Record<string, Record<string, string>> = {
  official: {
    "stem_conv/kernel": "downsample_layers.0.0.weight",
    "stem_norm/gamma": "downsample_layers.0.1.weight",
    "stages_2_downsample_norm/beta": "downsample_layers.2.0.bias",
    "stages_2_downsample_conv/kernel": "downsample_layers.2.1.weight",
    "stages_2_block_1_dwconv/depthwise_kernel": "stages.2.1.dwconv.weight",
    "stages_2_block_1_pwconv1/kernel": "stages.2.1.pwconv1.weight",
    "stages_3_block_0_pwconv2/bias": "stages.3.0.pwconv2.bias",
    "stages_1_block_0_layer_scale/gamma": "stages.1.0.gamma",
    "head_norm/gamma": "norm.weight",
    "head_fc/kernel": "head.weight",
  },
  torchvision: {
    "stem_conv/kernel": "features.0.0.weight",
    "stem_norm/gamma": "features.0.1.weight",
    "stages_2_downsample_norm/beta": "features.4.0.bias",
    "stages_2_downsample_conv/kernel": "features.4.1.weight",
    "stages_2_block_1_dwconv/depthwise_kernel": "features.5.1.block.0.weight",
    "stages_2_block_1_pwconv1/kernel": "features.5.1.block.3.weight",
    "stages_3_block_0_pwconv2/bias": "features.7.0.block.5.bias",
    "stages_1_block_0_layer_scale/gamma": "features.3.0.layer_scale",
    "head_norm/gamma": "classifier.0.weight",
    "head_fc/kernel": "classifier.2.weight",
  },
  timm: {
    "stem_conv/kernel": "stem.0.weight",
    "stem_norm/gamma": "stem.1.weight",
    "stages_2_downsample_norm/beta": "stages.2.downsample.0.bias",
    "stages_2_downsample_conv/kernel": "stages.2.downsample.1.weight",
    "stages_2_block_1_dwconv/depthwise_kernel": "stages.2.blocks.1.conv_dw.weight",
    "stages_2_block_1_pwconv1/kernel": "stages.2.blocks.1.mlp.fc1.weight",
    "stages_3_block_0_pwconv2/bias": "stages.3.blocks.0.mlp.fc2.bias",
    "stages_1_block_0_layer_scale/gamma": "stages.1.blocks.0.gamma",
    "head_norm/gamma": "head.norm.weight",
    "head_fc/kernel": "head.fc.weight",
  },
  huggingface: {
    "stem_conv/kernel": "convnext.embeddings.patch_embeddings.weight",
    "stem_norm/gamma": "convnext.embeddings.layernorm.weight",
    "stages_2_downsample_norm/beta": "convnext.encoder.stages.2.downsampling_layer.0.bias",
    "stages_2_downsample_conv/kernel": "convnext.encoder.stages.2.downsampling_layer.1.weight",
    "stages_2_block_1_dwconv/depthwise_kernel": "convnext.encoder.stages.2.layers.1.dwconv.weight",
    "stages_2_block_1_pwconv1/kernel": "convnext.encoder.stages.2.layers.1.pwconv1.weight",
    "stages_3_block_0_pwconv2/bias": "convnext.encoder.stages.3.layers.0.pwconv2.bias",
    "stages_1_block_0_layer_scale/gamma":
      "convnext.encoder.stages.1.layers.0.layer_scale_parameter",
    "head_norm/gamma": "convnext.layernorm.weight",
    "head_fc/kernel": "classifier.weight",
  },
};

/** Checks that `ours` is `src` in TF.js layout, element by element. */
function assertConverted(
  name: string,
  ours: { shape: number[]; data: Float32Array },
  src: TensorData,
): void {
  if (name.endsWith("/depthwise_kernel")) {
    const [c, , kh, kw] = src.shape;
    assert.deepEqual(ours.shape, [kh, kw, c, 1], name);
    for (let h = 0; h < kh; h++) {
      for (let w = 0; w < kw; w++) {
        for (let k = 0; k < c; k++) {
          assert.equal(at(ours, [h, w, k, 0]), at(src, [k, 0, h, w]), name);
        }
      }
    }
  } else if (name.endsWith("/kernel") && src.shape.length === 4) {
    const [o, i, kh, kw] = src.shape;
    assert.deepEqual(ours.shape, [kh, kw, i, o], name);
    for (let h = 0; h < kh; h++) {
      for (let w = 0; w < kw; w++) {
        for (let a = 0; a < i; a++) {
          for (let b = 0; b < o; b++) {
            assert.equal(at(ours, [h, w, a, b]), at(src, [b, a, h, w]), name);
          }
        }
      }
    }
  } else if (name.endsWith("/kernel")) {
    const [o, i] = src.shape;
    assert.deepEqual(ours.shape, [i, o], name);
    for (let a = 0; a < i; a++) {
      for (let b = 0; b < o; b++) assert.equal(at(ours, [a, b]), at(src, [b, a]), name);
    }
  } else {
    assert.deepEqual(ours.shape, [src.shape[0]], name); // (C, 1, 1) layer scale -> (C)
    assert.deepEqual(ours.data, src.data, name);
  }
}

for (const m of models) {
  Deno.test(`remap: ${m.name} (${m.layout}): names, layouts, architecture`, async () => {
    const sd = await readStateDict(path(m.file));
    const c = remapStateDict(sd);
    assert.equal(c.layout, m.layout);
    assert.equal(c.numClasses, m.numClasses);
    assert.equal(c.architecture, undefined); // tiny test sizes are not official
    const s = m.spec;
    if (s.kind === "hierarchical") {
      assert.deepEqual(c.spec, {
        kind: "hierarchical",
        depths: s.depths,
        dims: s.dims,
        layerScaleInit: s.layerScale ? 1e-6 : 0,
      });
    } else {
      assert.deepEqual(c.spec, {
        kind: "isotropic",
        depth: s.depth,
        dim: s.dim,
        layerScaleInit: s.layerScale ? 1e-6 : 0,
      });
    }
    // Exactly the model's weights, in model order, with the model's shapes.
    const expected = expectedWeightShapes(c.spec, m.numClasses);
    assert.deepEqual([...c.weights.keys()], [...expected.keys()]);
    for (const [name, shape] of expected) assert.deepEqual(c.weights.get(name)!.shape, shape, name);
    assert.equal(c.weights.size, sd.size);
    if (s.kind === "hierarchical") {
      for (const [ours, key] of Object.entries(SOURCES[m.layout])) {
        if (!s.layerScale && ours.includes("layer_scale")) continue;
        assertConverted(ours, c.weights.get(ours)!, sd.get(key)!);
      }
    } else {
      assertConverted(
        "stem_conv/kernel",
        c.weights.get("stem_conv/kernel")!,
        sd.get("stem.weight")!,
      );
      assertConverted(
        "blocks_1_dwconv/depthwise_kernel",
        c.weights.get("blocks_1_dwconv/depthwise_kernel")!,
        sd.get("blocks.1.dwconv.weight")!,
      );
      assertConverted(
        "blocks_1_pwconv2/kernel",
        c.weights.get("blocks_1_pwconv2/kernel")!,
        sd.get("blocks.1.pwconv2.weight")!,
      );
      assert.equal(c.weights.has("blocks_0_layer_scale/gamma"), s.layerScale);
    }
  });
}

Deno.test("remap: strict mode lists every missing, unexpected and mis-shaped weight in one error", async () => {
  const sd: StateDict = new Map(await readStateDict(path("official_tiny.pth")));
  sd.delete("stages.2.1.norm.bias");
  sd.delete("norm.weight");
  sd.set("stages.9.0.foo", { dtype: "float32", shape: [1], data: new Float32Array(1) });
  sd.set("num_batches_tracked", { dtype: "int64", shape: [], data: new Float32Array(1) });
  const b = sd.get("stages.0.0.pwconv1.bias")!;
  sd.set("stages.0.0.pwconv1.bias", { ...b, shape: [b.shape[0] - 1], data: b.data.subarray(1) });
  assert.throws(() => remapStateDict(sd, { label: "x.pth" }), (e: Error) => {
    assert.match(e.message, /^x\.pth \(official layout\): weights do not match the model/);
    assert.match(e.message, /missing 2: stages_2_block_1_norm\/beta, head_norm\/gamma/);
    assert.match(e.message, /unexpected 2: stages\.9\.0\.foo, num_batches_tracked/);
    assert.match(
      e.message,
      /shape mismatch 1: stages_0_block_0_pwconv1\/bias: \[31\] vs expected \[32\]/,
    );
    return true;
  });
  // Non-strict: converts what it can and reports the keys it ignored.
  const loose = remapStateDict(sd, { strict: false });
  assert.deepEqual(loose.ignored, ["stages.9.0.foo", "num_batches_tracked"]);
  assert.ok(!loose.weights.has("head_norm/gamma"));
});

Deno.test("remap: dropHead removes head_fc only; a given architecture is checked", async () => {
  const sd = await readStateDict(path("official_tiny.pth"));
  const c = remapStateDict(sd, { dropHead: true });
  assert.equal(c.numClasses, 0);
  assert.equal(c.checkpointClasses, 10);
  assert.ok(!c.weights.has("head_fc/kernel") && !c.weights.has("head_fc/bias"));
  assert.ok(c.weights.has("head_norm/gamma"));
  assert.equal(c.weights.size, sd.size - 2);
  assert.throws(
    () => remapStateDict(sd, { architecture: "convnext_tiny" }),
    /missing \d+: stages_0_block_1_dwconv\/depthwise_kernel.*shape mismatch \d+: stem_conv\/kernel: \[4,4,3,8\] vs expected \[4,4,3,96\]/,
  );
  assert.throws(
    () => remapStateDict(sd, { architecture: "vit_huge" as "convnext_tiny" }),
    /unknown architecture "vit_huge"; expected one of: convnext_tiny, /,
  );
});

Deno.test("remap: DistributedDataParallel 'module.' prefix is stripped", async () => {
  const sd = await readStateDict(path("official_iso_gamma.pth"));
  const prefixed: StateDict = new Map([...sd].map(([k, v]) => [`module.${k}`, v]));
  assert.deepEqual([...remapStateDict(prefixed).weights.keys()], [
    ...remapStateDict(sd).weights.keys(),
  ]);
});

Deno.test("remap: layout detection", () => {
  assert.equal(detectLayout(["features.0.0.weight", "classifier.2.bias"]), "torchvision");
  assert.equal(detectLayout(["downsample_layers.0.0.weight", "head.weight"]), "official");
  assert.equal(detectLayout(["stem.weight", "blocks.0.dwconv.weight"]), "official");
  assert.equal(
    detectLayout(["stem.0.weight", "stages.0.blocks.0.conv_dw.weight", "head.fc.weight"]),
    "timm",
  );
  assert.equal(
    detectLayout(["embeddings.patch_embeddings.weight", "layernorm.bias"]),
    "huggingface",
  );
  // ConvNeXt V2 in each layout (key names of the official, timm, transformers and FCMAE code).
  assert.equal(
    detectLayout(["downsample_layers.0.0.weight", "stages.0.0.grn.gamma", "stages.0.0.grn.beta"]),
    "official",
  );
  assert.equal(
    detectLayout(["stem.0.weight", "stages.0.blocks.0.mlp.grn.weight", "head.fc.weight"]),
    "timm",
  );
  assert.equal(
    detectLayout([
      "convnextv2.embeddings.patch_embeddings.weight",
      "convnextv2.encoder.stages.0.layers.0.grn.weight",
      "classifier.weight",
    ]),
    "huggingface",
  );
  assert.equal(
    detectLayout([
      "encoder.downsample_layers.0.0.weight",
      "encoder.stages.0.0.dwconv.kernel",
      "encoder.stages.0.0.norm.ln.weight",
      "encoder.stages.0.0.pwconv1.linear.weight",
      "encoder.stages.0.0.grn.gamma",
      "decoder.0.dwconv.weight",
      "mask_token",
    ]),
    "fcmae",
  );
  // Hugging Face's V1 model without its prefix is no FCMAE encoder (`layers` level).
  assert.equal(detectLayout(["encoder.stages.0.layers.0.dwconv.weight"]), "huggingface");
  assert.throws(
    () => detectLayout(["fc.weight", "conv1.weight"], "resnet.pth"),
    /resnet\.pth: unrecognised ConvNeXt key layout \(first keys: fc\.weight, conv1\.weight\)/,
  );
});

Deno.test("remap: every official architecture is inferred back from its weight shapes", () => {
  for (const name of ARCHITECTURE_NAMES) {
    const spec = ARCHITECTURES[name];
    const weights = new Map(
      [...expectedWeightShapes(spec, 1000)].map((
        [n, shape],
      ) => [n, { shape, data: new Float32Array(0) }]),
    );
    const got = architectureOf(weights);
    assert.equal(got.name, name);
    assert.equal(numClasses(weights), 1000);
    assert.equal(architectureOf(spec).name, name);
  }
  // iso-large's layer scale is part of its identity.
  assert.equal(
    architectureOf({ ...ARCHITECTURES.convnext_iso_large, layerScaleInit: 0 }).name,
    "convnext_custom",
  );
  const tiny = expectedWeightShapes(ARCHITECTURES.convnext_tiny, 1000);
  assert.deepEqual(tiny.get("stem_conv/kernel"), [4, 4, 3, 96]);
  assert.deepEqual(tiny.get("stages_2_block_8_dwconv/depthwise_kernel"), [7, 7, 384, 1]);
  assert.deepEqual(tiny.get("stages_3_downsample_conv/kernel"), [2, 2, 384, 768]);
  assert.deepEqual(tiny.get("head_fc/kernel"), [768, 1000]);
  assert.ok(!tiny.has("stages_2_block_9_dwconv/depthwise_kernel"));
});

Deno.test("remap: compareWeights reports by name", () => {
  const report = compareWeights(
    new Map([["a/kernel", { shape: [2, 3] }], ["b/bias", { shape: [4] }]]),
    new Map([["a/kernel", [3, 2]], ["c/gamma", [4]]]),
  );
  assert.deepEqual(report, {
    missing: ["c/gamma"],
    unexpected: ["b/bias"],
    mismatched: ["a/kernel: [2,3] vs expected [3,2]"],
  });
});

Deno.test("transpose: OIHW -> HWIO keeps H and W apart", () => {
  // A 1x1x2x3 kernel (H=2, W=3) with values 0..5: HWIO[h][w][0][0] = OIHW[0][0][h][w].
  const t = transpose(Float32Array.from([0, 1, 2, 3, 4, 5]), [1, 1, 2, 3], [2, 3, 1, 0]);
  assert.deepEqual(t.shape, [2, 3, 1, 1]);
  assert.deepEqual([...t.data], [0, 1, 2, 3, 4, 5]);
  const r = transpose(Float32Array.from([0, 1, 2, 3, 4, 5]), [2, 3], [1, 0]);
  assert.deepEqual([...r.data], [0, 3, 1, 4, 2, 5]);
});
