// Tests of the ConvNeXt model family: architecture facts against the official numbers,
// shapes, naming, options and their validation, save/load, features, training step.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import {
  ARCHITECTURE_NAMES,
  type ArchitectureSpec,
  createConvNeXt,
  createFeatureExtractor,
  loadSavedModel,
  saveModel,
  selectBackend,
  stageOutputNames,
} from "../lib/mod.ts";
import { PARAMS_1K } from "./official_counts.ts";

await selectBackend("wasm");

// Too large to build here (2.6 GB of float32 weights, most of a wasm heap): its count is
// checked from its weight shapes in model_names_test.ts, like every other size's.
const TOO_LARGE_TO_BUILD = new Set(["convnextv2_huge"]);
const PARAMS_22K: Record<string, number> = {
  convnext_tiny: 44_615_857,
  convnext_small: 66_250_417,
  convnext_base: 109_953_489,
  convnext_large: 229_799_953,
  convnext_xlarge: 392_900_177,
};

const SMALL: ArchitectureSpec = {
  kind: "hierarchical",
  depths: [1, 1, 2, 1],
  dims: [8, 16, 32, 64],
  layerScaleInit: 0.5,
};

/** Disposes models and tensors alike (a LayersModel is no TensorContainer). */
function release(...items: (tf.LayersModel | tf.Tensor | tf.Tensor[])[]): void {
  for (const item of items) {
    if (item instanceof tf.LayersModel) item.dispose();
    else tf.dispose(item);
  }
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

Deno.test("every official architecture is covered by the parameter table", () => {
  assert.deepEqual([...ARCHITECTURE_NAMES].sort(), Object.keys(PARAMS_1K).sort());
});

for (const [name, expected] of Object.entries(PARAMS_1K)) {
  if (TOO_LARGE_TO_BUILD.has(name)) continue;
  Deno.test(`${name}: official parameter count with a 1000-class head`, () => {
    const model = createConvNeXt(name, { randomInit: false });
    try {
      assert.equal(model.countParams(), expected);
    } finally {
      model.dispose();
    }
  });
}

for (const [name, expected] of Object.entries(PARAMS_22K)) {
  Deno.test(`${name}: official parameter count with the 21841-class head`, () => {
    const model = createConvNeXt(name, { numClasses: 21841, randomInit: false });
    try {
      assert.equal(model.countParams(), expected);
    } finally {
      model.dispose();
    }
  });
}

Deno.test("convnext_tiny: output shapes at 224, 384 and a non-square 160x200", () => {
  const model = createConvNeXt("convnext_tiny", { seed: 1 });
  try {
    for (const [h, w] of [[224, 224], [384, 384], [160, 200]]) {
      const y = tf.tidy(() => model.predict(tf.randomNormal([1, h, w, 3], 0, 1, "float32", 3)));
      assert.deepEqual((y as tf.Tensor).shape, [1, 1000]);
      assert.ok(Number.isFinite((y as tf.Tensor).dataSync()[0]));
      tf.dispose(y);
    }
    const features = createFeatureExtractor(model);
    const outs = features.predict(tf.zeros([1, 160, 200, 3])) as tf.Tensor[];
    assert.deepEqual(outs.map((t) => t.shape), [
      [1, 40, 50, 96],
      [1, 20, 25, 192],
      [1, 10, 12, 384],
      [1, 5, 6, 768],
      [1, 768],
    ]);
    tf.dispose(outs);
  } finally {
    model.dispose();
  }
});

Deno.test("isotropic: 16x16 patchify stem, no stem norm, no layer scale unless iso-large", () => {
  const model = createConvNeXt("convnext_iso_small", { randomInit: false });
  try {
    const names = model.layers.map((l) => l.name);
    assert.ok(names.includes("stem_conv") && !names.includes("stem_norm"));
    assert.ok(!names.some((n) => n.endsWith("_layer_scale")));
    assert.equal(names.filter((n) => /^blocks_\d+$/.test(n)).length, 18);
    const y = model.predict(tf.zeros([1, 224, 224, 3])) as tf.Tensor;
    assert.deepEqual(y.shape, [1, 1000]);
    assert.deepEqual(model.getLayer("blocks_17").outputShape, [null, null, null, 384]);
    y.dispose();
  } finally {
    model.dispose();
  }
  const large = createConvNeXt("convnext_iso_large", { randomInit: false });
  try {
    assert.equal(large.layers.filter((l) => l.name.endsWith("_layer_scale")).length, 36);
  } finally {
    large.dispose();
  }
});

Deno.test("layer names are deterministic and map to the official structure", () => {
  const model = createConvNeXt("convnext_tiny", { randomInit: false });
  try {
    const weights = model.weights.map((w) => `${w.originalName} ${w.shape.join("x")}`);
    assert.deepEqual(weights.slice(0, 4), [
      "stem_conv/kernel 4x4x3x96",
      "stem_conv/bias 96",
      "stem_norm/gamma 96",
      "stem_norm/beta 96",
    ]);
    for (
      const expected of [
        "stages_2_block_5_dwconv/depthwise_kernel 7x7x384x1",
        "stages_2_block_5_dwconv/bias 384",
        "stages_2_block_5_pwconv1/kernel 384x1536",
        "stages_2_block_5_pwconv2/kernel 1536x384",
        "stages_2_block_5_layer_scale/gamma 384",
        "stages_3_downsample_norm/gamma 384",
        "stages_3_downsample_conv/kernel 2x2x384x768",
        "head_norm/gamma 768",
        "head_fc/kernel 768x1000",
      ]
    ) assert.ok(weights.includes(expected), expected);
    // Names are unique, so a by-name mapping is unambiguous.
    assert.equal(new Set(model.weights.map((w) => w.originalName)).size, model.weights.length);
    assert.deepEqual(stageOutputNames(model), [
      "stages_0_block_2",
      "stages_1_block_2",
      "stages_2_block_8",
      "stages_3_block_2",
    ]);
    // A second model gets the very same layer and weight names (TF.js only suffixes the
    // variables' process-wide unique `name`, not `originalName`, which saving uses).
    const again = createConvNeXt("convnext_tiny", { randomInit: false });
    assert.deepEqual(again.layers.map((l) => l.name), model.layers.map((l) => l.name));
    assert.deepEqual(
      again.weights.map((w) => w.originalName),
      model.weights.map((w) => w.originalName),
    );
    again.dispose();
  } finally {
    model.dispose();
  }
});

Deno.test("summary() lists the custom layers", () => {
  const model = createConvNeXt(SMALL, { numClasses: 5, dropPathRate: 0.1 });
  const lines: string[] = [];
  model.summary(260, [0.3, 0.55, 0.65, 1], (line: string) => lines.push(line));
  const text = lines.join("\n");
  for (const cls of ["ConvNeXtLayerNorm", "LayerScale", "StochasticDepth", "DepthwiseConv2D"]) {
    assert.ok(text.includes(cls), cls);
  }
  assert.ok(
    text.includes(`Total params: ${model.countParams().toLocaleString()}`) ||
      text.includes(`Total params: ${model.countParams()}`),
  );
  model.dispose();
});

Deno.test("options: includeTop false, pooling, classifier activation, layer scale off", () => {
  const features = createConvNeXt(SMALL, { includeTop: false });
  assert.deepEqual(features.outputs[0].shape, [null, null, null, 64]);
  const avg = createConvNeXt(SMALL, { includeTop: false, pooling: "avg" });
  assert.deepEqual(avg.outputs[0].shape, [null, 64]);
  assert.equal(avg.layers.at(-1)!.name, "head_norm");
  const max = createConvNeXt(SMALL, { includeTop: false, pooling: "max" });
  assert.equal(max.layers.at(-1)!.getClassName(), "GlobalMaxPooling2D");
  const soft = createConvNeXt(SMALL, { numClasses: 7, classifierActivation: "softmax", seed: 2 });
  const p = soft.predict(tf.randomNormal([3, 32, 32, 3])) as tf.Tensor;
  const sums = p.sum(1).arraySync() as number[];
  sums.forEach((s) => assert.ok(Math.abs(s - 1) < 1e-5));
  const noScale = createConvNeXt(SMALL, { layerScaleInit: 0 });
  assert.ok(!noScale.layers.some((l) => l.name.endsWith("_layer_scale")));
  release(features, avg, max, soft, p, noScale);
});

Deno.test("initialization follows the official code", () => {
  const model = createConvNeXt("convnext_tiny", { seed: 7, headInitScale: 0.5 });
  try {
    const byName = new Map(model.weights.map((w) => [w.originalName, w.read()]));
    const std = (t: tf.Tensor) => tf.tidy(() => tf.moments(t).variance.sqrt().dataSync()[0]);
    // trunc_normal_(std=.02): plain normal at this std (timm's bounds are absolute +-2).
    const pw = byName.get("stages_2_block_0_pwconv1/kernel")!;
    assert.ok(Math.abs(std(pw) - 0.02) < 0.0005, `std ${std(pw)}`);
    const maxAbs = tf.tidy(() => tf.max(tf.abs(pw)).dataSync()[0]);
    // TF.js's truncatedNormal would cut at 2 std = 0.04; 590k samples reach past 4 std.
    assert.ok(maxAbs > 0.06, `max ${maxAbs}`);
    const head = byName.get("head_fc/kernel")!;
    assert.ok(Math.abs(std(head) - 0.01) < 0.0005, `head std ${std(head)}`);
    assert.equal(tf.tidy(() => tf.max(tf.abs(byName.get("head_fc/bias")!)).dataSync()[0]), 0);
    const gamma = byName.get("stages_0_block_0_layer_scale/gamma")!.dataSync();
    assert.ok(gamma.every((g) => Math.abs(g - 1e-6) < 1e-12));
    assert.ok(byName.get("stem_norm/gamma")!.dataSync().every((g) => g === 1));
    assert.ok(byName.get("stem_norm/beta")!.dataSync().every((g) => g === 0));
  } finally {
    model.dispose();
  }
});

Deno.test("LayerNorm matches a hand computation with eps 1e-6", () => {
  const model = createConvNeXt(SMALL, { includeTop: false, pooling: "avg", seed: 3 });
  const layer = model.getLayer("head_norm");
  layer.setWeights([
    tf.tensor1d(Array.from({ length: 64 }, (_, i) => 1 + i / 64)),
    tf.fill([64], 0.25),
  ]);
  const x = Array.from({ length: 64 }, (_, i) => Math.sin(i) * 3 + i / 10);
  const y = (layer.apply(tf.tensor2d([x])) as tf.Tensor).dataSync();
  const mean = x.reduce((a, b) => a + b, 0) / 64;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / 64; // biased, as PyTorch
  x.forEach((v, i) => {
    const expected = ((v - mean) / Math.sqrt(variance + 1e-6)) * (1 + i / 64) + 0.25;
    assert.ok(Math.abs(y[i] - expected) < 1e-5, `${i}: ${y[i]} vs ${expected}`);
  });
  model.dispose();
});

Deno.test("drop path: linear rates, identity at inference, whole samples dropped in training", () => {
  const model = createConvNeXt(SMALL, { dropPathRate: 0.3 });
  const rates = model.layers
    .filter((l) => l.getClassName() === "StochasticDepth")
    .map((l) => (l.getConfig().rate as number));
  // linspace(0, 0.3, 5) without the first (zero-rate) block.
  assert.deepEqual(rates.map((r) => +r.toFixed(6)), [0.075, 0.15, 0.225, 0.3]);
  const layer = model.getLayer("stages_3_block_0_drop_path");
  const x = tf.ones([400, 2, 2, 3]);
  const inference = layer.apply(x) as tf.Tensor;
  assert.equal(maxAbsDiff(inference, x), 0);
  const train = layer.apply(x, { training: true }) as tf.Tensor;
  const perSample = tf.tidy(() => train.reshape([400, 12]));
  const rows = perSample.arraySync() as number[][];
  let dropped = 0;
  for (const row of rows) {
    const v = row[0];
    assert.ok(row.every((e) => e === v), "a sample is dropped or kept as a whole");
    if (v === 0) dropped++;
    else assert.ok(Math.abs(v - 1 / 0.7) < 1e-6);
  }
  assert.ok(dropped > 80 && dropped < 160, `dropped ${dropped} of 400 at rate 0.3`);
  release(model, x, inference, train, perSample);
});

Deno.test("save and load round trip is bit-identical, with metadata", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = createConvNeXt(SMALL, { numClasses: 10, dropPathRate: 0.1, seed: 5 });
    // Non-trivial values everywhere (not only the random kernels).
    for (const w of model.weights) {
      const shape = w.shape as number[];
      w.write(tf.randomNormal(shape, 0, 0.5, "float32", 11));
    }
    const x = tf.randomNormal([2, 64, 80, 3], 0, 1, "float32", 9);
    const before = model.predict(x) as tf.Tensor;
    await saveModel(model, `${dir}/m`, { metadata: { classes: 10 } });
    await assert.rejects(() => saveModel(model, `${dir}/m`), /already exists/);
    const { model: loaded, metadata } = await loadSavedModel(`${dir}/m`);
    assert.deepEqual(metadata, { classes: 10 });
    const after = loaded.predict(x) as tf.Tensor;
    assert.deepEqual(Array.from(after.dataSync()), Array.from(before.dataSync()));
    assert.deepEqual(loaded.layers.map((l) => l.name), model.layers.map((l) => l.name));
    // No temporary directories are left next to the model.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["m"]);
    await saveModel(loaded, `${dir}/m`, { overwrite: true });
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["m"]);
    release(model, loaded, x, before, after);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSavedModel: clear errors for a missing or foreign directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadSavedModel(`${dir}/nope`), /cannot read .*nope\/model\.json/);
    await Deno.writeTextFile(`${dir}/model.json`, `{"hello": 1}`);
    await assert.rejects(() => loadSavedModel(dir), /not a TF\.js layers model/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("feature extractor shares the model's weights", () => {
  const model = createConvNeXt(SMALL, { numClasses: 4, seed: 1 });
  const features = createFeatureExtractor(model);
  const own = new Set(model.weights.map((w) => w.id));
  assert.ok(features.weights.every((w) => own.has(w.id)));
  const x = tf.randomNormal([1, 32, 32, 3]);
  const [, , , s3, emb] = features.predict(x) as tf.Tensor[];
  assert.deepEqual(s3.shape, [1, 1, 1, 64]);
  // The embedding is the head's input: head_fc(embedding) equals the model's logits.
  const logits = model.getLayer("head_fc").apply(emb) as tf.Tensor;
  assert.ok(maxAbsDiff(logits, model.predict(x) as tf.Tensor) < 1e-6);
  const noNorm = createConvNeXt(SMALL, { includeTop: false });
  assert.throws(() => createFeatureExtractor(noNorm, { embedding: true }), /no head_norm/);
  release(model, noNorm, x);
});

Deno.test("bad arguments give clear one-line errors", () => {
  const cases: [() => unknown, RegExp][] = [
    [
      () => createConvNeXt("convnext_huge"),
      /unknown architecture "convnext_huge"; did you mean "convnextv2_huge"\?$/,
    ],
    [
      () => createConvNeXt("resnet50"),
      /unknown architecture "resnet50"; expected one of: convnext_tiny, .*convnext_iso_large/,
    ],
    [() => createConvNeXt("convnext_tiny", { inputShape: [16, 16, 3] }), /inputShape .* >= 32/],
    [() => createConvNeXt("convnext_tiny", { inputShape: [224, 224] as never }), /inputShape/],
    [
      () => createConvNeXt("convnext_tiny", { numClasses: 0 }),
      /numClasses must be a positive integer/,
    ],
    [() => createConvNeXt("convnext_tiny", { numClasses: 2.5 }), /numClasses/],
    [
      () => createConvNeXt("convnext_tiny", { pooling: "avg" }),
      /pooling applies only with includeTop: false/,
    ],
    [
      () => createConvNeXt("convnext_tiny", { includeTop: false, pooling: "mean" as never }),
      /pooling must be/,
    ],
    [
      () => createConvNeXt("convnext_tiny", { dropPathRate: 1 }),
      /dropPathRate must be in \[0, 1\)/,
    ],
    [() => createConvNeXt("convnext_tiny", { layerScaleInit: -1 }), /layerScaleInit/],
    [() => createConvNeXt("convnext_tiny", { headInitScale: 0 }), /headInitScale/],
    [
      () => createConvNeXt("convnext_tiny", { classifierActivation: "relu" as never }),
      /classifierActivation/,
    ],
    [
      () =>
        createConvNeXt(
          {
            kind: "hierarchical",
            depths: [1, 1, 1],
            dims: [8, 16, 32, 64],
            layerScaleInit: 0,
          } as never,
        ),
      /4 positive integer depths/,
    ],
    [() => createConvNeXt({ kind: "cube" } as never), /kind "hierarchical" or "isotropic"/],
  ];
  for (const [fn, pattern] of cases) {
    assert.throws(fn, (e: Error) => {
      assert.match(e.message, pattern);
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
  }
});

const SMALL_V2: ArchitectureSpec = { ...SMALL, layerScaleInit: 0, grn: true };

Deno.test("ConvNeXt V2 names take every option V1 names take", () => {
  const v2 = createConvNeXt("convnextv2_atto", {
    inputShape: [64, 96, 3],
    numClasses: 7,
    classifierActivation: "softmax",
    dropPathRate: 0.2,
    headInitScale: 0.001,
    seed: 3,
    name: "mine",
  });
  assert.equal(v2.name, "mine");
  assert.deepEqual(v2.outputs[0].shape, [null, 7]);
  assert.equal(v2.layers.filter((l) => l.getClassName() === "GlobalResponseNorm").length, 12);
  assert.equal(v2.layers.filter((l) => l.getClassName() === "StochasticDepth").length, 11);
  assert.ok(!v2.layers.some((l) => l.name.endsWith("_layer_scale")));
  const p = v2.predict(tf.randomNormal([2, 64, 96, 3], 0, 1, "float32", 1)) as tf.Tensor;
  (p.sum(1).arraySync() as number[]).forEach((v) => assert.ok(Math.abs(v - 1) < 1e-5));
  // Layer scale on top of GRN (no official model has both): a custom architecture.
  const both = createConvNeXt("convnextv2_atto", { layerScaleInit: 1e-6, randomInit: false });
  assert.equal(both.layers.filter((l) => l.name.endsWith("_layer_scale")).length, 12);
  const backbone = createConvNeXt("convnextv2_nano", {
    includeTop: false,
    pooling: "max",
    randomInit: false,
  });
  assert.deepEqual(backbone.outputs[0].shape, [null, 640]);
  const features = createFeatureExtractor(createConvNeXt(SMALL_V2, { seed: 2 }));
  const maps = features.predict(tf.zeros([1, 64, 64, 3])) as tf.Tensor[];
  assert.deepEqual(maps.map((m) => m.shape), [
    [1, 16, 16, 8],
    [1, 8, 8, 16],
    [1, 4, 4, 32],
    [1, 2, 2, 64],
    [1, 64],
  ]);
  release(v2, p, both, backbone, maps);
});

for (const [label, spec] of [["V1", SMALL], ["V2, GRN", SMALL_V2]] as const) {
  Deno.test(`a gradient step on the cpu backend lowers the loss (small ${label} configuration)`, async () => {
    await selectBackend("cpu");
    try {
      const model = createConvNeXt(spec, { numClasses: 3, dropPathRate: 0.1, seed: 4 });
      model.compile({
        optimizer: tf.train.adam(3e-3),
        loss: (y: tf.Tensor, p: tf.Tensor) => tf.losses.softmaxCrossEntropy(y, p),
      });
      const x = tf.randomNormal([6, 32, 32, 3], 0, 1, "float32", 21);
      const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2], "int32"), 3);
      const before = model.evaluate(x, y) as tf.Scalar;
      const initial = before.dataSync()[0];
      const history = await model.fit(x, y, { epochs: 8, batchSize: 6, verbose: 0 });
      const losses = history.history.loss as number[];
      losses.forEach((l) => assert.ok(Number.isFinite(l)));
      const after = (model.evaluate(x, y) as tf.Scalar).dataSync()[0];
      assert.ok(after < initial * 0.9, `loss ${initial} -> ${after}`);
      release(model, x, y, before);
    } finally {
      await selectBackend("wasm");
    }
  });
}

Deno.test("createConvNeXt: the same seed gives the same weights, seed 0 included", () => {
  // TF.js's random ops take a seed of 0 for none; the initializers must not.
  const weights = (seed: number) =>
    createConvNeXt(SMALL, { numClasses: 3, seed }).getWeights().map((w) => w.dataSync());
  const [a, b, c] = [weights(0), weights(0), weights(1)];
  assert.deepEqual(a, b, "seed 0 twice");
  assert.notDeepEqual(a[0], c[0], "seeds 0 and 1 differ");
});
