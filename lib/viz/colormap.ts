/**
 * Colour maps (perceptual viridis and turbo; jet for comparison), colour bars, and the
 * Grad-CAM style heat overlay.
 *
 * @module
 */

import { emit, Figure, type OutputOptions, pngBundle } from "./figure.ts";
import { toBase64 } from "./jupyter.ts";
import { encodePng, type ImageInput, type TensorLike, toRgb8 } from "./raster.ts";
import { escapeXml, svgToPng } from "./svg.ts";
import type { RgbImage } from "../util/image.ts";

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

/** A colour map: t in 0..1 (clamped) to 0..255 RGB. */
export type Colormap = (t: number) => [number, number, number];

/** The colour maps known by name. */
export type ColormapName = "viridis" | "turbo" | "jet";

function clamp01(t: number): number {
  return Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
}

// Viridis by Stéfan van der Walt and Nathaniel Smith (matplotlib, CC0): its 256 published
// colours as hex triplets, copied from d3-scale-chromatic 3.1.1 (`interpolateViridis`; ISC
// licence, Copyright 2010-2026 Mike Bostock), which Observable Plot brings.
const VIRIDIS_HEX = [
  "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467",
  "48166848176948186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677",
  "482878482979472a7a472c7a472d7b472e7c472f7d46307e46327e46337f463480453581453781453882",
  "443983443a83443b84433d84433e85423f854240864241864142874144874045884046883f47883f4889",
  "3e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b3b528b3a538b3a548c39558c39568c38588c",
  "38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d33638d32648e32658e31668e",
  "31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e2c728e2c738e",
  "2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e",
  "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d",
  "218f8d21908d21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a",
  "1e9c891e9d891f9e891f9f881fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a884",
  "23a98324aa8325ab8225ac8226ad8127ad8128ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b",
  "32b67a34b67935b77937b87838b9773aba763bbb753dbc743fbc7340bd7242be7144bf7046c06f48c16e",
  "4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc8635ec96260ca6063cb5f65cb5e",
  "67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d84d44b86d549",
  "89d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32",
  "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11c",
  "d2e21bd5e21ad8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61e",
  "f6e620f8e621fbe723fde725",
].join("");
const VIRIDIS = Uint8Array.from(
  { length: 256 * 3 },
  (_, i) => parseInt(VIRIDIS_HEX.slice(2 * i, 2 * i + 2), 16),
);

/**
 * Viridis, the perceptually uniform colour map of matplotlib (dark purple -> teal ->
 * yellow): brightness rises steadily with t, so it reads correctly in grey and for the
 * common colour-vision deficiencies. Linear between its 256 published colours; t outside
 * 0..1 is clamped.
 *
 * @example
 * ```ts
 * import { viridis } from "./colormap.ts";
 * console.log(viridis(0), viridis(1)); // [68, 1, 84] (#440154) [253, 231, 37] (#fde725)
 * ```
 */
export function viridis(t: number): [number, number, number] {
  const x = clamp01(t) * 255;
  const i = Math.min(254, Math.floor(x));
  const f = x - i;
  const at = (c: number) => Math.round(VIRIDIS[3 * i + c] * (1 - f) + VIRIDIS[3 * (i + 1) + c] * f);
  return [at(0), at(1), at(2)];
}

/**
 * Turbo (Anton Mikhailov, Google, 2019: an improved rainbow with monotone brightness at
 * both ends), by the polynomial approximation that d3-scale-chromatic 3.1.1 uses
 * (`interpolateTurbo`, ISC licence). t outside 0..1 is clamped.
 *
 * @example
 * ```ts
 * import { turbo } from "./colormap.ts";
 * console.log(turbo(0), turbo(1)); // [35, 23, 27] (dark) [144, 12, 0] (dark red)
 * ```
 */
export function turbo(t: number): [number, number, number] {
  const x = clamp01(t);
  const byte = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
  return [
    byte(
      34.61 + x * (1172.33 - x * (10793.56 - x * (33300.12 - x * (38394.49 - x * 14825.05)))),
    ),
    byte(23.31 + x * (557.33 + x * (1225.33 - x * (3574.96 - x * (1073.77 + x * 707.56))))),
    byte(27.2 + x * (3211.1 - x * (15327.97 - x * (27814 - x * (22569.18 - x * 6838.66))))),
  ];
}

