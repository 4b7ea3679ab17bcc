/**
 * Tests of lib/train/parallel.ts: the data-parallel gradients (a batch split over the main
 * thread and a worker, each on its own wasm backend) against the single-threaded gradients
 * of the same model (the reference), then a few AdamW steps both ways.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { installWasmTrainingKernels } from "../lib/backend/wasm_grads.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { crossEntropy } from "../lib/train/losses.ts";
import { AdamW, modelParams } from "../lib/train/optimizer.ts";
import { ParallelGradients, trainThreads } from "../lib/train/parallel.ts";
import { relErr } from "./numeric_helpers.ts";

installWasmTrainingKernels();
await tf.setBackend("wasm");
await tf.ready();

const SPEC = {
  kind: "hierarchical",
  depths: [1, 1, 1, 1],
  dims: [8, 16, 32, 64],
  layerScaleInit: 0.5,
} as const;
const CLASSES = 5;

function makeModel(dropPathRate = 0): tf.LayersModel {
  return createConvNeXt(SPEC, {
    numClasses: CLASSES,
    inputShape: [32, 32, 3],
    seed: 3,
    dropPathRate,
  });
}

/** Deterministic images in [-1, 1) and labels (a linear congruential generator). */
function batchOf(n: number, seed: number): { x: tf.Tensor4D; labels: Int32Array } {
  let s = seed >>> 0;
  const values = new Float32Array(n * 32 * 32 * 3);
  for (let i = 0; i < values.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    values[i] = s / 2 ** 31 - 1;
  }
  const labels = Int32Array.from({ length: n }, (_, i) => (i * 3 + seed) % CLASSES);
  return { x: tf.tensor4d(values, [n, 32, 32, 3]), labels };
}

/** The single-threaded reference: gradients of `scale * mean loss` by parameter name. */
function singleGradients(
  params: ReturnType<typeof modelParams>,
  model: tf.LayersModel,
  x: tf.Tensor,
  labels: Int32Array,
  smoothing: number,
  scale: number,
): { loss: number; grads: Map<string, tf.Tensor> } {
  const ls = tf.tensor1d(labels, "int32");
  const { value, grads } = tf.variableGrads(
    () =>
      tf.mul(
        crossEntropy(model.apply(x, { training: true }) as tf.Tensor, ls, smoothing),
        scale,
      ) as tf.Scalar,
    params.map((p) => p.variable),
  );
  const loss = value.dataSync()[0] / scale;
  tf.dispose([value, ls]);
  return { loss, grads: new Map(params.map((p) => [p.name, grads[p.variable.name]])) };
}

Deno.test("parallel gradients over 2 threads equal the single-threaded gradients", async () => {
  const model = makeModel();
  const params = modelParams(model, { weightDecay: 0.05 });
  const parallel = await ParallelGradients.start(model, params, { threads: 2 });
  try {
    for (const [smoothing, scale] of [[0, 1], [0.1, 0.5]]) {
      const { x, labels } = batchOf(4, 7);
      const ref = singleGradients(params, model, x, labels, smoothing, scale);
      const got = parallel.gradients(x, labels, { smoothing, scale, seed: 1 });
      assert.ok(
        Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss),
        `loss ${got.loss} vs ${ref.loss}`,
      );
      assert.equal(got.grads.size, params.length);
      for (const p of params) {
        const a = got.grads.get(p.name)!.dataSync() as Float32Array;
        const b = ref.grads.get(p.name)!.dataSync() as Float32Array;
        assert.ok(b.some((v) => v !== 0), `${p.name}: reference gradient is all zeros`);
        const e = relErr(a, b);
        assert.ok(e < 1e-4, `${p.name} (smoothing ${smoothing}): relative error ${e}`);
      }
      tf.dispose([x, ...got.grads.values(), ...ref.grads.values()]);
    }
  } finally {
    parallel.close();
    model.dispose();
  }
});

