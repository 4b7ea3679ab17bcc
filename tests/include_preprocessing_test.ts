// createConvNeXt(..., { includePreprocessing: true }): a model that takes 0..255 RGB pixels
// (Keras applications' include_preprocessing). Checked against the same weights without the
// layer fed (x / 255 - mean) / std computed here in float64, on both inference paths (the
// optimized plan folds the normalization into the stem conv), through save/load, and through
// classify, embed and evaluate, which must feed such a model pixels, never normalize twice.

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { classify } from "../lib/classify.ts";
import { embed } from "../lib/embed.ts";
import { IMAGENET_MEAN, IMAGENET_STD, normalize, RAW_PIXELS } from "../lib/data/transform.ts";
import { loadEvalDataset } from "../lib/eval/dataset.ts";
import { evaluate } from "../lib/eval/evaluate.ts";
import { ConvNeXtModel } from "../lib/infer/model.ts";
import { compilePlan } from "../lib/infer/plan.ts";
import {
  attachModelConfig,
  evalTransformOptions,
  inputNormalization,
  modelConfig,
  modelPreprocessing,
  preprocessingFor,
} from "../lib/model/config.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { loadSavedModel, saveModel } from "../lib/model/io.ts";
import { InputNormalization } from "../lib/model/layers.ts";
import { layerName, parseLayerName, PREPROCESSING } from "../lib/model/names.ts";
import type { ArchitectureSpec } from "../lib/model/variants.ts";
import { OptionError } from "../lib/util/errors.ts";
import { convertCheckpoint } from "../lib/weights/pretrained.ts";

await selectBackend("wasm");

const FIX = new URL("./fixtures/eval/", import.meta.url).pathname;
const CHECKPOINT = join(FIX, "tiny10.pth");
const PHOTOS = ["chelsea.png", "coffee.jpg", "astronaut.jpg"].map((f) =>
  new URL(`../data/images/${f}`, import.meta.url).pathname
);
const ISO: ArchitectureSpec = { kind: "isotropic", depth: 2, dim: 16, layerScaleInit: 0.5 };
// The inference pool's worker threads live across tests.
const opts = { sanitizeOps: false, sanitizeResources: false };

/** Weights large enough that every layer matters (the default init gives tiny logits). */
function randomizeWeights(model: tf.LayersModel, seed: number): void {
  const values = model.weights.map((w, i) => {
    const shape = w.shape as number[];
    const name = w.originalName;
    if (name.endsWith("/gamma")) return tf.randomNormal(shape, 1, 0.3, "float32", seed + i);
    if (name.endsWith("/bias") || name.endsWith("/beta")) {
      return tf.randomNormal(shape, 0, 0.2, "float32", seed + i);
    }
    const fanIn = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const std = name.endsWith("depthwise_kernel") ? 0.15 : 1 / Math.sqrt(fanIn);
    return tf.randomNormal(shape, 0, std, "float32", seed + i);
  });
  model.setWeights(values);
  tf.dispose(values);
}

/** The same architecture with and without the layer, sharing random weights. */
function pair(arch: string | ArchitectureSpec, seed: number) {
  const options = { inputShape: [32, 32, 3] as [number, number, number], numClasses: 10 };
  const withLayer = createConvNeXt(arch, { ...options, includePreprocessing: true });
  const plain = createConvNeXt(arch, options);
  randomizeWeights(plain, seed);
  withLayer.setWeights(plain.getWeights()); // the layer has no weights: same order
  return { withLayer: withLayer as ConvNeXtModel, plain: plain as ConvNeXtModel };
}

/** Integer pixels 0..255 (a fixed pseudo-random pattern) as `[n, 32, 32, 3]`. */
function pixels(n: number): Float32Array {
  const x = new Float32Array(n * 32 * 32 * 3);
  let s = 12345;
  for (let i = 0; i < x.length; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    x[i] = s % 256;
  }
  return x;
}

/** (x / 255 - mean) / std per channel, in float64 (then stored as float32). */
function normalizedInFloat64(x: Float32Array): Float32Array {
  return Float32Array.from(x, (v, i) => (v / 255 - IMAGENET_MEAN[i % 3]) / IMAGENET_STD[i % 3]);
}

