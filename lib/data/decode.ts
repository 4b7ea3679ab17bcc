/**
 * Image decoding that yields exactly the RGB pixels of PIL's
 * `Image.open(path).convert("RGB")`, the first step of the reference evaluation.
 *
 * Decoder: sharp (libvips with libjpeg-turbo/mozjpeg and libspng). Measured against
 * Debian's python3-pil 9.4 it is bit-identical on baseline, progressive, 4:2:0, 4:2:2,
 * 4:4:4, grayscale and CMYK JPEGs and on 8/16-bit, palette, grayscale and alpha PNGs
 * (tests/data_decode_test.ts). image-js's pure-JS JPEG decoder upsamples chroma
 * differently and is off by up to 19 levels, so it is not used here.
 *
 * sharp is asked for the image's own bands (no colourspace conversion, EXIF
 * orientation and ICC profiles ignored, as PIL does); the mode conversion to RGB is
 * then done here with PIL's arithmetic:
 * - grayscale (L, 1) → replicated to R=G=B; alpha channels are dropped, never composited;
 * - palette → looked up by libspng, identical to PIL's palette expansion;
 * - CMYK → PIL's `cmyk2rgb` (plain inversion with MULDIV255), not an ICC transform;
 * - 16-bit PNG: grayscale becomes PIL mode "I", which `convert("RGB")` clamps to
 *   0..255; 16-bit RGB, RGBA and LA keep the high byte, as PIL's "*;16B" raw modes do.
 *
 * @module
 */

import type { RgbImage } from "../util/image.ts";

/** sharp's default export: the function that opens an image. */
type Sharp = typeof import("npm:sharp@0.34.5");
let sharpModule: Promise<Sharp> | undefined;

/**
 * sharp, imported on first use: it is a native addon (libvips, about 16 MB) that building or
 * running a model never needs, so importing the library does not load it. The specifier is a
 * literal, so `deno check`, the lock file and `deno publish` still see the dependency.
 */
function loadSharp(): Promise<Sharp> {
  sharpModule ??= import("npm:sharp@0.34.5").then((m) => m.default).catch((err) => {
    sharpModule = undefined; // a later call may succeed (e.g. after an install)
    throw new Error(`the image decoder sharp cannot be loaded: ${reason(err)}`);
  });
  return sharpModule;
}

/**
 * PIL's CMYK → RGB conversion (Convert.c `cmyk2rgb`): for each of C, M, Y,
 * `255 - k - round(c * (255 - k) / 255)` computed with the MULDIV255 integer trick.
 *
 * @param cmyk interleaved CMYK bytes (4 per pixel, not inverted: 0 = no ink)
 * @returns interleaved RGB bytes (3 per pixel)
 * @example
 * ```ts
 * import { cmykToRgb } from "./decode.ts";
 * // no ink, then full cyan: white, then cyan
 * const rgb = cmykToRgb(new Uint8Array([0, 0, 0, 0, 255, 0, 0, 0]));
 * console.log(rgb); // Uint8Array(6) [255, 255, 255, 0, 255, 255]
 * if (rgb.join() !== "255,255,255,0,255,255") throw new Error(`${rgb}`);
 * ```
 */
export function cmykToRgb(cmyk: Uint8Array): Uint8Array {
  const n = cmyk.length >> 2;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const nk = 255 - cmyk[i * 4 + 3];
    for (let j = 0; j < 3; j++) {
      const tmp = cmyk[i * 4 + j] * nk + 128;
      const v = nk - (((tmp >> 8) + tmp) >> 8);
      out[i * 3 + j] = v < 0 ? 0 : v;
    }
  }
  return out;
}

/** Colour spaces sharp reports for the inputs we can reproduce PIL's conversion of. */
type SourceSpace = "srgb" | "b-w" | "cmyk" | "grey16" | "rgb16";

/**
 * Convert sharp's native raw bands to RGB the way PIL's `convert("RGB")` does for the
 * mode PIL would open the same file in.
 */
function toRgb(
  src: Uint8Array | Uint16Array,
  pixels: number,
  channels: number,
  space: SourceSpace,
): Uint8Array {
  if (space === "cmyk") return cmykToRgb(src as Uint8Array);
  const out = new Uint8Array(pixels * 3);
  const wide = src instanceof Uint16Array;
  if (channels <= 2) {
    // Grayscale 16-bit without alpha opens as PIL mode "I" (clamped to 255 by
    // convert); with alpha PIL keeps the high byte ("LA;16B").
    const clampI = wide && channels === 1;
    for (let i = 0; i < pixels; i++) {
      let v = src[i * channels];
      if (wide) v = clampI ? (v > 255 ? 255 : v) : v >> 8;
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = v;
    }
    return out;
  }
  for (let i = 0; i < pixels; i++) {
    for (let j = 0; j < 3; j++) {
      const v = src[i * channels + j];
      out[i * 3 + j] = wide ? v >> 8 : v;
    }
  }
  return out;
}

