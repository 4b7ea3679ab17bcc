/**
 * Plotly figures as notebook outputs without plotly.js in the kernel: the
 * output bundle carries the figure JSON (`application/vnd.plotly.v1+json`,
 * drawn interactively by JupyterLab's and VS Code's Plotly renderers) plus a
 * static SVG of the same data drawn with Observable Plot, which viewers
 * without a Plotly renderer (GitHub, nbconvert HTML) show instead.
 *
 * The static fallback covers bar, scatter/line and heatmap traces; other
 * trace types get a text/plain note instead of an image.
 *
 * @module
 */

import type * as PlotModule from "npm:@observablehq/plot@0.6.17";
import { emit, Figure } from "./figure.ts";
import type { MimeBundle } from "./jupyter.ts";
import { type ChartOutputOptions, type RenderedSvg, renderPlot, svgFigure } from "./plot.ts";

/** One Plotly trace (only the fields the static fallback reads are typed). */
export interface PlotlyTrace {
  /** "bar", "scatter" (default), "scattergl" or "heatmap"; others are passed through. */
  type?: string;
  /** Trace name (legend). */
  name?: string;
  /** x values. */
  x?: ArrayLike<number | string>;
  /** y values. */
  y?: ArrayLike<number | string>;
  /** Heatmap values, rows bottom to top as Plotly draws them. */
  z?: ArrayLike<ArrayLike<number>>;
  /** "lines", "markers", "lines+markers", ... */
  mode?: string;
  /** "v" (default) or "h" for bars. */
  orientation?: "v" | "h";
  /** Any other Plotly attribute. */
  [key: string]: unknown;
}

/** A Plotly figure: `{ data, layout }`. */
export interface PlotlyFigure {
  /** Traces. */
  data: PlotlyTrace[];
  /** Plotly layout (title, axis titles, width, height, barmode are used by the fallback). */
  layout?: Record<string, unknown>;
}

/** Plotly's first default trace colour, so single-trace fallbacks look like the original. */
const PLOTLY_BLUE = "#1f77b4";

type Row = { trace: string; x: number | string; y: number | string };

function titleOf(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (
    value && typeof value === "object" && typeof (value as { text?: unknown }).text === "string"
  ) {
    return (value as { text: string }).text;
  }
  return undefined;
}

/** Converts typed arrays (e.g. tensor data) to plain arrays so the figure is valid JSON. */
function toJson(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(
      value,
      (_key, v) => ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v,
    ),
  );
}

/** Title, size and axis titles of the fallback, from the Plotly layout. */
interface FallbackFrame {
  common: { title: string | undefined; width: number; height: number };
  xTitle: string | undefined;
  yTitle: string | undefined;
}

/**
 * Renders the static fallback for a Plotly figure (undefined when no trace type is supported).
 */
export async function plotlyFallback(figure: PlotlyFigure): Promise<RenderedSvg | undefined> {
  const layout = figure.layout ?? {};
  const traces = figure.data.filter((t) =>
    ["bar", "scatter", "scattergl", "heatmap"].includes(t.type ?? "scatter")
  );
  if (traces.length === 0) return undefined;
  const frame: FallbackFrame = {
    common: {
      title: titleOf(layout.title),
      width: typeof layout.width === "number" ? layout.width : 640,
      height: typeof layout.height === "number" ? layout.height : 400,
    },
    xTitle: titleOf((layout.xaxis as Record<string, unknown> | undefined)?.title),
    yTitle: titleOf((layout.yaxis as Record<string, unknown> | undefined)?.title),
  };
  const heat = traces.find((t) => t.type === "heatmap");
  if (heat) return await heatmapFallback(heat, frame);
  return await xyFallback(traces, layout, frame);
}

/** A heatmap trace as Observable Plot cells. */
function heatmapFallback(heat: PlotlyTrace, frame: FallbackFrame): Promise<RenderedSvg> {
  const z = Array.from(heat.z ?? [], (row) => Array.from(row, Number));
  const xs = heat.x ? Array.from(heat.x, String) : (z[0] ?? []).map((_, j) => String(j));
  const ys = heat.y ? Array.from(heat.y, String) : z.map((_, i) => String(i));
  const cells = z.flatMap((row, i) => row.map((v, j) => ({ x: xs[j], y: ys[i], v })));
  return renderPlot((Plot) => ({
    ...frame.common,
    marginLeft: 80,
    x: { domain: xs, label: frame.xTitle ?? null },
    // Plotly draws row 0 at the bottom.
    y: { domain: [...ys].reverse(), label: frame.yTitle ?? null },
    color: { scheme: "viridis" },
    marks: [Plot.cell(cells, { x: "x", y: "y", fill: "v" })],
  }));
}

/** The points of bar, line and marker traces, by how they are drawn. */
interface XyRows {
  lines: Row[];
  bars: Row[];
  markers: Row[];
  /** Some bar trace is horizontal. */
  horizontal: boolean;
}