Deno.test("AdamW steps with parallel gradients give the single-threaded weights", async () => {
  const single = makeModel();
  const multi = makeModel();
  const singleParams = modelParams(single, { weightDecay: 0.05 });
  const multiParams = modelParams(multi, { weightDecay: 0.05 });
  const optSingle = new AdamW(singleParams);
  const optMulti = new AdamW(multiParams);
  const parallel = await ParallelGradients.start(multi, multiParams, { threads: 2 });
  try {
    for (let step = 0; step < 3; step++) {
      // Two micro-batches accumulated per step (update_freq 2), one of an odd size.
      const acc = new Map<string, tf.Tensor>();
      const accRef = new Map<string, tf.Tensor>();
      for (const [k, n] of [[0, 4], [1, 3]]) {
        const { x, labels } = batchOf(n, 100 + step * 2 + k);
        const got = parallel.gradients(x, labels, { smoothing: 0.1, scale: 0.5, seed: step });
        const ref = singleGradients(singleParams, single, x, labels, 0.1, 0.5);
        for (const [into, from] of [[acc, got.grads], [accRef, ref.grads]]) {
          for (const [name, g] of from) {
            const prev = into.get(name);
            into.set(name, prev ? tf.add(prev, g) : g);
            if (prev) tf.dispose([prev, g]);
          }
        }
        x.dispose();
      }
      optMulti.step(acc, 1e-2);
      optSingle.step(accRef, 1e-2);
      tf.dispose([...acc.values(), ...accRef.values()]);
    }
    for (let i = 0; i < singleParams.length; i++) {
      const a = multiParams[i].variable.dataSync() as Float32Array;
      const b = singleParams[i].variable.dataSync() as Float32Array;
      const e = relErr(a, b);
      assert.ok(e < 1e-4, `${singleParams[i].name}: relative error ${e} after 3 steps`);
    }
    // The weights moved, and the worker followed: a last step still agrees.
    const { x, labels } = batchOf(4, 999);
    const got = parallel.gradients(x, labels);
    const ref = singleGradients(singleParams, single, x, labels, 0, 1);
    for (const p of singleParams) {
      const e = relErr(
        got.grads.get(p.name)!.dataSync() as Float32Array,
        ref.grads.get(p.name)!.dataSync() as Float32Array,
      );
      assert.ok(e < 1e-3, `${p.name}: relative error ${e} after the updates`);
    }
    tf.dispose([x, ...got.grads.values(), ...ref.grads.values()]);
  } finally {
    parallel.close();
    optSingle.dispose();
    optMulti.dispose();
    single.dispose();
    multi.dispose();
  }
});

Deno.test("drop path: parallel steps are reproducible for a seed and a batch", async () => {
  const model = makeModel(0.3);
  const params = modelParams(model, { weightDecay: 0.05 });
  const parallel = await ParallelGradients.start(model, params, { threads: 2 });
  try {
    const { x, labels } = batchOf(4, 5);
    const a = parallel.gradients(x, labels, { seed: 11 });
    const b = parallel.gradients(x, labels, { seed: 11 });
    const c = parallel.gradients(x, labels, { seed: 12 });
    assert.equal(a.loss, b.loss);
    assert.notEqual(a.loss, c.loss, "another seed should draw other drop-path masks");
    tf.dispose([x, ...[a, b, c].flatMap((r) => [...r.grads.values()])]);
  } finally {
    parallel.close();
    model.dispose();
  }
});

Deno.test("ParallelGradients: bad thread counts and a missing backend are errors", async () => {
  const model = makeModel();
  const params = modelParams(model, { weightDecay: 0.05 });
  try {
    await assert.rejects(
      () => ParallelGradients.start(model, params, { threads: 1 }),
      /threads must be an integer >= 2/,
    );
    // No fallback: a worker whose backend does not exist fails to start, loudly.
    await assert.rejects(
      () => ParallelGradients.start(model, params, { threads: 2, backend: "no-such-backend" }),
      /no-such-backend/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("trainThreads: CONVNEXT_TRAIN_THREADS overrides min(cores, batch)", () => {
  const saved = Deno.env.get("CONVNEXT_TRAIN_THREADS");
  try {
    Deno.env.delete("CONVNEXT_TRAIN_THREADS");
    assert.equal(trainThreads(1), 1);
    assert.equal(trainThreads(64), Math.max(1, navigator.hardwareConcurrency || 1));
    Deno.env.set("CONVNEXT_TRAIN_THREADS", "3");
    assert.equal(trainThreads(1), 3);
    Deno.env.set("CONVNEXT_TRAIN_THREADS", "0");
    assert.throws(() => trainThreads(2), /CONVNEXT_TRAIN_THREADS: expected a positive integer/);
  } finally {
    if (saved === undefined) Deno.env.delete("CONVNEXT_TRAIN_THREADS");
    else Deno.env.set("CONVNEXT_TRAIN_THREADS", saved);
  }
});