/** One-line description of an error, without stack. */
function reason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split("\n")[0];
}

/**
 * Decode JPEG or PNG bytes to PIL-identical RGB pixels (see the module doc).
 * Other formats sharp reads (WebP, GIF, TIFF...) decode too, without the
 * bit-exactness guarantee.
 *
 * @param bytes the encoded file
 * @param name used in error messages (a path or any label)
 * @throws Error `cannot decode image '<name>': ...` on unreadable data
 * @example
 * ```ts
 * import { decodeImage } from "./decode.ts";
 * const bytes = await Deno.readFile(new URL("../../data/images/coffee.jpg", import.meta.url));
 * const rgb = await decodeImage(bytes, "coffee.jpg");
 * if (rgb.data.length !== rgb.width * rgb.height * 3) throw new Error("not RGB");
 * ```
 */
export async function decodeImage(bytes: Uint8Array, name = "<bytes>"): Promise<RgbImage> {
  const sharp = await loadSharp();
  try {
    const meta = await sharp(bytes).metadata();
    const space = meta.space as string | undefined;
    // autoOrient false: PIL ignores EXIF orientation; ignoreIcc: PIL does no colour
    // management, and sharp would otherwise transform to sRGB with the embedded profile.
    let pipe = sharp(bytes, { autoOrient: false, ignoreIcc: true });
    let src: SourceSpace;
    let depth: "uchar" | "ushort" = "uchar";
    switch (space) {
      case "cmyk":
        // Keep the CMYK bands (libvips undoes the Adobe inversion like PIL's "CMYK;I"),
        // instead of sharp's ICC-based CMYK → sRGB conversion.
        pipe = pipe.pipelineColourspace("cmyk").toColourspace("cmyk");
        src = "cmyk";
        break;
      case "b-w":
        pipe = pipe.toColourspace("b-w");
        src = "b-w";
        break;
      case "grey16":
        pipe = pipe.toColourspace("grey16");
        src = "grey16";
        depth = "ushort";
        break;
      case "rgb16":
        pipe = pipe.toColourspace("rgb16");
        src = "rgb16";
        depth = "ushort";
        break;
      case "srgb":
        pipe = pipe.toColourspace("srgb");
        src = "srgb";
        break;
      default:
        throw new Error(`unsupported colour space '${space ?? "unknown"}'`);
    }
    const { data, info } = await pipe.raw({ depth }).toBuffer({ resolveWithObject: true });
    const pixels = info.width * info.height;
    const raw = depth === "ushort"
      ? new Uint16Array(data.buffer, data.byteOffset, data.length >> 1)
      : new Uint8Array(data.buffer, data.byteOffset, data.length);
    if (raw.length !== pixels * info.channels) {
      throw new Error(`decoder returned ${raw.length} samples for ${pixels}x${info.channels}`);
    }
    if (src === "cmyk" && info.channels !== 4) {
      throw new Error(`CMYK image decoded to ${info.channels} channels`);
    }
    return {
      width: info.width,
      height: info.height,
      data: toRgb(raw, pixels, info.channels, src),
    };
  } catch (err) {
    throw new Error(`cannot decode image '${name}': ${reason(err)}`);
  }
}

/**
 * Read an image file and decode it like `PIL.Image.open(path).convert("RGB")`.
 *
 * @throws Error `cannot read image '<path>': ...` for a missing/unreadable file and
 *   `cannot decode image '<path>': ...` for a file that is not an image
 * @example
 * ```ts
 * import { readImage } from "./decode.ts";
 * const path = new URL("../../data/images/coffee.jpg", import.meta.url).pathname;
 * const { width, height, data } = await readImage(path);
 * console.log(width, height); // 600 400
 * if (data.length !== width * height * 3) throw new Error("not 3 bytes per pixel");
 * ```
 */
export async function readImage(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound ? "file not found" : reason(err);
    throw new Error(`cannot read image '${path}': ${why}`);
  }
  return await decodeImage(bytes, path);
}