/**
 * The classic "jet" colour map (blue -> cyan -> yellow -> red) as 0..255 RGB, kept for
 * comparison: its brightness is not monotone (cyan and yellow look hotter than red), so the
 * overlays use {@link viridis}. t outside 0..1 is clamped.
 *
 * @example
 * ```ts
 * import { jet } from "./colormap.ts";
 * console.log(jet(0), jet(1)); // [0, 0, 128] (dark blue) [128, 0, 0] (dark red)
 * ```
 */
export function jet(t: number): [number, number, number] {
  const x = clamp01(t);
  // Piecewise-linear ramps, each channel a tent of width 2 centred a quarter apart.
  const ch = (centre: number) => Math.min(1, Math.max(0, 1.5 - Math.abs(4 * x - centre)));
  return [Math.round(255 * ch(3)), Math.round(255 * ch(2)), Math.round(255 * ch(1))];
}

const COLORMAPS: Record<ColormapName, Colormap> = { viridis, turbo, jet };

/** A colour map by name (or the function itself); the default is viridis. */
export function colormap(map: ColormapName | Colormap = "viridis"): Colormap {
  if (typeof map === "function") return map;
  const found = COLORMAPS[map];
  if (!found) {
    throw new Error(
      `lib/viz: unknown colour map ${JSON.stringify(map)}; expected ${
        Object.keys(COLORMAPS).join(", ")
      } or a function`,
    );
  }
  return found;
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

/** Smallest and largest finite value of some arrays of values ([0, 0] when there are none). */
export function valueRange(...arrays: ArrayLike<number>[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const data of arrays) {
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return lo <= hi ? [lo, hi] : [0, 0];
}

/**
 * Paints a field with a colour map: `range[0]` gets the map's first colour, `range[1]` its
 * last (default range: the field's min..max; a flat field gets the first colour).
 *
 * @example
 * ```ts
 * import { colorize } from "./colormap.ts";
 * const img = colorize({ width: 2, height: 1, data: new Float32Array([0, 1]) });
 * console.log(img.data); // viridis(0) then viridis(1): 68, 1, 84, 253, 231, 37
 * ```
 */
export function colorize(
  field: Field,
  options: { colormap?: ColormapName | Colormap; range?: [number, number] } = {},
): RgbImage<Uint8Array, 3> {
  const map = colormap(options.colormap);
  const [lo, hi] = options.range ?? valueRange(field.data);
  const span = hi > lo ? hi - lo : 1;
  const out = new Uint8Array(field.width * field.height * 3);
  for (let p = 0; p < field.width * field.height; p++) {
    out.set(map((field.data[p] - lo) / span), 3 * p);
  }
  return { width: field.width, height: field.height, channels: 3, data: out };
}

/** A colour bar: which values the colours of a figure stand for. */
export interface ColorbarSpec {
  /** Value at the bottom of the bar (the map's first colour). */
  lo: number;
  /** Value at the top (the map's last colour). */
  hi: number;
  /** The colour map (default viridis). */
  colormap?: ColormapName | Colormap;
  /** What the values are, written along the bar (e.g. "Grad-CAM, 0..1 of its maximum"). */
  label?: string;
  /** Ticks to write instead of round numbers (values within lo..hi). */
  ticks?: { value: number; text: string }[];
}

/** An SVG and its pixel size. */
export interface SizedSvg {
  /** Standalone SVG text. */
  svg: string;
  /** Pixel width. */
  width: number;
  /** Pixel height. */
  height: number;
}

/**
 * Tick values of a colour bar: round numbers (steps of 1, 2, 2.5 or 5 times a power of ten,
 * about five of them) within lo..hi, each written with the decimals its step needs
 * (exponents for very large or very small values); the two ends when fewer fall inside.
 *
 * @example
 * ```ts
 * import { colorbarTicks } from "./colormap.ts";
 * console.log(colorbarTicks(0, 1).map((t) => t.text)); // ["0.00", "0.25", "0.50", "0.75", "1.00"]
 * ```
 */
export function colorbarTicks(lo: number, hi: number): { value: number; text: string }[] {
  if (!(hi > lo)) return [{ value: lo, text: formatTick(lo, 0) }];
  const raw = (hi - lo) / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const r = raw / magnitude;
  const step = (r < 1.5 ? 1 : r < 2.25 ? 2 : r < 3.5 ? 2.5 : r < 7.5 ? 5 : 10) * magnitude;
  const values: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k++) {
    values.push(k * step);
  }
  if (values.length < 2) values.splice(0, values.length, lo, hi);
  const exponent = Math.max(Math.abs(lo), Math.abs(hi)) >= 1e5 || step < 1e-3;
  return values.map((value) => ({ value, text: formatTick(value, step, exponent) }));
}

function formatTick(v: number, step: number, exponent = false): string {
  if (exponent) return v.toExponential(1);
  if (step <= 0) return v.toFixed(2);
  let digits = 0;
  while (digits < 6 && Math.abs(Math.round(step * 10 ** digits) - step * 10 ** digits) > 1e-6) {
    digits++;
  }
  // Also -0.00 -> 0.00.
  return (Math.abs(v) < step * 1e-9 ? 0 : v).toFixed(digits);
}

/** Wraps PNG bytes as a standalone SVG of the given size (for composing with text). */
export function pngAsSvg(png: Uint8Array, width: number, height: number): SizedSvg {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}"><image width="${width}" height="${height}" ` +
    `href="data:image/png;base64,${toBase64(png)}"/></svg>`;
  return { svg, width, height };
}

