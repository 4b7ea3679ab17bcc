/**
 * Each inference path of `ConvNeXtModel.predict` against PyTorch's logits (the official
 * code in eval mode: tools/fixtures/make_checkpoints.py), on every fixture checkpoint
 * (hierarchical and isotropic, every key layout):
 *
 * - "stock": the TF.js Layers graph, what native TensorFlow, WebGPU and saved-model users run;
 * - "optimized" with the kernel engine (the default on wasm and cpu);
 * - "optimized" with `CONVNEXT_EXECUTOR=tfjs` (the compiled plan on TF.js kernels).
 *
 * Each test first asserts which path and executor the model takes, so that a silent change of
 * path (e.g. the engine refusing a plan) fails here instead of passing on another path.
 */
import assert from "node:assert/strict";
import { maxAbsDiff } from "./numeric_helpers.ts";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../lib/backend/select.ts";
import { ConvNeXtModel } from "../lib/infer/model.ts";
import { convertCheckpoint } from "../lib/weights/pretrained.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);

interface Fixture {
  name: string;
  file: string;
  spec: { kind: string };
  inputs: Record<string, { file: string; shape: number[] }>;
  logits: Record<string, { file: string; shape: number[] }>;
}
const { models } = JSON.parse(await Deno.readTextFile(new URL("models.json", DIR))) as {
  models: Fixture[];
};

async function readF32(file: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(new URL(file, DIR));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

await selectBackend("cpu");

const PATHS = [
  { label: "stock graph", path: "stock", executor: undefined },
  { label: "kernel engine", path: "optimized", executor: "kernels" },
  { label: "plan on TF.js kernels", path: "optimized", executor: "tfjs" },
] as const;

for (const fixture of models) {
  for (const { label, path, executor } of PATHS) {
    Deno.test(`${label}: ${fixture.name} (${fixture.spec.kind}) matches PyTorch`, async () => {
      const previous = Deno.env.get("CONVNEXT_EXECUTOR");
      if (executor) Deno.env.set("CONVNEXT_EXECUTOR", executor);
      const { model } = await convertCheckpoint(new URL(fixture.file, DIR).pathname);
      try {
        assert.ok(model instanceof ConvNeXtModel, "convertCheckpoint gives a ConvNeXtModel");
        model.inferencePath = path;
        assert.equal(model.usesOptimizedPath(), path === "optimized");
        if (executor) assert.equal(model.optimizedExecutor(), executor);
        for (const [key, input] of Object.entries(fixture.inputs)) {
          const x = tf.tensor(await readF32(input.file), input.shape);
          const y = model.predict(x) as tf.Tensor;
          const got = await y.data();
          tf.dispose([x, y]);
          const want = await readF32(fixture.logits[key].file);
          assert.deepEqual(y.shape, fixture.logits[key].shape);
          const maxDiff = maxAbsDiff(got, want);
          assert.ok(maxDiff <= 1e-4, `${fixture.name} ${key}: max abs diff ${maxDiff} > 1e-4`);
        }
      } finally {
        model.dispose();
        if (previous === undefined) Deno.env.delete("CONVNEXT_EXECUTOR");
        else Deno.env.set("CONVNEXT_EXECUTOR", previous);
      }
    });
  }
}

Deno.test("kernel engine on more threads than a stage has rows (9) matches PyTorch", async () => {
  // Machines with many cores now get a thread per core: every block is then split into
  // more bands than a late stage has rows.
  const { closeInferencePool } = await import("../lib/infer/pool.ts");
  const { withEnv } = await import("./env_helpers.ts");
  const fixture = models.find((m) => m.spec.kind === "hierarchical")!;
  await withEnv({ CONVNEXT_THREADS: "9", CONVNEXT_EXECUTOR: "kernels" }, async () => {
    const { model } = await convertCheckpoint(new URL(fixture.file, DIR).pathname);
    try {
      assert.ok(model instanceof ConvNeXtModel && model.usesOptimizedPath());
      for (const [key, input] of Object.entries(fixture.inputs)) {
        const x = tf.tensor(await readF32(input.file), input.shape);
        const y = model.predict(x) as tf.Tensor;
        const got = await y.data();
        tf.dispose([x, y]);
        const maxDiff = maxAbsDiff(got, await readF32(fixture.logits[key].file));
        assert.ok(maxDiff <= 1e-4, `${fixture.name} ${key}: max abs diff ${maxDiff} > 1e-4`);
      }
    } finally {
      model.dispose();
      closeInferencePool();
    }
  });
});
