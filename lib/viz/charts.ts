/**
 * Ready-made charts for the notebooks: top-k bars, training curves and
 * confusion-matrix heatmaps, drawn with Observable Plot (see plot.ts).
 *
 * @module
 */

import type * as PlotModule from "npm:@observablehq/plot@0.6.17";
import type { Figure } from "./figure.ts";
import {
  type ChartOutputOptions,
  loadPlot,
  type RenderedSvg,
  renderPlot,
  svgFigure,
  textWidth,
} from "./plot.ts";
import { escapeXml } from "./svg.ts";
import { pngAsSvg } from "./colormap.ts";
import { resizeArea } from "./image.ts";
import { encodePng, type ImageInput, toRgb8 } from "./raster.ts";

/** Common chart labels. */
export interface ChartLabels extends ChartOutputOptions {
  /** Heading above the chart. */
  title?: string;
  /** x axis label. */
  xLabel?: string;
  /** y axis label. */
  yLabel?: string;
  /** Chart width in px (default 640). */
  width?: number;
  /** Chart height in px (default depends on the chart). */
  height?: number;
}

/** Options for {@link barChart}. */
export interface BarChartOptions extends ChartLabels {
  /** "horizontal" (default: long class names read well on the y axis) or "vertical". */
  orientation?: "horizontal" | "vertical";
  /** Print each value at the end of its bar (default true). */
  showValues?: boolean;
  /** d3-format string for the printed values (default ".3~f"). */
  valueFormat?: string;
  /** Bar colour (default Plot's first categorical colour). */
  color?: string;
  /**
   * Fixed extent of the value axis, e.g. `[0, 1]` for probabilities or `[0, 100]` for
   * percentages (default: from 0 to the largest value, which makes any small value look big).
   */
  domain?: [number, number];
}

function checkNumbers(values: ArrayLike<number>, what: string): number[] {
  const out = Array.from(values, Number);
  const bad = out.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new Error(`lib/viz: ${what}: value ${bad} is ${values[bad]}, expected a finite number`);
  }
  return out;
}

/**
 * Bar chart of values with one label each, bars in the given order (e.g. top-5 classes).
 *
 * @example
 * ```ts
 * import { barChart } from "./charts.ts";
 * const fig = await barChart(["tabby", "tiger cat", "Egyptian cat"], [0.61, 0.22, 0.09], {
 *   title: "Top-3",
 * }); // shown inline in Jupyter
 * if (!fig.svg?.startsWith("<svg")) throw new Error("no SVG");
 * ```
 */
export async function barChart(
  labels: string[],
  values: ArrayLike<number>,
  options: BarChartOptions = {},
): Promise<Figure> {
  if (!Array.isArray(labels) || labels.length === 0) {
    throw new Error("lib/viz: barChart: expected a non-empty array of labels");
  }
  const vals = checkNumbers(values, "barChart values");
  if (vals.length !== labels.length) {
    throw new Error(`lib/viz: barChart: ${labels.length} labels but ${vals.length} values`);
  }
  if (options.domain) checkDomain(options.domain, vals, "barChart");
  const data = labels.map((label, i) => ({ label: String(label), value: vals[i] }));
  const horizontal = (options.orientation ?? "horizontal") === "horizontal";
  const fill = options.color ?? "#4269d0";
  const showValues = options.showValues ?? true;
  const format = options.valueFormat ?? ".3~f";
  const longest = Math.max(...data.map((d) => textWidth(d.label, 10)));
  const rendered = await renderPlot((Plot) => {
    const marks: PlotModule.Markish[] = [];
    if (horizontal) {
      marks.push(Plot.barX(data, { y: "label", x: "value", fill }), Plot.ruleX([0]));
      if (showValues) {
        marks.push(
          Plot.text(data, {
            y: "label",
            x: "value",
            text: (d) => fmt(d.value),
            dx: 4,
            textAnchor: "start",
          }),
        );
      }
    } else {
      marks.push(Plot.barY(data, { x: "label", y: "value", fill }), Plot.ruleY([0]));
      if (showValues) {
        marks.push(Plot.text(data, { x: "label", y: "value", text: (d) => fmt(d.value), dy: -6 }));
      }
    }
    return {
      title: options.title,
      width: options.width ?? 640,
      height: options.height ?? (horizontal ? Math.max(120, 40 + 28 * data.length) : 360),
      marginLeft: horizontal ? Math.min(320, Math.max(40, longest + 16)) : undefined,
      marginRight: horizontal && showValues ? 48 : undefined,
      // Keep the caller's order: band scales sort their domain by default.
      [horizontal ? "y" : "x"]: {
        domain: data.map((d) => d.label),
        label: horizontal ? options.yLabel ?? null : options.xLabel ?? null,
      },
      [horizontal ? "x" : "y"]: {
        grid: true,
        label: horizontal ? options.xLabel ?? null : options.yLabel ?? null,
        ...(options.domain ? { domain: options.domain } : {}),
      },
      marks,
    };
  });
  return await svgFigure(rendered, options);

  function fmt(v: number): string {
    return formatNumber(v, format);
  }
}

