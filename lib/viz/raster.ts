/**
 * Raster images for display: normalising the inputs lib/viz accepts (images, the kit's
 * {@link RgbImage}, PNG bytes, tf.js tensors) to 8-bit RGB(A), and PNG encode/decode
 * (fast-png: pure JS, so no native binary is needed under Deno).
 *
 * @module
 */

import { convertIndexedToRgb, decode, encode } from "npm:fast-png@8.0.0";
import type { PixelData, RgbImage } from "../util/image.ts";

/** The structural part of a tf.js tensor lib/viz reads (no tfjs import needed here). */
export interface TensorLike {
  /** e.g. [h, w, c], [h, w] or [1, h, w, c]. */
  readonly shape: number[];
  /** tf.js dtype, e.g. "float32" or "int32". */
  readonly dtype: string;
  /**
   * Download of the values. Asynchronous: the webgpu backend cannot read synchronously
   * under Deno, so lib/viz never calls `dataSync`.
   */
  data(): Promise<ArrayLike<number>>;
}

/** Anything lib/viz can show as an image: pixels (grey, RGB or RGBA), PNG bytes or a tensor. */
export type ImageInput = RgbImage<PixelData, 1 | 3 | 4> | Uint8Array | TensorLike;

/** How non-8-bit values map to 0..255. */
export interface ToRgbOptions {
  /**
   * Value range that maps to 0..255. Default for float data: [0, 1] when all
   * values are within it, [0, 255] when all are whole numbers within that,
   * else the data's min..max (so feature maps and normalised tensors show up
   * without extra work). Integer data (Uint8Array, int32 tensors) is taken as 0..255.
   */
  range?: [number, number];
  /** Force min..max scaling (per image), whatever the values. */
  normalize?: boolean;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** True when the bytes start with the PNG signature. */
export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && PNG_SIGNATURE.every((b, i) => bytes[i] === b);
}

/** True when the bytes start with the JPEG SOI marker. */
export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

function isTensorLike(x: unknown): x is TensorLike {
  return typeof x === "object" && x !== null && Array.isArray((x as TensorLike).shape) &&
    typeof (x as TensorLike).data === "function";
}

/**
 * Converts any {@link ImageInput} to 8-bit RGB or RGBA (grey becomes RGB); the result's
 * `channels` is always set.
 *
 * @example
 * ```ts
 * import { toRgb8 } from "./raster.ts";
 * const img = await toRgb8({ width: 1, height: 1, channels: 3, data: new Float32Array([1, 0, 0]) });
 * console.log(img.data); // Uint8Array(3) [255, 0, 0]: floats in [0, 1] scaled to bytes
 * if (img.data.join() !== "255,0,0") throw new Error(`${img.data}`);
 * ```
 */
export async function toRgb8(
  input: ImageInput,
  options: ToRgbOptions = {},
  what = "image",
): Promise<RgbImage<Uint8Array, 3 | 4>> {
  if (input instanceof Uint8Array) {
    if (isPng(input)) return decodePngRgb8(input);
    if (isJpeg(input)) {
      throw new Error(
        `lib/viz: ${what} is JPEG bytes; decode it to pixels first (only PNG bytes are decoded here)`,
      );
    }
    throw new Error(
      `lib/viz: ${what}: expected PNG bytes, a {width, height, data, channels?} image or a tensor`,
    );
  }
  if (isTensorLike(input)) return await tensorToRgb8(input, options, what);
  if (typeof input === "object" && input !== null && "width" in input && "data" in input) {
    return rawToRgb8(input, options, what);
  }
  throw new Error(
    `lib/viz: ${what}: expected PNG bytes, a {width, height, data, channels?} image or a tensor`,
  );
}

async function tensorToRgb8(
  t: TensorLike,
  options: ToRgbOptions,
  what: string,
): Promise<RgbImage<Uint8Array, 3 | 4>> {
  let shape = t.shape;
  if (shape.length === 4 && shape[0] === 1) shape = shape.slice(1);
  if (shape.length === 2) shape = [shape[0], shape[1], 1];
  if (shape.length !== 3 || ![1, 3, 4].includes(shape[2])) {
    throw new Error(
      `lib/viz: ${what}: expected a tensor of shape [h, w], [h, w, 1|3|4] or [1, h, w, 1|3|4], got [${
        t.shape.join(", ")
      }]`,
    );
  }
  const [height, width, channels] = shape;
  // Integer tensors hold 0..255 pixels; floats go through the range heuristics.
  const isFloat = t.dtype === "float32";
  const values = await t.data();
  const data = isFloat ? Float32Array.from(values) : values as PixelData;
  const opts = !isFloat && !options.range && !options.normalize
    ? { range: [0, 255] as [number, number] }
    : options;
  return rawToRgb8({ width, height, channels: channels as 1 | 3 | 4, data }, opts, what);
}

