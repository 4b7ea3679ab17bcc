// embed(): the pooled embedding with the model's preprocessing. Checked against the stock
// Layers graph up to head_norm on the same preprocessed pixels, and against PyTorch: the
// head applied to the embedding gives the fixture's reference logits
// (tests/fixtures/eval/, made by tools/fixtures/make_eval_fixture.py) and classify's
// probabilities.

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { classify, softmax } from "../lib/classify.ts";
import { embed, embeddingModel } from "../lib/embed.ts";
import { readImage } from "../lib/data/decode.ts";
import { evalTransform } from "../lib/data/transform.ts";
import { ConvNeXtModel } from "../lib/infer/model.ts";
import { evalTransformOptions, modelConfig } from "../lib/model/config.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { loadModel } from "../lib/weights/pretrained.ts";

const FIX = new URL("./fixtures/eval/", import.meta.url).pathname;

interface Sample {
  path: string;
  logits?: number[];
}
const expected = JSON.parse(await Deno.readTextFile(join(FIX, "expected.json"))) as {
  samples: Sample[];
};
const good = expected.samples.filter((s) => s.logits).slice(0, 5);
const paths = good.map((s) => join(FIX, "imagefolder", s.path));

await selectBackend("wasm");
const model = await loadModel(join(FIX, "tiny10.pth"));

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

Deno.test("embed: head_norm of the stock Layers graph on the same preprocessed pixels", async () => {
  const e = await embed(model, paths, { batch: 2 });
  const t = evalTransformOptions(modelConfig(model).preprocessing);
  const per = t.size * t.size * 3;
  const pixels = new Float32Array(paths.length * per);
  for (const [i, p] of paths.entries()) {
    evalTransform(await readImage(p), t.size, t, pixels.subarray(i * per, (i + 1) * per));
  }
  // A plain tf.LayersModel: the stock Layers path, not the fused kernels embed runs on.
  const stock = tf.model({ inputs: model.inputs, outputs: model.getLayer("head_norm").output });
  const x = tf.tensor4d(pixels, [paths.length, t.size, t.size, 3]);
  const ref = stock.predict(x) as tf.Tensor;
  assert.deepEqual(e.shape, ref.shape);
  const d = maxDiff(await e.data(), await ref.data());
  assert.ok(d < 1e-4, `embedding differs from the stock graph by ${d}`);
  tf.dispose([e, x, ref]);
});

Deno.test("embed: the head applied to the embedding gives PyTorch's logits and classify's probabilities", async () => {
  const e = await embed(model, paths);
  const [w, b] = model.getLayer("head_fc").getWeights();
  const logits = tf.tidy(() => e.matMul(w).add(b));
  const rows = await logits.array() as number[][];
  tf.dispose([e, logits]);
  const classes = await classify(model, paths, { topK: 10 });
  good.forEach((s, i) => {
    const d = maxDiff(rows[i], s.logits!);
    assert.ok(d < 1e-4, `${s.path}: logits differ from PyTorch's by ${d}`);
    const p = softmax(rows[i]);
    for (const c of classes[i].top) {
      assert.ok(Math.abs(c.probability - p[c.index]) < 1e-5, `${s.path} class ${c.index}`);
    }
  });
});

Deno.test("embed: tensors (a Tensor3D, a Tensor4D batch) give the rows of the same images as files", async () => {
  const rgb = await readImage(paths[0]);
  const t3 = tf.tensor3d(rgb.data, [rgb.height, rgb.width, 3], "int32");
  // The batch: the image and its mirror image, as floats.
  const t4 = tf.tidy(() => tf.stack([t3, tf.reverse(t3, 1)]).toFloat()) as tf.Tensor4D;
  const mirrored = new Uint8Array(rgb.data.length);
  for (let y = 0; y < rgb.height; y++) {
    for (let x = 0; x < rgb.width; x++) {
      const from = (y * rgb.width + x) * 3;
      mirrored.set(rgb.data.subarray(from, from + 3), (y * rgb.width + rgb.width - 1 - x) * 3);
    }
  }
  const flipped = { width: rgb.width, height: rgb.height, data: mirrored };
  const fromTensors = await embed(model, [t3, t4]);
  const fromFiles = await embed(model, [paths[0], paths[0], flipped]);
  assert.deepEqual(fromTensors.shape, [3, fromFiles.shape[1]]);
  const d = maxDiff(await fromTensors.data(), await fromFiles.data());
  assert.ok(d < 1e-5, `tensor vs file embeddings differ by ${d}`);
  // The mirror image is a different input: its row differs (the check above can fail).
  const rows = await fromFiles.array();
  assert.ok(maxDiff(rows[0], rows[2]) > 1e-3);
  // A lone tensor is accepted as the whole input.
  const lone = await embed(model, t4);
  assert.ok(maxDiff(await lone.data(), (await fromFiles.data()).subarray(lone.shape[1])) < 1e-5);
  assert.equal(t3.isDisposed, false, "inputs are not disposed");
  tf.dispose([t3, t4, fromTensors, fromFiles, lone]);
});

Deno.test("embeddingModel: shares the layers up to head_norm; backbones are their own embedding", () => {
  const emb = embeddingModel(model);
  assert.ok(emb instanceof ConvNeXtModel, "a ConvNeXtModel: predict takes the optimized path");
  assert.equal(emb, embeddingModel(model), "built once per model");
  assert.equal(emb.getLayer("stem_conv"), model.getLayer("stem_conv"), "same layers, same weights");
  const spec = {
    kind: "hierarchical" as const,
    depths: [1, 1, 1, 1] as const,
    dims: [8, 8, 16, 16] as const,
    layerScaleInit: 1e-6,
  };
  for (const pooling of ["avg", "max"] as const) {
    const backbone = createConvNeXt(spec, { includeTop: false, pooling, inputShape: [32, 32, 3] });
    assert.equal(embeddingModel(backbone), backbone);
  }
  const maps = createConvNeXt(spec, { includeTop: false, inputShape: [32, 32, 3] });
  assert.throws(() => embeddingModel(maps), /^Error: embed: model ".*" has no pooled embedding/);
});

Deno.test("embed: an unreadable image or a bad tensor is an error naming it", async () => {
  await assert.rejects(
    embed(model, [paths[0], join(FIX, "missing.jpg")]),
    /^Error: embed: cannot read image '.*missing\.jpg': file not found/,
  );
  const flat = tf.zeros([4, 4]);
  await assert.rejects(embed(model, [flat as tf.Tensor3D]), /tensor input #0 has shape \[4,4\]/);
  const scaled = tf.fill([8, 8, 3], -2.1); // mean/std-normalized pixels go below 0;
  await assert.rejects(embed(model, scaled as tf.Tensor3D), /RGB pixels in 0\.\.255/);
  await assert.rejects(embed(model, paths, { batch: 0 }), /embed: batch must be an integer >= 1/);
  tf.dispose([flat, scaled]);
});
