// Feature-map views against hand-computed values.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { FEATURE_CELL_SIZE, featureMapGrid, meanActivation } from "../lib/viz/mod.ts";

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

Deno.test("featureMapGrid: readable viridis cells, shared scale, title and colour bar", async () => {
  const map = tf.randomNormal([1, 7, 7, 32], 0, 1, "float32", 1);
  const fig = await featureMapGrid(map, { channels: 4, cols: 2, title: "stage 3", display: false });
  assert.ok(fig.png && fig.png.length > 0);
  // 7x7 maps are enlarged to 112 px cells: 2 columns + 2 px gap = 226 px, plus the bar.
  assert.ok(fig.width >= 2 * FEATURE_CELL_SIZE + 2 + 30, `width ${fig.width}`);
  assert.ok(fig.height >= 2 * FEATURE_CELL_SIZE, `height ${fig.height}`);
  const svg = fig.svg!;
  assert.ok(svg.includes(">stage 3<"), "the title is in the figure");
  assert.ok(svg.includes(">activation<") && svg.includes("linearGradient"), "the colour bar");
  assert.equal(svg.match(/>ch \d+</g)?.length, 4, "a caption per channel");
  // Shared scale: the bar's range is that of the 4 channels shown (the 4 most active).
  const values = await map.data();
  const means = Array.from({ length: 32 }, (_, k) => {
    let s = 0;
    for (let i = 0; i < 49; i++) s += values[i * 32 + k];
    return s / 49;
  });
  const top4 = Array.from(means.keys()).sort((a, b) => means[b] - means[a]).slice(0, 4);
  for (const k of top4) assert.ok(svg.includes(`>ch ${k}<`), `channel ${k} shown`);
  const perChannel = await featureMapGrid(map, {
    channels: 4,
    cols: 4,
    cellSize: 28,
    scale: "channel",
    display: false,
  });
  assert.ok(perChannel.svg!.includes(">min<") && perChannel.svg!.includes(">max<"));
  await assert.rejects(
    () => featureMapGrid(map, { channels: 0, display: false }),
    /positive integer/,
  );
  map.dispose();
});
