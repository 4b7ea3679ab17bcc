/**
 * The evaluation transform of the official ConvNeXt code (`datasets.py`,
 * `build_transform(is_train=False)`), reproduced on decoded RGB pixels:
 *
 * - size < 384: `Resize(int(size / crop_pct), BICUBIC)` (shorter side, aspect kept as
 *   torchvision 0.14 computes it) then `CenterCrop(size)`; crop_pct defaults to 0.875,
 *   so 224 → resize to 256 → crop 224;
 * - size ≥ 384: `Resize((size, size), BICUBIC)`, a warp without crop;
 * - then `ToTensor()` (/255) and `Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)`.
 *
 * Output is HWC float32 (our models are channels-last). The float steps are done in
 * float32 with the same operation order as torch (x/255, -mean, /std), so the result
 * matches torchvision's tensor to the last bit in practice and always within 1e-6.
 *
 * This module has no TensorFlow.js dependency so that worker threads can run it;
 * see tensor.ts and batches.ts for tensors and batching.
 *
 * @module
 */

import type { RgbImage } from "../util/image.ts";
import { resizeBicubic } from "./resize.ts";

/** ImageNet channel means (timm's IMAGENET_DEFAULT_MEAN), used by all ConvNeXt models. */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
/** ImageNet channel standard deviations (timm's IMAGENET_DEFAULT_STD). */
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];
/** The official eval crop ratio below 384 px (224 / 256). */
export const DEFAULT_CROP_PCT = 0.875;
/**
 * Mean and std under which {@link normalize} returns the pixels themselves, 0..255 as
 * float32: `(v / 255 - 0) / (1 / 255) = v`, written exactly (the float32 steps would give
 * 6.9999995 for 7). For models that normalize their own input (`includePreprocessing`):
 * they get the resized and cropped pixels, and only the model applies mean and std.
 * Plain numbers, so that they reach the preprocessing workers as any mean and std do.
 */
export const RAW_PIXELS: {
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
} = { mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255] };

/** True for {@link RAW_PIXELS}' mean and std (by value: they may come from a worker message). */
function isRawPixels(mean: readonly number[], std: readonly number[]): boolean {
  return [0, 1, 2].every((c) => mean[c] === 0 && std[c] === RAW_PIXELS.std[c]);
}

/** Options of {@link evalTransform}. */
export interface EvalTransformOptions {
  /** Crop ratio for sizes below 384 (default 0.875, i.e. 224/256). Ignored at ≥ 384. */
  cropPct?: number;
  /** Per-channel mean (default {@link IMAGENET_MEAN}). */
  mean?: readonly [number, number, number];
  /** Per-channel std (default {@link IMAGENET_STD}). */
  std?: readonly [number, number, number];
}

/** Python's round() on a float: ties go to the even integer (banker's rounding). */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Output size of torchvision 0.14 `Resize(int)`: the shorter side becomes `size` and the
 * longer `int(size * long / short)` (truncated, computed in double like Python).
 *
 * @returns [width, height]
 * @example
 * ```ts
 * import { shorterSideSize } from "./transform.ts";
 * console.log(shorterSideSize(500, 375, 256)); // [341, 256]
 * ```
 */
export function shorterSideSize(width: number, height: number, size: number): [number, number] {
  if (width <= height) return [size, Math.trunc(size * height / width)];
  return [Math.trunc(size * width / height), size];
}

/**
 * torchvision 0.14 `CenterCrop((size, size))` on an RGB image, including its zero padding
 * when the image is smaller than the crop and its `int(round((h - size) / 2.0))` offsets.
 *
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * import { centerCrop } from "./transform.ts";
 * const rgb = await readImage(new URL("../../data/images/coffee.jpg", import.meta.url).pathname);
 * const crop = centerCrop(rgb, 224);
 * if (crop.width !== 224 || crop.height !== 224) throw new Error("not 224x224");
 * ```
 */
export function centerCrop(image: RgbImage, size: number): RgbImage {
  let img = image;
  if (size > img.width || size > img.height) {
    const padL = size > img.width ? Math.floor((size - img.width) / 2) : 0;
    const padT = size > img.height ? Math.floor((size - img.height) / 2) : 0;
    const padR = size > img.width ? Math.floor((size - img.width + 1) / 2) : 0;
    const padB = size > img.height ? Math.floor((size - img.height + 1) / 2) : 0;
    const w = img.width + padL + padR;
    const h = img.height + padT + padB;
    const data = new Uint8Array(w * h * 3);
    for (let y = 0; y < img.height; y++) {
      data.set(
        img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3),
        ((y + padT) * w + padL) * 3,
      );
    }
    img = { width: w, height: h, data };
    if (w === size && h === size) return img;
  }
  const top = roundHalfEven((img.height - size) / 2.0);
  const left = roundHalfEven((img.width - size) / 2.0);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((top + y) * img.width + left) * 3;
    out.set(img.data.subarray(from, from + size * 3), y * size * 3);
  }
  return { width: size, height: size, data: out };
}

