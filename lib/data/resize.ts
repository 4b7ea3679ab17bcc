/**
 * Bicubic resampling that reproduces Pillow's `Image.resize(size, Image.BICUBIC)`
 * bit for bit on 8-bit RGB images.
 *
 * The reference evaluation of ConvNeXt resizes with torchvision on PIL images, which
 * calls Pillow's `ImagingResample` (src/libImaging/Resample.c). That is a separable,
 * antialiased convolution: when downscaling, the bicubic kernel (a = -0.5, support 2)
 * is stretched by the scale factor, the per-pixel weights are normalized in double
 * precision, converted to 22-bit fixed point, and each pass rounds and clips to
 * uint8. The horizontal pass runs first, on only the source rows the vertical pass
 * reads. Every one of those steps changes output pixels, so each is mirrored here.
 *
 * @module
 */

import type { RgbImage } from "../util/image.ts";

/** Fixed-point fraction bits Pillow uses for 8-bit resampling: 32 - 8 - 2. */
const PRECISION_BITS = 22;
/** Bicubic filter support (in source pixels at scale 1). */
const BICUBIC_SUPPORT = 2.0;

/**
 * Pillow's bicubic kernel with a = -0.5. The expressions keep Pillow's operation
 * order so that every double rounds the same way as the C code.
 */
function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/** Fixed-point weights of one resampling pass (one axis). */
interface Coefficients {
  /** Maximum number of taps per output pixel. */
  ksize: number;
  /** First source index used by output pixel i: bounds[2i]. Tap count: bounds[2i+1]. */
  bounds: Int32Array;
  /** ksize fixed-point weights per output pixel (unused taps are 0). */
  weights: Int32Array;
}

/**
 * Port of Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [in0, in1)
 * of a source axis of length inSize mapped onto outSize pixels.
 */
function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number): Coefficients {
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = BICUBIC_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  const one = 1 << PRECISION_BITS;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    // C's (int) cast truncates toward zero; the clamp makes negative values moot.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      // normalize_coeffs_8bpc: round half away from zero, then truncate to int.
      weights[base + x] = v < 0 ? Math.trunc(-0.5 + v * one) : Math.trunc(0.5 + v * one);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, weights };
}

/** Pillow's clip8: take the integer part of the fixed-point sum and clamp to 0..255. */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Horizontal pass over rows [rowStart, rowStart + rows) of src (width srcW, c channels)
 * into dst (width outW, `rows` rows).
 */
function resampleHorizontal(
  src: Uint8Array,
  srcW: number,
  c: number,
  rowStart: number,
  rows: number,
  outW: number,
  coeffs: Coefficients,
): Uint8Array {
  const { ksize, bounds, weights } = coeffs;
  const dst = new Uint8Array(outW * rows * c);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < rows; yy++) {
    const srcRow = (yy + rowStart) * srcW * c;
    const dstRow = yy * outW * c;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const kb = xx * ksize;
      if (c === 3) {
        // RGB fast path: one walk over the taps for the three channels, as Pillow does.
        let s0 = half, s1 = half, s2 = half;
        let p = srcRow + xmin * 3;
        for (let x = 0; x < xmax; x++, p += 3) {
          const k = weights[kb + x];
          s0 = (s0 + Math.imul(src[p], k)) | 0;
          s1 = (s1 + Math.imul(src[p + 1], k)) | 0;
          s2 = (s2 + Math.imul(src[p + 2], k)) | 0;
        }
        const o = dstRow + xx * 3;
        dst[o] = clip8(s0);
        dst[o + 1] = clip8(s1);
        dst[o + 2] = clip8(s2);
        continue;
      }
      for (let ch = 0; ch < c; ch++) {
        let ss = half;
        let p = srcRow + xmin * c + ch;
        for (let x = 0; x < xmax; x++, p += c) {
          // Products stay below 2^31 in magnitude, so int32 arithmetic is exact as in C.
          ss = (ss + Math.imul(src[p], weights[kb + x])) | 0;
        }
        dst[dstRow + xx * c + ch] = clip8(ss);
      }
    }
  }
  return dst;
}

/** Vertical pass: src (w columns, any rows) into outH rows using coeffs. */
function resampleVertical(
  src: Uint8Array,
  w: number,
  c: number,
  outH: number,
  coeffs: Coefficients,
  rowOffset: number,
): Uint8Array {
  const { ksize, bounds, weights } = coeffs;
  const stride = w * c;
  const dst = new Uint8Array(outH * stride);
  const half = 1 << (PRECISION_BITS - 1);
  const acc = new Int32Array(stride);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2] - rowOffset;
    const ymax = bounds[yy * 2 + 1];
    const kb = yy * ksize;
    acc.fill(half);
    // Row-major accumulation: same per-pixel sum order as Pillow (y ascending), but
    // streams whole rows, which is much faster in JS than column walks.
    for (let y = 0; y < ymax; y++) {
      const wgt = weights[kb + y];
      const rowBase = (y + ymin) * stride;
      for (let i = 0; i < stride; i++) {
        acc[i] = (acc[i] + Math.imul(src[rowBase + i], wgt)) | 0;
      }
    }
    const out = yy * stride;
    for (let i = 0; i < stride; i++) dst[out + i] = clip8(acc[i]);
  }
  return dst;
}