function predictWith(model: ConvNeXtModel, path: "stock" | "optimized", x: Float32Array) {
  model.inferencePath = path;
  try {
    return tf.tidy(() =>
      (model.predict(tf.tensor4d(x, [x.length / 3072, 32, 32, 3])) as tf.Tensor).dataSync()
    );
  } finally {
    model.inferencePath = "auto";
  }
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function withExecutor<T>(executor: string, run: () => T): T {
  const before = Deno.env.get("CONVNEXT_EXECUTOR");
  Deno.env.set("CONVNEXT_EXECUTOR", executor);
  try {
    return run();
  } finally {
    if (before === undefined) Deno.env.delete("CONVNEXT_EXECUTOR");
    else Deno.env.set("CONVNEXT_EXECUTOR", before);
  }
}

for (const [label, arch] of [["convnext_atto", "convnext_atto"], ["isotropic", ISO]] as const) {
  Deno.test(
    `${label}: 0..255 pixels give the logits of normalized input, on both paths`,
    opts,
    () => {
      const { withLayer, plain } = pair(arch, 7);
      const x = pixels(3);
      const reference = predictWith(plain, "stock", normalizedInFloat64(x));
      const scale = Math.max(...reference.map(Math.abs));
      assert.ok(scale > 0.5, `degenerate reference logits (max |y| = ${scale})`);
      const stock = predictWith(withLayer, "stock", x);
      assert.ok(maxDiff(stock, reference) < 1e-5, `stock: ${maxDiff(stock, reference)}`);
      // The plan folds the layer into the stem: the kernels and the TF.js executor.
      assert.equal(withLayer.planUnsupportedReason(), undefined);
      assert.equal(withLayer.optimizedExecutor(), "kernels");
      for (const executor of ["kernels", "tfjs"]) {
        const fast = withExecutor(executor, () => predictWith(withLayer, "optimized", x));
        assert.ok(maxDiff(fast, stock) < 1e-4, `${executor}: ${maxDiff(fast, stock)} from stock`);
        assert.ok(maxDiff(fast, reference) < 1e-4, `${executor}: ${maxDiff(fast, reference)}`);
      }
      withLayer.dispose();
      plain.dispose();
    },
  );
}

Deno.test("the plan folds the layer into a valid stem conv and keeps an identity step", () => {
  const { withLayer, plain } = pair("convnext_atto", 1);
  const plan = compilePlan(withLayer);
  assert.equal(plan.steps.length, compilePlan(plain).steps.length + 1);
  assert.deepEqual(plan.steps[0], { op: "identity", input: 0, output: 1 });
  const stem = plan.steps[1];
  assert.ok(stem.op === "conv" && stem.input === 1 && stem.padding === "valid");
  assert.deepEqual(stem.inputNormalization, { mean: [...IMAGENET_MEAN], std: [...IMAGENET_STD] });
  assert.deepEqual(plan.sources[0], { prefix: "stem_conv", layers: [PREPROCESSING, "stem_conv"] });
  withLayer.dispose();
  plain.dispose();
});

Deno.test("deno task convert --include-preprocessing: a model that takes pixels, same classes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = join(dir, "m");
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../tools/convert.ts", import.meta.url).pathname, CHECKPOINT],
      env: { CONVNEXT_BACKEND: "wasm" },
    }).output();
    assert.equal(run.code, 2); // no --out: usage error, nothing written
    const ok = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../tools/convert.ts", import.meta.url).pathname,
        CHECKPOINT,
        "--out",
        out,
        "--include-preprocessing",
      ],
      env: { CONVNEXT_BACKEND: "wasm" },
    }).output();
    assert.equal(ok.code, 0, new TextDecoder().decode(ok.stderr));
    const { model } = await loadSavedModel(out);
    assert.ok(model.getLayer(PREPROCESSING) instanceof InputNormalization);
    const plain = await convertCheckpoint(CHECKPOINT);
    const [a] = await classify(model, [PHOTOS[0]]);
    const [b] = await classify(plain.model, [PHOTOS[0]]);
    assert.deepEqual(a.top.map((t) => t.index), b.top.map((t) => t.index));
    a.top.forEach((t, i) => assert.ok(Math.abs(t.probability - b.top[i].probability) < 1e-5));
    model.dispose();
    plain.model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a normalization the plan cannot fold keeps the stock path, with the reason", () => {
  const input = tf.input({ shape: [8, 8, 3] });
  const norm = new InputNormalization({ mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2] });
  const conv = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: "same" });
  const pool = tf.layers.globalAveragePooling2d({});
  const output = pool.apply(conv.apply(norm.apply(input))) as tf.SymbolicTensor;
  const model = new ConvNeXtModel({ inputs: input, outputs: output });
  assert.match(model.planUnsupportedReason() ?? "", /"valid" Conv2D.*padding same/);
  assert.equal(model.usesOptimizedPath(), false);
  model.dispose();
});

Deno.test(
  "save and load: the layer, its mean/std and the predictions come back",
  opts,
  async () => {
    const { withLayer, plain } = pair("convnext_atto", 3);
    const dir = await Deno.makeTempDir();
    try {
      await saveModel(withLayer, join(dir, "m"));
      const { model: loaded } = await loadSavedModel(join(dir, "m"));
      const layer = loaded.getLayer(PREPROCESSING);
      assert.equal(layer.getClassName(), "InputNormalization");
      assert.deepEqual(inputNormalization(loaded), {
        mean: [...IMAGENET_MEAN],
        std: [...IMAGENET_STD],
      });
      assert.equal(modelConfig(loaded).preprocessing.inModel, true);
      const x = pixels(2);
      for (const path of ["stock", "optimized"] as const) {
        const a = predictWith(withLayer, path, x);
        const b = predictWith(loaded as ConvNeXtModel, path, x);
        assert.deepEqual(Array.from(b), Array.from(a), path);
      }
      loaded.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
      withLayer.dispose();
      plain.dispose();
    }
  },
);

