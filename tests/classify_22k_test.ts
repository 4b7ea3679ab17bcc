/**
 * Classification with a 21841-class (ImageNet-22K) head against PyTorch, offline: a local
 * HTTP server plays the official download site (`CONVNEXT_BASE_URL`) and serves the
 * checkpoints and `label_to_words.json` of tests/fixtures/22k/ (made by
 * tools/fixtures/make_22k_fixture.py); `CONVNEXT_CACHE` is a fresh temporary directory.
 *
 * - `convnext_tiny_22k_224`, loaded by its zoo name: a convnext_tiny-shaped checkpoint with a
 *   768x21841 head (periodic weights: its top-5 is the same for every image);
 * - `small_22k_random.pth`, loaded by URL: a small ConvNeXt with random weights and head
 *   (its top-5 depends on the image).
 *
 * For each: all 21841 logits within 1e-4 of PyTorch's (float64) on the stock TF.js Layers
 * graph and on the default `predict` path (the kernel engine on wasm), each test asserting
 * which path ran; `classify` on two photos gives PyTorch's top-5 with PyTorch's
 * probabilities, named from the served `label_to_words.json`.
 */
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { selectBackend } from "../lib/backend/select.ts";
import { classify } from "../lib/classify.ts";
import { ConvNeXtModel } from "../lib/infer/model.ts";
import { storedModelConfig } from "../lib/model/config.ts";
import { loadModel } from "../lib/weights/pretrained.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";
import { maxAbsDiff } from "./numeric_helpers.ts";
import { withEnv } from "./env_helpers.ts";

await selectBackend("wasm");

const DIR = new URL("./fixtures/22k/", import.meta.url);
const ROOT = new URL("../", import.meta.url);
const NUM_CLASSES = 21841;
const LABELS_FILE = "label_to_words.json";

interface ClassifyReference {
  image: string;
  top5: number[];
  probabilities: number[];
  labels: string[];
}
interface ModelReference {
  name: string;
  zoo: string | null;
  file: string;
  logits: string;
  top5: number[];
  classify: ClassifyReference[];
}
const reference = JSON.parse(await Deno.readTextFile(new URL("reference.json", DIR))) as {
  labels: string;
  numClasses: number;
  images: string[];
  models: ModelReference[];
};
const labelBytes = await Deno.readFile(new URL(LABELS_FILE, DIR));
const servedLabels = JSON.parse(new TextDecoder().decode(labelBytes)) as Record<string, string>;
const images = reference.images.map((p) => new URL(p, ROOT).pathname);
const quiet = { download: { quiet: true, backoffMs: 5, retries: 1 } };

function fixtureModel(name: string): ModelReference {
  const m = reference.models.find((x) => x.name === name);
  if (!m) throw new Error(`reference.json: no model ${name}`);
  return m;
}

async function readF32(file: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(new URL(file, DIR));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** The formula input of make_22k_fixture.py (as make_zoo_fixture.py), NHWC. */
function formulaInput(): tf.Tensor4D {
  const data = new Float32Array(224 * 224 * 3);
  for (let h = 0; h < 224; h++) {
    for (let w = 0; w < 224; w++) {
      for (let c = 0; c < 3; c++) {
        data[(h * 224 + w) * 3 + c] = Math.sin(0.07 * h + 0.11 * w + 1.3 * c) +
          0.5 * Math.cos(0.023 * h * w + c);
      }
    }
  }
  return tf.tensor4d(data, [1, 224, 224, 3]);
}

/** Indices of the k largest values, largest first. */
function topK(values: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: values.length }, (_, i) => i)
    .sort((a, b) => values[b] - values[a] || a - b).slice(0, k);
}

/** A file server for fixed files that records the paths it was asked for. */
function serve(files: Record<string, Uint8Array<ArrayBuffer>>) {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname.slice(1);
    requests.push(path);
    const body = files[path];
    if (!body) return new Response("not found", { status: 404 });
    return new Response(body.slice(), {
      headers: { "content-length": String(body.length) },
    });
  });
  const port = (server.addr as Deno.NetAddr).port;
  return { server, requests, base: `http://127.0.0.1:${port}/` };
}

/** A local download site with `files`, and a fresh cache, around `fn`. */
async function withSite<T>(
  files: Record<string, Uint8Array<ArrayBuffer>>,
  fn: (site: { base: string; requests: string[] }) => Promise<T>,
): Promise<T> {
  const cache = await Deno.makeTempDir({ prefix: "convnext-22k-" });
  const { server, requests, base } = serve(files);
  try {
    return await withEnv(
      { CONVNEXT_BASE_URL: base, CONVNEXT_CACHE: cache },
      () => fn({ base, requests }),
    );
  } finally {
    await server.shutdown();
    await Deno.remove(cache, { recursive: true });
  }
}

/** Logits of the formula input on the given path, after asserting that path is the one taken. */
async function logitsOn(model: ConvNeXtModel, path: "stock" | "auto"): Promise<Float32Array> {
  model.inferencePath = path;
  if (path === "stock") {
    assert.equal(model.usesOptimizedPath(), false, "the stock path is forced");
  } else {
    // The default on wasm: the compiled plan on the kernel engine (no silent fallback).
    assert.equal(model.usesOptimizedPath(), true, String(model.planUnsupportedReason()));
    assert.equal(model.optimizedExecutor(), "kernels");
  }
  const x = formulaInput();
  const y = model.predict(x) as tf.Tensor;
  try {
    assert.deepEqual(y.shape, [1, NUM_CLASSES]);
    return await y.data() as Float32Array;
  } finally {
    tf.dispose([x, y]);
  }
}

