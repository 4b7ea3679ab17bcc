/**
 * Training augmentation of the official recipe's geometric part: torchvision's
 * `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), BICUBIC)` then
 * `RandomHorizontalFlip(0.5)`, then ToTensor and Normalize. The random numbers come from
 * an injected generator so that a run's choices are reproducible (see rng.ts).
 *
 * No TensorFlow.js here: the worker threads run it.
 *
 * @module
 */
import type { RgbImage } from "../util/image.ts";
import { resizeBicubic } from "../data/resize.ts";
import { normalize } from "../data/transform.ts";
import type { Uniform } from "./rng.ts";

/** A crop box in source pixels (torchvision's i, j, h, w). */
export interface CropBox {
  /** Top row (i). */
  top: number;
  /** Left column (j). */
  left: number;
  /** Height (h). */
  height: number;
  /** Width (w). */
  width: number;
}

/** Options of {@link randomResizedCropBox}. */
export interface RandomResizedCropOptions {
  /** Range of the crop's area as a fraction of the image (default [0.08, 1]). */
  scale?: readonly [number, number];
  /** Range of the crop's aspect ratio w/h (default [3/4, 4/3]). */
  ratio?: readonly [number, number];
}

/** Python's round() on a float: ties go to even. */
function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * torchvision's `RandomResizedCrop.get_params`: up to 10 tries of a random area
 * (uniform in `scale`) and log-uniform aspect ratio; the first box that fits is placed
 * uniformly at random. After 10 misses: a center crop clamped to the ratio range (the
 * whole image when its ratio is inside the range).
 *
 * @param uniform source of floats in [0, 1): each try draws two (area, ratio), a fitting
 *   try two more (row, column), as torch draws `uniform_`, `uniform_`, `randint`, `randint`.
 * @example
 * ```ts
 * import { randomResizedCropBox } from "./augment.ts";
 * import { mulberry32 } from "./rng.ts";
 * const box = randomResizedCropBox(500, 375, mulberry32(1));
 * console.log(box); // a box inside the 500x375 image, the same for the same seed
 * ```
 */
export function randomResizedCropBox(
  width: number,
  height: number,
  uniform: Uniform,
  options: RandomResizedCropOptions = {},
): CropBox {
  const [s0, s1] = options.scale ?? [0.08, 1];
  const [r0, r1] = options.ratio ?? [3 / 4, 4 / 3];
  const area = width * height;
  const logR0 = Math.log(r0);
  const logR1 = Math.log(r1);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * (s0 + (s1 - s0) * uniform());
    const aspect = Math.exp(logR0 + (logR1 - logR0) * uniform());
    const w = pyRound(Math.sqrt(targetArea * aspect));
    const h = pyRound(Math.sqrt(targetArea / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const top = Math.floor(uniform() * (height - h + 1));
      const left = Math.floor(uniform() * (width - w + 1));
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number, h: number;
  if (inRatio < Math.min(r0, r1)) {
    w = width;
    h = pyRound(w / Math.min(r0, r1));
  } else if (inRatio > Math.max(r0, r1)) {
    h = height;
    w = pyRound(h * Math.max(r0, r1));
  } else {
    w = width;
    h = height;
  }
  return {
    top: Math.floor((height - h) / 2),
    left: Math.floor((width - w) / 2),
    height: h,
    width: w,
  };
}

/** Copy a box out of an RGB image (PIL's `crop`). */
export function cropImage(image: RgbImage, box: CropBox): RgbImage {
  const out = new Uint8Array(box.width * box.height * 3);
  for (let y = 0; y < box.height; y++) {
    const from = ((box.top + y) * image.width + box.left) * 3;
    out.set(image.data.subarray(from, from + box.width * 3), y * box.width * 3);
  }
  return { width: box.width, height: box.height, data: out };
}

/** Mirror an RGB image left to right (PIL's `FLIP_LEFT_RIGHT`). */
export function flipHorizontal(image: RgbImage): RgbImage {
  const { width, height, data } = image;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let x = 0; x < width; x++) {
      const s = row + x * 3;
      const d = row + (width - 1 - x) * 3;
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
    }
  }
  return { width, height, data: out };
}

/** Options of {@link trainTransform}. */
export interface TrainTransformOptions extends RandomResizedCropOptions {
  /** Probability of a horizontal flip (default 0.5). */
  flip?: number;
}

/**
 * The training transform: random resized crop (bicubic, Pillow-exact resampling of the
 * crop), horizontal flip with probability 0.5, then ToTensor and ImageNet Normalize.
 * Returns `size * size * 3` HWC float32 values.
 *
 * @example
 * ```ts
 * import { readImage } from "../data/decode.ts";
 * import { trainTransform } from "./augment.ts";
 * import { hashSeed, mulberry32 } from "./rng.ts";
 * const image = await readImage(new URL("../../data/images/chelsea.png", import.meta.url).pathname);
 * const seed = 0, epoch = 0, i = 0;
 * const x = trainTransform(image, 224, mulberry32(hashSeed(seed, epoch, i)));
 * if (x.length !== 224 * 224 * 3) throw new Error(`length ${x.length}`);
 * ```
 */
export function trainTransform(
  image: RgbImage,
  size: number,
  uniform: Uniform,
  options: TrainTransformOptions = {},
): Float32Array {
  const box = randomResizedCropBox(image.width, image.height, uniform, options);
  let img = resizeBicubic(cropImage(image, box), size, size);
  if (uniform() < (options.flip ?? 0.5)) img = flipHorizontal(img);
  return normalize(img);
}
