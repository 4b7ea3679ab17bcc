// The WebGPU kernels of lib/backend/webgpu_kernels.ts (issue #12, speed on the GPU) against
// float64 references computed here and PyTorch's AdamW (tests/fixtures/train/), and the
// optimized plan's and the optimizer's dispatches on webgpu.
//
// Runs on whatever adapter Deno finds (CI: Mesa's software Vulkan driver). Without an
// adapter every test FAILS (no silent skip).
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { createConvNeXt } from "../lib/mod.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { quietHeadlessVulkan, useVulkanOnLinux } from "../lib/backend/webgpu_compat.ts";
import {
  webGpuAdamWUpdate,
  webGpuGelu,
  webGpuGeluTrainable,
  webGpuLayerNorm,
  webGpuMovingAverage,
  webGpuRowNorm,
} from "../lib/backend/webgpu_kernels.ts";
import { AdamW, type AdamWParam } from "../lib/train/optimizer.ts";
import { ModelEma } from "../lib/train/ema.ts";

quietHeadlessVulkan();
useVulkanOnLinux(); // before this module's first adapter request, as the library's requests do

async function onWebGpu(): Promise<void> {
  if (!await navigator.gpu?.requestAdapter()) {
    throw new Error("no WebGPU adapter: apt-get install mesa-vulkan-drivers");
  }
  assert.equal(await selectBackend("webgpu"), "webgpu");
}

/** erf(x) in float64: Simpson's rule on 2/sqrt(pi) exp(-t^2) over [0, x] (error < 1e-12). */
function erf64(x: number): number {
  const n = 2000, h = x / n;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return (s * h / 3) * 2 / Math.sqrt(Math.PI);
}

/** Deterministic values in [-scale, scale). */
function values(n: number, seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return (s / 2 ** 31 * 2 - 1) * scale;
  });
}

Deno.test("webgpu GELU kernel: the exact GELU within float32 rounding, -10 to 10", async () => {
  await onWebGpu();
  // Above the CPU hand-off size (1000 elements), so that the GPU computes it.
  const x = Float32Array.from([...values(4000, 1, 10), 0, -0, 1, -1, 1e-8, 30, -30]);
  const y = await webGpuGelu(tf.tensor(x)).data();
  for (let i = 0; i < x.length; i++) {
    const v = x[i], want = 0.5 * v * (1 + erf64(v / Math.SQRT2));
    const err = Math.abs(y[i] - want);
    assert.ok(err <= 1e-6 + 1e-6 * Math.abs(v), `gelu(${v}) = ${y[i]}, want ${want}`);
  }
});

Deno.test("webgpu row norm kernel: LayerNorm without affine, as float64 computes it", async () => {
  await onWebGpu();
  for (const [rows, cols, eps] of [[300, 96, 1e-6], [17, 100, 1e-6], [64, 8, 1e-3]] as const) {
    // An offset and a spread per row, as activations have.
    const x = values(rows * cols, cols, 1).map((v, i) => 3 * v + Math.floor(i / cols) % 5);
    const y = await webGpuRowNorm(tf.tensor2d(x, [rows, cols]), eps).data();
    for (let r = 0; r < rows; r++) {
      const row = Array.from(x.subarray(r * cols, (r + 1) * cols));
      const mean = row.reduce((a, b) => a + b, 0) / cols;
      const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / cols;
      for (let c = 0; c < cols; c++) {
        const want = (row[c] - mean) / Math.sqrt(variance + eps);
        const got = y[r * cols + c];
        assert.ok(
          Math.abs(got - want) <= 1e-5,
          `[${rows}x${cols}] (${r}, ${c}): ${got} vs ${want}`,
        );
      }
    }
  }
});

Deno.test("webgpu LayerNorm op: value and gradients equal the cpu backend's autodiff", async () => {
  const [rows, cols, eps] = [40, 96, 1e-6];
  const x = values(rows * cols, 5, 2).map((v, i) => v + (i % 7));
  const [gamma, beta, dy] = [values(cols, 6, 1), values(cols, 7, 1), values(rows * cols, 8, 1)];
  /** y and the gradients of sum(y * dy) with respect to x, gamma and beta. */
  const run = async (norm: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.Tensor) => {
    const [xt, gt, bt] = [tf.tensor2d(x, [rows, cols]), tf.tensor1d(gamma), tf.tensor1d(beta)];
    const dyt = tf.tensor2d(dy, [rows, cols]);
    const y = norm(xt, gt, bt);
    const grads = tf.grads((a, b, c) => tf.sum(tf.mul(norm(a, b, c), dyt)))([xt, gt, bt]);
    const out = [await y.data(), ...await Promise.all(grads.map((g) => g.data()))];
    tf.dispose([xt, gt, bt, dyt, y, ...grads]);
    return out;
  };
  await onWebGpu();
  const gpu = await run((a, g, b) => webGpuLayerNorm(a, g, b, eps));
  assert.equal(await selectBackend("cpu"), "cpu");
  const cpu = await run((a, g, b) => {
    const { mean, variance } = tf.moments(a, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(a, mean), tf.rsqrt(tf.add(variance, eps))), g), b);
  });
  ["y", "dx", "dgamma", "dbeta"].forEach((name, k) => {
    let err = 0;
    for (let i = 0; i < cpu[k].length; i++) err = Math.max(err, Math.abs(gpu[k][i] - cpu[k][i]));
    assert.ok(err <= 2e-5, `${name}: max abs diff ${err}`);
  });
});