/** Every check against PyTorch for one loaded model, on both paths. */
async function checkAgainstPyTorch(loaded: tf.LayersModel, ref: ModelReference): Promise<void> {
  assert.ok(loaded instanceof ConvNeXtModel, "loadModel gives a ConvNeXtModel");
  const model = loaded;
  const config = storedModelConfig(model)!;
  assert.equal(config.numClasses, NUM_CLASSES);
  assert.equal(config.labels, "imagenet-22k");
  const want = await readF32(ref.logits);
  assert.equal(want.length, NUM_CLASSES);
  for (const path of ["stock", "auto"] as const) {
    const got = await logitsOn(model, path);
    const diff = maxAbsDiff(got, want);
    assert.ok(diff <= 1e-4, `${ref.name} (${path}): max |logits - PyTorch| = ${diff} > 1e-4`);
    assert.deepEqual(topK(got, 5), ref.top5, `${ref.name} (${path}): top-5 of the logits`);

    const results = await classify(model, images, { topK: 5, workers: 0 });
    assert.equal(model.usesOptimizedPath(), path !== "stock", "classify kept the path");
    assert.deepEqual(results.map((r) => r.image), images);
    results.forEach((r, i) => {
      const c = ref.classify[i];
      const where = `${ref.name} (${path}) ${c.image}`;
      assert.deepEqual(r.top.map((p) => p.index), c.top5, `${where}: top-5`);
      r.top.forEach((p, k) => {
        // Relative: over 21841 classes the probabilities are small. Logits within 1e-4 put
        // a softmax probability within a factor exp(+-2e-4).
        assert.ok(
          Math.abs(p.probability / c.probabilities[k] - 1) <= 2e-4,
          `${where}: p[${p.index}] = ${p.probability}, PyTorch ${c.probabilities[k]}`,
        );
        // The name is the served file's entry for that index (and the generator's).
        assert.equal(p.label, servedLabels[String(p.index)], where);
        assert.equal(p.label, c.labels[k], where);
      });
    });
  }
  model.inferencePath = "auto";
}

Deno.test("22k zoo name: convnext_tiny_22k_224 from the download site matches PyTorch, names from label_to_words.json", async () => {
  const ref = fixtureModel("convnext_tiny_22k_224");
  const entry = getZooEntry(ref.zoo!);
  assert.equal(entry.numClasses, NUM_CLASSES);
  const checkpoint = await Deno.readFile(new URL(ref.file, DIR));
  await withSite({ [entry.file]: checkpoint, [LABELS_FILE]: labelBytes }, async (site) => {
    const model = await loadModel(entry.name, quiet);
    try {
      const config = storedModelConfig(model)!;
      assert.equal(config.architecture, "convnext_tiny");
      assert.equal(config.source?.zoo, entry.name);
      await checkAgainstPyTorch(model, ref);
    } finally {
      model.dispose();
    }
    // The checkpoint once, the class names once (then from the cache).
    assert.deepEqual(site.requests, [entry.file, LABELS_FILE]);
  });
});

Deno.test("22k random head: a URL checkpoint matches PyTorch, names from label_to_words.json", async () => {
  const ref = fixtureModel("small_22k_random");
  const checkpoint = await Deno.readFile(new URL(ref.file, DIR));
  await withSite({ [ref.file]: checkpoint, [LABELS_FILE]: labelBytes }, async (site) => {
    const model = await loadModel(`${site.base}${ref.file}`, quiet);
    try {
      await checkAgainstPyTorch(model, ref);
    } finally {
      model.dispose();
    }
    assert.deepEqual(site.requests, [ref.file, LABELS_FILE]);
  });
});

Deno.test("22k names: classify names classes from whichever label_to_words.json is served", async () => {
  const ref = fixtureModel("small_22k_random");
  const checkpoint = await Deno.readFile(new URL(ref.file, DIR));
  // Another file of the same format: each class named after the next class's words.
  const shifted = Object.fromEntries(
    Array.from(
      { length: NUM_CLASSES },
      (_, i) => [String(i), servedLabels[String((i + 1) % NUM_CLASSES)]],
    ),
  );
  const other = new TextEncoder().encode(JSON.stringify(shifted));
  await withSite({ [ref.file]: checkpoint, [LABELS_FILE]: other }, async (site) => {
    const model = await loadModel(`${site.base}${ref.file}`, quiet);
    try {
      const [result] = await classify(model, images.slice(0, 1), { topK: 5, workers: 0 });
      const c = ref.classify[0];
      assert.deepEqual(result.top.map((p) => p.index), c.top5);
      assert.deepEqual(
        result.top.map((p) => p.label),
        c.top5.map((i) => servedLabels[String((i + 1) % NUM_CLASSES)]),
      );
      assert.notDeepEqual(result.top.map((p) => p.label), c.labels);
    } finally {
      model.dispose();
    }
  });
  // A label file for another class count does not fit a 21841-class head.
  const short = new TextEncoder().encode(
    JSON.stringify(
      Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [String(i), `c${i}`])),
    ),
  );
  await withSite({ [ref.file]: checkpoint, [LABELS_FILE]: short }, async (site) => {
    const model = await loadModel(`${site.base}${ref.file}`, quiet);
    try {
      await assert.rejects(
        classify(model, images.slice(0, 1), { workers: 0 }),
        /1000 labels given for a model with 21841 classes/,
      );
    } finally {
      model.dispose();
    }
  });
});
