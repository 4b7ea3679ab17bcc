// End to end: every fixture checkpoint (official, isotropic, torchvision, timm, Hugging
// Face; float32/float16/bfloat16; stored and deflated) is read, converted, loaded into
// createConvNeXt by weight name, and must reproduce PyTorch's logits within 1e-4.
// References: tools/fixtures/make_checkpoints.py (PyTorch eval mode, float64).

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { maxAbsDiff } from "./numeric_helpers.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import type { ArchitectureSpec } from "../lib/model/variants.ts";
import { assertWeightsMatch, remapStateDict, type Weight } from "../lib/weights/remap.ts";
import { readStateDict } from "../lib/weights/state_dict.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);

interface FixtureModel {
  name: string;
  file: string;
  layout: string;
  spec:
    | { kind: "hierarchical"; depths: number[]; dims: number[]; layerScale: boolean }
    | { kind: "isotropic"; depth: number; dim: number; layerScale: boolean };
  numClasses: number;
  inputs: Record<string, { file: string; shape: number[] }>;
  logits: Record<string, { file: string; shape: number[] }>;
}

const { models } = JSON.parse(
  await Deno.readTextFile(new URL("models.json", DIR)),
) as { models: FixtureModel[] };

async function readF32(file: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(new URL(file, DIR));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** Sets every layer's weights by TF.js weight name; every converted weight must be used. */
function setWeightsByName(model: tf.LayersModel, weights: Map<string, Weight>): void {
  const used = new Set<string>();
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const values = layer.weights.map((w) => {
      const v = weights.get(w.originalName);
      if (!v) throw new Error(`no converted weight for ${w.originalName}`);
      used.add(w.originalName);
      return tf.tensor(v.data, v.shape);
    });
    layer.setWeights(values);
    tf.dispose(values);
  }
  const unused = [...weights.keys()].filter((n) => !used.has(n));
  assert.deepEqual(unused, [], "converted weights the model did not take");
}

await tf.setBackend("cpu");
await tf.ready();

for (const fixture of models) {
  Deno.test(`logits: ${fixture.name} (${fixture.layout} layout) matches PyTorch`, async () => {
    const sd = await readStateDict(new URL(fixture.file, DIR).pathname);
    const converted = remapStateDict(sd, { label: fixture.file });
    assert.equal(converted.layout, fixture.layout);
    assert.equal(converted.numClasses, fixture.numClasses);
    const s = fixture.spec;
    const expectSpec: ArchitectureSpec = s.kind === "hierarchical"
      ? {
        kind: "hierarchical",
        depths: s.depths as [number, number, number, number],
        dims: s.dims as [number, number, number, number],
        layerScaleInit: s.layerScale ? 1e-6 : 0,
      }
      : { kind: "isotropic", depth: s.depth, dim: s.dim, layerScaleInit: s.layerScale ? 1e-6 : 0 };
    assert.deepEqual(converted.spec, expectSpec);

    const model = createConvNeXt(converted.spec, {
      numClasses: converted.numClasses,
      randomInit: false,
    });
    try {
      // The lead's strictness check against the real model's weights.
      assertWeightsMatch(
        converted.weights,
        new Map(model.weights.map((w) => [w.originalName, w.shape as number[]])),
        fixture.file,
      );
      setWeightsByName(model, converted.weights);
      for (const [key, input] of Object.entries(fixture.inputs)) {
        const x = tf.tensor(await readF32(input.file), input.shape);
        const y = model.predict(x) as tf.Tensor;
        const got = await y.data();
        tf.dispose([x, y]);
        const want = await readF32(fixture.logits[key].file);
        assert.deepEqual(y.shape, fixture.logits[key].shape);
        const maxDiff = maxAbsDiff(got, want);
        assert.ok(maxDiff <= 1e-4, `${fixture.name} ${key}: max abs diff ${maxDiff} > 1e-4`);
        if (Deno.env.get("SHOW_DIFF")) {
          console.log(`${fixture.name} ${key}: max abs diff ${maxDiff}`);
        }
      }
    } finally {
      model.dispose();
    }
  });
}
