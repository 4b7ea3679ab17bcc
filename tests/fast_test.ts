// Tests of the optimized inference path (lib/infer/): its outputs against the
// stock TF.js Layers path of the same model (the independent reference), on the wasm backend
// with the thread pool (batch split and row split) and on the cpu backend.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { selectBackend } from "../lib/backend/select.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { createFeatureExtractor } from "../lib/model/features.ts";
import { loadSavedModel, saveModel } from "../lib/model/io.ts";
import type { ArchitectureSpec } from "../lib/model/variants.ts";
import { ConvNeXtModel } from "../lib/infer/model.ts";
import { compilePlan } from "../lib/infer/plan.ts";
import { foldWeights } from "../lib/infer/fold.ts";
import { blockOnSlab } from "../lib/infer/execute.ts";
import { gelu } from "../lib/infer/gelu.ts";
import { closeInferencePool, InferencePool, splitEven } from "../lib/infer/pool.ts";

await selectBackend("wasm");

const TOLERANCE = 1e-4;

const SMALL: ArchitectureSpec = {
  kind: "hierarchical",
  depths: [1, 1, 2, 1],
  dims: [8, 16, 32, 64],
  layerScaleInit: 0.5,
};
const ISO: ArchitectureSpec = { kind: "isotropic", depth: 2, dim: 16, layerScaleInit: 0.5 };

// Worker threads live across tests (a process-wide pool), closed by the last test.
const opts = { sanitizeOps: false, sanitizeResources: false };

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

/**
 * Non-trivial random weights: LayerNorm gammas around 1, layer-scale gammas around 0.5,
 * biases and betas around 0 with spread, kernels large enough that every block matters.
 */
function randomizeWeights(model: tf.LayersModel, seed: number): void {
  const values = model.weights.map((w, i) => {
    const name = w.originalName;
    const s = seed * 1000 + i;
    const shape = w.shape as number[];
    if (name.endsWith("_norm/gamma")) return tf.randomNormal(shape, 1, 0.3, "float32", s);
    if (name.endsWith("layer_scale/gamma")) return tf.randomNormal(shape, 0.5, 0.2, "float32", s);
    if (name.endsWith("/bias") || name.endsWith("/beta")) {
      return tf.randomNormal(shape, 0, 0.2, "float32", s);
    }
    const fanIn = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const std = name.endsWith("depthwise_kernel") ? 0.15 : 1 / Math.sqrt(fanIn);
    return tf.randomNormal(shape, 0, std, "float32", s);
  });
  model.setWeights(values);
  tf.dispose(values);
}

function stockAndOptimized(model: tf.LayersModel, x: tf.Tensor): [tf.Tensor, tf.Tensor] {
  const m = model as ConvNeXtModel;
  m.inferencePath = "stock";
  const stock = m.predict(x) as tf.Tensor;
  m.inferencePath = "optimized";
  const fast = m.predict(x) as tf.Tensor;
  m.inferencePath = "auto";
  return [stock, fast];
}

function assertClose(model: tf.LayersModel, x: tf.Tensor, what: string): void {
  const [stock, fast] = stockAndOptimized(model, x);
  assert.deepEqual(fast.shape, stock.shape, `${what}: shape`);
  const diff = maxAbsDiff(stock, fast);
  const scale = tf.tidy(() => tf.max(tf.abs(stock)).dataSync()[0]);
  assert.ok(scale > 0.1, `${what}: the reference output is degenerate (max |y| = ${scale})`);
  assert.ok(diff <= TOLERANCE, `${what}: max |stock - optimized| = ${diff} > ${TOLERANCE}`);
  tf.dispose([stock, fast]);
}

Deno.test("createConvNeXt returns a ConvNeXtModel that takes the optimized path on wasm", () => {
  const model = createConvNeXt(SMALL, { seed: 1 }) as ConvNeXtModel;
  assert.ok(model instanceof ConvNeXtModel);
  assert.ok(model.usesOptimizedPath(), String(model.planUnsupportedReason()));
  const plan = model.inferencePlan()!;
  assert.equal(plan.steps.filter((s) => s.op === "block").length, 5);
  model.dispose();
});

