/**
 * Feature-map views: a grid of a stage's channels (colour-mapped, with a colour bar) and the
 * mean activation over channels.
 *
 * @module
 */
import {
  colorize,
  type Colormap,
  colormap,
  type ColormapName,
  type Field,
  frameWithColorbar,
  rasterFigure,
  valueRange,
} from "./colormap.ts";
import type { Figure } from "./figure.ts";
import { type ImageGridOptions, renderImageGrid } from "./image.ts";
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
export interface FeatureGridOptions extends Omit<ImageGridOptions, "normalize" | "range"> {
  /** How many channels to show (default 16). */
  channels?: number;
  /** Which: the most active on average (default) or the first ones. */
  pick?: "most-active" | "first";
  /**
   * Colour scale: "shared" (default), one range for every channel shown, read off the colour
   * bar; or "channel", each channel stretched to its own min..max (patterns of weak channels
   * show, but colours no longer compare across cells).
   */
  scale?: "shared" | "channel";
  /** Value range of the colours with a "shared" scale (default: min..max of the channels shown). */
  range?: [number, number];
  /** Colour map (default "viridis"). */
  colormap?: ColormapName | Colormap;
  /** Draw the colour bar (default true). */
  colorbar?: boolean;
}

/** Cell size of {@link featureMapGrid} by default: small maps are enlarged to at least this. */
export const FEATURE_CELL_SIZE = 112;

/**
 * Shows channels of a feature map as a grid of images painted with a colour map (viridis by
 * default), each captioned with its channel index, with the title and a colour bar in the
 * figure. Small maps are enlarged to readable cells (at least {@link FEATURE_CELL_SIZE} px,
 * nearest-neighbour, so each activation stays a sharp square).
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
  const scale = options.scale ?? "shared";
  if (scale !== "shared" && scale !== "channel") {
    throw new Error(`lib/viz: featureMapGrid: scale must be "shared" or "channel", got ${scale}`);
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
  const fields: Field[] = chosen.map((k) => {
    const data = new Float32Array(h * w);
    for (let i = 0; i < h * w; i++) data[i] = values[i * c + k];
    return { width: w, height: h, data };
  });
  const cmap = colormap(options.colormap);
  const shared = options.range ?? valueRange(...fields.map((f) => f.data));
  const images = fields.map((f) =>
    colorize(f, { colormap: cmap, range: scale === "shared" ? shared : undefined })
  );
  const grid = await renderImageGrid(images, {
    cols: options.cols ?? 8,
    labels: options.labels ?? chosen.map((k) => `ch ${k}`),
    cellSize: options.cellSize ?? Math.max(FEATURE_CELL_SIZE, h, w),
    gap: options.gap,
    background: options.background,
  });
  const framed = frameWithColorbar(grid.svg!, {
    title: options.title,
    colorbar: (options.colorbar ?? true)
      ? scale === "shared"
        ? { lo: shared[0], hi: shared[1], colormap: cmap, label: "activation" }
        : {
          lo: 0,
          hi: 1,
          colormap: cmap,
          label: "each channel",
          ticks: [{ value: 0, text: "min" }, { value: 1, text: "max" }],
        }
      : undefined,
  });
  const alt = options.title ? `feature map grid, ${options.title}:` : "feature map grid";
  return await rasterFigure(framed, 1, alt, options);
}
