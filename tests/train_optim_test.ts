/**
 * Tests of the optimizer pieces of lib/train/ against reference numbers from PyTorch and
 * the official ConvNeXt code (tests/fixtures/train/reference.json, made by
 * tools/fixtures/make_train_fixture.py).
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { AdamW, type AdamWParam, modelParams } from "../lib/train/optimizer.ts";
import { cosineSchedule } from "../lib/train/schedule.ts";
import {
  convnextLayerId,
  convnextLayerIdSingle,
  layerScales,
  paramSettings,
} from "../lib/train/lr_decay.ts";
import { correctCount, crossEntropy } from "../lib/train/losses.ts";
import { ModelEma } from "../lib/train/ema.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";

await tf.setBackend("cpu");
(tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;

const ref = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/train/reference.json", import.meta.url)),
);

function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    assert.ok(
      err <= tol * Math.max(1, Math.abs(expected[i])),
      `${what}[${i}]: ${actual[i]} vs ${expected[i]} (err ${err})`,
    );
  }
}

Deno.test("AdamW matches torch.optim.AdamW step by step (groups, lr scales, schedule)", async () => {
  const a = ref.adamw;
  const params: AdamWParam[] = [];
  for (const group of a.groups) {
    for (const name of group.names) {
      params.push({
        name,
        variable: tf.variable(tf.tensor(a.init[name], a.shapes[name])),
        weightDecay: group.weightDecay,
        lrScale: group.lrScale,
      });
    }
  }
  const opt = new AdamW(params, { beta1: a.betas[0], beta2: a.betas[1], eps: a.eps });
  // The schedule itself comes from our cosineSchedule, checked against the fixture's lrs.
  const lr = cosineSchedule({
    base: 0.01,
    final: 1e-4,
    epochs: 2,
    stepsPerEpoch: 3,
    warmupEpochs: 1,
    warmupSteps: 2,
  });
  assertClose(lr, a.lr, 1e-12, "schedule");
  for (let t = 0; t < a.grads.length; t++) {
    const grads = new Map<string, tf.Tensor>(
      Object.entries(a.grads[t] as Record<string, number[]>).map((
        [k, g],
      ) => [k, tf.tensor(g, a.shapes[k])]),
    );
    opt.step(grads, lr[t]);
    grads.forEach((g) => g.dispose());
    for (const p of params) {
      assertClose(await p.variable.data(), a.after[t][p.name], 2e-6, `step ${t + 1} ${p.name}`);
    }
  }
  // The state round-trips and equals torch's moments.
  const state = await opt.getState();
  assert.equal(state.step, a.grads.length);
  for (const s of state.slots) {
    assertClose(s.m, a.finalState[s.name].exp_avg, 1e-6, `m ${s.name}`);
    assertClose(s.v, a.finalState[s.name].exp_avg_sq, 1e-6, `v ${s.name}`);
  }
  const copy = new AdamW(
    params.map((p) => ({ ...p, variable: tf.variable(tf.zerosLike(p.variable)) })),
  );
  copy.setState(state);
  const again = await copy.getState();
  assert.equal(again.step, state.step);
  assert.deepEqual(
    again.slots.map((s) => Array.from(s.v)),
    state.slots.map((s) => Array.from(s.v)),
  );
  opt.dispose();
  copy.dispose();
  params.forEach((p) => p.variable.dispose());
});

Deno.test("cosineSchedule equals the official cosine_scheduler", () => {
  for (const c of ref.cosine) {
    const a = c.args;
    const values = cosineSchedule({
      base: a.base_value,
      final: a.final_value,
      epochs: a.epochs,
      stepsPerEpoch: a.niter_per_ep,
      warmupEpochs: a.warmup_epochs,
      warmupSteps: a.warmup_steps,
      startWarmup: a.start_warmup_value,
    });
    assertClose(values, c.values, 1e-12, JSON.stringify(a));
  }
  assert.throws(
    () => cosineSchedule({ base: 1, final: 0, epochs: 1, stepsPerEpoch: 2, warmupSteps: 3 }),
    /warmup of 3 steps/,
  );
});

Deno.test("layer decay and no-decay groups equal the official optimizer factory", () => {
  const ld = ref.layer_decay;
  const model = createConvNeXt(
    { kind: "hierarchical", depths: ld.depths, dims: [8, 8, 8, 8], layerScaleInit: 1e-6 },
    { numClasses: 3, randomInit: false },
  );
  const names = model.trainableWeights.map((w) => w.originalName).sort();
  assert.deepEqual(
    names,
    Object.keys(ld.params).sort(),
    "same parameter set as the official model",
  );
  for (const w of model.trainableWeights) {
    const expected = ld.params[w.originalName];
    const got = paramSettings(w.originalName, w.shape as number[], {
      weightDecay: ld.weightDecay,
      layerDecay: ld.layerDecay,
    });
    assert.equal(got.layerId, expected.layerId, `layer id of ${w.originalName}`);
    assert.ok(Math.abs(got.lrScale - expected.lrScale) < 1e-15, `lr scale of ${w.originalName}`);
    assert.equal(got.weightDecay, expected.weightDecay, `weight decay of ${w.originalName}`);
  }
  // Hand-computed from get_num_layer_for_convnext.
  assert.equal(convnextLayerId("stem_conv/kernel"), 0);
  assert.equal(convnextLayerId("stages_1_downsample_conv/kernel"), 2);
  assert.equal(convnextLayerId("stages_2_downsample_norm/gamma"), 3);
  assert.equal(convnextLayerId("stages_3_downsample_conv/bias"), 12);
  assert.equal(convnextLayerId("stages_2_block_26_pwconv2/kernel"), 11);
  assert.equal(convnextLayerId("stages_2_block_2_dwconv/bias"), 3);
  assert.equal(convnextLayerId("stages_3_block_0_norm/beta"), 12);
  assert.equal(convnextLayerId("head_norm/gamma"), 13);
  assert.equal(layerScales(0.5)[0], 0.5 ** 13);
  assert.throws(() => convnextLayerId("blocks_3_dwconv/bias"), /isotropic/);
  // modelParams carries the settings to the optimizer.
  const params = modelParams(model, { weightDecay: 0.05 });
  const byName = new Map(params.map((p) => [p.name, p]));
  assert.equal(byName.get("stages_0_block_0_layer_scale/gamma")!.weightDecay, 0);
  assert.equal(byName.get("stages_0_block_0_pwconv1/kernel")!.weightDecay, 0.05);
  assert.equal(byName.get("head_fc/bias")!.weightDecay, 0);
  model.dispose();
});

Deno.test("ConvNeXt V2: the \"single\" layer decay and GRN's no-decay equal V2's optimizer factory", () => {
  const ld = ref.layer_decay_v2;
  // convnextv2_atto's depths; narrow widths keep the model small.
  const model = createConvNeXt(
    { kind: "hierarchical", depths: ld.depths, dims: [8, 8, 8, 8], layerScaleInit: 0, grn: true },
    { numClasses: 3, randomInit: false },
  );
  const names = model.trainableWeights.map((w) => w.originalName).sort();
  assert.deepEqual(names, Object.keys(ld.params).sort(), "same parameters as the official V2");
  // modelParams picks V2's default ("single" over the model's depths) by itself.
  const params = new Map(
    modelParams(model, { weightDecay: ld.weightDecay, layerDecay: ld.layerDecay }).map((p) => [
      p.name,
      p,
    ]),
  );
  for (
    const [name, expected] of Object.entries(ld.params) as [
      string,
      { lrScale: number; weightDecay: number },
    ][]
  ) {
    const got = params.get(name)!;
    assert.ok(Math.abs(got.lrScale - expected.lrScale) < 1e-15, `lr scale of ${name}`);
    assert.equal(got.weightDecay, expected.weightDecay, `weight decay of ${name}`);
  }
  // Hand-computed from get_num_layer_for_convnext_single with depths [2, 2, 6, 2].
  assert.equal(convnextLayerIdSingle("stem_conv/kernel", ld.depths), 1);
  assert.equal(convnextLayerIdSingle("stages_2_downsample_conv/kernel", ld.depths), 5);
  assert.equal(convnextLayerIdSingle("stages_2_block_5_grn/beta", ld.depths), 10);
  assert.equal(convnextLayerIdSingle("stages_3_block_1_pwconv2/kernel", ld.depths), 12);
  assert.equal(convnextLayerIdSingle("head_fc/kernel", ld.depths), 13);
  // Asked for explicitly, the V1 ("group") layer decay applies to V2 too (V2's base/large recipes).
  const group = modelParams(model, {
    weightDecay: 0.05,
    layerDecay: 0.9,
    layerDecayType: "group",
  }).find((p) => p.name === "stages_2_block_5_grn/beta")!;
  assert.ok(
    Math.abs(group.lrScale - 0.9 ** (13 - convnextLayerId("stages_2_block_5_grn/beta"))) < 1e-15,
  );
  model.dispose();
});

Deno.test("crossEntropy with label smoothing equals torch", () => {
  const ls = ref.label_smoothing;
  const logits = tf.tensor(ls.logits, ls.shape);
  const labels = tf.tensor1d(ls.labels, "int32");
  for (const c of ls.cases) {
    const loss = crossEntropy(logits, labels, c.smoothing);
    assertClose(loss.dataSync(), [c.loss], 1e-6, `smoothing ${c.smoothing}`);
    loss.dispose();
  }
  const expectedCorrect = ls.labels.filter((label: number, i: number) => {
    const row = ls.logits.slice(i * 5, i * 5 + 5) as number[];
    return row.indexOf(Math.max(...row)) === label;
  }).length;
  assert.equal(correctCount(logits, labels), expectedCorrect);
  tf.dispose([logits, labels]);
});

Deno.test("ModelEma averages as ema = d * ema + (1 - d) * w and restores weights", async () => {
  const model = tf.sequential({
    layers: [tf.layers.dense({ units: 1, inputShape: [1], kernelInitializer: "zeros" })],
  });
  const ema = new ModelEma(model, 0.5);
  const kernel = model.weights[0];
  kernel.write(tf.tensor2d([[4]]));
  ema.update(); // 0.5 * 0 + 0.5 * 4 = 2
  kernel.write(tf.tensor2d([[8]]));
  ema.update(); // 0.5 * 2 + 0.5 * 8 = 5
  const inside = await ema.withAveraged(async () => (await kernel.read().data())[0]);
  assert.equal(inside, 5);
  assert.equal((await kernel.read().data())[0], 8);
  ema.dispose();
  model.dispose();
});