Deno.test(
  "small hierarchical model: optimized logits match stock (wasm, threads, cpu)",
  opts,
  async () => {
    const model = createConvNeXt(SMALL, { seed: 2, numClasses: 10 });
    randomizeWeights(model, 1);
    // Batch 3: split by images over the threads; batch 1: split by rows, block by block.
    for (const [n, h, w] of [[3, 64, 64], [1, 96, 64], [1, 32, 32]]) {
      const x = tf.randomNormal([n, h, w, 3], 0, 1, "float32", n + h);
      assertClose(model, x, `wasm ${n}x${h}x${w}`);
      x.dispose();
    }
    await selectBackend("cpu");
    try {
      const x = tf.randomNormal([2, 64, 64, 3], 0, 1, "float32", 7);
      assertClose(model, x, "cpu 2x64x64");
      x.dispose();
    } finally {
      await selectBackend("wasm");
    }
    model.dispose();
  },
);

Deno.test("isotropic model and a backbone without head: optimized matches stock", opts, () => {
  const iso = createConvNeXt(ISO, { seed: 3, numClasses: 7 });
  randomizeWeights(iso, 2);
  const x = tf.randomNormal([2, 48, 64, 3], 0, 1, "float32", 3);
  assertClose(iso, x, "isotropic");
  const single = tf.slice(x, 0, 1);
  assertClose(iso, single, "isotropic batch 1");
  // Wide enough (first pointwise weight > 1 MiB) that a single image splits by hidden units.
  const wide = createConvNeXt({ ...ISO, dim: 288 }, { seed: 3, numClasses: 5 });
  randomizeWeights(wide, 3);
  const wideInput = tf.randomNormal([1, 64, 48, 3], 0, 1, "float32", 4);
  assertClose(wide, wideInput, "isotropic dim 288, batch 1");
  tf.dispose(wideInput);
  wide.dispose();
  const backbone = createConvNeXt(SMALL, { seed: 4, includeTop: false, pooling: null });
  randomizeWeights(backbone, 3);
  assertClose(backbone, x, "backbone feature map");
  tf.dispose([x, single]);
  iso.dispose();
  backbone.dispose();
});

Deno.test("predictions follow weight changes (no stale folded weights)", opts, () => {
  const model = createConvNeXt(SMALL, { seed: 5, numClasses: 10 });
  randomizeWeights(model, 4);
  const x = tf.randomNormal([2, 64, 64, 3], 0, 1, "float32", 5);
  const before = model.predict(x) as tf.Tensor;
  randomizeWeights(model, 5);
  assertClose(model, x, "after setWeights");
  const after = model.predict(x) as tf.Tensor;
  assert.ok(maxAbsDiff(before, after) > 0.01, "the prediction did not change with the weights");
  // A single variable assigned in place (as an optimizer step does).
  const bias = model.getLayer("stages_2_block_1_pwconv2").weights[1];
  bias.write(tf.add(bias.read(), 1));
  assertClose(model, x, "after one variable's assign");
  const single = model.predict(tf.slice(x, 0, 1)) as tf.Tensor;
  assert.ok(maxAbsDiff(single, tf.slice(after, 0, 1)) > 0.01);
  tf.dispose([x, before, after, single]);
  model.dispose();
});

Deno.test("feature extractor and getLayer outputs are unaffected", opts, () => {
  const model = createConvNeXt(SMALL, { seed: 6, numClasses: 10 });
  randomizeWeights(model, 6);
  const features = createFeatureExtractor(model);
  const x = tf.randomNormal([2, 64, 64, 3], 0, 1, "float32", 6);
  const outs = features.predict(x) as tf.Tensor[];
  assert.deepEqual(outs.map((o) => o.shape), [[2, 16, 16, 8], [2, 8, 8, 16], [2, 4, 4, 32], [
    2,
    2,
    2,
    64,
  ], [2, 64]]);
  // The (stock) embedding through the head equals the optimized logits.
  const head = model.getLayer("head_fc").apply(outs[4]) as tf.Tensor;
  const logits = model.predict(x) as tf.Tensor;
  assert.ok(maxAbsDiff(head, logits) <= TOLERANCE);
  tf.dispose([x, head, logits, ...outs]);
  model.dispose();
});