/** Checks a fixed axis extent and that every value lies within it (else bars would overflow). */
function checkDomain(domain: [number, number], values: number[], what: string): void {
  const [lo, hi] = domain;
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo < hi)) {
    throw new Error(`lib/viz: ${what}: domain must be [lo, hi] with lo < hi, got [${domain}]`);
  }
  const outside = values.find((v) => v < lo - 1e-9 * (hi - lo) || v > hi + 1e-9 * (hi - lo));
  if (outside !== undefined) {
    throw new Error(`lib/viz: ${what}: value ${outside} is outside the domain [${lo}, ${hi}]`);
  }
}

/** Minimal d3-format subset used for chart value labels: ".Nf", ".N~f", ".N%", or "" for plain. */
export function formatNumber(v: number, format: string): string {
  const m = format.match(/^\.(\d+)(~?)([f%])$/);
  if (!m) return String(v);
  const digits = Number(m[1]);
  const scaled = m[3] === "%" ? v * 100 : v;
  let text = scaled.toFixed(digits);
  if (m[2] === "~" && text.includes(".")) text = text.replace(/\.?0+$/, "");
  return m[3] === "%" ? `${text}%` : text;
}

/** One line of a {@link lineChart}. */
export interface Series {
  /** Legend name. */
  name: string;
  /** y values. */
  y: ArrayLike<number>;
  /** x values (default 1, 2, 3, ... e.g. epochs). */
  x?: ArrayLike<number>;
}

/** Options for {@link lineChart}. */
export interface LineChartOptions extends ChartLabels {
  /** Log scale on y (e.g. for losses). */
  logY?: boolean;
  /** Draw a dot at each point (default: when a series has at most 50 points). */
  dots?: boolean;
  /** Fixed extent of the y axis, e.g. `[0, 1]` for accuracies (default: the data's). */
  yDomain?: [number, number];
}

/**
 * Line chart of one or more series (e.g. training/validation loss per epoch).
 *
 * @param series `{ train: [...], val: [...] }` or an array of {@link Series}.
 *
 * @example
 * ```ts
 * import { lineChart } from "./charts.ts";
 * const fig = await lineChart({ train: [1.2, 0.8, 0.6], val: [1.3, 0.9, 0.8] }, {
 *   xLabel: "epoch",
 *   yLabel: "loss",
 * });
 * console.log(fig.width, fig.height); // 640 340: an SVG figure, shown inline in Jupyter
 * if (!fig.svg?.includes("epoch")) throw new Error("no x label");
 * ```
 */
