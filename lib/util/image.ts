/**
 * The one in-memory image type of the kit, shared by the data modules (decoding, resizing,
 * transforms, training augmentation) and lib/viz (display), so a decoded photo goes to
 * `showImage` or `imageGrid` as it is.
 *
 * @module
 */

/** Pixel arrays an {@link RgbImage} may hold: bytes, or numbers lib/viz scales for display. */
export type PixelData =
  | Uint8Array
  | Uint8ClampedArray
  | Float32Array
  | Int32Array
  | ArrayLike<number>;

/**
 * An image in memory: rows top to bottom, pixels left to right, channels interleaved
 * (HWC), `width * height * channels` values.
 *
 * Without type arguments it is what the data modules decode and take: 8-bit RGB (decoded
 * images are always RGB, like PIL's `convert("RGB")`). lib/viz also shows grey and RGBA
 * images and float values: `RgbImage<PixelData, 1 | 3 | 4>`.
 *
 * @typeParam Data the pixel array: bytes by default.
 * @typeParam Channels the channel counts allowed: 3 (RGB) by default.
 * @example
 * ```ts
 * const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([255, 0, 0, 0, 0, 255]) };
 * const grey: RgbImage<Float32Array, 1> = {
 *   width: 2,
 *   height: 1,
 *   channels: 1,
 *   data: new Float32Array([0, 1]),
 * };
 * ```
 */
export interface RgbImage<
  Data extends PixelData = Uint8Array,
  Channels extends 1 | 3 | 4 = 3,
> {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Channels per pixel: 1 (grey), 3 (RGB) or 4 (RGBA); absent means 3. */
  channels?: Channels;
  /** `width * height * channels` values, row-major: 0..255 for integer arrays. */
  data: Data;
}