/** A rectangle of the resized image, in output pixels. */
export interface CropRegion {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Options of {@link resizeBicubic}. */
export interface ResizeOptions {
  /** Interleaved channels per pixel (default 3, RGB). */
  channels?: number;
  /**
   * Compute only this part of the resized image (e.g. a center crop). Each output pixel
   * depends only on its own row and column weights, so the result is bit-identical to
   * cropping Pillow's full resize, at a fraction of the work.
   */
  crop?: CropRegion;
}

/** Rows [start, start + count) of a coefficient table. */
function sliceCoeffs(c: Coefficients, start: number, count: number): Coefficients {
  return {
    ksize: c.ksize,
    bounds: c.bounds.slice(start * 2, (start + count) * 2),
    weights: c.weights.slice(start * c.ksize, (start + count) * c.ksize),
  };
}

/** Copy the rectangle (x0, y0, w, h) out of an interleaved image of row length srcW. */
function copyRegion(
  src: Uint8Array,
  srcW: number,
  c: number,
  x0: number,
  y0: number,
  w: number,
  h: number,
): Uint8Array {
  const out = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) {
    const from = ((y0 + y) * srcW + x0) * c;
    out.set(src.subarray(from, from + w * c), y * w * c);
  }
  return out;
}

/**
 * Resize an interleaved 8-bit image exactly as Pillow 9.4's
 * `Image.resize((width, height), Image.BICUBIC)` does (no `box`, no `reducing_gap`,
 * which is how torchvision calls it), optionally returning only a crop of the result.
 *
 * Channels are resampled independently, as Pillow does for RGB/L images (Pillow
 * premultiplies RGBA/LA first: pass RGB).
 *
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * import { resizeBicubic } from "./resize.ts";
 * const rgb = await readImage(new URL("../../data/images/coffee.jpg", import.meta.url).pathname);
 * const small = resizeBicubic(rgb, 256, 192); // { width: 256, height: 192, data }
 * const crop = { left: 58, top: 16, width: 224, height: 224 };
 * const center = resizeBicubic(rgb, 341, 256, { crop }); // the crop of the 341x256 resize
 * console.log(small.width, center.width); // 256 224
 * ```
 */
export function resizeBicubic(
  image: RgbImage,
  width: number,
  height: number,
  options: ResizeOptions = {},
): RgbImage {
  const { width: srcW, height: srcH, data } = image;
  const channels = options.channels ?? 3;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(
      `resizeBicubic: target size must be positive integers, got ${width}x${height}`,
    );
  }
  if (data.length !== srcW * srcH * channels) {
    throw new RangeError(
      `resizeBicubic: data has ${data.length} bytes, expected ${srcW}x${srcH}x${channels}`,
    );
  }
  const crop = options.crop ?? { left: 0, top: 0, width, height };
  const { left, top } = crop;
  const outW = crop.width;
  const outH = crop.height;
  if (
    ![left, top, outW, outH].every(Number.isInteger) || left < 0 || top < 0 || outW < 1 ||
    outH < 1 || left + outW > width || top + outH > height
  ) {
    throw new RangeError(
      `resizeBicubic: crop ${outW}x${outH}+${left}+${top} is not inside ${width}x${height}`,
    );
  }
  // Image.resize returns a copy when the size is unchanged and no box is given.
  if (width === srcW && height === srcH) {
    return {
      width: outW,
      height: outH,
      data: copyRegion(data, srcW, channels, left, top, outW, outH),
    };
  }

  const needHorizontal = width !== srcW;
  const needVertical = height !== srcH;
  const vert = sliceCoeffs(precomputeCoeffs(srcH, 0, srcH, height), top, outH);
  // Source rows the vertical pass reads (all the horizontal pass has to produce).
  const yFirst = needVertical ? vert.bounds[0] : top;
  const yEnd = needVertical ? vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1] : top + outH;

  let cur: Uint8Array;
  if (needHorizontal) {
    const horiz = sliceCoeffs(precomputeCoeffs(srcW, 0, srcW, width), left, outW);
    cur = resampleHorizontal(data, srcW, channels, yFirst, yEnd - yFirst, outW, horiz);
  } else {
    cur = copyRegion(data, srcW, channels, left, yFirst, outW, yEnd - yFirst);
  }
  if (needVertical) cur = resampleVertical(cur, outW, channels, outH, vert, yFirst);
  return { width: outW, height: outH, data: cur };
}
