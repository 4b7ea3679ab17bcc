// Feature-map views against hand-computed values.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { featureMapGrid, meanActivation } from "../lib/viz/mod.ts";

Deno.test("meanActivation averages over channels per position", async () => {
  // 2x3 map with 2 channels: channel 0 = i, channel 1 = 10 * i.
  const values = Array.from({ length: 6 }, (_, i) => [i, 10 * i]).flat();
  const map = tf.tensor4d(values, [1, 2, 3, 2]);
  const field = await meanActivation(map);
  map.dispose();
  assert.equal(field.width, 3);
  assert.equal(field.height, 2);
  assert.deepEqual(Array.from(field.data), [0, 5.5, 11, 16.5, 22, 27.5]);
  const bad = tf.zeros([2, 2, 2, 2]);
  await assert.rejects(() => meanActivation(bad), /expected a feature map/);
  bad.dispose();
});

Deno.test("featureMapGrid shows the requested number of channels as one PNG", async () => {
  const map = tf.randomNormal([1, 7, 7, 32], 0, 1, "float32", 1);
  const fig = await featureMapGrid(map, { channels: 4, cols: 2, cellSize: 28, display: false });
  assert.ok(fig.png && fig.png.length > 0);
  // 2 columns of 28 px cells (plus gaps and captions): wider than one cell, narrower than 3.
  assert.ok(fig.width >= 56 && fig.width < 3 * 28, `width ${fig.width}`);
  await assert.rejects(
    () => featureMapGrid(map, { channels: 0, display: false }),
    /positive integer/,
  );
});