/** Check the target size and return the uint8 image the reference feeds to ToTensor. */
function checkSize(size: number): void {
  if (!Number.isInteger(size) || size <= 32) {
    // The reference skips resizing entirely at <= 32 px (CIFAR); not a ConvNeXt setting.
    throw new RangeError(`evalTransform: size must be an integer > 32, got ${size}`);
  }
}

/**
 * The geometric part of the eval transform: bicubic resize (+ center crop below 384).
 * Returns the `size` x `size` uint8 RGB image, identical to what PIL holds before
 * torchvision's ToTensor.
 *
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * import { evalResizeCrop } from "./transform.ts";
 * const rgb = await readImage(new URL("../../data/images/coffee.jpg", import.meta.url).pathname);
 * const img = evalResizeCrop(rgb, 224); // resize to 256 on the shorter side, crop 224
 * if (img.width !== 224 || img.height !== 224) throw new Error("not 224x224");
 * ```
 */
export function evalResizeCrop(
  image: RgbImage,
  size: number,
  options: Pick<EvalTransformOptions, "cropPct"> = {},
): RgbImage {
  checkSize(size);
  if (size >= 384) return resizeBicubic(image, size, size);
  const cropPct = options.cropPct ?? DEFAULT_CROP_PCT;
  if (!(cropPct > 0)) throw new RangeError(`evalTransform: cropPct must be > 0, got ${cropPct}`);
  const resizeTo = Math.trunc(size / cropPct);
  const [w, h] = shorterSideSize(image.width, image.height, resizeTo);
  if (w >= size && h >= size) {
    // No padding: resample only the pixels the crop keeps (bit-identical, faster).
    const left = roundHalfEven((w - size) / 2.0);
    const top = roundHalfEven((h - size) / 2.0);
    return resizeBicubic(image, w, h, { crop: { left, top, width: size, height: size } });
  }
  return centerCrop(resizeBicubic(image, w, h), size);
}

/**
 * ToTensor + Normalize in float32 with torch's operation order, as a lookup table:
 * `lut[c * 256 + v] = f32(f32(f32(v / 255) - f32(mean[c])) / f32(std[c]))`; for
 * {@link RAW_PIXELS}, `v` itself.
 */
function normalizationTable(
  mean: readonly [number, number, number],
  std: readonly [number, number, number],
): Float32Array {
  const f = Math.fround;
  const lut = new Float32Array(3 * 256);
  if (isRawPixels(mean, std)) {
    for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) lut[c * 256 + v] = v;
    return lut;
  }
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]);
    const s = f(std[c]);
    for (let v = 0; v < 256; v++) {
      // Each op in double then rounded to f32 equals the correctly rounded f32 op.
      lut[c * 256 + v] = f(f(f(v) / 255) - m) / s;
    }
  }
  return lut;
}

const DEFAULT_TABLE = normalizationTable(IMAGENET_MEAN, IMAGENET_STD);

/**
 * ToTensor (/255) and Normalize of an RGB uint8 image into HWC float32 (with
 * {@link RAW_PIXELS}: the 0..255 pixels as they are, for models that normalize themselves).
 *
 * @param out optional destination (e.g. a slice of a batch buffer), length w*h*3
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * import { evalResizeCrop, normalize } from "./transform.ts";
 * const rgb = await readImage(new URL("../../data/images/coffee.jpg", import.meta.url).pathname);
 * const x = normalize(evalResizeCrop(rgb, 224)); // (v/255 - mean) / std per channel
 * if (x.length !== 224 * 224 * 3) throw new Error(`length ${x.length}`);
 * ```
 */
export function normalize(
  image: RgbImage,
  options: Pick<EvalTransformOptions, "mean" | "std"> = {},
  out?: Float32Array,
): Float32Array {
  const n = image.width * image.height;
  const lut = options.mean || options.std
    ? normalizationTable(options.mean ?? IMAGENET_MEAN, options.std ?? IMAGENET_STD)
    : DEFAULT_TABLE;
  const dst = out ?? new Float32Array(n * 3);
  if (dst.length !== n * 3) {
    throw new RangeError(`normalize: output has ${dst.length} floats, expected ${n * 3}`);
  }
  const src = image.data;
  for (let i = 0; i < n; i++) {
    const p = i * 3;
    dst[p] = lut[src[p]];
    dst[p + 1] = lut[256 + src[p + 1]];
    dst[p + 2] = lut[512 + src[p + 2]];
  }
  return dst;
}

/**
 * The full official eval transform on decoded RGB: resize (+ crop below 384),
 * /255, normalize. Returns `size * size * 3` float32 values in HWC order.
 *
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * import { evalTransform } from "./transform.ts";
 * const rgb = await readImage(new URL("../../data/images/coffee.jpg", import.meta.url).pathname);
 * const x = evalTransform(rgb, 224); // Float32Array(224 * 224 * 3)
 * if (x.length !== 224 * 224 * 3) throw new Error(`length ${x.length}`);
 * ```
 */
export function evalTransform(
  image: RgbImage,
  size: number,
  options: EvalTransformOptions = {},
  out?: Float32Array,
): Float32Array {
  return normalize(evalResizeCrop(image, size, options), options, out);
}
