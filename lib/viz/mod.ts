/**
 * Display helpers for notebooks on Deno's Jupyter kernel that also work in
 * plain `deno run`/`deno test`: in Jupyter they display MIME outputs; elsewhere
 * they return the rendered bytes/text ({@link Figure}) and write a file when
 * given `path`.
 *
 * @example
 * ```ts
 * import { barChart, showImage } from "./mod.ts";
 * import { readImage } from "../data/decode.ts";
 * const photo = await readImage(new URL("../../data/images/coffee.jpg", import.meta.url).pathname);
 * await showImage(photo); // PNG output in Jupyter
 * await barChart(["tabby", "tiger cat"], [0.7, 0.2], { title: "Top-2" });
 * const dir = await Deno.makeTempDir();
 * const fig = await barChart(["a"], [1], { path: `${dir}/a.svg` }); // fig.svg, also written
 * await Deno.remove(dir, { recursive: true });
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
  type RenderedGrid,
  renderImageGrid,
  resizeArea,
  resizeNearest,
  showImage,
  type ShowImageOptions,
} from "./image.ts";
export {
  type ColorbarSpec,
  colorize,
  type Colormap,
  colormap,
  type ColormapName,
  type Field,
  frameWithColorbar,
  type HeatInput,
  jet,
  overlayHeatmap,
  type OverlayOptions,
  resizeBilinear,
  toField,
  turbo,
  viridis,
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
  formatProbability,
  heatmap,
  type HeatmapOptions,
  lineChart,
  type LineChartOptions,
  type Series,
  topKChart,
  type TopKEntry,
  type TopKOptions,
  type TopKPanel,
  topKPanels,
} from "./charts.ts";
export { markdownTable, type MarkdownTableOptions, type TableCell } from "./table.ts";
export { plotly, type PlotlyFigure, type PlotlyTrace } from "./plotly.ts";
export { progress, type ProgressDisplay, type ProgressDisplayOptions } from "./progress.ts";
export type { PixelData, RgbImage } from "../util/image.ts";
export {
  FEATURE_CELL_SIZE,
  type FeatureGridOptions,
  featureMapGrid,
  meanActivation,
} from "./features.ts";
