/**
 * Colour maps and the Grad-CAM style heat overlay.
 *
 * @module
 */

import { emit, Figure, type OutputOptions, pngBundle } from "./figure.ts";
import { encodePng, type ImageInput, type TensorLike, toRgb8 } from "./raster.ts";

/**
 * A 2-D scalar field: nested rows, a tensor of shape [h, w] (or [1, h, w, 1]), raw values,
 * or a promise of a {@link Field} (e.g. `meanActivation(map)` as it is).
 */
export type HeatInput =
  | number[][]
  | TensorLike
  | { width: number; height: number; data: ArrayLike<number> }
  | PromiseLike<Field>;

/** A 2-D field as a flat row-major array. */
export interface Field {
  /** Columns. */
  width: number;
  /** Rows. */
  height: number;
  /** `width * height` values. */
  data: Float32Array;
}

/**
 * The classic "jet" colour map (blue -> cyan -> yellow -> red) as 0..255 RGB.
 * t outside 0..1 is clamped.
 *
 * @example
 * ```ts
 * import { jet } from "./colormap.ts";
 * console.log(jet(0), jet(1)); // [0, 0, 128] (dark blue) [128, 0, 0] (dark red)
 * ```
 */
export function jet(t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  // Piecewise-linear ramps, each channel a tent of width 2 centred a quarter apart.
  const ch = (centre: number) => Math.min(1, Math.max(0, 1.5 - Math.abs(4 * x - centre)));
  return [Math.round(255 * ch(3)), Math.round(255 * ch(2)), Math.round(255 * ch(1))];
}

/**
 * Converts any {@link HeatInput} to a flat float field (asynchronously: tensors are read
 * with `await data()`, which every backend supports).
 */
export async function toField(heat: HeatInput, what = "heat"): Promise<Field> {
  if ("then" in heat && typeof heat.then === "function") heat = await heat;
  if (Array.isArray(heat)) {
    const height = heat.length;
    const width = height > 0 ? heat[0].length : 0;
    if (height === 0 || width === 0 || heat.some((row) => row.length !== width)) {
      throw new Error(`lib/viz: ${what}: expected a non-empty rectangular number[][]`);
    }
    return { width, height, data: Float32Array.from(heat.flat()) };
  }
  if ("shape" in heat && typeof heat.data === "function") {
    const dims = heat.shape.filter((d) => d !== 1);
    const shape = heat.shape.length === 2 ? heat.shape : dims;
    if (shape.length !== 2) {
      throw new Error(
        `lib/viz: ${what}: expected a 2-D tensor (e.g. [h, w] or [1, h, w, 1]), got [${
          heat.shape.join(", ")
        }]`,
      );
    }
    return { width: shape[1], height: shape[0], data: Float32Array.from(await heat.data()) };
  }
  const raw = heat as { width: number; height: number; data: ArrayLike<number> };
  if (raw.data.length !== raw.width * raw.height) {
    throw new Error(
      `lib/viz: ${what}: data has ${raw.data.length} values, expected ${raw.width}x${raw.height}`,
    );
  }
  return { width: raw.width, height: raw.height, data: Float32Array.from(raw.data) };
}

/**
 * Resamples a field to width x height with bilinear interpolation, aligning
 * pixel centres (as image resizers do), so a 7x7 CAM stretches smoothly over a photo.
 */
export function resizeBilinear(field: Field, width: number, height: number): Field {
  const out = new Float32Array(width * height);
  const sx = field.width / width;
  const sy = field.height / height;
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), field.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, field.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), field.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, field.width - 1);
      const wx = fx - x0;
      const d = field.data;
      const top = d[y0 * field.width + x0] * (1 - wx) + d[y0 * field.width + x1] * wx;
      const bottom = d[y1 * field.width + x0] * (1 - wx) + d[y1 * field.width + x1] * wx;
      out[y * width + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return { width, height, data: out };
}

/** Options for {@link overlayHeatmap}. */
export interface OverlayOptions extends OutputOptions {
  /** Opacity of the heat colours over the photo, 0..1 (default 0.5). */
  alpha?: number;
  /** Heat values mapped to the ends of the colour map (default: the heat's min..max). */
  range?: [number, number];
}

/**
 * Blends a heat map (e.g. a Grad-CAM of the last stage) over an image with the
 * jet colour map; the heat is resized bilinearly to the image. Displays in Jupyter.
 *
 * @param image the photo (RGB/RGBA pixels, PNG bytes or a [h, w, 3] tensor).
 * @param heat the scalar map, any size.
 * @returns a PNG {@link Figure} of the image's size.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * import { overlayHeatmap } from "./colormap.ts";
 * const photoTensor = tf.randomUniform([64, 64, 3], 0, 255);
 * const camTensor = tf.randomUniform([8, 8]); // e.g. a Grad-CAM map, upsampled to the photo
 * const fig = await overlayHeatmap(photoTensor, camTensor, { alpha: 0.4 });
 * console.log(fig.png!.length); // PNG bytes, shown inline in Jupyter
 * ```
 */
export async function overlayHeatmap(
  image: ImageInput,
  heat: HeatInput,
  options: OverlayOptions = {},
): Promise<Figure> {
  const alpha = options.alpha ?? 0.5;
  if (!(alpha >= 0 && alpha <= 1)) {
    throw new Error(`lib/viz: overlayHeatmap: alpha must be within 0..1, got ${alpha}`);
  }
  const rgb = await toRgb8(image, {}, "overlayHeatmap image");
  const field = resizeBilinear(await toField(heat, "overlayHeatmap heat"), rgb.width, rgb.height);
  let [lo, hi] = options.range ?? [Infinity, -Infinity];
  if (!options.range) {
    for (const v of field.data) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const span = hi > lo ? hi - lo : 1;
  const out = new Uint8Array(rgb.width * rgb.height * 3);
  for (let p = 0; p < rgb.width * rgb.height; p++) {
    const colour = jet((field.data[p] - lo) / span);
    for (let c = 0; c < 3; c++) {
      const base = rgb.data[p * (rgb.channels ?? 3) + c];
      out[p * 3 + c] = Math.round((1 - alpha) * base + alpha * colour[c]);
    }
  }
  const png = encodePng({ width: rgb.width, height: rgb.height, channels: 3, data: out });
  const figure = new Figure({
    bundle: pngBundle(png, rgb.width, rgb.height, "heat overlay"),
    png,
    width: rgb.width,
    height: rgb.height,
  });
  return await emit(figure, options);
}
