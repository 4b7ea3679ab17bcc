/**
 * Observable Plot charts rendered without a browser: Plot draws into a
 * linkedom DOM, and the result (an <svg>, or a <figure> holding a title,
 * swatch legend, the chart and a caption) is flattened into one standalone
 * SVG, so it works as an `image/svg+xml` output and rasterises with resvg.
 *
 * @module
 */

import type * as PlotModule from "npm:@observablehq/plot@0.6.17";
import { emit, Figure, type OutputOptions } from "./figure.ts";
import type { MimeBundle } from "./jupyter.ts";
import { toBase64 } from "./jupyter.ts";
import { escapeXml, svgSize, svgToPng, withXmlns } from "./svg.ts";

/** The Observable Plot module (`import * as Plot from "@observablehq/plot"`). */
export type Plot = typeof PlotModule;

/** Observable Plot's `Plot.plot()` options. */
export type PlotOptions = PlotModule.PlotOptions;

/** Plot options, or a function building them from the Plot module (no import needed in a cell). */
export type PlotSpec = PlotOptions | ((plot: Plot) => PlotOptions);

/** Options for {@link plotFigure} and the chart helpers. */
export interface ChartOutputOptions extends OutputOptions {
  /**
   * What the notebook output holds: "svg" (default; sharp at any zoom), "png"
   * (a raster, e.g. for viewers without SVG), or "both" in one bundle.
   */
  format?: "svg" | "png" | "both";
  /** PNG scale factor relative to the SVG's pixel size (default 2). */
  scale?: number;
}

/** The few DOM element members used to flatten Plot's output (linkedom implements them). */
export interface DomElement {
  /** Tag name. */
  readonly tagName: string;
  /** Serialised markup. */
  readonly outerHTML: string;
  /** Text of the element and its descendants. */
  readonly textContent: string | null;
  /** Child elements. */
  readonly children: ArrayLike<DomElement>;
  /** Attribute value or null. */
  getAttribute(name: string): string | null;
  /** First matching descendant or null. */
  querySelector(selector: string): DomElement | null;
}

/** A chart flattened to standalone SVG. */
export interface RenderedSvg {
  /** Standalone SVG text with xmlns. */
  svg: string;
  /** Pixel width. */
  width: number;
  /** Pixel height. */
  height: number;
}

let modules:
  | Promise<{ Plot: Plot; parseHTML: (html: string) => { document: unknown } }>
  | undefined;

/** Loads Observable Plot and linkedom on first use (they are large, and most cells never plot). */
async function load() {
  return await (modules ??= Promise.all([
    import("npm:@observablehq/plot@0.6.17"),
    import("npm:linkedom@0.18.15"),
  ]).then(
    ([Plot, linkedom]) => ({
      Plot,
      parseHTML: linkedom.parseHTML as unknown as (html: string) => { document: unknown },
    }),
  ));
}

/** The Observable Plot module, loaded lazily (for building marks outside a {@link PlotSpec} function). */
export async function loadPlot(): Promise<Plot> {
  return (await load()).Plot;
}

/**
 * Renders a Plot spec to standalone SVG without displaying it.
 *
 * @example
 * ```ts
 * import { renderPlot } from "./plot.ts";
 * const { svg, width, height } = await renderPlot((Plot) => ({ marks: [Plot.dot([[1, 2]])] }));
 * console.log(width, height, svg.slice(0, 40)); // the plot's size, then its SVG markup
 * ```
 */
export async function renderPlot(spec: PlotSpec): Promise<RenderedSvg> {
  const { Plot, parseHTML } = await load();
  const options = typeof spec === "function" ? spec(Plot) : spec;
  if (typeof options !== "object" || options === null) {
    throw new Error(
      "lib/viz: plotFigure: expected Plot options (an object) or a function returning them",
    );
  }
  const { document } = parseHTML("<!DOCTYPE html><html><body></body></html>");
  // Plot's continuous colour legends ("ramp") need a <canvas>, which linkedom lacks.
  const element = Plot.plot({ ...options, document: document as never }) as unknown as DomElement;
  return flattenFigure(element);
}

