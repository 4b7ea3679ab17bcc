// ConvNeXt V2 and the small V1 sizes end to end: every layout's fixture (official V2, FCMAE
// encoder, timm V2 and small V1 with conv_mlp, Hugging Face V2) is converted, loaded by name
// and must reproduce the official PyTorch code's outputs within 1e-4 at two input sizes;
// GRN's forward and gradient against PyTorch's; save/load; the optimized predict path
// (kernel engine and TF.js executor, 1 and 2 threads) on GRN models within 1e-4 of the stock
// path and of PyTorch, the training kernels taking GRN (their gradients: engine_grads_test);
// the zoo's V2 files and
// license notice.
// References: tools/fixtures/make_v2_fixtures.py (the official ConvNeXt-V2 code, vendored,
// eval mode, float64).

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { maxAbsDiff } from "./numeric_helpers.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { architectureOf, numClasses } from "../lib/model/architecture.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { loadSavedModel, saveModel } from "../lib/model/io.ts";
import { GlobalResponseNorm } from "../lib/model/layers.ts";
import type { ArchitectureSpec } from "../lib/model/variants.ts";
import type { ConvNeXtModel } from "../lib/infer/model.ts";
import { compilePlan } from "../lib/infer/plan.ts";
import { closeInferencePool } from "../lib/infer/pool.ts";
import { engineTrainSupport } from "../lib/train/engine_grads.ts";
import { ensureCheckpoint } from "../lib/weights/fetch.ts";
import {
  assertWeightsMatch,
  remapCheckpointKeys,
  remapStateDict,
  type Weight,
} from "../lib/weights/remap.ts";
import { readStateDict } from "../lib/weights/state_dict.ts";
import type { StateDict } from "../lib/weights/types.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";

await selectBackend("cpu");

const DIR = new URL("./fixtures/v2/", import.meta.url);
const path = (f: string) => new URL(f, DIR).pathname;

interface Fixture {
  name: string;
  file: string;
  layout: string;
  spec: {
    kind: "hierarchical";
    depths: number[];
    dims: number[];
    layerScale: boolean;
    grn: boolean;
  };
  numClasses: number;
  output: "logits" | "embedding";
  inputs: Record<string, { file: string; shape: number[] }>;
  outputs: Record<string, { file: string; shape: number[] }>;
}

const { models } = JSON.parse(await Deno.readTextFile(new URL("models.json", DIR))) as {
  models: Fixture[];
};
const fixture = (name: string) => models.find((m) => m.name === name)!;

