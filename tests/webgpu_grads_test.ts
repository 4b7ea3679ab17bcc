/**
 * Tests of lib/backend/webgpu_grads.ts and of training on the WebGPU backend: the
 * gradients of small ConvNeXts on webgpu against the cpu backend (the independent
 * reference), variable by variable; the webgpu convolution-gradient kernels against cpu;
 * one AdamW training step, a linear-probe fit and `model.fit` on webgpu without any synchronous read of a GPU tensor.
 *
 * Needs a WebGPU adapter. Without a GPU, Debian's mesa-vulkan-drivers gives Deno a
 * software one (llvmpipe: correct, slow); with no adapter at all every test fails saying
 * so (tools/test_prereqs.ts installs the package).
 *
 * Models are built on the cpu backend and then used on webgpu, so that both backends start
 * from the same weights.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../lib/backend/select.ts";
import { stockConvGradKernel, WEBGPU_CONV_GRAD_KERNELS } from "../lib/backend/webgpu_conv_grads.ts";
import {
  installWebGpuTrainingKernels,
  WEBGPU_TRAINING_KERNELS,
  webGpuTrainingKernelsReady,
} from "../lib/backend/webgpu_grads.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { crossEntropy } from "../lib/train/losses.ts";
import { AdamW, modelParams } from "../lib/train/optimizer.ts";
import { ModelEma } from "../lib/train/ema.ts";
import { createProbeHead } from "../lib/train/probe.ts";
import { withSeededMathRandom } from "../lib/train/rng.ts";
import { relErr } from "./numeric_helpers.ts";
import { convShapes, expectMatchesCpu, type Pad, rand, type Shape } from "./kernel_helpers.ts";

const NO_ADAPTER = "no WebGPU adapter: install a Vulkan driver (on Debian/Ubuntu without a GPU: " +
  "apt-get install mesa-vulkan-drivers, a software adapter) or run deno run -A " +
  "tools/test_prereqs.ts";

// selectBackend imports the webgpu backend (registering its kernels) and quiets the Vulkan
// loader's headless warning; the error it gives without an adapter is what every test reports.
const webgpuError: Error | null = await selectBackend("webgpu").then(() => null, (e) => e);
if (webgpuError === null) {
  installWebGpuTrainingKernels();
  await selectBackend("cpu");
}

/** Every test starts here: fails (never skips) without a usable WebGPU adapter. */
async function useWebGpu(): Promise<void> {
  if (webgpuError !== null) throw new Error(`${webgpuError.message}; ${NO_ADAPTER}`);
  await tf.setBackend("webgpu");
}

/**
 * Count the webgpu backend's synchronous reads of GPU-resident data during `fn` (a read of
 * data still on the CPU is free and works under Deno; the others throw there).
 */
async function gpuReadSyncs<T>(fn: () => Promise<T>): Promise<{ result: T; reads: number }> {
  const backend = tf.findBackend("webgpu") as unknown as {
    readSync(dataId: unknown): unknown;
    tensorMap: { get(dataId: unknown): { values?: unknown } | undefined };
  };
  const original = backend.readSync;
  let reads = 0;
  backend.readSync = function (dataId: unknown) {
    if (backend.tensorMap.get(dataId)?.values == null) reads++;
    return original.call(this, dataId);
  };
  try {
    return { result: await fn(), reads };
  } finally {
    backend.readSync = original;
  }
}