export async function lineChart(
  series: Record<string, ArrayLike<number>> | Series[],
  options: LineChartOptions = {},
): Promise<Figure> {
  const list: Series[] = Array.isArray(series)
    ? series
    : Object.entries(series).map(([name, y]) => ({ name, y }));
  if (list.length === 0) throw new Error("lib/viz: lineChart: expected at least one series");
  const rows: { series: string; x: number; y: number }[] = [];
  let most = 0;
  for (const s of list) {
    const ys = checkNumbers(s.y, `lineChart series "${s.name}"`);
    const xs = s.x ? checkNumbers(s.x, `lineChart series "${s.name}" x`) : ys.map((_, i) => i + 1);
    if (xs.length !== ys.length) {
      throw new Error(
        `lib/viz: lineChart: series "${s.name}" has ${xs.length} x but ${ys.length} y values`,
      );
    }
    if (options.logY && ys.some((v) => v <= 0)) {
      throw new Error(
        `lib/viz: lineChart: logY needs positive values; series "${s.name}" has some <= 0`,
      );
    }
    ys.forEach((y, i) => rows.push({ series: s.name, x: xs[i], y }));
    most = Math.max(most, ys.length);
  }
  if (options.yDomain) {
    checkDomain(options.yDomain, rows.map((r) => r.y).filter((y) => !Number.isNaN(y)), "lineChart");
  }
  const dots = options.dots ?? most <= 50;
  const xs = [...new Set(rows.map((r) => r.x))].sort((a, b) => a - b);
  const integerX = xs.every(Number.isInteger);
  const step = Math.max(1, Math.ceil(xs.length / 10));
  const integerTicks = xs.filter((_, i) => i % step === 0);
  const multi = list.length > 1;
  const rendered = await renderPlot((Plot) => ({
    title: options.title,
    width: options.width ?? 640,
    height: options.height ?? 320,
    // Integer x (epochs, steps): tick only at integers, not at 1.5.
    x: {
      label: options.xLabel ?? null,
      ...(integerX ? { tickFormat: "d", ticks: integerTicks } : {}),
    },
    y: {
      label: options.yLabel ?? null,
      grid: true,
      type: options.logY ? "log" : "linear",
      ...(options.yDomain ? { domain: options.yDomain } : {}),
    },
    color: multi ? { legend: true, domain: list.map((s) => s.name) } : undefined,
    marks: [
      Plot.lineY(rows, { x: "x", y: "y", stroke: multi ? "series" : undefined }),
      ...(dots
        ? [Plot.dot(rows, { x: "x", y: "y", fill: multi ? "series" : "currentColor", r: 2 })]
        : []),
    ],
  }));
  return await svgFigure(rendered, options);
}

/** Options for {@link heatmap}. */
export interface HeatmapOptions extends ChartLabels {
  /** Column labels (default 0..n-1). */
  xLabels?: string[];
  /** Row labels (default 0..m-1). */
  yLabels?: string[];
  /** Print each value in its cell (default: when the matrix is at most 20x20). */
  showValues?: boolean;
  /** d3-format-like format for printed values (default ".2~f"). */
  valueFormat?: string;
  /** Colour scheme name from Observable Plot (default "blues"). */
  scheme?: string;
  /** Draw a colour ramp legend (default true). */
  legend?: boolean;
}

/**
 * Heatmap of a matrix, rows top to bottom (e.g. a confusion matrix: rows = true class).
 *
 * @example
 * ```ts
 * import { heatmap } from "./charts.ts";
 * const fig = await heatmap([[50, 2], [5, 43]], {
 *   xLabels: ["cat", "dog"],
 *   yLabels: ["cat", "dog"],
 *   xLabel: "predicted",
 *   yLabel: "true",
 *   title: "Confusion matrix",
 * });
 * if (!fig.svg?.includes("Confusion matrix")) throw new Error("no title");
 * ```
 */