Deno.test("webgpu GELU op: value and gradient equal the cpu backend's autodiff", async () => {
  const x = values(3000, 9, 6), dy = values(3000, 10, 1);
  const run = async (gelu: (x: tf.Tensor) => tf.Tensor) => {
    const [xt, dyt] = [tf.tensor1d(x), tf.tensor1d(dy)];
    const y = gelu(xt);
    const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(gelu(a), dyt)))(xt);
    const out = [await y.data(), await dx.data()];
    tf.dispose([xt, dyt, y, dx]);
    return out;
  };
  await onWebGpu();
  const gpu = await run(webGpuGeluTrainable);
  assert.equal(await selectBackend("cpu"), "cpu");
  // TF.js's own "gelu" activation, differentiated by TF.js.
  const stock = tf.layers.activation({ activation: "gelu" });
  const cpu = await run((a) => stock.apply(a) as tf.Tensor);
  ["y", "dx"].forEach((name, k) => {
    let err = 0;
    for (let i = 0; i < x.length; i++) err = Math.max(err, Math.abs(gpu[k][i] - cpu[k][i]));
    assert.ok(err <= 1e-5, `${name}: max abs diff ${err}`); // float32 rounding, |x| < 6
  });
});

Deno.test("a model's layers on webgpu: GELU in one kernel, Dense and depthwise fused, saved as TF.js's", async () => {
  await onWebGpu();
  const model = createConvNeXt(
    { kind: "isotropic", depth: 2, dim: 16, layerScaleInit: 0.5 },
    { numClasses: 4, seed: 2 },
  );
  const x = tf.randomNormal([1, 32, 32, 3], 0, 1, "float32", 1);
  const labels = tf.oneHot(tf.tensor1d([1], "int32"), 4);
  // The Layers graph, as training runs it: forward and backward.
  const info = await tf.profile(async () => {
    const { value, grads } = tf.variableGrads(() =>
      tf.losses.softmaxCrossEntropy(labels, model.apply(x, { training: true }) as tf.Tensor)
    );
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
  });
  const names = info.kernels.map((k) => k.name).filter((n) => !n.endsWith("__op"));
  const count = (name: string) => names.filter((n) => n === name).length;
  assert.equal(count("ConvnextGeluErf"), 2);
  assert.equal(count("ConvnextGeluGrad"), 2);
  assert.equal(count("Erf"), 0);
  // Backward, each pointwise layer transposes its kernel (2-D, small) for the input's
  // gradient; nothing else is transposed (tfjs-layers' identity transpose of the kernel is
  // gone, forward and backward).
  const transposed = info.kernels.filter((k) => k.name === "Transpose");
  assert.deepEqual(
    transposed.map((k) => k.inputShapes[0]),
    [[64, 16], [16, 64], [64, 16], [16, 64]],
  );
  // Forward: two pointwise layers a block and the head, each one product with its bias; the
  // depthwise conv with its bias.
  assert.equal(count("_FusedMatMul"), 2 * 2 + 1);
  assert.equal(count("FusedDepthwiseConv2D"), 2);
  assert.equal(count("DepthwiseConv2dNative"), 0);
  const pw1 = model.layers.find((l) => l.name.endsWith("pwconv1"))!;
  assert.equal(pw1.getConfig().activation, "gelu");
  assert.equal(pw1.getClassName(), "Dense");
  assert.equal(
    model.layers.find((l) => l.name.endsWith("dwconv"))!.getClassName(),
    "DepthwiseConv2D",
  );
  tf.dispose([x, labels]);
  model.dispose();
});

Deno.test("the optimized plan on webgpu: six dispatches per block, no transposes", async () => {
  await onWebGpu();
  const depths = [1, 1, 2, 1] as const;
  const model = createConvNeXt(
    { kind: "hierarchical", depths, dims: [8, 16, 32, 64], layerScaleInit: 0.5 },
    { numClasses: 10, seed: 3 },
  );
  const x = tf.randomNormal([2, 64, 64, 3], 0, 1, "float32", 4);
  const run = async () => {
    const y = model.predict(x) as tf.Tensor;
    await y.data();
    y.dispose();
  };
  await run(); // folds the weights
  const info = await tf.profile(run);
  const count = (name: string) => info.kernels.filter((k) => k.name === name).length;
  const blocks = depths.reduce((a, b) => a + b, 0);
  assert.equal(count("ConvnextGeluErf"), blocks);
  assert.equal(count("FusedDepthwiseConv2D"), blocks);
  // A LayerNorm in each block, after the stem and before each downsampling, and the head's.
  assert.equal(count("ConvnextRowNorm"), blocks + 1 + 3 + 1);
  assert.equal(count("Mean"), 1, "the global average pooling");
  for (const stock of ["Transpose", "Erf", "Rsqrt", "Sub"]) assert.equal(count(stock), 0, stock);
  tf.dispose(x);
  model.dispose();
});

