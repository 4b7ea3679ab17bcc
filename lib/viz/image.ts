/**
 * Images and image grids as PNG outputs (photos, channel grids of feature maps).
 *
 * @module
 */

import { writeFileAtomic } from "../util/fs.ts";
import { emit, Figure, type OutputOptions, pngBundle } from "./figure.ts";
import { toBase64 } from "./jupyter.ts";
import { encodePng, type ImageInput, isJpeg, isPng, toRgb8, type ToRgbOptions } from "./raster.ts";
import type { RgbImage } from "../util/image.ts";
import { escapeXml, svgToPng } from "./svg.ts";

/** Options for {@link showImage}. */
export interface ShowImageOptions extends OutputOptions, ToRgbOptions {
  /** Integer-ish zoom with nearest-neighbour sampling, e.g. 8 for a 7x7 map (default 1). */
  scale?: number;
}

/**
 * Shows an image as a PNG output (JPEG bytes are shown as they are).
 *
 * @param image RGB/RGBA/grey pixels, PNG or JPEG bytes, or a tf.js tensor [h, w, c] / [h, w].
 * @returns the {@link Figure}; `figure.png` holds the PNG bytes (undefined for JPEG input).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * import { showImage } from "./image.ts";
 * await showImage(tf.randomUniform([32, 32, 3]) as tf.Tensor3D, { scale: 4 });
 * const pixels = { width: 2, height: 1, channels: 3 as const, data: new Uint8Array(6).fill(200) };
 * const dir = await Deno.makeTempDir();
 * const fig = await showImage(pixels, { path: `${dir}/photo.png` }); // also written to a file
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function showImage(
  image: ImageInput,
  options: ShowImageOptions = {},
): Promise<Figure> {
  const scale = options.scale ?? 1;
  if (!(scale > 0 && scale <= 64)) {
    throw new Error(`lib/viz: showImage: scale must be within (0, 64], got ${scale}`);
  }
  if (image instanceof Uint8Array && isJpeg(image) && scale === 1) {
    const { width, height } = jpegSize(image);
    const figure = new Figure({
      bundle: { "image/jpeg": toBase64(image), "text/plain": `<image ${width}x${height} JPEG>` },
      width,
      height,
    });
    if (options.path && !options.path.toLowerCase().endsWith(".jpg")) {
      throw new Error(
        `lib/viz: showImage: JPEG input can only be saved as .jpg, got ${options.path}`,
      );
    }
    const { path, ...rest } = options;
    if (path) await writeFileAtomic(path, image);
    return await emit(figure, rest);
  }
  let png: Uint8Array;
  let size: { width: number; height: number };
  if (image instanceof Uint8Array && isPng(image) && scale === 1) {
    // Already PNG: show the bytes untouched; the size is in the IHDR chunk.
    const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
    png = image;
    size = { width: view.getUint32(16), height: view.getUint32(20) };
  } else {
    let rgb = await toRgb8(image, options, "showImage image");
    if (scale !== 1) {
      rgb = resizeNearest(rgb, Math.round(rgb.width * scale), Math.round(rgb.height * scale));
    }
    png = encodePng(rgb);
    size = rgb;
  }
  const figure = new Figure({
    bundle: pngBundle(png, size.width, size.height),
    png,
    width: size.width,
    height: size.height,
  });
  return await emit(figure, options);
}

/** Options for {@link imageGrid}. */
export interface ImageGridOptions extends OutputOptions, ToRgbOptions {
  /** Columns (default: ceil(sqrt(n))). */
  cols?: number;
  /** One caption per image, drawn under it. */
  labels?: string[];
  /** Each image is fitted (aspect kept, nearest-neighbour) into a square of this size (default: the largest image side, at least 64). */
  cellSize?: number;
  /** Pixels between cells (default 2). */
  gap?: number;
  /** Grey level of the background, 0..255 (default 255 = white). */
  background?: number;
  /** Heading drawn above the grid. */
  title?: string;
}

/**
 * Lays images out in a grid and shows it as one PNG (e.g. 16 channels of a
 * feature map, or predictions with their labels).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * import { imageGrid } from "./image.ts";
 * // an array of [h, w] tensors, one per channel
 * const channels = Array.from({ length: 4 }, () => tf.randomUniform([8, 8]) as tf.Tensor2D);
 * const labels = channels.map((_, i) => `ch ${i}`);
 * await imageGrid(channels, { cols: 2, cellSize: 56, labels });
 * ```
 */
