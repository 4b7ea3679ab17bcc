/**
 * SVG helpers: making Observable Plot's SVG standalone, escaping text, and
 * rasterising SVG to PNG with resvg's WebAssembly build (no native binary).
 *
 * resvg-wasm cannot see system fonts, so text needs a font file: we load the
 * first that exists of $CONVNEXT_VIZ_FONT and common system paths. Without
 * one, PNG renderings simply lack text (one warning on stderr); SVG outputs
 * are unaffected since the viewer draws their text.
 *
 * @module
 */

import { createRequire } from "node:module";

const SVG_NS = "http://www.w3.org/2000/svg";
const XLINK_NS = "http://www.w3.org/1999/xlink";

/** Font files tried, in order, after $CONVNEXT_VIZ_FONT (Linux, macOS, Windows). */
export const FONT_CANDIDATES: readonly string[] = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/TTF/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
  "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
  "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
  "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
  "/System/Library/Fonts/Supplemental/Arial.ttf",
  "/Library/Fonts/Arial.ttf",
  "C:\\Windows\\Fonts\\arial.ttf",
];

/**
 * Adds the `xmlns` (and `xmlns:xlink` when used) attributes to the root <svg>
 * if missing: DOM serialisers such as linkedom omit them, and without them the
 * text is not a valid standalone SVG file (browsers render it as XML text).
 *
 * @example
 * ```ts
 * import { withXmlns } from "./svg.ts";
 * console.log(withXmlns('<svg width="1"></svg>'));
 * // '<svg xmlns="http://www.w3.org/2000/svg" width="1"></svg>'
 * ```
 */
export function withXmlns(svg: string): string {
  const open = svg.match(/<svg\b[^>]*>/);
  if (!open) throw new Error("lib/viz: expected SVG markup containing an <svg> element");
  let tag = open[0];
  if (!/\sxmlns=/.test(tag)) tag = tag.replace(/^<svg\b/, `<svg xmlns="${SVG_NS}"`);
  if (/xlink:/.test(svg) && !/\sxmlns:xlink=/.test(tag)) {
    tag = tag.replace(/^<svg\b/, `<svg xmlns:xlink="${XLINK_NS}"`);
  }
  return svg.slice(0, open.index) + tag + svg.slice(open.index! + open[0].length);
}

/** Escapes text for SVG/XML content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[ch]!,
  );
}

/** Reads the pixel size from the root <svg>'s width/height (or viewBox). */
export function svgSize(svg: string): { width: number; height: number } {
  const open = svg.match(/<svg\b[^>]*>/)?.[0] ?? "";
  const attr = (name: string) => {
    const m = open.match(new RegExp(`\\s${name}="([0-9.]+)(px)?"`));
    return m ? Number(m[1]) : NaN;
  };
  let width = attr("width");
  let height = attr("height");
  if (!(width > 0 && height > 0)) {
    const box = open.match(/viewBox="[-0-9.]+[ ,]+[-0-9.]+[ ,]+([0-9.]+)[ ,]+([0-9.]+)"/);
    if (box) [width, height] = [Number(box[1]), Number(box[2])];
  }
  if (!(width > 0 && height > 0)) {
    throw new Error("lib/viz: SVG has no width/height or viewBox to size it by");
  }
  return { width, height };
}

type ResvgModule = typeof import("npm:@resvg/resvg-wasm@2.6.2");
let resvgReady: Promise<ResvgModule> | undefined;
let fonts: Uint8Array[] | undefined;
let warnedNoFont = false;

async function loadResvg(): Promise<ResvgModule> {
  // Loaded lazily: most notebook cells never need a raster of a chart.
  const mod = await import("npm:@resvg/resvg-wasm@2.6.2");
  const require = createRequire(import.meta.url);
  let wasmPath: string;
  try {
    wasmPath = require.resolve("@resvg/resvg-wasm/index_bg.wasm");
  } catch {
    throw new Error(
      "lib/viz: cannot find @resvg/resvg-wasm/index_bg.wasm; run `deno install` (needs nodeModulesDir)",
    );
  }
  await mod.initWasm(await Deno.readFile(wasmPath));
  return mod;
}

/** Font buffers for resvg: $CONVNEXT_VIZ_FONT (path list) or the first system candidate found. */
export function loadFonts(): Uint8Array[] {
  if (fonts) return fonts;
  const fromEnv = (Deno.env.get("CONVNEXT_VIZ_FONT") ?? "").split(/[:;]/).filter((p) =>
    p.length > 0
  );
  for (const path of fromEnv) {
    try {
      (fonts ??= []).push(Deno.readFileSync(path));
    } catch {
      throw new Error(`lib/viz: CONVNEXT_VIZ_FONT: cannot read font file ${path}`);
    }
  }
  if (fonts) return fonts;
  for (const path of FONT_CANDIDATES) {
    try {
      fonts = [Deno.readFileSync(path)];
      return fonts;
    } catch {
      // Try the next candidate.
    }
  }
  fonts = [];
  return fonts;
}

/** Options for {@link svgToPng}. */
export interface RasterOptions {
  /** Output scale factor (default 2, for crisp charts on high-DPI screens). */
  scale?: number;
  /** Background colour (default white; charts are transparent otherwise). */
  background?: string;
}

/**
 * Rasterises standalone SVG text to PNG bytes with resvg (WebAssembly).
 *
 * @example
 * ```ts
 * import { svgToPng } from "./svg.ts";
 * const png = await svgToPng('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>');
 * if (png[1] !== 0x50 || png[2] !== 0x4e || png[3] !== 0x47) throw new Error("not a PNG");
 * ```
 */
export async function svgToPng(svg: string, options: RasterOptions = {}): Promise<Uint8Array> {
  const scale = options.scale ?? 2;
  if (!(scale > 0 && scale <= 16)) {
    throw new Error(`lib/viz: svgToPng: scale must be within (0, 16], got ${scale}`);
  }
  const { Resvg } = await (resvgReady ??= loadResvg());
  const fontBuffers = loadFonts();
  if (fontBuffers.length === 0 && !warnedNoFont && /<text\b/.test(svg)) {
    warnedNoFont = true;
    console.warn(
      "lib/viz: no TTF font found for PNG rendering; text is left out (set CONVNEXT_VIZ_FONT=/path/font.ttf)",
    );
  }
  const resvg = new Resvg(withXmlns(svg), {
    font: { fontBuffers, defaultFontSize: 10 },
    background: options.background ?? "white",
    fitTo: { mode: "zoom", value: scale },
  });
  try {
    const image = resvg.render();
    try {
      return image.asPng();
    } finally {
      image.free();
    }
  } finally {
    resvg.free();
  }
}