function rawToRgb8(
  img: RgbImage<PixelData, 1 | 3 | 4>,
  options: ToRgbOptions,
  what: string,
): RgbImage<Uint8Array, 3 | 4> {
  const { width, height, channels = 3, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`lib/viz: ${what}: width and height must be positive integers`);
  }
  if (![1, 3, 4].includes(channels)) {
    throw new Error(`lib/viz: ${what}: channels must be 1, 3 or 4, got ${channels}`);
  }
  const n = width * height * channels;
  if (data.length !== n) {
    throw new Error(
      `lib/viz: ${what}: data has ${data.length} values, expected ${width}x${height}x${channels} = ${n}`,
    );
  }
  const isByte = data instanceof Uint8Array || data instanceof Uint8ClampedArray;
  let lo = 0;
  let hi = 255;
  if (options.range) {
    [lo, hi] = options.range;
  } else if (options.normalize || !isByte) {
    let min = Infinity;
    let max = -Infinity;
    let integers = true;
    for (let i = 0; i < n; i++) {
      const v = data[i];
      if (v < min) min = v;
      if (v > max) max = v;
      if (integers && !Number.isInteger(v)) integers = false;
    }
    if (options.normalize) [lo, hi] = [min, max];
    else if (min >= 0 && max <= 1) [lo, hi] = [0, 1];
    // Whole numbers in 0..255 are pixels (e.g. a photo cast to float32).
    else if (integers && min >= 0 && max <= 255) [lo, hi] = [0, 255];
    else [lo, hi] = [min, max];
  }
  const scale = hi > lo ? 255 / (hi - lo) : 0;
  const outChannels = channels === 4 ? 4 : 3;
  const out = new Uint8Array(width * height * outChannels);
  for (let p = 0; p < width * height; p++) {
    for (let c = 0; c < outChannels; c++) {
      // Grey repeats its one channel; alpha is kept as given.
      const src = channels === 1 ? p : p * channels + c;
      const v = (data[src] - lo) * scale;
      out[p * outChannels + c] = v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
    }
  }
  return { width, height, channels: outChannels, data: out };
}

/** Encodes 8-bit RGB/RGBA pixels as PNG. */
export function encodePng(img: RgbImage<Uint8Array, 3 | 4>): Uint8Array {
  return encode({
    width: img.width,
    height: img.height,
    data: img.data,
    channels: img.channels ?? 3,
    depth: 8,
  });
}

/** Decodes PNG bytes to 8-bit RGB/RGBA (palette, grey and 16-bit images are converted). */
export function decodePngRgb8(bytes: Uint8Array): RgbImage<Uint8Array, 3 | 4> {
  const png = decode(bytes);
  let data: ArrayLike<number> = png.data;
  let channels = png.channels;
  if (png.palette) {
    data = convertIndexedToRgb(png);
    channels = png.palette[0].length;
  } else if (png.depth === 16) {
    data = Uint8Array.from(png.data as Uint16Array, (v) => v >> 8);
  } else if (png.depth !== 8) {
    throw new Error(`lib/viz: PNG with ${png.depth}-bit grey is not supported`);
  }
  if (channels === 2) {
    // Grey + alpha: expand to RGBA.
    const out = new Uint8Array(png.width * png.height * 4);
    for (let p = 0; p < png.width * png.height; p++) {
      out.fill(data[2 * p], 4 * p, 4 * p + 3);
      out[4 * p + 3] = data[2 * p + 1];
    }
    return { width: png.width, height: png.height, channels: 4, data: out };
  }
  return rawToRgb8(
    {
      width: png.width,
      height: png.height,
      channels: channels as 1 | 3 | 4,
      data: Uint8Array.from(data),
    },
    {},
    "PNG",
  );
}
