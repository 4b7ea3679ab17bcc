import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { imageBatches } from "../lib/data/batches.ts";
import { readImage } from "../lib/data/decode.ts";
import { PreprocessPool } from "../lib/data/pool.ts";
import { loadImageTensor, preprocessBatch } from "../lib/data/tensor.ts";
import { evalTransform } from "../lib/data/transform.ts";
import { loadExpected, repoPath, sha256 } from "./data_helpers.ts";

const expected = await loadExpected();
const photos = ["chelsea.png", "coffee.jpg", "astronaut.jpg", "rocket.jpg"].map((f) =>
  repoPath(`data/images/${f}`)
);

/** torchvision's sha256 of the 224 eval tensor of a photo, from the fixtures. */
function reference224(path: string): string {
  const c = expected.transform.find((t) =>
    repoPath(t.file) === path && t.size === 224 && t.crop_pct === 0.875
  );
  assert.ok(c, `no fixture for ${path}`);
  return c.float_sha256;
}

for (const workers of [0, 2]) {
  Deno.test(`imageBatches (${workers} workers) yields torchvision-exact batches and reports failures`, async () => {
    const missing = repoPath("data/images/no-such-photo.jpg");
    const inputs = [photos[0], missing, photos[1], photos[2], photos[3]];
    const batches = [];
    for await (const b of imageBatches(inputs, { size: 224, batch: 2, prefetch: 1, workers })) {
      batches.push(b);
    }
    assert.deepEqual(batches.map((b) => b.indices), [[0], [2, 3], [4]]);
    assert.deepEqual(batches[0].failures.map((f) => f.index), [1]);
    assert.match(batches[0].failures[0].message, /no-such-photo\.jpg.*not found/);
    const per = 224 * 224 * 3;
    for (const b of batches) {
      assert.deepEqual(b.shape, [b.indices.length, 224, 224, 3]);
      for (let k = 0; k < b.indices.length; k++) {
        const slice = b.data.subarray(k * per, (k + 1) * per);
        assert.equal(await sha256(slice), reference224(inputs[b.indices[k]]), b.names[k]);
      }
    }
  });
}

Deno.test("imageBatches prefetches: the next batch is ready while the consumer works", async () => {
  const inputs = [...photos, ...photos];
  /** Time spent waiting in next() for batches 2.., with a 'model' taking 800 ms per batch. */
  async function waits(prefetch: number): Promise<number[]> {
    const it = imageBatches(inputs, { size: 224, batch: 2, prefetch, workers: 1 });
    const out: number[] = [];
    let r = await it.next();
    while (!r.done) {
      await new Promise((res) => setTimeout(res, 800));
      const t = performance.now();
      r = await it.next();
      if (!r.done) out.push(performance.now() - t);
    }
    return out;
  }
  const ahead = await waits(2);
  const none = await waits(0);
  assert.equal(ahead.length, 3);
  // With prefetching the batch was prepared during the 800 ms; without, the consumer
  // waits for the whole read/decode/resize of two photos.
  assert.ok(Math.max(...ahead) < 50, `prefetch waits ${ahead}`);
  assert.ok(Math.min(...none) > Math.max(...ahead), `no-prefetch waits ${none}`);
});

Deno.test("breaking out of imageBatches early closes the pool (no leaked workers)", async () => {
  const before = PreprocessPool.openPools;
  for await (const b of imageBatches([...photos, ...photos], { batch: 1, workers: 2 })) {
    assert.equal(b.indices.length, 1);
    assert.equal(PreprocessPool.openPools, before + 1);
    break;
  }
  assert.equal(PreprocessPool.openPools, before);
});

Deno.test("loadImageTensor and preprocessBatch give NHWC float32 tensors", async () => {
  await tf.setBackend("cpu");
  const one = await loadImageTensor(photos[0], 224);
  assert.deepEqual(one.shape, [1, 224, 224, 3]);
  assert.equal(one.dtype, "float32");
  assert.equal(await sha256(await one.data() as Float32Array), reference224(photos[0]));
  const fromBytes = await loadImageTensor(await Deno.readFile(photos[0]), 224);
  assert.equal(tf.max(tf.abs(tf.sub(one, fromBytes))).dataSync()[0], 0);
  const batch = await preprocessBatch(photos.slice(0, 2), 384, { workers: 1 });
  assert.deepEqual(batch.shape, [2, 384, 384, 3]);
  const second = evalTransform(await readImage(photos[1]), 384);
  const got = (await batch.data() as Float32Array).subarray(384 * 384 * 3);
  assert.equal(await sha256(got), await sha256(second));
  tf.dispose([one, fromBytes, batch]);
  await assert.rejects(
    preprocessBatch([photos[0], "/tmp/definitely-missing.png"], 224, { workers: 0 }),
    /definitely-missing\.png/,
  );
});