// ConvNeXt's depthwise 7x7 (odd sizes, the 1x1 last stage at 32x32 input) and other cases.
const DEPTHWISE_CASES: {
  x: Shape;
  k: [number, number];
  m: number;
  strides: number | [number, number];
  pad: Pad;
}[] = [
  { x: [2, 9, 7, 5], k: [7, 7], m: 1, strides: 1, pad: "same" },
  { x: [2, 1, 1, 8], k: [7, 7], m: 1, strides: 1, pad: "same" },
  { x: [2, 8, 8, 16], k: [7, 7], m: 1, strides: 1, pad: "same" },
  { x: [2, 9, 8, 3], k: [3, 3], m: 2, strides: 2, pad: "same" },
  { x: [3, 8, 8, 7], k: [3, 3], m: 1, strides: 1, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
];

// The stride-4 stem, stride-2 downsampling (odd size too) and a general convolution.
const CONV_CASES: {
  x: Shape;
  k: [number, number];
  cout: number;
  strides: number | [number, number];
  pad: Pad;
}[] = [
  { x: [2, 32, 32, 3], k: [4, 4], cout: 8, strides: 4, pad: "valid" },
  { x: [2, 9, 11, 6], k: [2, 2], cout: 7, strides: 2, pad: "valid" },
  { x: [2, 8, 8, 16], k: [2, 2], cout: 32, strides: 2, pad: "valid" },
  { x: [2, 9, 8, 3], k: [3, 3], cout: 5, strides: 1, pad: "same" },
];

Deno.test("installWebGpuTrainingKernels: webgpu 4.22 lacks nothing; conv gradients ours; idempotent", async () => {
  await useWebGpu();
  assert.ok(webGpuTrainingKernelsReady());
  const before = WEBGPU_TRAINING_KERNELS.map((name) => tf.getKernel(name, "webgpu")!.kernelFunc);
  const again = installWebGpuTrainingKernels();
  assert.deepEqual(again.added, []);
  assert.deepEqual(again.replaced, []); // the first call (useWebGpu) replaced them
  const ours: readonly string[] = WEBGPU_CONV_GRAD_KERNELS;
  assert.deepEqual(again.unchanged, WEBGPU_TRAINING_KERNELS.filter((n) => !ours.includes(n)));
  for (const name of WEBGPU_CONV_GRAD_KERNELS) {
    assert.notEqual(tf.getKernel(name, "webgpu")!.kernelFunc, stockConvGradKernel(name));
  }
  // Registrations stay as they are on a second call.
  assert.deepEqual(
    WEBGPU_TRAINING_KERNELS.map((name) => tf.getKernel(name, "webgpu")!.kernelFunc),
    before,
  );
});

Deno.test("webgpu's convolution gradient kernels match cpu", async () => {
  await useWebGpu();
  for (const [i, c] of DEPTHWISE_CASES.entries()) {
    const { filterShape, outShape } = convShapes(c, c.m, true);
    const attrs = { strides: c.strides, pad: c.pad, dilations: 1 };
    await expectMatchesCpu(
      "webgpu",
      "DepthwiseConv2dNativeBackpropInput",
      { dy: rand(outShape, 10 + i), filter: rand(filterShape, 20 + i) },
      { ...attrs, inputShape: c.x },
    );
    await expectMatchesCpu(
      "webgpu",
      "DepthwiseConv2dNativeBackpropFilter",
      { x: rand(c.x, 30 + i), dy: rand(outShape, 40 + i) },
      { ...attrs, filterShape },
    );
  }
  for (const [i, c] of CONV_CASES.entries()) {
    const { filterShape, outShape } = convShapes(c, c.cout, false);
    const attrs = { strides: c.strides, pad: c.pad, dataFormat: "NHWC" };
    await expectMatchesCpu(
      "webgpu",
      "Conv2DBackpropFilter",
      { x: rand(c.x, 60 + i), dy: rand(outShape, 70 + i) },
      { ...attrs, filterShape },
    );
    await expectMatchesCpu(
      "webgpu",
      "Conv2DBackpropInput",
      { dy: rand(outShape, 80 + i), filter: rand(filterShape, 90 + i) },
      { ...attrs, inputShape: c.x },
    );
  }
});

/** Per variable kind (the part of the name after the last "/"), the worst error seen. */
const worst = new Map<string, { norm: number; elem: number }>();

/**
 * Gradients of a weighted sum of the logits (every output gets a different, nonzero
 * gradient) with respect to every trainable variable, on cpu and then on webgpu (the
 * variables move to webgpu on first use and stay there), compared variable by variable.
 */
async function expectGradientsMatchCpu(
  model: tf.LayersModel,
  numClasses: number,
  seed: number,
  dropPathSeed?: number,
): Promise<void> {
  const x = rand([2, 32, 32, 3], seed);
  const weights = rand([2, numClasses], seed + 1);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const gradients = async (): Promise<Record<string, Float32Array>> => {
    const run = () =>
      tf.tidy(() => {
        const input = tf.tensor(x.values, x.shape);
        const w = tf.tensor(weights.values, weights.shape);
        return tf.variableGrads(
          () => tf.sum(tf.mul(model.apply(input, { training: true }) as tf.Tensor, w)) as tf.Scalar,
          vars,
        );
      });
    // Drop path draws its masks with tf.randomUniform, seeded from Math.random.
    const { value, grads } = dropPathSeed === undefined
      ? run()
      : withSeededMathRandom(dropPathSeed, run);
    value.dispose();
    const out: Record<string, Float32Array> = {};
    for (const [k, g] of Object.entries(grads)) {
      out[k] = await g.data() as Float32Array;
      g.dispose();
    }
    return out;
  };
  await tf.setBackend("cpu");
  const cpu = await gradients();
  await tf.setBackend("webgpu");
  const { result: gpu, reads } = await gpuReadSyncs(gradients);
  assert.equal(reads, 0, "synchronous reads of GPU data");
  assert.equal(Object.keys(gpu).length, vars.length);
  const failures: string[] = [];
  const dropped: string[] = [];
  for (const v of vars) {
    const ref = cpu[v.name];
    const got = gpu[v.name];
    const norm = relErr(got, ref);
    // Elementwise: only where |g| is at least 1% of the variable's largest gradient; below
    // that, float32 cancellation in either backend dominates the comparison.
    let gmax = 0;
    for (const g of ref) gmax = Math.max(gmax, Math.abs(g));
    let elem = 0;
    for (let i = 0; i < ref.length; i++) {
      if (Math.abs(ref[i]) >= 1e-2 * gmax) {
        elem = Math.max(elem, Math.abs(got[i] - ref[i]) / Math.abs(ref[i]));
      }
    }
    if (gmax === 0) {
      // A residual branch that drop path removed for every sample: it must be dropped on
      // webgpu too (the same masks), and no other variable may have a zero gradient.
      assert.ok(dropPathSeed !== undefined, `${v.name}: zero gradient, the test proves nothing`);
      assert.ok(got.every((g) => g === 0), `${v.name}: dropped on cpu, not on webgpu`);
      dropped.push(v.name);
      continue;
    }
    const kind = v.name.replace(/_\d+$/, "").replace(/^.*?([^/_]+\/[^/]+)$/, "$1");
    const w = worst.get(kind) ?? { norm: 0, elem: 0 };
    worst.set(kind, { norm: Math.max(w.norm, norm), elem: Math.max(w.elem, elem) });
    if (!(norm <= 1e-4 && elem <= 1e-4)) {
      failures.push(
        `${v.name}: norm ${norm.toExponential(2)}, elementwise ${elem.toExponential(2)}`,
      );
    }
  }
  assert.deepEqual(failures, []);
  // Only whole blocks' variables (dwconv, norm, pwconv1/2, layer scale) can be dropped.
  assert.ok(dropped.length < vars.length / 2, `dropped: ${dropped}`);
}

Deno.test("gradients of a small hierarchical ConvNeXt on webgpu match cpu within 1e-4", async () => {
  await useWebGpu();
  for (const dropPath of [0, 0.3]) {
    await tf.setBackend("cpu");
    const model = createConvNeXt(
      { kind: "hierarchical", depths: [1, 1, 2, 1], dims: [8, 16, 24, 32], layerScaleInit: 0.5 },
      { numClasses: 5, inputShape: [32, 32, 3], seed: 3, dropPathRate: dropPath },
    );
    await expectGradientsMatchCpu(model, 5, 300, dropPath > 0 ? 7 : undefined);
    model.dispose();
  }
});

Deno.test("gradients of a small isotropic ConvNeXt on webgpu match cpu within 1e-4", async () => {
  await useWebGpu();
  await tf.setBackend("cpu");
  const model = createConvNeXt(
    { kind: "isotropic", depth: 2, dim: 16, layerScaleInit: 0.5 },
    { numClasses: 4, inputShape: [32, 32, 3], seed: 5, dropPathRate: 0.3 },
  );
  await expectGradientsMatchCpu(model, 4, 310, 11);
  model.dispose();
  const rows = [...worst.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, w]) =>
    `${k.padEnd(28)} norm ${w.norm.toExponential(1)}, elementwise ${w.elem.toExponential(1)}`
  );
  console.log(`largest webgpu-vs-cpu gradient error per variable kind:\n${rows.join("\n")}`);
});

