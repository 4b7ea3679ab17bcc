// Grad-CAM against a hand computation: with ConvNeXt's head (average pool, LayerNorm,
// Dense) d score / d A[h, w, k] = (1 / HW) * d score / d pooled[k], which is computed here in
// float64 by central differences of a plain-JS head.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { createConvNeXt, selectBackend } from "../lib/mod.ts";
import { gradCam } from "../lib/model/gradcam.ts";

await selectBackend("wasm");

Deno.test("gradCam equals the hand-computed class activation map", async () => {
  const model = createConvNeXt(
    { kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 24, 32], layerScaleInit: 0.7 },
    { numClasses: 6, seed: 3 },
  );
  for (const w of model.weights) {
    w.write(tf.randomNormal(w.shape as number[], 0, 0.4, "float32", 5));
  }
  const input = tf.randomNormal([1, 96, 128, 3], 0, 1, "float32", 8) as tf.Tensor4D;
  const classIndex = 4;
  const cam = await gradCam(model, input, { classIndex });

  const features = tf.model({
    inputs: model.inputs,
    outputs: model.getLayer("stages_3_block_0").output,
  });
  const maps = features.predict(input) as tf.Tensor4D;
  const [, h, w, c] = maps.shape;
  const a = Array.from(maps.dataSync());
  const [gamma, beta] = model.getLayer("head_norm").getWeights().map((t) =>
    Array.from(t.dataSync())
  );
  const [kernel, bias] = model.getLayer("head_fc").getWeights().map((t) =>
    Array.from(t.dataSync())
  );
  const score = (p: number[]) => {
    const mean = p.reduce((s, v) => s + v, 0) / c;
    const variance = p.reduce((s, v) => s + (v - mean) ** 2, 0) / c;
    const n = p.map((v, k) => ((v - mean) / Math.sqrt(variance + 1e-6)) * gamma[k] + beta[k]);
    return n.reduce((s, v, k) => s + v * kernel[k * 6 + classIndex], bias[classIndex]);
  };
  const pooled = Array.from({ length: c }, (_, k) => {
    let s = 0;
    for (let i = 0; i < h * w; i++) s += a[i * c + k];
    return s / (h * w);
  });
  assert.ok(Math.abs(score(pooled) - cam.score) < 1e-3, `score ${score(pooled)} vs ${cam.score}`);
  const eps = 1e-4;
  const weights = pooled.map((_, k) => {
    const up = pooled.slice(), down = pooled.slice();
    up[k] += eps;
    down[k] -= eps;
    return (score(up) - score(down)) / (2 * eps) / (h * w);
  });
  const raw = Array.from(
    { length: h * w },
    (_, i) => Math.max(0, weights.reduce((s, wk, k) => s + wk * a[i * c + k], 0)),
  );
  const max = Math.max(...raw);
  assert.ok(max > 0, "the fixture has a non-trivial map");
  assert.equal(cam.height, 3);
  assert.equal(cam.width, 4);
  raw.forEach((v, i) =>
    assert.ok(Math.abs(v / max - cam.data[i]) < 2e-3, `${i}: ${v / max} vs ${cam.data[i]}`)
  );
  tf.dispose([input, maps]);
  model.dispose();
});

Deno.test("gradCam: defaults to the top class; clear errors", async () => {
  const model = createConvNeXt(
    { kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 24, 32], layerScaleInit: 0.5 },
    { numClasses: 5, seed: 1 },
  );
  const input = tf.randomNormal([1, 64, 64, 3], 0, 1, "float32", 2) as tf.Tensor4D;
  const top = tf.tidy(() => tf.argMax(model.predict(input) as tf.Tensor, 1).dataSync()[0]);
  assert.equal((await gradCam(model, input)).classIndex, top);
  await assert.rejects(
    () => gradCam(model, input, { classIndex: 5 }),
    /classIndex must be an integer in \[0, 5\)/,
  );
  await assert.rejects(() => gradCam(model, input, { layerName: "nope" }), /has no layer "nope"/);
  await assert.rejects(
    () => gradCam(model, input, { layerName: "stages_2_block_0" }),
    /not a simple chain/,
  );
  const batch = tf.zeros([2, 64, 64, 3]) as tf.Tensor4D;
  await assert.rejects(() => gradCam(model, batch), /one image/);
  batch.dispose();
  input.dispose();
  model.dispose();
});