export async function imageGrid(
  images: ImageInput[],
  options: ImageGridOptions = {},
): Promise<Figure> {
  const grid = await renderImageGrid(images, options);
  if (!grid.svg) {
    const figure = new Figure({
      bundle: pngBundle(grid.pixels, grid.width, grid.height, "image grid"),
      png: grid.pixels,
      width: grid.width,
      height: grid.height,
    });
    return await emit(figure, options);
  }
  // Text needs a font rasteriser: the grid is wrapped in an SVG with captions, rendered here.
  const png = await svgToPng(grid.svg.svg, { scale: 1 });
  const figure = new Figure({
    bundle: pngBundle(png, grid.svg.width, grid.svg.height, "image grid"),
    png,
    svg: grid.svg.svg,
    width: grid.svg.width,
    height: grid.svg.height,
  });
  return await emit(figure, options);
}

/** An image grid before display: {@link renderImageGrid}. */
export interface RenderedGrid {
  /** PNG of the pixels alone (no captions, no title). */
  pixels: Uint8Array;
  /** Width of the pixel grid. */
  width: number;
  /** Height of the pixel grid. */
  height: number;
  /** With labels or a title: the grid with its text, as standalone SVG. */
  svg?: { svg: string; width: number; height: number };
}

/**
 * Lays images out as {@link imageGrid} does, without displaying anything (for figures that
 * add to the grid, such as a colour bar).
 */
export async function renderImageGrid(
  images: ImageInput[],
  options: ImageGridOptions = {},
): Promise<RenderedGrid> {
  if (!Array.isArray(images) || images.length === 0) {
    throw new Error("lib/viz: imageGrid: expected a non-empty array of images");
  }
  const n = images.length;
  const cols = options.cols ?? Math.ceil(Math.sqrt(n));
  if (!Number.isInteger(cols) || cols < 1) {
    throw new Error(`lib/viz: imageGrid: cols must be a positive integer, got ${cols}`);
  }
  if (options.labels && options.labels.length !== n) {
    throw new Error(
      `lib/viz: imageGrid: got ${options.labels.length} labels for ${n} images (need one each)`,
    );
  }
  const gap = options.gap ?? 2;
  const background = options.background ?? 255;
  const rgbs = await Promise.all(
    images.map((img, i) => toRgb8(img, options, `imageGrid image ${i}`)),
  );
  const cell = options.cellSize ??
    Math.max(64, ...rgbs.map((r) => Math.max(r.width, r.height)));
  if (!Number.isInteger(cell) || cell < 1) {
    throw new Error(`lib/viz: imageGrid: cellSize must be a positive integer, got ${cell}`);
  }
  const rows = Math.ceil(n / cols);
  const width = cols * cell + (cols - 1) * gap;
  const height = rows * cell + (rows - 1) * gap;
  const canvas = new Uint8Array(width * height * 3).fill(background);
  rgbs.forEach((rgb, i) => {
    const k = Math.min(cell / rgb.width, cell / rgb.height);
    const fitted = resizeNearest(
      rgb,
      Math.max(1, Math.round(rgb.width * k)),
      Math.max(1, Math.round(rgb.height * k)),
    );
    const x0 = (i % cols) * (cell + gap) + Math.floor((cell - fitted.width) / 2);
    const y0 = Math.floor(i / cols) * (cell + gap) + Math.floor((cell - fitted.height) / 2);
    blit(canvas, width, fitted, x0, y0, background);
  });
  const pixels = encodePng({ width, height, channels: 3, data: canvas });
  if (!options.labels && !options.title) return { pixels, width, height };
  const svg = labelledGridSvg(
    pixels,
    { width, height, rows, cols, cell, gap },
    options.labels,
    options.title,
  );
  return { pixels, width, height, svg };
}

