/**
 * The in-memory image type shared by the data modules.
 *
 * @module
 */

/**
 * An 8-bit image with interleaved channels, rows top to bottom (HWC order).
 * Decoded images are always RGB (3 channels), like PIL's `convert("RGB")`.
 *
 * @example
 * ```ts
 * const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([255, 0, 0, 0, 0, 255]) };
 * ```
 */
export interface RgbImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** width * height * 3 bytes (RGB), row-major. */
  data: Uint8Array;
}