Deno.test("loaded models take the optimized path and match", opts, async () => {
  const model = createConvNeXt(SMALL, { seed: 7, numClasses: 10 });
  randomizeWeights(model, 7);
  const dir = await Deno.makeTempDir();
  try {
    await saveModel(model, `${dir}/m`);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/m/model.json`));
    assert.equal(json.modelTopology.class_name, "ConvNeXtModel", "saved under its own name");
    const { model: loaded } = await loadSavedModel(`${dir}/m`);
    assert.ok(loaded instanceof ConvNeXtModel);
    assert.ok((loaded as ConvNeXtModel).usesOptimizedPath());
    const x = tf.randomNormal([2, 64, 64, 3], 0, 1, "float32", 8);
    assertClose(loaded, x, "loaded");
    const a = model.predict(x) as tf.Tensor;
    const b = loaded.predict(x) as tf.Tensor;
    assert.equal(maxAbsDiff(a, b), 0, "identical predictions");
    tf.dispose([x, a, b]);
    loaded.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
    model.dispose();
  }
});

Deno.test("plain TF.js models load as plain LayersModels, not ConvNeXtModels", opts, async () => {
  const dir = await Deno.makeTempDir();
  const seq = tf.sequential({ layers: [tf.layers.dense({ units: 3, inputShape: [4] })] });
  const input = tf.input({ shape: [4] });
  const output = tf.layers.dense({ units: 2 }).apply(input) as tf.SymbolicTensor;
  const functional = tf.model({ inputs: input, outputs: output });
  const x = tf.randomNormal([5, 4], 0, 1, "float32", 11);
  try {
    for (const [name, model] of [["seq", seq], ["functional", functional]] as const) {
      await saveModel(model, `${dir}/${name}`, { metadata: { note: name } });
      const { model: loaded } = await loadSavedModel(`${dir}/${name}`);
      // Also straight through TF.js, with the kit imported (ConvNeXtModel registered).
      const json = JSON.parse(await Deno.readTextFile(`${dir}/${name}/model.json`));
      const direct = await tf.loadLayersModel(
        tf.io.fromMemory({ modelTopology: json.modelTopology }),
      );
      for (const m of [loaded, direct]) {
        assert.ok(!(m instanceof ConvNeXtModel), `${name} loaded as a ConvNeXtModel`);
        const expected = name === "seq" ? tf.Sequential : tf.LayersModel;
        assert.equal(Object.getPrototypeOf(m), expected.prototype, name);
      }
      const [a, b] = [model.predict(x), loaded.predict(x)] as tf.Tensor[];
      assert.equal(maxAbsDiff(a, b), 0);
      tf.dispose([a, b]);
      loaded.dispose();
      direct.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    tf.dispose([x]);
    seq.dispose();
    functional.dispose();
  }
});

Deno.test(
  'ConvNeXts saved as "Model" by earlier versions load as ConvNeXtModels',
  opts,
  async () => {
    const model = createConvNeXt(SMALL, { seed: 12, numClasses: 10 });
    randomizeWeights(model, 12);
    const dir = await Deno.makeTempDir();
    const x = tf.randomNormal([2, 32, 32, 3], 0, 1, "float32", 12);
    const expected = model.predict(x) as tf.Tensor;
    try {
      for (const metadata of [undefined, { convnext: { architecture: "convnext_custom" } }]) {
        await saveModel(model, `${dir}/m`, { metadata, overwrite: true });
        // What the previous version wrote: TF.js's own class name.
        const path = `${dir}/m/model.json`;
        const json = JSON.parse(await Deno.readTextFile(path));
        json.modelTopology.class_name = "Model";
        await Deno.writeTextFile(path, JSON.stringify(json));
        const { model: loaded } = await loadSavedModel(`${dir}/m`);
        assert.ok(loaded instanceof ConvNeXtModel, `metadata ${JSON.stringify(metadata)}`);
        assert.ok(loaded.usesOptimizedPath());
        const y = loaded.predict(x) as tf.Tensor;
        assert.equal(maxAbsDiff(expected, y), 0);
        tf.dispose(y);
        loaded.dispose();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
      tf.dispose([x, expected]);
      model.dispose();
    }
  },
);

Deno.test("graphs the plan does not know keep the stock path", opts, () => {
  const input = tf.input({ shape: [8, 8, 3] });
  const y = tf.layers.batchNormalization().apply(input) as tf.SymbolicTensor;
  const model = new ConvNeXtModel({ inputs: input, outputs: y });
  assert.ok(!model.usesOptimizedPath());
  assert.match(model.planUnsupportedReason()!, /BatchNormalization/);
  const out = model.predict(tf.ones([1, 8, 8, 3])) as tf.Tensor;
  assert.deepEqual(out.shape, [1, 8, 8, 3]);
  out.dispose();
  model.dispose();
});

Deno.test(
  "CONVNEXT_EXECUTOR: the kernels by default, TF.js kernels on request; both match stock",
  opts,
  () => {
    const model = createConvNeXt(SMALL, { seed: 5 }) as ConvNeXtModel;
    randomizeWeights(model, 5);
    const x = tf.randomNormal([3, 64, 64, 3], 0, 1, "float32", 5);
    assert.equal(model.optimizedExecutor(), "kernels");
    assertClose(model, x, "kernels, batch 3");
    Deno.env.set("CONVNEXT_EXECUTOR", "tfjs");
    try {
      assert.equal(model.optimizedExecutor(), "tfjs");
      assertClose(model, x, "TF.js executor, batch 3");
      Deno.env.set("CONVNEXT_EXECUTOR", "gpu");
      assert.throws(
        () => model.predict(x),
        /CONVNEXT_EXECUTOR: expected "kernels" or "tfjs", got "gpu"/,
      );
    } finally {
      Deno.env.delete("CONVNEXT_EXECUTOR");
    }
    x.dispose();
    model.dispose();
  },
);

Deno.test("plans the kernels cannot run take the TF.js executor", opts, () => {
  // A 3x3 "same" convolution compiles into a plan but is no patchify conv.
  const input = tf.input({ shape: [8, 8, 3] });
  const conv = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: "same", name: "c3" });
  const y = conv.apply(input) as tf.SymbolicTensor;
  const model = new ConvNeXtModel({ inputs: input, outputs: y });
  assert.ok(model.usesOptimizedPath());
  assert.equal(model.optimizedExecutor(), "tfjs");
  const x = tf.randomNormal([2, 8, 8, 3], 0, 1, "float32", 6);
  const [stock, fast] = stockAndOptimized(model, x);
  assert.ok(maxAbsDiff(stock, fast) <= TOLERANCE);
  tf.dispose([stock, fast, x]);
  model.dispose();
});

Deno.test(
  "a graph the engine refuses: one pool across calls, outputs larger than inputs",
  opts,
  async () => {
    const { inferencePool } = await import("../lib/infer/pool.ts");
    const saved = Deno.env.get("CONVNEXT_THREADS");
    Deno.env.delete("CONVNEXT_THREADS");
    // 6 cores: 6 threads for the engine, 4 for the TF.js executor this graph needs.
    Object.defineProperty(navigator, "hardwareConcurrency", { value: 6, configurable: true });
    const input = tf.input({ shape: [8, 8, 3] });
    const conv = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: "same", name: "c3" });
    const model = new ConvNeXtModel({
      inputs: input,
      outputs: conv.apply(input) as tf.SymbolicTensor,
    });
    const x = tf.randomNormal([2, 8, 8, 3], 0, 1, "float32", 7);
    try {
      const pools = [];
      for (let call = 0; call < 3; call++) {
        // Its output (8x8x4 per image) is larger than its input (8x8x3): the workers'
        // buffers must make room for it.
        assertClose(model, x, `call ${call + 1}`);
        pools.push(inferencePool("tfjs"));
      }
      assert.equal(pools[0]?.threads, 4);
      assert.ok(pools[1] === pools[0] && pools[2] === pools[0], "the pool restarted between calls");
    } finally {
      delete (navigator as { hardwareConcurrency?: number }).hardwareConcurrency;
      if (saved !== undefined) Deno.env.set("CONVNEXT_THREADS", saved);
      closeInferencePool();
      tf.dispose(x);
      model.dispose();
    }
  },
);

Deno.test("a block on bands of rows equals the block on the whole map", () => {
  const model = createConvNeXt(SMALL, { seed: 8 });
  randomizeWeights(model, 8);
  const plan = compilePlan(model);
  const weights = foldWeights(model, plan);
  const step = plan.steps.find((s) => s.op === "block")!;
  if (step.op !== "block") throw new Error("no block step");
  const x = tf.randomNormal([1, 11, 9, 8], 0, 1, "float32", 9) as tf.Tensor4D;
  const whole = blockOnSlab(x, weights, step, 3, 3);
  for (const [r0, r1] of [[0, 4], [4, 9], [9, 11], [2, 3]]) {
    const a = Math.max(0, r0 - 3);
    const b = Math.min(11, r1 + 3);
    const slab = tf.slice(x, [0, a, 0, 0], [1, b - a, 9, 8]);
    const band = blockOnSlab(slab, weights, step, 3 - (r0 - a), 3 - (b - r1));
    const expected = tf.slice(whole, [0, r0, 0, 0], [1, r1 - r0, 9, 8]);
    assert.ok(maxAbsDiff(band, expected) <= 1e-5, `rows ${r0}..${r1}`);
    tf.dispose([slab, band, expected]);
  }
  tf.dispose([x, whole, ...Object.values(weights)]);
  model.dispose();
});

Deno.test("GELU approximation is within 3.5e-6 of the stock exact-erf GELU", () => {
  const stockGelu = tf.layers.activation({ activation: "gelu" });
  const x = tf.concat([tf.linspace(-20, 20, 40001), tf.tensor([-1e20, -1e3, 1e3, 1e20])]);
  const ours = gelu(x);
  const stock = stockGelu.apply(x) as tf.Tensor;
  const err = tf.tidy(() => tf.abs(tf.sub(ours, stock)));
  const values = err.dataSync();
  const scale = x.dataSync();
  for (let i = 0; i < values.length; i++) {
    const bound = 3.5e-6 + 1e-6 * Math.abs(scale[i]); // absolute, plus float32 rounding of x
    if (!(values[i] <= bound)) assert.fail(`gelu(${scale[i]}) off by ${values[i]}`);
  }
  tf.dispose([x, ours, stock, err]);
});

Deno.test("splitEven shares work evenly", () => {
  assert.deepEqual(splitEven(8, 2), [4, 4]);
  assert.deepEqual(splitEven(7, 3), [3, 2, 2]);
  assert.deepEqual(splitEven(1, 2), [1, 0]);
});

Deno.test("a worker whose backend fails is an error, never a fallback", opts, () => {
  const pool = new InferencePool(2, "no_such_backend");
  const model = createConvNeXt(SMALL, { seed: 9 });
  const plan = compilePlan(model);
  const weights = foldWeights(model, plan);
  const x = tf.zeros([2, 32, 32, 3]) as tf.Tensor4D;
  try {
    assert.throws(() => pool.tfjs.run(plan, weights, 1, x), /no_such_backend/);
  } finally {
    pool.close();
    tf.dispose([x, ...Object.values(weights)]);
    model.dispose();
  }
});

Deno.test("convnext_tiny at 224, batch 2: optimized logits within 1e-4 of stock", opts, () => {
  const model = createConvNeXt("convnext_tiny", { seed: 10, layerScaleInit: 0.5 });
  const x = tf.randomNormal([2, 224, 224, 3], 0, 1, "float32", 10);
  assertClose(model, x, "convnext_tiny");
  x.dispose();
  model.dispose();
});

Deno.test({
  name: "closing a pool resolves once its threads have left (not at terminate's request)",
  ignore: Deno.build.os !== "linux", // counts the process's threads in /proc
  ...opts,
  fn: async () => {
    // Deno's Worker.terminate() returns before the thread stops, and a worker's "exit" event
    // comes before its thread has dropped its isolate and runtime threads; the pool's close
    // lets each idle thread leave on its own and resolves when it is gone.
    const threads = () => [...Deno.readDirSync("/proc/self/task")].length;
    const before = threads();
    const pool = new InferencePool(4);
    for (const w of pool.workers) w.waitStarted();
    const running = threads();
    await pool.close();
    const after = threads();
    const started = running - before;
    assert.ok(started >= 3, `3 workers started ${started} threads`);
    // One thread of slack: the main runtime may start a blocking thread meanwhile.
    assert.ok(
      after - before <= 1,
      `${after - before} of the workers' ${started} threads are still there`,
    );
  },
});

Deno.test("a program's inference threads are gone before it unloads", opts, async () => {
  // A thread still being torn down while the process exits can crash it: the pool stops its
  // threads when the event loop runs dry, and the loop waits for them.
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  const lib = new URL("../lib/", import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { selectBackend } from "${lib}backend/select.ts";
import { createConvNeXt } from "${lib}model/convnext.ts";
import { inferencePool } from "${lib}infer/pool.ts";
await selectBackend("wasm");
const model = createConvNeXt({ kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], layerScaleInit: 0.5 });
tf.dispose(model.predict(tf.ones([2, 32, 32, 3])));
let alive = inferencePool()!.workers.length;
for (const w of inferencePool()!.workers) w.worker.on("exit", () => alive--);
globalThis.addEventListener("unload", () => console.log("threads alive at unload:", alive));
`,
  );
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script],
      env: { CONVNEXT_THREADS: "3" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(text, /threads alive at unload: 0\n/);
  } finally {
    await Deno.remove(script);
  }
});

Deno.test("close the inference pool", opts, async () => {
  await closeInferencePool();
});