/** Splits the traces' points into bars, lines and markers, as Plotly would draw them. */
function xyRows(traces: PlotlyTrace[]): XyRows {
  const r: XyRows = { lines: [], bars: [], markers: [], horizontal: false };
  traces.forEach((t, k) => {
    const name = t.name ?? `trace ${k}`;
    const ys = Array.from(t.y ?? []);
    const xs = t.x ? Array.from(t.x) : ys.map((_, i) => i);
    const n = Math.min(xs.length, ys.length);
    const points = Array.from({ length: n }, (_, i) => ({ trace: name, x: xs[i], y: ys[i] }));
    if (t.type === "bar") {
      r.horizontal ||= t.orientation === "h";
      r.bars.push(...points);
      return;
    }
    // Plotly's default mode: lines+markers below 20 points, else lines.
    const mode = t.mode ?? (n < 20 ? "lines+markers" : "lines");
    if (mode.includes("lines")) r.lines.push(...points);
    if (mode.includes("markers")) r.markers.push(...points);
  });
  return r;
}

/** Bar, scatter and line traces as Observable Plot marks. */
function xyFallback(
  traces: PlotlyTrace[],
  layout: Record<string, unknown>,
  frame: FallbackFrame,
): Promise<RenderedSvg> {
  const { lines, bars, markers, horizontal } = xyRows(traces);
  const { common, xTitle, yTitle } = frame;
  const multi = traces.length > 1;
  const stroke = multi ? "trace" : undefined;
  // Plotly groups bars of several traces side by side unless barmode is "stack".
  const grouped = multi && bars.length > 0 && layout.barmode !== "stack";
  const names = traces.map((t, k) => t.name ?? `trace ${k}`);
  const categories = (key: "x" | "y") =>
    bars.length > 0 && typeof bars[0][key] === "string"
      ? [...new Set(bars.map((b) => b[key]))]
      : undefined;
  // Plotly puts the first category of horizontal bars at the bottom.
  const cats = horizontal ? categories("y")?.reverse() : categories("x");
  return renderPlot((Plot) => {
    const marks: PlotModule.Markish[] = [];
    if (bars.length) marks.push(barMark(Plot, bars, { horizontal, grouped, multi }));
    if (lines.length) marks.push(Plot.line(lines, { x: "x", y: "y", stroke }));
    if (markers.length) {
      marks.push(Plot.dot(markers, { x: "x", y: "y", fill: stroke ?? "currentColor", r: 3 }));
    }
    // Category axes keep the figure's order (band scales would sort them).
    const band = { domain: names, axis: null };
    const catAxis = (title: string | undefined) => ({ domain: cats, label: title ?? null });
    const color = multi ? { legend: true, domain: names } : undefined;
    if (horizontal) {
      return {
        ...common,
        marginLeft: 100,
        color,
        x: { label: xTitle ?? null, grid: true },
        ...(grouped
          ? { fy: catAxis(yTitle), y: band }
          : { y: cats ? catAxis(yTitle) : { label: yTitle ?? null } }),
        marks,
      };
    }
    return {
      ...common,
      color,
      y: { label: yTitle ?? null, grid: true },
      ...(grouped
        ? { fx: catAxis(xTitle), x: band }
        : { x: cats ? catAxis(xTitle) : { label: xTitle ?? null } }),
      marks,
    };
  });
}

/** The bar mark: one bar per point, grouped side by side per category with several traces. */
function barMark(
  Plot: typeof PlotModule,
  bars: Row[],
  how: { horizontal: boolean; grouped: boolean; multi: boolean },
): PlotModule.Markish {
  const fill = how.multi ? "trace" : PLOTLY_BLUE;
  if (how.horizontal) {
    return how.grouped
      ? Plot.barX(bars, { fy: "y", y: "trace", x: "x", fill: "trace" })
      : Plot.barX(bars, { y: "y", x: "x", fill });
  }
  return how.grouped
    ? Plot.barY(bars, { fx: "x", x: "trace", y: "y", fill: "trace" })
    : Plot.barY(bars, { x: "x", y: "y", fill });
}

/**
 * Shows a Plotly figure: the interactive Plotly MIME type plus a static SVG
 * (or PNG with `format: "png"`) fallback in the same output.
 *
 * @example
 * ```ts
 * await plotly({
 *   data: [{ type: "bar", x: ["cat", "dog"], y: [0.7, 0.3] }],
 *   layout: { title: { text: "Top-2" } },
 * });
 * ```
 */
export async function plotly(
  figure: PlotlyFigure,
  options: ChartOutputOptions = {},
): Promise<Figure> {
  if (!figure || !Array.isArray(figure.data)) {
    throw new Error("lib/viz: plotly: expected a figure object { data: [...traces], layout? }");
  }
  const json = toJson({ data: figure.data, layout: figure.layout ?? {} }) as MimeBundle[string];
  const extra: MimeBundle = { "application/vnd.plotly.v1+json": json };
  const fallback = await plotlyFallback(figure);
  if (fallback) return await svgFigure(fallback, options, extra);
  const types = [...new Set(figure.data.map((t) => t.type ?? "scatter"))].join(", ");
  const result = new Figure({
    bundle: {
      ...extra,
      "text/plain": `<plotly figure (${types}); no static preview for these trace types>`,
    },
    width: 0,
    height: 0,
  });
  return await emit(result, options);
}