export async function heatmap(matrix: number[][], options: HeatmapOptions = {}): Promise<Figure> {
  const rowsN = matrix.length;
  const colsN = rowsN > 0 ? matrix[0].length : 0;
  if (rowsN === 0 || colsN === 0 || matrix.some((r) => r.length !== colsN)) {
    throw new Error("lib/viz: heatmap: expected a non-empty rectangular number[][]");
  }
  const xLabels = options.xLabels ?? Array.from({ length: colsN }, (_, i) => String(i));
  const yLabels = options.yLabels ?? Array.from({ length: rowsN }, (_, i) => String(i));
  if (xLabels.length !== colsN || yLabels.length !== rowsN) {
    throw new Error(
      `lib/viz: heatmap: matrix is ${rowsN}x${colsN} but got ${yLabels.length} yLabels and ${xLabels.length} xLabels`,
    );
  }
  const cells = matrix.flatMap((row, i) =>
    checkNumbers(row, `heatmap row ${i}`).map((v, j) => ({ x: xLabels[j], y: yLabels[i], v }))
  );
  const values = cells.map((c) => c.v);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const showValues = options.showValues ?? (rowsN <= 20 && colsN <= 20);
  const format = options.valueFormat ?? ".2~f";
  const scheme = (options.scheme ?? "blues") as PlotModule.ColorScheme;
  const longest = Math.max(...yLabels.map((l) => textWidth(l, 10)));
  const size = Math.max(18, Math.min(48, Math.floor(560 / Math.max(rowsN, colsN))));
  const width = options.width ?? Math.ceil(Math.min(320, longest + 24) + colsN * size + 24);
  const height = options.height ?? (rowsN * size + 80);
  const Plot = await loadPlot();
  const colour = Plot.scale({
    color: { type: "linear", scheme, domain: [lo, hi === lo ? lo + 1 : hi] },
  });
  const rendered = await renderPlot({
    title: options.title,
    width,
    height,
    marginLeft: Math.min(320, longest + 24),
    marginBottom: 50,
    x: {
      domain: xLabels,
      label: options.xLabel ?? null,
      tickRotate: xLabels.some((l) => l.length > 3) ? -30 : 0,
    },
    y: { domain: yLabels, label: options.yLabel ?? null },
    color: { type: "linear", scheme, domain: [lo, hi === lo ? lo + 1 : hi] },
    marks: [
      Plot.cell(cells, { x: "x", y: "y", fill: "v", inset: 0.5 }),
      ...(showValues
        ? [Plot.text(cells, {
          x: "x",
          y: "y",
          text: (d: { v: number }) => formatNumber(d.v, format),
          // Light text on dark cells.
          fill: (d: { v: number }) => ((d.v - lo) / (hi - lo || 1) > 0.6 ? "white" : "black"),
        })]
        : []),
    ],
  });
  const withLegend = options.legend === false
    ? rendered
    : addRampLegend(rendered, lo, hi, (t) => colour.apply(lo + t * (hi - lo)) as string, format);
  return await svgFigure(withLegend, options);
}

/**
 * Appends a horizontal colour ramp under a chart (Plot's own ramp legend needs
 * a <canvas>, which a server-side DOM lacks).
 */
export function addRampLegend(
  chart: RenderedSvg,
  lo: number,
  hi: number,
  colourAt: (t: number) => string,
  format = ".2~f",
): RenderedSvg {
  const stops = Array.from(
    { length: 11 },
    (_, i) => `<stop offset="${i * 10}%" stop-color="${escapeXml(colourAt(i / 10))}"/>`,
  ).join("");
  const rampWidth = Math.min(240, chart.width - 20);
  const height = chart.height + 34;
  const body = chart.svg.replace(/^<svg\b/, `<svg x="0" y="0"`);
  const legend = `<defs><linearGradient id="lib-viz-ramp">${stops}</linearGradient></defs>` +
    `<rect x="10" y="${
      chart.height + 4
    }" width="${rampWidth}" height="10" fill="url(#lib-viz-ramp)"/>` +
    `<text x="10" y="${chart.height + 28}" font-size="10">${
      escapeXml(formatNumber(lo, format))
    }</text>` +
    `<text x="${10 + rampWidth}" y="${chart.height + 28}" font-size="10" text-anchor="end">${
      escapeXml(formatNumber(hi, format))
    }</text>`;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${chart.width}" height="${height}" ` +
    `viewBox="0 0 ${chart.width} ${height}" font-family="system-ui, sans-serif" fill="currentColor">` +
    `${body}${legend}</svg>`;
  return { svg, width: chart.width, height };
}