const TITLE_FONT = 14;
const TICK_FONT = 11;
const BAR_WIDTH = 14;

/**
 * Lays a figure out with a title above it and a vertical colour bar at its right, all in
 * one SVG (so the title and the scale travel with the image when it is saved or shared).
 *
 * @param content the picture (standalone SVG, e.g. {@link pngAsSvg}).
 * @param options `barHeight`: the bar's height (default: the content's height).
 */
export function frameWithColorbar(
  content: SizedSvg,
  options: { title?: string; colorbar?: ColorbarSpec; barHeight?: number } = {},
): SizedSvg {
  const textWidth = (text: string, size: number) => text.length * size * 0.6;
  const top = options.title ? TITLE_FONT + 12 : 4;
  const parts: string[] = [content.svg.replace(/^<svg\b/, `<svg x="0" y="${top}"`)];
  let right = content.width;
  const bar = options.colorbar;
  if (bar) {
    const map = colormap(bar.colormap);
    const x = content.width + 10;
    const h = Math.max(20, options.barHeight ?? content.height);
    const stops = Array.from({ length: 33 }, (_, i) => {
      const [r, g, b] = map(1 - i / 32);
      return `<stop offset="${(i * 100) / 32}%" stop-color="rgb(${r},${g},${b})"/>`;
    }).join("");
    const id = `lib-viz-colorbar-${Math.random().toString(36).slice(2, 10)}`;
    parts.push(
      `<defs><linearGradient id="${id}" x1="0" y1="0" x2="0" y2="1">${stops}</linearGradient></defs>`,
      `<rect x="${x}" y="${top}" width="${BAR_WIDTH}" height="${h}" fill="url(#${id})" ` +
        `stroke="#444" stroke-width="0.5"/>`,
    );
    const ticks = bar.ticks ?? colorbarTicks(bar.lo, bar.hi);
    let tickRight = x + BAR_WIDTH;
    for (const t of ticks) {
      const frac = bar.hi > bar.lo ? (t.value - bar.lo) / (bar.hi - bar.lo) : 0;
      const y = top + h - frac * h;
      parts.push(
        `<line x1="${x + BAR_WIDTH}" x2="${x + BAR_WIDTH + 4}" y1="${y}" y2="${y}" stroke="#444"/>`,
        `<text x="${x + BAR_WIDTH + 6}" y="${y + TICK_FONT * 0.35}" font-size="${TICK_FONT}">${
          escapeXml(t.text)
        }</text>`,
      );
      tickRight = Math.max(tickRight, x + BAR_WIDTH + 6 + textWidth(t.text, TICK_FONT));
    }
    right = tickRight;
    if (bar.label) {
      const lx = tickRight + 8 + TICK_FONT * 0.8;
      const ly = top + h / 2;
      parts.push(
        `<text x="${lx}" y="${ly}" font-size="${TICK_FONT}" text-anchor="middle" ` +
          `transform="rotate(-90 ${lx} ${ly})">${escapeXml(bar.label)}</text>`,
      );
      right = lx + 4;
    }
  }
  if (options.title) {
    parts.unshift(
      `<text x="4" y="${TITLE_FONT + 4}" font-size="${TITLE_FONT}" font-weight="bold">${
        escapeXml(options.title)
      }</text>`,
    );
    right = Math.max(right, 8 + textWidth(options.title, TITLE_FONT));
  }
  const width = Math.ceil(right + 6);
  const height = Math.ceil(
    top + Math.max(content.height, bar ? options.barHeight ?? 0 : 0) + 8,
  );
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" fill="black">` +
    `<rect width="100%" height="100%" fill="white"/>${parts.join("")}</svg>`;
  return { svg, width, height };
}