function labelledGridSvg(
  grid: Uint8Array,
  layout: { width: number; height: number; rows: number; cols: number; cell: number; gap: number },
  labels: string[] | undefined,
  title: string | undefined,
): { svg: string; width: number; height: number } {
  const { width, height, rows, cols, cell, gap } = layout;
  const fontSize = Math.max(9, Math.min(14, Math.round(cell / 6)));
  const labelHeight = labels ? fontSize + 6 : 0;
  const top = title ? 24 : 0;
  const href = `data:image/png;base64,${toBase64(grid)}`;
  const parts: string[] = [];
  if (title) {
    parts.push(
      `<text x="${width / 2}" y="17" font-size="15" font-weight="bold" text-anchor="middle">${
        escapeXml(title)
      }</text>`,
    );
  }
  for (let r = 0; r < rows; r++) {
    // Each grid row is a window onto the one grid PNG, shifted down to leave room for captions.
    const y = top + r * (cell + gap + labelHeight);
    parts.push(
      `<svg x="0" y="${y}" width="${width}" height="${cell}" viewBox="0 ${
        r * (cell + gap)
      } ${width} ${cell}"><image width="${width}" height="${height}" href="${href}"/></svg>`,
    );
    for (let c = 0; c < cols && labels; c++) {
      const i = r * cols + c;
      if (i >= labels.length) break;
      // A caption wider than its cell gets a smaller font (down to 7 px), not its neighbour's space.
      const fits = Math.floor((cell - 4) / (Math.max(1, labels[i].length) * 0.62));
      const size = Math.max(7, Math.min(fontSize, fits));
      parts.push(
        `<text x="${c * (cell + gap) + cell / 2}" y="${
          y + cell + fontSize + 2
        }" font-size="${size}" text-anchor="middle">${escapeXml(labels[i])}</text>`,
      );
    }
  }
  const total = top + rows * (cell + labelHeight) + (rows - 1) * gap;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${total}" ` +
    `viewBox="0 0 ${width} ${total}" font-family="sans-serif" fill="black">` +
    `<rect width="100%" height="100%" fill="white"/>${parts.join("")}</svg>`;
  return { svg, width, height: total };
}

/** Nearest-neighbour resize (keeps feature-map cells crisp when enlarged). */
export function resizeNearest(
  img: RgbImage<Uint8Array, 3 | 4>,
  width: number,
  height: number,
): RgbImage<Uint8Array, 3 | 4> {
  if (width === img.width && height === img.height) return img;
  const c = img.channels ?? 3;
  const out = new Uint8Array(width * height * c);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(img.height - 1, Math.floor((y * img.height) / height));
    for (let x = 0; x < width; x++) {
      const sx = Math.min(img.width - 1, Math.floor((x * img.width) / width));
      const src = (sy * img.width + sx) * c;
      out.set(img.data.subarray(src, src + c), (y * width + x) * c);
    }
  }
  return { width, height, channels: img.channels, data: out };
}

/**
 * Shrinks an image by averaging the source pixels under each output pixel (a box filter:
 * no aliasing, unlike {@link resizeNearest}); sizes larger than the source fall back to
 * nearest-neighbour.
 */
export function resizeArea(
  img: RgbImage<Uint8Array, 3 | 4>,
  width: number,
  height: number,
): RgbImage<Uint8Array, 3 | 4> {
  if (width >= img.width || height >= img.height) return resizeNearest(img, width, height);
  const c = img.channels ?? 3;
  const out = new Uint8Array(width * height * c);
  const sum = new Float64Array(c);
  for (let y = 0; y < height; y++) {
    const y0 = Math.floor((y * img.height) / height);
    const y1 = Math.max(y0 + 1, Math.floor(((y + 1) * img.height) / height));
    for (let x = 0; x < width; x++) {
      const x0 = Math.floor((x * img.width) / width);
      const x1 = Math.max(x0 + 1, Math.floor(((x + 1) * img.width) / width));
      sum.fill(0);
      for (let sy = y0; sy < y1; sy++) {
        for (let sx = x0; sx < x1; sx++) {
          const src = (sy * img.width + sx) * c;
          for (let k = 0; k < c; k++) sum[k] += img.data[src + k];
        }
      }
      const count = (y1 - y0) * (x1 - x0);
      for (let k = 0; k < c; k++) out[(y * width + x) * c + k] = Math.round(sum[k] / count);
    }
  }
  return { width, height, channels: img.channels, data: out };
}

/** Copies an RGB(A) image into an RGB canvas, blending alpha over the background grey. */
function blit(
  canvas: Uint8Array,
  canvasWidth: number,
  img: RgbImage<Uint8Array, 3 | 4>,
  x0: number,
  y0: number,
  background: number,
): void {
  const c = img.channels ?? 3;
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const src = (y * img.width + x) * c;
      const dst = ((y0 + y) * canvasWidth + (x0 + x)) * 3;
      const a = c === 4 ? img.data[src + 3] / 255 : 1;
      for (let k = 0; k < 3; k++) {
        canvas[dst + k] = Math.round(img.data[src + k] * a + background * (1 - a));
      }
    }
  }
}

/** Width and height from a JPEG's SOF marker. */
export function jpegSize(bytes: Uint8Array): { width: number; height: number } {
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) {
      i++;
      continue;
    }
    const marker = bytes[i + 1];
    const length = (bytes[i + 2] << 8) | bytes[i + 3];
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return {
        height: (bytes[i + 5] << 8) | bytes[i + 6],
        width: (bytes[i + 7] << 8) | bytes[i + 8],
      };
    }
    i += 2 + length;
  }
  throw new Error("lib/viz: JPEG bytes without a frame header (SOF); is the file truncated?");
}
