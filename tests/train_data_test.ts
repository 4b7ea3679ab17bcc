/**
 * Tests of the data side of lib/train/: ImageFolder listing, the seeded stratified split,
 * the class-balanced limit, torchvision's RandomResizedCrop box algorithm, the training
 * transform, the background loader (bad files skipped), checkpoints and the report.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { limitSamples, splitStratified } from "../lib/train/data.ts";
import { listImageFolder } from "../lib/data/image_folder.ts";
import { flipHorizontal, randomResizedCropBox, trainTransform } from "../lib/train/augment.ts";
import { loadBatches, LoadPool } from "../lib/train/loader.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/train/checkpoint.ts";
import { formatReport, validationReport } from "../lib/train/report.ts";
import { hashSeed, mulberry32, permutation } from "../lib/train/rng.ts";
import { readImage } from "../lib/data/decode.ts";
import { evalTransform } from "../lib/data/transform.ts";
import { makeSyntheticDataset, SYNTHETIC_CLASSES } from "./train_helpers.ts";

const FLOWERS = new URL("../../shared/datasets/flowers-mini", import.meta.url).pathname;
/** The team's shared dataset (../shared beside the repository, as CI has it): missing is a failure. */
async function listFlowers() {
  const present = await Deno.stat(FLOWERS).then(() => true, () => false);
  assert.ok(
    present,
    `${FLOWERS} is missing: the tests need the team's shared/ beside the repository`,
  );
  return await listImageFolder(FLOWERS);
}

const tmp = await Deno.makeTempDir({ prefix: "train_data_" });
const { root, bad } = await makeSyntheticDataset(join(tmp, "data"), 10);

/** A uniform source that replays the given numbers. */
function replay(values: number[]): () => number {
  let i = 0;
  return () => {
    if (i >= values.length) throw new Error("replay: ran out of numbers");
    return values[i++];
  };
}

Deno.test("listImageFolder: sorted class folders, images only, clear errors", async () => {
  const ds = await listImageFolder(root);
  assert.deepEqual(ds.classes, [...SYNTHETIC_CLASSES].sort());
  assert.equal(ds.samples.length, 31); // 3 x 10 PNGs + bad.jpg (listed; skipped when loaded)
  assert.ok(ds.samples.some((s) => s.path === bad && s.label === 0));
  await Deno.writeTextFile(join(root, "red", "notes.txt"), "not an image");
  assert.equal((await listImageFolder(root)).samples.length, 31, ".txt files are ignored");
  await assert.rejects(
    () => listImageFolder(join(tmp, "missing")),
    (e: Error) => /^data .*missing: cannot read/.test(e.message),
  );
  await Deno.mkdir(join(tmp, "empty", "a"), { recursive: true });
  await assert.rejects(
    () => listImageFolder(join(tmp, "empty")),
    /no \.jpg\/\.jpeg\/\.png\/.* images in the class folders/,
  );
  const flowers = await listFlowers();
  assert.deepEqual(flowers.classes, ["daisy", "dandelion", "roses", "sunflowers", "tulips"]);
  assert.equal(flowers.samples.length, 250);
});

Deno.test("splitStratified: per-class fraction, seeded, disjoint; limitSamples is balanced", async () => {
  const ds = await listImageFolder(root);
  const a = splitStratified(ds.samples, 0.2, 7);
  const b = splitStratified(ds.samples, 0.2, 7);
  const c = splitStratified(ds.samples, 0.2, 8);
  assert.deepEqual(a, b, "same seed, same split");
  assert.notDeepEqual(a.val, c.val, "another seed, another split");
  const count = (list: { label: number }[], label: number) =>
    list.filter((s) => s.label === label).length;
  assert.equal(count(a.val, 0), 2); // round(11 * 0.2)
  assert.equal(count(a.val, 1), 2);
  assert.equal(count(a.val, 2), 2);
  assert.equal(a.train.length + a.val.length, ds.samples.length);
  assert.ok(a.val.every((s) => !a.train.includes(s)));
  assert.equal(splitStratified(ds.samples, 0, 1).val.length, 0);
  assert.throws(() => splitStratified(ds.samples, 1, 1), /valSplit must be in \[0, 1\)/);
  const few = limitSamples(ds.samples, 7);
  assert.deepEqual([0, 1, 2].map((l) => count(few, l)), [3, 2, 2]);
  const flowers = await listFlowers();
  const s = splitStratified(flowers.samples, 0.2, 0);
  assert.deepEqual([0, 1, 2, 3, 4].map((l) => count(s.val, l)), [10, 10, 10, 10, 10]);
});