Deno.test("the kit's training step (AdamW, EMA) and a probe fit run on webgpu without sync reads", async () => {
  await useWebGpu();
  await tf.setBackend("cpu");
  const model = createConvNeXt(
    { kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 24, 32], layerScaleInit: 1e-2 },
    { numClasses: 3, inputShape: [32, 32, 3], seed: 4, dropPathRate: 0.1 },
  );
  const head = createProbeHead(32, 3, { seed: 6 });
  await tf.setBackend("webgpu");
  const x = tf.tensor(rand([3, 32, 32, 3], 400).values, [3, 32, 32, 3]);
  const labels = tf.tensor1d([0, 1, 2], "int32");
  const params = modelParams(model, { weightDecay: 0.05 });
  const optimizer = new AdamW(params);
  const ema = new ModelEma(model, 0.9);
  // As lib/train/finetune.ts's step: seeded gradients, AdamW update, EMA update.
  const step = async (i: number): Promise<number> => {
    const { value, grads } = withSeededMathRandom(
      i,
      () =>
        tf.variableGrads(
          () => crossEntropy(model.apply(x, { training: true }) as tf.Tensor, labels, 0.1),
          optimizer.variables,
        ),
    );
    optimizer.step(new Map(params.map((p) => [p.name, grads[p.variable.name]])), 2e-3);
    ema.update();
    tf.dispose(Object.values(grads));
    const loss = (await value.data())[0];
    value.dispose();
    return loss;
  };
  // First use: moves the variables to webgpu, compiles the shaders. Profiled: every kernel
  // the step runs must be in the list installWebGpuTrainingKernels checks.
  const profile = await tf.profile(() => step(0));
  const ran = [...new Set(profile.kernels.map((k) => k.name))].filter((n) => !n.endsWith("__op"));
  const unlisted = ran.filter((n) => !(WEBGPU_TRAINING_KERNELS as readonly string[]).includes(n));
  assert.deepEqual(unlisted, [], "kernels missing from WEBGPU_TRAINING_KERNELS");
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  const { result: losses, reads } = await gpuReadSyncs(async () => {
    const out: number[] = [];
    for (let i = 1; i <= 5; i++) out.push(await step(i));
    return out;
  });
  assert.equal(reads, 0, "synchronous reads of GPU data in the training step");
  assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
  assert.ok(losses[losses.length - 1] < losses[0], `loss did not fall: ${losses}`);
  assert.equal(tf.memory().numTensors, tensors, "tensors leaked");
  assert.equal(tf.engine().backend.numDataIds(), dataIds, "webgpu data leaked");
  assert.equal(optimizer.stepCount, 6);

  // Probe: a Dense head trained on fixed features with the same AdamW step.
  const features = tf.tensor(rand([6, 32], 410).values, [6, 32]);
  const probeLabels = tf.tensor1d([0, 1, 2, 0, 1, 2], "int32");
  const probeParams = modelParams(head, { weightDecay: 0 });
  const probeOpt = new AdamW(probeParams);
  const probe = await gpuReadSyncs(async () => {
    const out: number[] = [];
    for (let i = 0; i < 20; i++) {
      const { value, grads } = tf.variableGrads(
        () => crossEntropy(head.apply(features) as tf.Tensor, probeLabels),
        probeOpt.variables,
      );
      probeOpt.step(new Map(probeParams.map((p) => [p.name, grads[p.variable.name]])), 5e-2);
      tf.dispose(Object.values(grads));
      out.push((await value.data())[0]);
      value.dispose();
    }
    return out;
  });
  assert.equal(probe.reads, 0, "synchronous reads of GPU data in the probe step");
  assert.ok(probe.result[19] < 0.5 * probe.result[0], `probe loss ${probe.result}`);
  tf.dispose([x, labels, features, probeLabels]);
  optimizer.dispose();
  probeOpt.dispose();
  ema.dispose();
  model.dispose();
  head.dispose();
});

