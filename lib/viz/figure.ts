/**
 * `Figure`: what every lib/viz helper returns, and the shared "show it or save
 * it" step. In a notebook a helper displays its figure right away (so it works
 * inside loops); the returned Figure then renders as nothing when it is also
 * the cell's last expression, instead of a second copy or a dump of bytes.
 *
 * @module
 */

import { displayBundle, inJupyter, type MimeBundle, toBase64 } from "./jupyter.ts";
import { writeFileAtomic } from "../util/fs.ts";

/** Where a helper's output goes. */
export interface OutputOptions {
  /**
   * Also write the figure to this file: `.png` writes PNG bytes, `.svg` the SVG
   * text (only for vector figures). Written atomically.
   */
  path?: string;
  /** Display in Jupyter (default true; ignored outside Jupyter). */
  display?: boolean;
}

const DISPLAY = Symbol.for("Jupyter.display");

/** A rendered figure: its MIME bundle plus the raw PNG and/or SVG. */
export class Figure {
  /** The MIME bundle shown in Jupyter (e.g. image/png base64, image/svg+xml). */
  readonly bundle: MimeBundle;
  /** PNG bytes, when the figure was rasterised. */
  readonly png?: Uint8Array;
  /** Standalone SVG text (with xmlns), for vector figures. */
  readonly svg?: string;
  /** Pixel width of the figure. */
  readonly width: number;
  /** Pixel height of the figure. */
  readonly height: number;
  #shown = false;

  /** Builds a figure; at least one of `png`/`svg` should be given. */
  constructor(
    init: { bundle: MimeBundle; png?: Uint8Array; svg?: string; width: number; height: number },
  ) {
    this.bundle = init.bundle;
    this.png = init.png;
    this.svg = init.svg;
    this.width = init.width;
    this.height = init.height;
  }

  /** Marks the figure as already displayed (its last-expression rendering becomes empty). */
  markShown(): void {
    this.#shown = true;
  }

  /** Jupyter display hook: the bundle, or nothing when the helper already displayed it. */
  [DISPLAY](): MimeBundle {
    return this.#shown ? {} : this.bundle;
  }
}

/** Bundle for PNG bytes: base64 image plus a text/plain stand-in for plain front ends. */
export function pngBundle(
  png: Uint8Array,
  width: number,
  height: number,
  alt = "image",
): MimeBundle {
  return {
    "image/png": toBase64(png),
    "text/plain": `<${alt} ${width}x${height} PNG>`,
  };
}

/**
 * Displays (in Jupyter, unless `display: false`) and/or writes the figure.
 * `rasterise` is called only when a `.png` path needs PNG bytes the figure lacks.
 */
export async function emit(
  figure: Figure,
  options: OutputOptions,
  rasterise?: () => Promise<Uint8Array>,
): Promise<Figure> {
  if (options.path !== undefined) {
    await writeFigure(figure, options.path, rasterise);
  }
  if (options.display !== false && inJupyter()) {
    await displayBundle(figure.bundle);
    figure.markShown();
  }
  return figure;
}

async function writeFigure(
  figure: Figure,
  path: string,
  rasterise?: () => Promise<Uint8Array>,
): Promise<void> {
  const lower = path.toLowerCase();
  let bytes: Uint8Array;
  if (lower.endsWith(".png")) {
    const png = figure.png ?? (rasterise ? await rasterise() : undefined);
    if (!png) throw new Error(`lib/viz: cannot write ${path}: this figure has no PNG rendering`);
    bytes = png;
  } else if (lower.endsWith(".svg")) {
    if (!figure.svg) {
      throw new Error(`lib/viz: cannot write ${path}: this figure is a raster image; use .png`);
    }
    bytes = new TextEncoder().encode(figure.svg);
  } else {
    throw new Error(`lib/viz: path ${path}: expected a file name ending in .png or .svg`);
  }
  await writeFileAtomic(path, bytes);
}