// tools/fixtures/make_train_fixture.py: torch.optim.AdamW over four parameters in three
// groups (weight decay, none, a quarter of the learning rate), six steps.
const adamwRef = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/train/reference.json", import.meta.url)),
).adamw;

Deno.test("AdamW on webgpu: torch.optim.AdamW step by step, three dispatches a parameter", async () => {
  await onWebGpu();
  const a = adamwRef;
  const params: AdamWParam[] = a.groups.flatMap((
    group: { names: string[]; weightDecay: number; lrScale: number },
  ) =>
    group.names.map((name) => ({
      name,
      variable: tf.variable(tf.tensor(a.init[name], a.shapes[name])),
      weightDecay: group.weightDecay,
      lrScale: group.lrScale,
    }))
  );
  const opt = new AdamW(params, { beta1: a.betas[0], beta2: a.betas[1], eps: a.eps });
  for (let t = 0; t < a.grads.length; t++) {
    const grads = new Map<string, tf.Tensor>(
      Object.entries(a.grads[t] as Record<string, number[]>)
        .map(([k, g]) => [k, tf.tensor(g, a.shapes[k])]),
    );
    const info = await tf.profile(() => opt.step(grads, a.lr[t]));
    const names = info.kernels.map((k) => k.name).filter((n) => !n.endsWith("__op"));
    assert.deepEqual(
      [...new Set(names)].sort(),
      ["ConvnextAdamWUpdate", "ConvnextMovingAverage", "ConvnextMovingSquareAverage"],
    );
    assert.equal(names.length, 3 * params.length);
    grads.forEach((g) => g.dispose());
    for (const p of params) {
      const got = await p.variable.data(), want = a.after[t][p.name] as number[];
      want.forEach((w, i) =>
        assert.ok(
          Math.abs(got[i] - w) <= 2e-6 * Math.max(1, Math.abs(w)),
          `step ${t + 1} ${p.name}[${i}]: ${got[i]} vs torch ${w}`,
        )
      );
    }
  }
  const state = await opt.getState();
  for (const s of state.slots) {
    for (const [moment, got] of [["exp_avg", s.m], ["exp_avg_sq", s.v]] as const) {
      const want = a.finalState[s.name][moment] as number[];
      want.forEach((w, i) =>
        assert.ok(Math.abs(got[i] - w) <= 1e-6 * Math.max(1, Math.abs(w)), `${moment} ${s.name}`)
      );
    }
  }
  opt.dispose();
  params.forEach((p) => p.variable.dispose());
});

Deno.test("webgpu moving averages: EMA and AdamW's moments as float64 computes them", async () => {
  await onWebGpu();
  const n = 5000, x = values(n, 11, 3), y = values(n, 12, 2);
  for (const [decay, square] of [[0.9, false], [0.999, true], [0.9999, false]] as const) {
    const got = await webGpuMovingAverage(tf.tensor(x), tf.tensor(y), decay, square).data();
    for (let i = 0; i < n; i++) {
      const want = x[i] * decay + (square ? y[i] * y[i] : y[i]) * (1 - decay);
      assert.ok(
        Math.abs(got[i] - want) <= 1e-6 * Math.max(1, Math.abs(want)),
        `decay ${decay}, square ${square}: [${i}] ${got[i]} vs ${want}`,
      );
    }
  }
  // The model's EMA on webgpu takes the kernel, and gives ema = d ema + (1 - d) w.
  const model = tf.sequential({
    layers: [tf.layers.dense({ units: 40, inputShape: [30], kernelInitializer: "ones" })],
  });
  const ema = new ModelEma(model, 0.75);
  model.weights[0].write(tf.fill([30, 40], 5));
  const info = await tf.profile(() => ema.update());
  assert.deepEqual(info.kernels.map((k) => k.name), Array(2).fill("ConvnextMovingAverage"));
  const averaged = await ema.weights.get(model.weights[0].originalName)!.data();
  assert.ok(averaged.every((v) => v === 0.75 * 1 + 0.25 * 5), "ema of 1 and 5");
  ema.dispose();
  model.dispose();
  assert.throws(
    () => webGpuMovingAverage(tf.zeros([2, 3]), tf.zeros([3, 2]), 0.9),
    /webGpuMovingAverage: y has shape \[3,2\], x \[2,3\]; they must match/,
  );
  assert.throws(
    () =>
      webGpuAdamWUpdate(tf.zeros([2]), tf.zeros([2]), tf.zeros([2], "int32"), {
        keep: 1,
        stepSize: 1,
        bc2Sqrt: 1,
        eps: 1e-8,
      }),
    /webGpuAdamWUpdate: v must be float32, got int32/,
  );
});