Deno.test("randomResizedCropBox follows torchvision's get_params", () => {
  // A fitting first try: area 0.08 + 0.92 * 0.5 = 0.54 of 100x50, ratio exp(0) = 1:
  // w = h = round(sqrt(2700)) = 52 > 50 does not fit; second try: area 0.08 + 0.92 * 0 =
  // 0.08 -> 400, ratio exp(log(3/4) + (log(4/3) - log(3/4)) * 0.5) = 1 -> w = h = 20;
  // top = floor(0.5 * 31) = 15, left = floor(0.25 * 81) = 20.
  assert.deepEqual(
    randomResizedCropBox(100, 50, replay([0.5, 0.5, 0, 0.5, 0.5, 0.25])),
    { top: 15, left: 20, height: 20, width: 20 },
  );
  // Ten misses (area 1, ratio 4/3 does not fit a 100x100 image: w = 115) -> fallback.
  // Square image: in ratio 1 is inside [3/4, 4/3]: the whole image.
  const misses = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 0.999999 : 0.999999));
  assert.deepEqual(randomResizedCropBox(100, 100, replay(misses)), {
    top: 0,
    left: 0,
    height: 100,
    width: 100,
  });
  // Very wide image 400x100 (ratio 4 > 4/3): h = 100, w = round(100 * 4/3) = 133,
  // top = 0, left = (400 - 133) // 2 = 133.
  const wideMisses = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 0.999999 : 0));
  assert.deepEqual(randomResizedCropBox(400, 100, replay(wideMisses)), {
    top: 0,
    left: 133,
    height: 100,
    width: 133,
  });
  // Tall image 100x400: w = 100, h = round(100 / (3/4)) = 133, top = 133.
  const tallMisses = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 0.999999 : 0.999999));
  assert.deepEqual(randomResizedCropBox(100, 400, replay(tallMisses)), {
    top: 133,
    left: 0,
    height: 133,
    width: 100,
  });
  // Random boxes always fit and respect the area range when not falling back.
  const u = mulberry32(hashSeed(3));
  for (let i = 0; i < 500; i++) {
    const box = randomResizedCropBox(320, 240, u);
    assert.ok(
      box.top >= 0 && box.left >= 0 && box.top + box.height <= 240 && box.left + box.width <= 320,
    );
  }
});

Deno.test("trainTransform: seeded, normalized, flips; the loader skips bad files", async () => {
  const rgb = await readImage(join(root, "red", "img_000.png"));
  const a = trainTransform(rgb, 40, mulberry32(5));
  const b = trainTransform(rgb, 40, mulberry32(5));
  assert.deepEqual(a, b, "same seed, same augmentation");
  assert.equal(a.length, 40 * 40 * 3);
  assert.notDeepEqual(trainTransform(rgb, 40, mulberry32(6)), a);
  const whole = { width: rgb.width, height: rgb.height, data: rgb.data };
  const flipped = flipHorizontal(flipHorizontal(whole));
  assert.deepEqual(flipped.data, whole.data);
  assert.equal(
    flipHorizontal({ width: 2, height: 1, data: new Uint8Array([1, 2, 3, 4, 5, 6]) }).data.join(),
    "4,5,6,1,2,3",
  );

  const ds = await listImageFolder(root);
  const pool = new LoadPool(1);
  try {
    const batches = [ds.samples.slice(0, 6), ds.samples.slice(6, 12)];
    const seen: string[] = [];
    const failures: string[] = [];
    for await (const batch of loadBatches(pool, batches, { size: 40, mode: "eval" })) {
      seen.push(...batch.samples.map((s) => s.path));
      failures.push(...batch.failures.map((f) => f.sample.path));
      assert.equal(batch.data.length, batch.samples.length * 40 * 40 * 3);
      // Eval mode equals the official eval transform computed here on the main thread.
      const first = await readImage(batch.samples[0].path);
      assert.deepEqual(batch.data.subarray(0, 40 * 40 * 3), evalTransform(first, 40));
    }
    assert.deepEqual(failures, [bad]);
    assert.equal(seen.length, 11);
    assert.equal(pool.loads, 12);
  } finally {
    await pool.close();
  }
});

Deno.test("breaking out of loadBatches waits for the loads it started", async () => {
  // As for imageBatches: no decode may outlive the loop (it can crash the process at exit).
  const ds = await listImageFolder(root);
  const pool = new LoadPool(0);
  const counts = { started: 0, finished: 0 };
  const original = pool.load.bind(pool);
  pool.load = async (request) => {
    counts.started++;
    try {
      return await original(request);
    } finally {
      counts.finished++;
    }
  };
  try {
    const batches = [0, 3, 6, 9].map((i) => ds.samples.slice(i, i + 3));
    for await (const _ of loadBatches(pool, batches, { size: 40, mode: "train", prefetch: 2 })) {
      break;
    }
    assert.ok(counts.started > 3, `prefetching started ${counts.started} loads`);
    assert.equal(counts.finished, counts.started, "loads still running after the loop");
  } finally {
    await pool.close();
  }
});

Deno.test("checkpoints round-trip and replace atomically; permutation is a permutation", async () => {
  const dir = join(tmp, "ckpt");
  assert.equal(await loadCheckpoint(dir), undefined);
  const tensors = [
    { group: "model", name: "a/kernel", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
    {
      group: "adam_m",
      name: "a/kernel",
      shape: [2, 2],
      data: new Float32Array([0.5, 0, -1, 2e-9]),
    },
  ];
  await saveCheckpoint(dir, { state: { epoch: 1 }, tensors });
  await saveCheckpoint(dir, { state: { epoch: 2 }, tensors });
  const back = await loadCheckpoint<{ epoch: number }>(dir);
  assert.equal(back!.state.epoch, 2);
  assert.deepEqual(back!.tensors, tensors);
  const leftovers = [...Deno.readDirSync(tmp)].filter((e) => e.name.startsWith(".ckpt"));
  assert.deepEqual(leftovers, [], "no temporary directories left");
  await Deno.writeTextFile(join(dir, "state.json"), "{");
  await assert.rejects(() => loadCheckpoint(dir), /checkpoint .*ckpt: cannot read state.json/);
  const p = permutation(50, mulberry32(1));
  assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
});

Deno.test("validationReport: per-class accuracy and confusion matrix", () => {
  const r = validationReport(["a", "b", "c"], [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]);
  assert.deepEqual(r.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]]);
  assert.equal(r.accuracy, 3 / 5);
  assert.deepEqual(r.perClassAccuracy, { a: 0.5, b: 1, c: 0 });
  assert.match(formatReport(r), /accuracy 60\.00%/);
});

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