/** One predicted class: what `classify()` returns per class in `top`. */
export interface TopKEntry {
  /** Class name. */
  label: string;
  /** Softmax probability, 0..1. */
  probability: number;
}

/** One chart of {@link topKPanels}: a caption and its top-k. */
export interface TopKPanel {
  /** Caption above the chart (e.g. the model's name). */
  title: string;
  /** The classes, most likely first. */
  top: readonly TopKEntry[];
}

/** Options for {@link topKChart} and {@link topKPanels}. */
export interface TopKOptions extends ChartOutputOptions {
  /** Heading of the figure. */
  title?: string;
  /** Width of each chart in px (default 400). */
  panelWidth?: number;
  /** d3-format-like format of the printed probabilities (default ".3f"). */
  valueFormat?: string;
  /** A picture shown at the left (e.g. the photo classified), fitted into {@link imageSize}. */
  image?: ImageInput;
  /** Largest side of that picture in px (default 180). */
  imageSize?: number;
}

const TOPK_LABEL_CHARS = 30;

/** Width of a label in a sans-serif font (generous: a clipped class name is worse than space). */
function labelWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.64;
}

function shortLabel(label: string): string {
  return label.length <= TOPK_LABEL_CHARS ? label : `${label.slice(0, TOPK_LABEL_CHARS - 1)}…`;
}

function checkTop(top: readonly TopKEntry[], what: string): void {
  if (!Array.isArray(top) || top.length === 0) {
    throw new Error(`lib/viz: ${what}: expected a non-empty top-k list`);
  }
  for (const t of top) {
    if (!(t.probability >= 0 && t.probability <= 1 + 1e-6)) {
      throw new Error(
        `lib/viz: ${what}: probability of "${t.label}" is ${t.probability}, expected 0..1`,
      );
    }
  }
}

/** One top-k bar chart on the fixed 0..1 probability axis, as standalone SVG. */
async function renderTopK(
  top: readonly TopKEntry[],
  width: number,
  marginLeft: number,
  format: (p: number) => string,
): Promise<RenderedSvg> {
  const data = top.map((t, i) => ({ key: `${i}`, label: shortLabel(t.label), p: t.probability }));
  return await renderPlot((Plot) => ({
    width,
    height: 50 + 24 * data.length,
    marginLeft,
    marginRight: 44,
    // Keyed by rank, so two classes with one name still get a bar each.
    y: {
      domain: data.map((d) => d.key),
      tickFormat: (k: string) => data[Number(k)].label,
      label: null,
    },
    x: {
      domain: [0, 1],
      ticks: [0, 0.25, 0.5, 0.75, 1],
      tickFormat: (v: number) => String(v),
      grid: true,
      label: "probability",
    },
    marks: [
      Plot.barX(data, { y: "key", x: "p", fill: "#4269d0" }),
      Plot.ruleX([0]),
      Plot.text(data, {
        y: "key",
        x: "p",
        text: (d: { p: number }) => format(d.p),
        dx: 4,
        textAnchor: "start",
      }),
    ],
  }));
}

/** A probability as the top-k charts print it by default: 0.123, or 4.6e-5 below 0.001. */
export function formatProbability(p: number): string {
  if (p === 0) return "0";
  return p < 0.001 ? p.toExponential(1) : p.toFixed(3);
}

function topKText(
  panels: readonly TopKPanel[],
  format: (p: number) => string,
  title?: string,
): string {
  const lines = title ? [title] : [];
  for (const p of panels) {
    lines.push(`${p.title}: ${p.top.map((t) => `${t.label} ${format(t.probability)}`).join(", ")}`);
  }
  return lines.join("\n");
}

/**
 * Top-k classes of several models (or several inputs) side by side, each as a bar chart on
 * the same fixed 0..1 probability axis, so that a 0.005 looks like 0.005 and not like
 * certainty; optionally with the photo at the left. One figure (SVG by default) whose
 * text/plain form lists the classes and probabilities.
 *
 * @example
 * ```ts
 * import { topKPanels } from "./charts.ts";
 * const fig = await topKPanels([
 *   { title: "V1", top: [{ label: "tabby", probability: 0.61 }, { label: "lynx", probability: 0.2 }] },
 *   { title: "V2", top: [{ label: "tabby", probability: 0.83 }, { label: "lynx", probability: 0.1 }] },
 * ], { title: "chelsea.png" });
 * console.log(fig.bundle["text/plain"]); // chelsea.png, then "V1: tabby 0.610, lynx 0.200", ...
 * ```
 */