async function readF32(file: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(new URL(file, DIR));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** The spec the fixture says its model has, as architecture inference must give it. */
function expectedSpec(s: Fixture["spec"]): ArchitectureSpec {
  return {
    kind: "hierarchical",
    depths: s.depths as [number, number, number, number],
    dims: s.dims as [number, number, number, number],
    layerScaleInit: s.layerScale ? 1e-6 : 0,
    ...(s.grn ? { grn: true } : {}),
  };
}

/** Assigns converted weights by name; every model weight must be given, nothing else. */
function assign(model: tf.LayersModel, weights: ReadonlyMap<string, Weight>, label: string): void {
  assertWeightsMatch(
    weights,
    new Map(model.weights.map((w) => [w.originalName, w.shape as number[]])),
    label,
  );
  for (const w of model.weights) {
    const { data, shape } = weights.get(w.originalName)!;
    const value = tf.tensor(data, shape);
    w.write(value);
    value.dispose();
  }
}

/** The converted fixture as a model: a classifier, or the pooled embedding (FCMAE). */
async function load(f: Fixture): Promise<tf.LayersModel> {
  const c = remapStateDict(await readStateDict(path(f.file)), { label: f.file });
  const withHead = c.numClasses > 0;
  const model = createConvNeXt(c.spec, {
    numClasses: withHead ? c.numClasses : undefined,
    includeTop: withHead,
    pooling: withHead ? null : "avg",
    randomInit: false,
  });
  assign(model, c.weights, f.file);
  return model;
}

/** Largest difference to PyTorch over every input of the fixture, on the stock path. */
async function worstDiff(f: Fixture, model: tf.LayersModel): Promise<number> {
  let worst = 0;
  for (const [key, input] of Object.entries(f.inputs)) {
    const x = tf.tensor(await readF32(input.file), input.shape);
    const y = model.predict(x) as tf.Tensor;
    assert.deepEqual(y.shape, f.outputs[key].shape, `${f.name} ${key}`);
    worst = Math.max(worst, maxAbsDiff(await y.data(), await readF32(f.outputs[key].file)));
    tf.dispose([x, y]);
  }
  return worst;
}

for (const f of models) {
  Deno.test(`v2 parity: ${f.name} (${f.layout} layout) matches the official PyTorch code`, async () => {
    const c = remapStateDict(await readStateDict(path(f.file)), { label: f.file });
    assert.equal(c.layout, f.layout);
    assert.equal(c.numClasses, f.numClasses);
    assert.deepEqual(c.spec, expectedSpec(f.spec));
    assert.deepEqual(architectureOf(c.weights).spec, expectedSpec(f.spec));
    const model = await load(f);
    try {
      assert.deepEqual(architectureOf(model).spec, expectedSpec(f.spec));
      assert.equal(numClasses(model), f.numClasses);
      (model as ConvNeXtModel).inferencePath = "stock";
      const diff = await worstDiff(f, model);
      assert.ok(diff <= 1e-4, `${f.name}: max abs diff ${diff} > 1e-4`);
    } finally {
      model.dispose();
    }
  });
}

Deno.test("v2 parity: the fixtures exercise GRN (zeroed GRN weights change the outputs)", async () => {
  const f = fixture("official_v2");
  const model = await load(f);
  try {
    for (const layer of model.layers.filter((l) => l.getClassName() === "GlobalResponseNorm")) {
      layer.setWeights(layer.getWeights().map((w) => tf.zerosLike(w)));
    }
    (model as ConvNeXtModel).inferencePath = "stock";
    const diff = await worstDiff(f, model);
    assert.ok(diff > 1e-2, `GRN barely matters in the fixture (${diff})`);
  } finally {
    model.dispose();
  }
});

/** Sets (or, with undefined, clears) an environment variable; returns the previous value. */
function setEnv(name: string, value: string | undefined): string | undefined {
  const previous = Deno.env.get(name);
  if (value === undefined) Deno.env.delete(name);
  else Deno.env.set(name, value);
  return previous;
}

Deno.test("v2 predict: GRN blocks take the optimized path on both executors, 1 and 2 threads, within 1e-4", async () => {
  const f = fixture("official_v2");
  const previous = {
    executor: Deno.env.get("CONVNEXT_EXECUTOR"),
    threads: Deno.env.get("CONVNEXT_THREADS"),
  };
  try {
    for (const backend of ["cpu", "wasm"] as const) {
      await selectBackend(backend);
      const model = (await load(f)) as ConvNeXtModel;
      try {
        assert.equal(model.planUnsupportedReason(), undefined);
        const plan = model.inferencePlan()!;
        const blocks = plan.steps.filter((s) => s.op === "block");
        assert.equal(blocks.length, 5);
        assert.ok(blocks.every((s) => s.op === "block" && s.grn?.epsilon === 1e-6));
        // The stock path on this backend, per input.
        const stock = new Map<string, Float32Array>();
        model.inferencePath = "stock";
        assert.equal(model.usesOptimizedPath(), false);
        for (const [key, input] of Object.entries(f.inputs)) {
          const x = tf.tensor(await readF32(input.file), input.shape);
          const y = model.predict(x) as tf.Tensor;
          stock.set(key, (await y.data()) as Float32Array);
          tf.dispose([x, y]);
        }
        model.inferencePath = "auto";
        assert.equal(model.usesOptimizedPath(), true);
        for (const executor of ["kernels", "tfjs"] as const) {
          for (const threads of ["1", "2"]) {
            setEnv("CONVNEXT_EXECUTOR", executor);
            setEnv("CONVNEXT_THREADS", threads);
            const label = `${backend}, ${executor}, ${threads} thread(s)`;
            assert.equal(model.optimizedExecutor(), executor, label);
            for (const [key, input] of Object.entries(f.inputs)) {
              const x = tf.tensor(await readF32(input.file), input.shape);
              const y = model.predict(x) as tf.Tensor;
              assert.deepEqual(y.shape, f.outputs[key].shape, `${label} ${key}`);
              const got = await y.data();
              tf.dispose([x, y]);
              const toStock = maxAbsDiff(got, stock.get(key)!);
              const toTorch = maxAbsDiff(got, await readF32(f.outputs[key].file));
              assert.ok(toStock <= 1e-4, `${label} ${key}: ${toStock} from the stock path`);
              assert.ok(toTorch <= 1e-4, `${label} ${key}: ${toTorch} from PyTorch`);
            }
          }
        }
      } finally {
        model.dispose();
        closeInferencePool();
      }
    }
  } finally {
    setEnv("CONVNEXT_EXECUTOR", previous.executor);
    setEnv("CONVNEXT_THREADS", previous.threads);
    await selectBackend("cpu");
  }
});

Deno.test("v2 predict: every V2 fixture on the kernel engine (2 threads) matches PyTorch within 1e-4", async () => {
  const previous = setEnv("CONVNEXT_THREADS", "2");
  try {
    for (const f of models.filter((m) => m.spec.grn)) {
      const model = (await load(f)) as ConvNeXtModel;
      try {
        assert.ok(model.usesOptimizedPath(), f.name);
        assert.equal(model.optimizedExecutor(), "kernels", f.name);
        const diff = await worstDiff(f, model);
        assert.ok(diff <= 1e-4, `${f.name}: max abs diff ${diff}`);
      } finally {
        model.dispose();
      }
    }
  } finally {
    closeInferencePool();
    setEnv("CONVNEXT_THREADS", previous);
  }
});

Deno.test("v2 plan: GRN only on request; the training kernels take it", async () => {
  const model = await load(fixture("official_v2"));
  try {
    assert.throws(() => compilePlan(model), /stages_0_block_0_grn: GRN \(ConvNeXt V2\)/);
    assert.equal(engineTrainSupport(model), null);
    const plan = compilePlan(model, { grn: true });
    const block = plan.steps.find((s) => s.op === "block")!;
    const source = plan.sources.find((s) => "prefix" in block && s.prefix === block.prefix)!;
    assert.deepEqual(source.layers.slice(0, 4).map((n) => n.split("_").pop()), [
      "dwconv",
      "norm",
      "pwconv1",
      "pwconv2",
    ]);
    assert.ok(source.layers.at(-1)!.endsWith("_grn"));
    // GRN's weights are sources of the folded ones: assigning them refolds.
    const cnx = model as ConvNeXtModel;
    const x = tf.tensor(await readF32(fixture("official_v2").inputs.inputs_48x80.file), [
      1,
      48,
      80,
      3,
    ]);
    const before = cnx.predict(x) as tf.Tensor;
    for (const layer of model.layers.filter((l) => l.getClassName() === "GlobalResponseNorm")) {
      layer.setWeights(layer.getWeights().map((w) => tf.onesLike(w)));
    }
    const after = cnx.predict(x) as tf.Tensor;
    cnx.inferencePath = "stock";
    const stock = cnx.predict(x) as tf.Tensor;
    assert.ok(maxAbsDiff(await before.data(), await after.data()) > 1e-3);
    assert.ok(maxAbsDiff(await after.data(), await stock.data()) <= 1e-4);
    tf.dispose([x, before, after, stock]);
  } finally {
    model.dispose();
  }
});

Deno.test("v2 predict: a small V1 (timm conv_mlp) still takes the optimized path, within 1e-4", async () => {
  const f = fixture("timm_v1_small");
  const model = (await load(f)) as ConvNeXtModel;
  try {
    assert.equal(model.planUnsupportedReason(), undefined);
    assert.ok(model.usesOptimizedPath());
    const diff = await worstDiff(f, model);
    assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
  } finally {
    model.dispose();
  }
});

Deno.test("fcmae: the decoder is dropped, a fresh final norm is added, kernels remapped as the official code", async () => {
  const sd = await readStateDict(path("fcmae_v2.pt"));
  const c = remapStateDict(sd, { label: "fcmae_v2.pt" });
  const decoder = [...sd.keys()].filter((k) => !k.startsWith("encoder."));
  assert.ok(decoder.includes("mask_token") && decoder.some((k) => k.startsWith("decoder.0.")));
  assert.deepEqual(c.ignored, decoder);
  assert.deepEqual(c.initialized, ["head_norm/gamma", "head_norm/beta"]);
  assert.ok(c.weights.get("head_norm/gamma")!.data.every((v) => v === 1));
  assert.ok(c.weights.get("head_norm/beta")!.data.every((v) => v === 0));
  assert.equal(c.checkpointClasses, 0);

  // The official remap: Minkowski kernel [k*k, in, out] -> OIHW with W[o][i][h][w] =
  // v[w * k + h][i][o]; depthwise [k*k, C] -> (C, 1, k, k) likewise; GRN (1, C) -> (1, 1, 1, C).
  const dense = remapCheckpointKeys(sd);
  const v = sd.get("encoder.downsample_layers.2.1.kernel")!;
  const w = dense.get("downsample_layers.2.1.weight")!;
  const [kk, cin, cout] = v.shape;
  assert.deepEqual(w.shape, [cout, cin, 2, 2]);
  for (let o = 0; o < cout; o++) {
    for (let i = 0; i < cin; i++) {
      for (let h = 0; h < 2; h++) {
        for (let x = 0; x < 2; x++) {
          const got = w.data[((o * cin + i) * 2 + h) * 2 + x];
          assert.equal(got, v.data[((x * 2 + h) * cin + i) * cout + o]);
        }
      }
    }
  }
  assert.equal(kk, 4);
  const dv = sd.get("encoder.stages.2.1.dwconv.kernel")!;
  const dw = dense.get("stages.2.1.dwconv.weight")!;
  const ch = dv.shape[1];
  assert.deepEqual(dw.shape, [ch, 1, 7, 7]);
  for (let k = 0; k < ch; k++) {
    for (let h = 0; h < 7; h++) {
      for (let x = 0; x < 7; x++) {
        assert.equal(dw.data[(k * 7 + h) * 7 + x], dv.data[(x * 7 + h) * ch + k]);
      }
    }
  }
  assert.deepEqual(dense.get("stages.2.1.grn.gamma")!.shape, [1, 1, 1, 128]);
  assert.deepEqual(dense.get("stages.2.1.dwconv.bias")!.shape, [32]);
  assert.ok(!dense.has("mask_token") && !dense.has("decoder.0.grn.gamma"));

  // Still strict about the encoder: an unknown encoder key is an error naming it.
  const extra: StateDict = new Map(sd);
  extra.set("encoder.stages.0.0.foo.kernel", {
    dtype: "float32",
    shape: [4, 1],
    data: new Float32Array(4),
  });
  assert.throws(
    () => remapStateDict(extra, { label: "x.pt" }),
    /x\.pt \(fcmae layout\).*unexpected 1: stages\.0\.0\.foo\.weight/,
  );
});

Deno.test("GRN: forward and gradients match PyTorch's, a dead channel included", () => {
  const ref = JSON.parse(Deno.readTextFileSync(new URL("grn_grad.json", DIR))) as Record<
    string,
    number[]
  >;
  const shape = ref.shape as [number, number, number, number];
  const layer = new GlobalResponseNorm({ name: "grn" });
  const x = tf.tensor4d(ref.x, shape);
  layer.apply(x);
  layer.setWeights([tf.tensor1d(ref.gamma), tf.tensor1d(ref.beta)]);
  const dy = tf.tensor4d(ref.dy, shape);
  const y = layer.apply(x) as tf.Tensor;
  assert.ok(maxAbsDiff(y.dataSync(), ref.y) < 1e-5, "forward");
  // d/dx and d/dweights of sum(y * dy) is the backward of y with upstream dy.
  const f = (input: tf.Tensor) => tf.sum(tf.mul(layer.apply(input) as tf.Tensor, dy));
  const dx = tf.grad(f)(x);
  const vars = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  const { grads } = tf.variableGrads(() => f(x) as tf.Scalar, vars);
  const [dgamma, dbeta] = vars.map((v) => grads[v.name]);
  assert.ok(dx.dataSync().every(Number.isFinite), "finite gradient with an all-zero channel");
  assert.ok(maxAbsDiff(dx.dataSync(), ref.dx) < 1e-4, `dx ${maxAbsDiff(dx.dataSync(), ref.dx)}`);
  assert.ok(maxAbsDiff(dgamma.dataSync(), ref.dgamma) < 1e-4, "dgamma");
  assert.ok(maxAbsDiff(dbeta.dataSync(), ref.dbeta) < 1e-4, "dbeta");
  tf.dispose([x, dy, y, dx, dgamma, dbeta]);
});

Deno.test("v2 models: zero-initialized GRN, summary, save/load round trip bit-identical at any size", async () => {
  const spec: ArchitectureSpec = {
    kind: "hierarchical",
    depths: [1, 1, 2, 1],
    dims: [8, 16, 24, 32],
    layerScaleInit: 0,
    grn: true,
  };
  const model = createConvNeXt(spec, { numClasses: 7, dropPathRate: 0.1, seed: 3 });
  const dir = await Deno.makeTempDir();
  try {
    const grn = model.getLayer("stages_2_block_1_grn");
    assert.deepEqual(grn.weights.map((w) => `${w.originalName} ${w.shape}`), [
      "stages_2_block_1_grn/gamma 96",
      "stages_2_block_1_grn/beta 96",
    ]);
    assert.ok(grn.getWeights().every((w) => w.dataSync().every((v) => v === 0)));
    assert.ok(!model.layers.some((l) => l.name.endsWith("_layer_scale")));
    const lines: string[] = [];
    model.summary(200, undefined, (line: string) => lines.push(line));
    assert.ok(lines.join("\n").includes("GlobalResponseNorm"));
    for (const w of model.weights) {
      w.write(tf.randomNormal(w.shape as number[], 0, 0.3, "float32", 5));
    }
    await saveModel(model, `${dir}/m`);
    const { model: loaded } = await loadSavedModel(`${dir}/m`);
    assert.equal(loaded.getLayer("stages_2_block_1_grn").getClassName(), "GlobalResponseNorm");
    assert.deepEqual(architectureOf(loaded).spec, spec);
    for (const shape of [[2, 64, 64, 3], [1, 48, 80, 3], [1, 33, 47, 3]]) {
      const x = tf.randomNormal(shape, 0, 1, "float32", 9);
      const a = model.predict(x) as tf.Tensor;
      const b = loaded.predict(x) as tf.Tensor;
      assert.deepEqual([...a.dataSync()], [...b.dataSync()], `${shape}`);
      tf.dispose([x, a, b]);
    }
    loaded.dispose();
  } finally {
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zoo: V2 checkpoints download from their folders, with the license shown first", async () => {
  const mirror = await Deno.makeTempDir();
  const cache = await Deno.makeTempDir();
  const saved = ["CONVNEXT_BASE_URL", "CONVNEXT_CACHE"].map((k) => [k, Deno.env.get(k)] as const);
  try {
    Deno.env.set("CONVNEXT_BASE_URL", `file://${mirror}/`);
    Deno.env.set("CONVNEXT_CACHE", cache);
    const entry = getZooEntry("convnextv2_atto_1k_224");
    await Deno.mkdir(`${mirror}/convnextv2/im1k`, { recursive: true });
    await Deno.copyFile(path("official_v2.pt"), `${mirror}/${entry.path}`);
    const written: string[] = [];
    const progress = { write: (t: string) => void written.push(t), isTTY: false };
    const file = await ensureCheckpoint(entry, { progress });
    assert.ok(file.endsWith("convnextv2_atto_1k_224_ema.pt"), file);
    const notices = written.filter((t) => t.includes("CC-BY-NC-4.0"));
    assert.equal(notices.length, 1, written.join(""));
    assert.match(notices[0], /convnextv2_atto_1k_224: .*non-commercial/);
    written.length = 0;
    await ensureCheckpoint(entry, { progress }); // cached: verified, no download, no notice
    assert.deepEqual(written, []);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await Deno.remove(mirror, { recursive: true });
    await Deno.remove(cache, { recursive: true });
  }
});