/**
 * Draws an Observable Plot chart and shows it (SVG by default); returns the
 * {@link Figure} with `svg` (and `png` when format is "png"/"both").
 *
 * @example
 * ```ts
 * const dir = await Deno.makeTempDir();
 * await plotFigure((Plot) => ({
 *   title: "Loss",
 *   marks: [Plot.lineY([3, 2, 1.5, 1.2]), Plot.ruleY([0])],
 * }), { path: `${dir}/loss.svg` }); // shown, and written to the file
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function plotFigure(
  spec: PlotSpec,
  options: ChartOutputOptions = {},
): Promise<Figure> {
  return await svgFigure(await renderPlot(spec), options);
}

/** Wraps rendered SVG in a Figure with the requested formats, then shows/saves it. */
export async function svgFigure(
  rendered: RenderedSvg,
  options: ChartOutputOptions = {},
  extra: MimeBundle = {},
): Promise<Figure> {
  const format = options.format ?? "svg";
  if (!["svg", "png", "both"].includes(format)) {
    throw new Error(
      `lib/viz: format must be "svg", "png" or "both", got ${JSON.stringify(format)}`,
    );
  }
  const scale = options.scale ?? 2;
  const png = format === "svg" ? undefined : await svgToPng(rendered.svg, { scale });
  // A caller's text/plain (e.g. the values drawn, for text-only front ends) wins.
  const bundle: MimeBundle = {
    "text/plain": `<chart ${rendered.width}x${rendered.height}>`,
    ...extra,
  };
  if (format !== "png") bundle["image/svg+xml"] = rendered.svg;
  if (png) bundle["image/png"] = toBase64(png);
  const figure = new Figure({ bundle, png, svg: rendered.svg, ...size(rendered) });
  return await emit(figure, options, () => svgToPng(rendered.svg, { scale }));
}

function size(r: RenderedSvg) {
  return { width: r.width, height: r.height };
}

/** Approximate width of a text run (no font metrics without a browser). */
export function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.6;
}

/**
 * Turns Plot's output element into one standalone SVG: a bare <svg> gets its
 * xmlns; a <figure> has its parts stacked vertically, with headings and the
 * swatch legend (HTML in Plot's output) redrawn as SVG text and rects.
 */
export function flattenFigure(element: DomElement): RenderedSvg {
  if (element.tagName.toLowerCase() === "svg") {
    const svg = withXmlns(element.outerHTML);
    return { svg, ...svgSize(svg) };
  }
  const parts: string[] = [];
  let y = 0;
  let width = 0;
  for (const child of Array.from(element.children)) {
    const tag = child.tagName.toLowerCase();
    if (tag === "svg") {
      const inner = child.outerHTML;
      const s = svgSize(withXmlns(inner));
      // A nested <svg> keeps its own viewBox; placing it is just x/y.
      parts.push(inner.replace(/^<svg\b/, `<svg x="0" y="${y}"`));
      y += s.height;
      width = Math.max(width, s.width);
    } else if (tag === "h2" || tag === "h3" || tag === "figcaption") {
      const fontSize = tag === "h2" ? 16 : 12;
      const weight = tag === "h2" ? ` font-weight="bold"` : "";
      y += fontSize + 6;
      const text = child.textContent ?? "";
      parts.push(
        `<text x="4" y="${y - 4}" font-size="${fontSize}"${weight}>${escapeXml(text)}</text>`,
      );
      width = Math.max(width, textWidth(text, fontSize) + 8);
    } else if (tag === "div" && /swatches/.test(child.getAttribute("class") ?? "")) {
      let x = 4;
      for (const swatch of Array.from(child.children)) {
        // The swatch container also holds a <style> element; only the swatches are drawn.
        if (!/swatch/.test(swatch.getAttribute("class") ?? "")) continue;
        const fill = swatch.querySelector("svg")?.getAttribute("fill") ?? "currentColor";
        const label = swatch.textContent ?? "";
        parts.push(
          `<rect x="${x}" y="${y + 4}" width="12" height="12" fill="${escapeXml(fill)}"/>`,
          `<text x="${x + 16}" y="${y + 14}" font-size="10">${escapeXml(label)}</text>`,
        );
        x += 16 + textWidth(label, 10) + 12;
      }
      y += 20;
      width = Math.max(width, x);
    }
  }
  width = Math.ceil(width);
  const height = Math.ceil(y);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" fill="currentColor">` +
    `${parts.join("")}</svg>`;
  return { svg, width, height };
}
