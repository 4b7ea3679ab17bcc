// ConvNeXt V2 on the WebGPU backend: GRN's forward and gradient against PyTorch's (a dead
// channel included), and a converted V2 fixture's logits against the official code's.
// Runs on whatever adapter Deno finds (in CI Mesa's software Vulkan driver); without an
// adapter every test FAILS, as in webgpu_test.ts (no silent skip).
// References: tools/fixtures/make_v2_fixtures.py (tests/fixtures/v2/).
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { maxAbsDiff } from "./numeric_helpers.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { quietHeadlessVulkan, useVulkanOnLinux } from "../lib/backend/webgpu_compat.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { GlobalResponseNorm } from "../lib/model/layers.ts";
import { remapStateDict } from "../lib/weights/remap.ts";
import { readStateDict } from "../lib/weights/state_dict.ts";

quietHeadlessVulkan();
useVulkanOnLinux(); // before this module's first adapter request, as the library's requests do
Deno.env.delete("CONVNEXT_BACKEND");

const DIR = new URL("./fixtures/v2/", import.meta.url);
const adapter = await navigator.gpu?.requestAdapter();

async function onWebGpu(): Promise<void> {
  if (!adapter) {
    throw new Error(
      "no WebGPU adapter: install a Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers), then rerun",
    );
  }
  assert.equal(await selectBackend("webgpu"), "webgpu");
}

async function readF32(file: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(new URL(file, DIR));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

Deno.test("webgpu: GRN forward and gradients match PyTorch's, a dead channel included", async () => {
  await onWebGpu();
  const ref = JSON.parse(await Deno.readTextFile(new URL("grn_grad.json", DIR))) as Record<
    string,
    number[]
  >;
  const shape = ref.shape as [number, number, number, number];
  const layer = new GlobalResponseNorm({ name: "grn" });
  const x = tf.tensor4d(ref.x, shape);
  const dy = tf.tensor4d(ref.dy, shape);
  tf.dispose(layer.apply(x) as tf.Tensor);
  layer.setWeights([tf.tensor1d(ref.gamma), tf.tensor1d(ref.beta)]);
  const f = (input: tf.Tensor) => tf.sum(tf.mul(layer.apply(input) as tf.Tensor, dy));
  const y = layer.apply(x) as tf.Tensor;
  const dx = tf.grad(f)(x);
  const vars = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  const { grads } = tf.variableGrads(() => f(x) as tf.Scalar, vars);
  const got = {
    y: await y.data(),
    dx: await dx.data(),
    dgamma: await grads[vars[0].name].data(),
    dbeta: await grads[vars[1].name].data(),
  };
  for (const [key, values] of Object.entries(got)) {
    assert.ok(values.every(Number.isFinite), `${key} finite`);
    const diff = maxAbsDiff(values, ref[key]);
    assert.ok(diff < 1e-4, `${key}: max abs diff ${diff}`);
  }
  tf.dispose([x, dy, y, dx, ...Object.values(grads)]);
});

Deno.test("webgpu: a converted V2 model's logits match the official code's", async () => {
  await onWebGpu();
  const c = remapStateDict(await readStateDict(new URL("official_v2.pt", DIR).pathname));
  const model = createConvNeXt(c.spec, { numClasses: c.numClasses, randomInit: false });
  try {
    for (const w of model.weights) {
      const { data, shape } = c.weights.get(w.originalName)!;
      const value = tf.tensor(data, shape);
      w.write(value);
      value.dispose();
    }
    for (const key of ["inputs_64", "inputs_48x80"]) {
      const shape = key === "inputs_64" ? [2, 64, 64, 3] : [1, 48, 80, 3];
      const x = tf.tensor(await readF32(`${key}.nhwc.bin`), shape);
      const y = model.predict(x) as tf.Tensor;
      const diff = maxAbsDiff(await y.data(), await readF32(`official_v2.${key}.out.bin`));
      assert.ok(diff <= 1e-4, `${key}: max abs diff ${diff}`);
      tf.dispose([x, y]);
    }
  } finally {
    model.dispose();
  }
});