/** Options for {@link overlayHeatmap}. */
export interface OverlayOptions extends OutputOptions {
  /** Opacity of the heat colours over the photo, 0..1 (default 0.5). */
  alpha?: number;
  /** Heat values mapped to the ends of the colour map (default: the heat's min..max). */
  range?: [number, number];
  /** Colour map (default "viridis", perceptually uniform; "turbo" and "jet" also known). */
  colormap?: ColormapName | Colormap;
  /** Heading drawn above the image, inside the figure. */
  title?: string;
  /** Draw a colour bar with the values at the right (default true). */
  colorbar?: boolean;
  /** What the heat values are, written along the colour bar. */
  label?: string;
  /** Scale of the rendered figure (default 1: the image at its own size). */
  scale?: number;
}

/**
 * Blends a heat map (e.g. a Grad-CAM of the last stage) over an image with a colour map
 * (viridis by default); the heat is resized bilinearly to the image. The figure carries its
 * title and a colour bar with the heat values. Displays in Jupyter.
 *
 * @param image the photo (RGB/RGBA pixels, PNG bytes or a [h, w, 3] tensor).
 * @param heat the scalar map, any size.
 * @returns a PNG {@link Figure}: the image's size without title and colour bar, larger with.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * import { overlayHeatmap } from "./colormap.ts";
 * const photoTensor = tf.randomUniform([64, 64, 3], 0, 255);
 * const camTensor = tf.randomUniform([8, 8]); // e.g. a Grad-CAM map, upsampled to the photo
 * const fig = await overlayHeatmap(photoTensor, camTensor, {
 *   alpha: 0.4,
 *   range: [0, 1],
 *   title: "Grad-CAM",
 * });
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
  const map = colormap(options.colormap);
  const rgb = await toRgb8(image, {}, "overlayHeatmap image");
  const field = resizeBilinear(await toField(heat, "overlayHeatmap heat"), rgb.width, rgb.height);
  const [lo, hi] = options.range ?? valueRange(field.data);
  const span = hi > lo ? hi - lo : 1;
  const out = new Uint8Array(rgb.width * rgb.height * 3);
  for (let p = 0; p < rgb.width * rgb.height; p++) {
    const colour = map((field.data[p] - lo) / span);
    for (let c = 0; c < 3; c++) {
      const base = rgb.data[p * (rgb.channels ?? 3) + c];
      out[p * 3 + c] = Math.round((1 - alpha) * base + alpha * colour[c]);
    }
  }
  const overlay = encodePng({ width: rgb.width, height: rgb.height, channels: 3, data: out });
  const colorbar = options.colorbar ?? true;
  const scale = options.scale ?? 1;
  if (!colorbar && !options.title && scale === 1) {
    const figure = new Figure({
      bundle: pngBundle(overlay, rgb.width, rgb.height, "heat overlay"),
      png: overlay,
      width: rgb.width,
      height: rgb.height,
    });
    return await emit(figure, options);
  }
  const framed = frameWithColorbar(pngAsSvg(overlay, rgb.width, rgb.height), {
    title: options.title,
    colorbar: colorbar ? { lo, hi, colormap: map, label: options.label } : undefined,
  });
  const alt = options.title ? `heat overlay, ${options.title}:` : "heat overlay";
  return await rasterFigure(framed, scale, alt, options);
}

/**
 * Rasterises a composed SVG and shows/saves it as a PNG figure (the SVG kept on the figure);
 * `alt` names it in the text/plain stand-in.
 */
export async function rasterFigure(
  framed: SizedSvg,
  scale: number,
  alt: string,
  options: OutputOptions,
): Promise<Figure> {
  const png = await svgToPng(framed.svg, { scale });
  const width = Math.round(framed.width * scale);
  const height = Math.round(framed.height * scale);
  const figure = new Figure({
    bundle: pngBundle(png, width, height, alt),
    png,
    svg: framed.svg,
    width,
    height,
  });
  return await emit(figure, options);
}