export async function topKPanels(
  panels: readonly TopKPanel[],
  options: TopKOptions = {},
): Promise<Figure> {
  if (!Array.isArray(panels) || panels.length === 0) {
    throw new Error("lib/viz: topKPanels: expected a non-empty array of panels");
  }
  panels.forEach((p, i) => checkTop(p.top, `topKPanels panel ${i} (${p.title})`));
  const valueFormat = options.valueFormat;
  const format = valueFormat === undefined
    ? formatProbability
    : (p: number) => formatNumber(p, valueFormat);
  const width = options.panelWidth ?? 400;
  // One label margin for all panels, so that their axes line up.
  const longest = Math.max(
    ...panels.flatMap((p) => p.top.map((t: TopKEntry) => labelWidth(shortLabel(t.label), 10))),
  );
  const margin = Math.min(200, Math.max(40, Math.ceil(longest + 16)));
  const charts = await Promise.all(panels.map((p) => renderTopK(p.top, width, margin, format)));
  const parts: RowPart[] = charts.map((c, i) => ({ ...c, caption: panels[i].title }));
  if (options.image !== undefined) {
    const rgb = await toRgb8(options.image, {}, "topKPanels image");
    const size = options.imageSize ?? 180;
    const k = Math.min(1, size / Math.max(rgb.width, rgb.height));
    const w = Math.max(1, Math.round(rgb.width * k));
    const h = Math.max(1, Math.round(rgb.height * k));
    const thumb = resizeArea(rgb, w, h);
    parts.unshift({ ...pngAsSvg(encodePng(thumb), w, h), caption: "" });
  }
  const row = composeRow(parts, options.title);
  return await svgFigure(row, options, { "text/plain": topKText(panels, format, options.title) });
}

/**
 * Top-k classes of one prediction as a bar chart on the fixed 0..1 probability axis (see
 * {@link topKPanels}).
 *
 * @example
 * ```ts
 * import { topKChart } from "./charts.ts";
 * const fig = await topKChart([{ label: "tabby", probability: 0.005 }], { title: "a short bar" });
 * if (!fig.svg?.includes(">1<")) throw new Error("the axis ends at 1");
 * ```
 */
export async function topKChart(
  top: readonly TopKEntry[],
  options: TopKOptions = {},
): Promise<Figure> {
  return await topKPanels([{ title: "", top }], options);
}

/** A part of {@link composeRow}: a standalone SVG with an optional caption above it. */
interface RowPart extends RenderedSvg {
  caption?: string;
}

/** Places SVGs left to right, top-aligned under their captions, with a title above all. */
function composeRow(parts: readonly RowPart[], title?: string): RenderedSvg {
  const gap = 16;
  const titleHeight = title ? 26 : 4;
  const captionHeight = parts.some((p) => p.caption) ? 20 : 0;
  const body: string[] = [];
  let x = 0;
  let height = 0;
  for (const part of parts) {
    const y = titleHeight + captionHeight;
    if (part.caption) {
      body.push(
        `<text x="${x + 4}" y="${titleHeight + 14}" font-size="13">${
          escapeXml(part.caption)
        }</text>`,
      );
    }
    body.push(part.svg.replace(/^<svg\b/, `<svg x="${x}" y="${y}"`));
    x += part.width + gap;
    height = Math.max(height, y + part.height);
  }
  let width = x - gap;
  if (title) {
    body.unshift(
      `<text x="4" y="18" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    );
    width = Math.max(width, textWidth(title, 15) + 8);
  }
  width = Math.ceil(width);
  height = Math.ceil(height + 4);
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" fill="currentColor">` +
    `${body.join("")}</svg>`;
  return { svg, width, height };
}
