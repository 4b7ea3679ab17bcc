// classify() and `deno task classify` against the PyTorch references of the evaluation
// fixture (tests/fixtures/eval/, made by tools/fixtures/make_eval_fixture.py): the
// probabilities must be the softmax of PyTorch's logits and the top classes its top-5.

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { classify, classifyEach, classLabels, softmax, topIndices } from "../lib/classify.ts";
import { evalTransformOptions } from "../lib/model/config.ts";
import type { ImageFailure } from "../lib/data/batches.ts";
import { readImage } from "../lib/data/decode.ts";
import { imagenetClasses } from "../lib/data/imagenet.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { loadModel, preprocessingFor } from "../lib/weights/pretrained.ts";

const FIX = new URL("./fixtures/eval/", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

interface Sample {
  path: string;
  label: number;
  logits?: number[];
  top5?: number[];
  error?: string;
}
const expected = JSON.parse(await Deno.readTextFile(join(FIX, "expected.json"))) as {
  samples: Sample[];
};
const good = expected.samples.filter((s) => s.logits);
const broken = expected.samples.find((s) => s.error)!;
const path = (s: Sample) => join(FIX, "imagefolder", s.path);

await selectBackend("wasm");
const MODEL = join(FIX, "tiny10.pth");
const model = await loadModel(MODEL);

/** The reference: softmax of PyTorch's float64 logits. */
function referenceProbabilities(s: Sample): Float64Array {
  const max = Math.max(...s.logits!);
  const e = s.logits!.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return Float64Array.from(e, (v) => v / sum);
}

function checkTop(top: { index: number; label: string; probability: number }[], s: Sample, k = 5) {
  const ref = referenceProbabilities(s);
  assert.deepEqual(top.map((p) => p.index), s.top5!.slice(0, k), s.path);
  for (const p of top) {
    assert.ok(Math.abs(p.probability - ref[p.index]) < 1e-5, `${s.path}: ${p.probability}`);
    assert.equal(p.label, `class ${p.index}`);
  }
}

Deno.test("classify: PyTorch's top-5 and softmax probabilities, in input order", async () => {
  const results = await classify(model, good.map(path), { batch: 5 });
  assert.deepEqual(results.map((r) => r.image), good.map(path));
  results.forEach((r, i) => checkTop(r.top, good[i]));
});

Deno.test("classify: bytes and decoded pixels give the same result as paths", async () => {
  const s = good.slice(0, 3);
  const bytes = await Promise.all(s.map((x) => Deno.readFile(path(x))));
  const rgb = await Promise.all(s.map((x) => readImage(path(x))));
  const mixed = [bytes[0], rgb[1], path(s[2]), rgb[0]];
  const results = await classify(model, mixed, { topK: 3, workers: 0 });
  assert.deepEqual(results.map((r) => r.image), [
    "<bytes #0>",
    "<image #1>",
    path(s[2]),
    "<image #3>",
  ]);
  [s[0], s[1], s[2], s[0]].forEach((x, i) => checkTop(results[i].top, x, 3));
});

Deno.test("classify: tensors of 0..255 RGB pixels (HWC) give the same result as the files", async () => {
  const s = good.slice(0, 2);
  const rgb = await Promise.all(s.map((x) => readImage(path(x))));
  const t3 = rgb.map((r) => tf.tensor3d(r.data, [r.height, r.width, 3], "int32"));
  // A Tensor4D batch of the first image twice, as floats (what tf.browser.fromPixels-style
  // code or a decoder gives), and a lone tensor as the whole input.
  const t4 = tf.tidy(() => tf.stack([t3[0], t3[0]]).toFloat()) as tf.Tensor4D;
  const results = await classify(model, [t3[1], t4, path(s[0])], { topK: 5, workers: 0 });
  assert.deepEqual(results.map((r) => r.image), [
    "<tensor #0>",
    "<tensor #1>",
    "<tensor #2>",
    path(s[0]),
  ]);
  [s[1], s[0], s[0], s[0]].forEach((x, i) => checkTop(results[i].top, x));
  const files = await classify(model, [path(s[1]), path(s[0])]);
  // The same pixels: the same top classes and probabilities as from the files.
  assert.deepEqual(results[0].top.map((p) => p.index), files[0].top.map((p) => p.index));
  results[0].top.forEach((p, k) => {
    assert.ok(Math.abs(p.probability - files[0].top[k].probability) < 1e-6);
  });
  const [lone] = await classify(model, t3[1]);
  assert.deepEqual(lone.top.map((p) => p.index), files[0].top.map((p) => p.index));
  assert.ok(t3.every((t) => !t.isDisposed) && !t4.isDisposed, "inputs are not disposed");
  // Shapes and values that are not RGB pixels are a one-line error naming the input.
  const grey = tf.zeros([8, 8, 1]);
  await assert.rejects(classify(model, [path(s[0]), grey as tf.Tensor3D]), /input #1 has shape/);
  const normalized = tf.tidy(() => t3[0].toFloat().div(255).sub(0.485).div(0.229));
  await assert.rejects(
    classify(model, [normalized as tf.Tensor3D]),
    /^TypeError: classify: tensor input #0 holds -[0-9.]+: expected RGB pixels in 0\.\.255/,
  );
  tf.dispose([...t3, t4, grey, normalized]);
});

Deno.test("classify: unreadable images throw, or are reported while the others go on", async () => {
  const missing = join(FIX, "no_such_image.jpg");
  await assert.rejects(
    classify(model, [path(good[0]), missing]),
    /cannot read image '.*no_such_image\.jpg': file not found/,
  );
  const failures: ImageFailure[] = [];
  const inputs = [missing, path(good[0]), path(broken), path(good[1])];
  const results = await classify(model, inputs, { onError: (f) => failures.push(f) });
  assert.deepEqual(results.map((r) => r.image), [path(good[0]), path(good[1])]);
  checkTop(results[1].top, good[1]);
  assert.deepEqual(failures.map((f) => f.index), [0, 2]);
  assert.match(failures[1].message, /cannot decode image '.*broken\.JPEG'/);
  const items = [];
  for await (const item of classifyEach(model, inputs, { batch: 2 })) items.push(item);
  assert.deepEqual(items.map((i) => [i.index, "error" in i]), [[0, true], [1, false], [2, true], [
    3,
    false,
  ]]);
});

Deno.test("classify: ImageNet names for 1000-class models, top-k clamped to the classes", async () => {
  const spec = {
    kind: "hierarchical",
    depths: [1, 1, 1, 1],
    dims: [8, 8, 8, 8],
    layerScaleInit: 1e-6,
  } as const;
  const m1k = createConvNeXt(spec, { numClasses: 1000, seed: 3 });
  const names = imagenetClasses();
  assert.deepEqual(await classLabels(m1k), names);
  const [r] = await classify(m1k, [path(good[0])], { topK: 4 });
  assert.equal(r.top.length, 4);
  for (const p of r.top) assert.equal(p.label, names[p.index]);
  m1k.dispose();
  const [small] = await classify(model, [path(good[0])], { topK: 50 });
  assert.equal(small.top.length, 10);
  const sum = small.top.reduce((a, p) => a + p.probability, 0);
  assert.ok(Math.abs(sum - 1) < 1e-12, `probabilities sum to ${sum}`);
  await assert.rejects(
    classify(model, [path(good[0])], { labels: ["a"] }),
    /1 labels given for a model with 10 classes/,
  );
});

Deno.test("classify: disposes every tensor it makes", async () => {
  await classify(model, [path(good[0])]); // warm-up (kernels, caches)
  const before = tf.memory().numTensors;
  await classify(model, good.slice(0, 3).map(path), { batch: 2 });
  assert.equal(tf.memory().numTensors, before);
});

Deno.test("softmax, topIndices and the transform options", () => {
  // Hand-computed: softmax([0, ln 3]) = [1/4, 3/4].
  const p = softmax([0, Math.log(3)]);
  assert.ok(Math.abs(p[0] - 0.25) < 1e-15 && Math.abs(p[1] - 0.75) < 1e-15);
  assert.deepEqual(topIndices([0.1, 3, 2, 3, -1], 3), [1, 3, 2]);
  assert.deepEqual(topIndices([5, 4], 5), [0, 1]);
  assert.equal(evalTransformOptions(preprocessingFor(384)).size, 384);
  assert.throws(
    () => evalTransformOptions({ ...preprocessingFor(224), mode: "warp" }),
    /not the official eval transform/,
  );
});

/** Run `deno task classify`; returns exit code, stdout and stderr. */
async function cli(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "tools", "classify.ts"), ...args],
    env: { CONVNEXT_BACKEND: "wasm" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno task classify --json: exact line format; a missing file stops it before any work", async () => {
  const missing = join(FIX, "missing.jpg");
  const early = await cli(["--model", "convnext_nope", "--json", path(good[0]), missing]);
  // The inputs are checked before the model is loaded (or downloaded): the missing file is
  // reported, not the unknown model.
  assert.equal(early.code, 1);
  assert.equal(early.stdout, "");
  assert.deepEqual(early.stderr.trim().split("\n"), [
    `classify: ${missing}: no such file or folder`,
  ]);
  const images = [path(good[0]), path(good[1])];
  const r = await cli(["--model", MODEL, "--json", "--top", "3", ...images]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 2);
  const lib = await classify(model, [path(good[0]), path(good[1])], { topK: 3 });
  lines.forEach((line, i) => {
    const obj = JSON.parse(line);
    assert.deepEqual(Object.keys(obj), ["image", "model", "top"]);
    assert.deepEqual(obj, { image: lib[i].image, model: MODEL, top: lib[i].top });
    for (const t of obj.top) {
      assert.deepEqual(Object.keys(t), ["index", "label", "probability"]);
      assert.ok(Number.isInteger(t.index));
    }
    // The spacing of the format (Python json.dumps style).
    assert.ok(line.startsWith(`{"image": ${JSON.stringify(lib[i].image)}, "model": `), line);
    assert.match(
      line,
      /"top": \[\{"index": \d+, "label": "class \d+", "probability": [0-9.e-]+\}, /,
    );
  });
  checkTop(JSON.parse(lines[1]).top, good[1], 3);

  // An image that exists but cannot be decoded is reported; the others are still classified.
  const dir = await Deno.makeTempDir();
  try {
    const broken = join(dir, "broken.jpg");
    await Deno.writeTextFile(broken, "not a JPEG");
    const partial = await cli(["--model", MODEL, "--json", path(good[0]), broken, path(good[1])]);
    assert.equal(partial.code, 1);
    assert.equal(partial.stdout.trim().split("\n").length, 2);
    assert.equal(partial.stderr.trim().split("\n").length, 1);
    assert.match(partial.stderr, /^classify: .*broken\.jpg/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task classify: table output, unknown model and bad arguments", async () => {
  const ok = await cli(["--model", MODEL, path(good[0])]);
  assert.equal(ok.code, 0, ok.stderr);
  const lines = ok.stdout.trim().split("\n");
  assert.equal(lines[0], `${path(good[0])}  (${MODEL})`);
  assert.match(lines[1], /^\s+#\s+prob\s+index\s+label$/);
  assert.equal(lines.length, 2 + 5);
  assert.match(
    lines[2],
    new RegExp(`^\\s+1\\s+[0-9.]+%\\s+${good[0].top5![0]}\\s+class ${good[0].top5![0]}$`),
  );

  const unknown = await cli(["--model", "convnext_nope", path(good[0])]);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stdout, "");
  assert.equal(unknown.stderr.trim().split("\n").length, 1);
  assert.match(unknown.stderr, /^classify: loadModel: "convnext_nope" is not a zoo name/);

  const none = await cli(["--model", MODEL]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no IMAGE given/);
  const badTop = await cli(["--top", "0", path(good[0])]);
  assert.equal(badTop.code, 2);
  assert.match(badTop.stderr, /--top expects a positive integer, got "0"/);
});