Deno.test("the configuration says the model normalizes itself, as its graph does", () => {
  const { withLayer, plain } = pair("convnext_atto", 5);
  assert.equal(modelConfig(withLayer).preprocessing.inModel, true);
  assert.equal("inModel" in modelConfig(plain).preprocessing, false);
  // A record made for another model cannot make a caller normalize twice (or not at all).
  const t = evalTransformOptions(modelPreprocessing(withLayer, preprocessingFor(224)));
  assert.deepEqual([t.mean, t.std], [RAW_PIXELS.mean, RAW_PIXELS.std]);
  const copied = { ...modelConfig(withLayer) };
  attachModelConfig(plain, copied);
  assert.equal("inModel" in modelConfig(plain).preprocessing, false);
  const u = evalTransformOptions(
    modelPreprocessing(plain, { ...preprocessingFor(224), inModel: true }),
  );
  assert.deepEqual([u.mean, u.std], [[...IMAGENET_MEAN], [...IMAGENET_STD]]);
  withLayer.dispose();
  plain.dispose();
});

Deno.test("RAW_PIXELS: the transform returns the pixels exactly", () => {
  const data = Uint8Array.from({ length: 256 * 3 }, (_, i) => Math.floor(i / 3));
  const out = normalize({ width: 256, height: 1, data }, RAW_PIXELS);
  assert.deepEqual(Array.from(out), Array.from(data));
});

Deno.test("names: preprocessing parses and round-trips", () => {
  assert.deepEqual(parseLayerName(PREPROCESSING), { kind: "preprocessing" });
  assert.equal(layerName({ kind: "preprocessing" }), PREPROCESSING);
});

Deno.test("classify, embed and evaluate give both models the same answers", opts, async () => {
  const { model: plain } = await convertCheckpoint(CHECKPOINT);
  const { model: own } = await convertCheckpoint(CHECKPOINT, { includePreprocessing: true });
  assert.equal(modelConfig(own).preprocessing.inModel, true);
  const a = await classify(plain, PHOTOS, { topK: 5, workers: 0 });
  const b = await classify(own, PHOTOS, { topK: 5, workers: 0 });
  a.forEach((r, i) => {
    assert.deepEqual(b[i].top.map((p) => p.index), r.top.map((p) => p.index), r.image);
    r.top.forEach((p, k) => {
      assert.ok(Math.abs(b[i].top[k].probability - p.probability) < 1e-5, `${r.image} ${k}`);
    });
  });
  const [ea, eb] = [await embed(plain, PHOTOS), await embed(own, PHOTOS)];
  assert.ok(maxDiff(await ea.data(), await eb.data()) < 1e-5);
  tf.dispose([ea, eb]);
  const data = await loadEvalDataset(join(FIX, "imagefolder"), {
    synsets: join(FIX, "synsets.txt"),
    numClasses: 10,
  });
  const logits = async (model: tf.LayersModel) => {
    const out = new Map<number, Float32Array>();
    const result = await evaluate(model, data, {
      progress: { quiet: true },
      onError: () => {},
      batch: 4,
      onBatch: (b) => b.indices.forEach((k, r) => out.set(k, b.logits.slice(r * 10, r * 10 + 10))),
    });
    return { result, out };
  };
  const [ra, rb] = [await logits(plain), await logits(own)];
  assert.equal(rb.result.preprocessing.inModel, true);
  assert.deepEqual([rb.result.top1, rb.result.top5], [ra.result.top1, ra.result.top5]);
  for (const [k, v] of ra.out) assert.ok(maxDiff(rb.out.get(k)!, v) < 1e-5, `image ${k}`);
  plain.dispose();
  own.dispose();
});

Deno.test("includePreprocessing must be a boolean, with RGB input: one-line OptionErrors", () => {
  for (const value of ["yes", 1, {}]) {
    assert.throws(
      // deno-lint-ignore no-explicit-any
      () => createConvNeXt("convnext_atto", { includePreprocessing: value as any }),
      (e: unknown) =>
        e instanceof OptionError && e.option === "includePreprocessing" &&
        /includePreprocessing must be a boolean/.test(e.message) && !e.message.includes("\n"),
    );
  }
  assert.throws(
    () => createConvNeXt("convnext_atto", { includePreprocessing: true, inputShape: [32, 32, 1] }),
    (e: unknown) => e instanceof OptionError && /needs 3 input channels, got 1/.test(e.message),
  );
});
