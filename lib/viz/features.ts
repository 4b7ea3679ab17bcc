/**
 * Feature-map views: a grid of a stage's channels and the mean activation over channels.
 *
 * @module
 */
import type { Field } from "./colormap.ts";
import type { Figure } from "./figure.ts";
import { imageGrid, type ImageGridOptions } from "./image.ts";
import type { TensorLike } from "./raster.ts";

function dims(map: TensorLike, what: string): [number, number, number] {
  const s = map.shape;
  if (s.length === 4 && s[0] === 1) return [s[1], s[2], s[3]];
  if (s.length === 3) return [s[0], s[1], s[2]];
  throw new Error(`lib/viz: ${what}: expected a feature map [1, h, w, c] or [h, w, c], got [${s}]`);
}

/**
 * Mean over channels of a feature map, as a 2-D field (e.g. for {@link overlayHeatmap}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * import { meanActivation } from "./features.ts";
 * const stage2 = tf.randomNormal([14, 14, 384]); // one image's stage output, HWC
 * const field = await meanActivation(stage2); // { width, height, data }
 * console.log(field.width, field.height); // 14 14
 * ```
 */
export async function meanActivation(map: TensorLike): Promise<Field> {
  const [h, w, c] = dims(map, "meanActivation");
  // await data(), not dataSync(): webgpu cannot read synchronously under Deno.
  const values = await map.data();
  const data = new Float32Array(h * w);
  for (let i = 0; i < h * w; i++) {
    let sum = 0;
    for (let k = 0; k < c; k++) sum += values[i * c + k];
    data[i] = sum / c;
  }
  return { width: w, height: h, data };
}

/** Options of {@link featureMapGrid}. */
export interface FeatureGridOptions extends ImageGridOptions {
  /** How many channels to show (default 16). */
  channels?: number;
  /** Which: the most active on average (default) or the first ones. */
  pick?: "most-active" | "first";
}

/**
 * Shows channels of a feature map as a grid of grey images, each scaled to its own
 * min..max, captioned with the channel index.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * import { featureMapGrid } from "./features.ts";
 * const stage0 = tf.randomNormal([56, 56, 96]);
 * await featureMapGrid(stage0, { channels: 16, cols: 8, title: "stage 0" });
 * ```
 */
export async function featureMapGrid(
  map: TensorLike,
  options: FeatureGridOptions = {},
): Promise<Figure> {
  const [h, w, c] = dims(map, "featureMapGrid");
  const count = Math.min(options.channels ?? 16, c);
  if (!(Number.isInteger(count) && count > 0)) {
    throw new Error(`lib/viz: featureMapGrid: channels must be a positive integer`);
  }
  const values = await map.data();
  const means = Array.from({ length: c }, (_, k) => {
    let sum = 0;
    for (let i = 0; i < h * w; i++) sum += values[i * c + k];
    return sum / (h * w);
  });
  const order = Array.from({ length: c }, (_, k) => k);
  if ((options.pick ?? "most-active") === "most-active") order.sort((a, b) => means[b] - means[a]);
  const chosen = order.slice(0, count);
  const images = chosen.map((k) => {
    const data = new Float32Array(h * w);
    for (let i = 0; i < h * w; i++) data[i] = values[i * c + k];
    return { width: w, height: h, channels: 1 as const, data };
  });
  return await imageGrid(images, {
    cols: 8,
    normalize: true,
    labels: chosen.map((k) => `ch ${k}`),
    ...options,
  });
}