Deno.test("model.fit() trains a small ConvNeXt on webgpu without sync reads or leaks", async () => {
  await useWebGpu();
  await tf.setBackend("cpu");
  const model = createConvNeXt(
    { kind: "isotropic", depth: 2, dim: 16, layerScaleInit: 0.5 },
    { numClasses: 3, inputShape: [32, 32, 3], seed: 8, dropPathRate: 0.1 },
  );
  await tf.setBackend("webgpu");
  model.compile({
    optimizer: tf.train.adam(3e-3),
    loss: (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.losses.softmaxCrossEntropy(yTrue, yPred),
  });
  const xs = tf.tensor(rand([6, 32, 32, 3], 420).values, [6, 32, 32, 3]);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2], "int32"), 3);
  await model.fit(xs, ys, { epochs: 1, batchSize: 3, verbose: 0 });
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  const { result: history, reads } = await gpuReadSyncs(() =>
    model.fit(xs, ys, { epochs: 4, batchSize: 3, verbose: 0 })
  );
  assert.equal(reads, 0, "synchronous reads of GPU data in fit()");
  const losses = history.history.loss as number[];
  assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
  assert.ok(losses[losses.length - 1] < losses[0], `loss did not fall: ${losses}`);
  assert.equal(tf.memory().numTensors, tensors, "tensors leaked");
  assert.equal(tf.engine().backend.numDataIds(), dataIds, "webgpu data leaked");
  tf.dispose([xs, ys]);
  model.dispose();
});
