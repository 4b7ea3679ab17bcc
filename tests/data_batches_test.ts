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

/** Runs `body` with the pool's `run` wrapped to count the loads started and finished. */
async function countingLoads<T>(
  body: (counts: { started: number; finished: number }) => Promise<T>,
): Promise<T> {
  const counts = { started: 0, finished: 0 };
  const original = PreprocessPool.prototype.run;
  PreprocessPool.prototype.run = async function (this: PreprocessPool, ...args) {
    counts.started++;
    try {
      return await original.apply(this, args);
    } finally {
      counts.finished++;
    }
  };
  try {
    return await body(counts);
  } finally {
    PreprocessPool.prototype.run = original;
  }
}

/**
 * Runs imageBatches over 8 photos in batches of 2 with a consumer that, holding batch k,
 * calls `hold(k, counts)` before asking for the next; `counts` are the pool's started and
 * finished image loads so far.
 */
function consume(
  prefetch: number,
  hold: (k: number, counts: { started: number; finished: number }) => Promise<void>,
): Promise<number> {
  return countingLoads(async (counts) => {
    let k = 0;
    const inputs = [...photos, ...photos];
    for await (const _ of imageBatches(inputs, { size: 224, batch: 2, prefetch, workers: 1 })) {
      if (k < 3) await hold(k, counts);
      k++;
    }
    return k;
  });
}

Deno.test("imageBatches prefetches: the next batch is prepared while the consumer works", async () => {
  // Holding batch k, the consumer waits for batch k+1's two loads to finish before it asks
  // for it: with prefetching they do (the wait is only bounded against a hang).
  const batches = await consume(2, async (k, counts) => {
    for (let tries = 0; counts.finished < 2 * (k + 2); tries++) {
      assert.ok(tries < 600, `batch ${k + 1} was not prepared while batch ${k} was held`);
      await new Promise((res) => setTimeout(res, 50));
    }
  });
  assert.equal(batches, 4);
});

Deno.test("imageBatches without prefetch loads nothing until the consumer asks", async () => {
  const batches = await consume(0, async (k, counts) => {
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(counts.started, 2 * (k + 1), `loads started while batch ${k} was held`);
  });
  assert.equal(batches, 4);
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

for (const workers of [0, 1]) {
  Deno.test(`breaking out of imageBatches (${workers} workers) waits for the loads it started`, async () => {
    // A decode still running when the program ends can crash the process (sharp's native
    // work outliving its thread): the loop's end must leave none running.
    await countingLoads(async (counts) => {
      const inputs = [...photos, ...photos];
      for await (const _ of imageBatches(inputs, { batch: 2, prefetch: 2, workers })) break;
      assert.ok(counts.started > 2, `prefetching started ${counts.started} loads`);
      assert.equal(counts.finished, counts.started, "loads still running after the loop");
    });
  });
}

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
