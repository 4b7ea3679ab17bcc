/**
 * Display helpers for notebooks on Deno's Jupyter kernel that also work in
 * plain `deno run`/`deno test`: in Jupyter they display MIME outputs; elsewhere
 * they return the rendered bytes/text ({@link Figure}) and write a file when
 * given `path`.
 *
 * @example
 * ```ts
 * import { barChart, imageGrid, progress, showImage } from "./lib/viz/mod.ts";
 * await showImage(photo);                       // PNG output
 * await barChart(["tabby", "tiger cat"], [0.7, 0.2], { title: "Top-2" });
 * const fig = await barChart(["a"], [1], { path: "out/a.svg" }); // fig.svg
 * ```
 *
 * @module
 */

export { Figure, type OutputOptions } from "./figure.ts";
export { writeFileAtomic } from "../util/fs.ts";
export { displayBundle, inJupyter, type MimeBundle, toBase64, updateBundle } from "./jupyter.ts";
export {
  decodePngRgb8,
  encodePng,
  type ImageInput,
  isPng,
  type TensorLike,
  toRgb8,
  type ToRgbOptions,
} from "./raster.ts";
export {
  imageGrid,
  type ImageGridOptions,
  resizeNearest,
  showImage,
  type ShowImageOptions,
} from "./image.ts";
export {
  type Field,
  type HeatInput,
  jet,
  overlayHeatmap,
  type OverlayOptions,
  resizeBilinear,
  toField,
} from "./colormap.ts";
export { type RasterOptions, svgToPng, withXmlns } from "./svg.ts";
export {
  type ChartOutputOptions,
  loadPlot,
  type Plot,
  plotFigure,
  type PlotOptions,
  type PlotSpec,
  type RenderedSvg,
  renderPlot,
} from "./plot.ts";
export {
  barChart,
  type BarChartOptions,
  type ChartLabels,
  heatmap,
  type HeatmapOptions,
  lineChart,
  type LineChartOptions,
  type Series,
} from "./charts.ts";
export { plotly, type PlotlyFigure, type PlotlyTrace } from "./plotly.ts";
export { progress, type ProgressDisplay, type ProgressDisplayOptions } from "./progress.ts";
export type { PixelData, RgbImage } from "../util/image.ts";
export { type FeatureGridOptions, featureMapGrid, meanActivation } from "./features.ts";
