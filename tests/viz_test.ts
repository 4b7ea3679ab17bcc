/**
 * lib/viz outside Jupyter: figures come back as SVG text / PNG bytes, files are
 * written on request, progress goes to stderr. Expected pixel values are
 * computed by hand from the inputs (noted next to each check); PNGs are read
 * back with fast-png's decoder plus a hand-parsed IHDR.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { decode } from "fast-png";
import {
  barChart,
  colorize,
  colormap,
  encodePng,
  heatmap,
  imageGrid,
  inJupyter,
  jet,
  lineChart,
  markdownTable,
  overlayHeatmap,
  plotFigure,
  plotly,
  showImage,
  svgToPng,
  topKChart,
  topKPanels,
  toRgb8,
  turbo,
  viridis,
  withXmlns,
} from "../lib/viz/mod.ts";
import { colorbarTicks } from "../lib/viz/colormap.ts";
import { jpegSize } from "../lib/viz/image.ts";
import type { RgbImage } from "../lib/util/image.ts";

const XMLNS = 'xmlns="http://www.w3.org/2000/svg"';

/** Width, height, bit depth and colour type from the PNG's IHDR chunk (bytes 16..25). */
function ihdr(png: Uint8Array) {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(new TextDecoder().decode(png.subarray(12, 16)), "IHDR");
  return {
    width: view.getUint32(16),
    height: view.getUint32(20),
    depth: png[24],
    colorType: png[25],
  };
}

/** RGB of pixel (x, y) of a decoded 8-bit PNG. */
function pixel(png: Uint8Array, x: number, y: number): number[] {
  const img = decode(png);
  const c = img.channels;
  const i = (y * img.width + x) * c;
  return [...img.data.subarray(i, i + 3)];
}

/** Number of <rect> elements inside the first <g aria-label="..."> group of that mark. */
function markCount(svg: string, mark: string, element: string): number {
  const group = svg.match(new RegExp(`<g[^>]*aria-label="${mark}"[^>]*>([\\s\\S]*?)</g>`));
  assert.ok(group, `SVG has a ${mark} mark`);
  return group[1].match(new RegExp(`<${element}\\b`, "g"))?.length ?? 0;
}

Deno.test("outside Jupyter inJupyter() is false", () => {
  assert.equal(inJupyter(), false);
});

Deno.test("withXmlns adds the SVG namespace once", () => {
  assert.equal(withXmlns('<svg width="1"></svg>'), `<svg ${XMLNS} width="1"></svg>`);
  assert.equal(withXmlns(`<svg ${XMLNS}></svg>`), `<svg ${XMLNS}></svg>`);
  assert.throws(() => withXmlns("<div></div>"), /expected SVG markup/);
});

Deno.test("barChart returns standalone SVG with one bar per value and writes files", async () => {
  const labels = ["tabby", "tiger cat", "Egyptian cat", "lynx", "remote"];
  const fig = await barChart(labels, [0.6, 0.2, 0.1, 0.05, 0.05], { title: "Top-5" });
  assert.ok(fig.svg!.startsWith(`<svg ${XMLNS}`));
  assert.equal(markCount(fig.svg!, "bar", "rect"), 5);
  for (const label of labels) assert.ok(fig.svg!.includes(`>${label}<`), `label ${label}`);
  assert.ok(fig.svg!.includes(">Top-5<"), "title drawn as SVG text");
  assert.equal(fig.bundle["image/svg+xml"], fig.svg);
  assert.equal(fig.png, undefined, "SVG only unless asked for PNG");
  // Outside Jupyter the figure was not shown, so as a cell value it would render its bundle.
  const hook = (fig as unknown as Record<symbol, () => unknown>)[Symbol.for("Jupyter.display")];
  assert.deepEqual(hook.call(fig), fig.bundle);

  const dir = await Deno.makeTempDir({ prefix: "viz-" });
  try {
    const svgPath = join(dir, "bars.svg");
    const pngPath = join(dir, "bars.png");
    const a = await barChart(["a", "b"], [1, 2], { path: svgPath, orientation: "vertical" });
    assert.equal(await Deno.readTextFile(svgPath), a.svg);
    await barChart(["a", "b"], [1, 2], { path: pngPath, orientation: "vertical" });
    const head = ihdr(await Deno.readFile(pngPath));
    // PNG is rendered at scale 2 of the SVG's pixel size.
    assert.deepEqual([head.width, head.height], [2 * a.width, 2 * a.height]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "bars.png",
      "bars.svg",
    ]);
    await assert.rejects(barChart(["a"], [1], { path: join(dir, "x.gif") }), /\.png or \.svg/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await assert.rejects(barChart(["a", "b"], [1]), /2 labels but 1 values/);
  await assert.rejects(barChart(["a"], [NaN]), /finite number/);
});

Deno.test("barChart keeps the caller's order and format png/both rasterise", async () => {
  const fig = await barChart(["zebra", "apple"], [1, 2], { format: "both" });
  assert.ok(fig.svg!.indexOf(">zebra<") < fig.svg!.indexOf(">apple<"), "not sorted alphabetically");
  assert.ok(fig.bundle["image/svg+xml"] && fig.bundle["image/png"]);
  const head = ihdr(fig.png!);
  assert.deepEqual([head.width, head.height], [2 * fig.width, 2 * fig.height]);
  const pngOnly = await barChart(["a"], [1], { format: "png", scale: 1 });
  assert.equal(pngOnly.bundle["image/svg+xml"], undefined);
  assert.deepEqual([ihdr(pngOnly.png!).width, ihdr(pngOnly.png!).height], [
    pngOnly.width,
    pngOnly.height,
  ]);
});

Deno.test("lineChart draws one line per series with a legend", async () => {
  const fig = await lineChart(
    { train: [1.2, 0.8, 0.6], val: [1.3, 0.9, 0.8] },
    { xLabel: "epoch", yLabel: "loss" },
  );
  assert.ok(fig.svg!.startsWith(`<svg ${XMLNS}`));
  assert.equal(markCount(fig.svg!, "line", "path"), 2);
  assert.equal(markCount(fig.svg!, "dot", "circle"), 6);
  assert.ok(fig.svg!.includes(">train<") && fig.svg!.includes(">val<"), "legend names");
  await assert.rejects(lineChart({ a: [1, -1] }, { logY: true }), /logY needs positive/);
  await assert.rejects(lineChart([{ name: "a", x: [1, 2], y: [1] }]), /2 x but 1 y/);
});

Deno.test("fixed axes: barChart domain, lineChart yDomain", async () => {
  // With domain [0, 1] the axis ends at 1 whatever the values: 0.005 stays a sliver.
  const fig = await barChart(["a", "b"], [0.005, 0.004], { domain: [0, 1] });
  assert.ok(fig.svg!.includes(">1.0<"), "a tick at 1.0");
  const auto = await barChart(["a", "b"], [0.005, 0.004]);
  assert.ok(!auto.svg!.includes(">1.0<"), "auto-scaled: the axis ends near 0.005");
  await assert.rejects(barChart(["a"], [1.5], { domain: [0, 1] }), /outside the domain \[0, 1\]/);
  await assert.rejects(barChart(["a"], [0.5], { domain: [1, 0] }), /lo < hi/);
  const line = await lineChart({ accuracy: [0.2, 0.3] }, { yDomain: [0, 1] });
  assert.ok(line.svg!.includes(">1.0<") && line.svg!.includes(">0.0<"), "y axis 0..1");
  await assert.rejects(lineChart({ a: [2] }, { yDomain: [0, 1] }), /outside the domain/);
});

Deno.test("topKPanels: charts side by side on one 0..1 probability axis", async () => {
  const photo = { width: 40, height: 20, channels: 3 as const, data: new Uint8Array(2400) };
  const v1 = [{ label: "tabby", probability: 0.005 }, { label: "lynx", probability: 0.004 }];
  const v2 = [{ label: "tabby", probability: 0.9 }, { label: "lynx", probability: 0.05 }];
  const fig = await topKPanels([{ title: "V1 model", top: v1 }, { title: "V2 model", top: v2 }], {
    title: "cat.png",
    image: photo,
  });
  const svg = fig.svg!;
  assert.ok(svg.startsWith(`<svg ${XMLNS}`));
  for (const text of ["cat.png", "V1 model", "V2 model", "0.005", "0.900", "probability"]) {
    assert.ok(svg.includes(`>${text}`), `text ${text}`);
  }
  // Both charts end their axis at 1 (ticks 0, 0.25, 0.5, 0.75, 1), the photo is embedded.
  assert.equal(svg.match(/>0\.75</g)?.length, 2);
  assert.equal(svg.match(/>1</g)?.length, 2);
  assert.equal(svg.match(/data:image\/png;base64,/g)?.length, 1);
  assert.equal(
    fig.bundle["text/plain"],
    "cat.png\nV1 model: tabby 0.005, lynx 0.004\nV2 model: tabby 0.900, lynx 0.050",
  );
  // Bars: 2 per chart, as long as their probabilities on the same axis (0.9 / 0.005 = 180).
  const widths = [...svg.matchAll(/<g[^>]*aria-label="bar"[^>]*>([\s\S]*?)<\/g>/g)].flatMap((g) =>
    [...g[1].matchAll(/<rect\b[^>]*\bwidth="([0-9.]+)"/g)].map((m) => Number(m[1]))
  );
  assert.equal(widths.length, 4);
  assert.ok(Math.abs(widths[2] / widths[0] / 180 - 1) < 0.05, `bar widths ${widths}`);
  const single = await topKChart(v2, { title: "one" });
  assert.equal(single.bundle["text/plain"], "one\n: tabby 0.900, lynx 0.050");
  await assert.rejects(
    topKChart([{ label: "x", probability: 1.5 }]),
    /probability of "x" is 1.5, expected 0..1/,
  );
  await assert.rejects(topKPanels([]), /non-empty array of panels/);
});

Deno.test("markdownTable writes a Markdown table with numeric columns right-aligned", async () => {
  const fig = await markdownTable([
    { name: "convnextv2_tiny_1k_224", "top-1": 83.0, note: null },
    { name: "a|b", "top-1": null, note: "x" },
  ], { note: "Official numbers." });
  assert.equal(
    fig.bundle["text/markdown"],
    "| name | top-1 | note |\n| --- | ---: | --- |\n| convnextv2_tiny_1k_224 | 83 | - |\n" +
      "| a\\|b | - | x |\n\nOfficial numbers.\n",
  );
  await assert.rejects(markdownTable([]), /non-empty array of rows/);
});

Deno.test("heatmap draws one cell per entry with values and a colour ramp", async () => {
  const fig = await heatmap([[5, 1, 0], [2, 7, 1], [0, 0, 9]], {
    xLabels: ["a", "b", "c"],
    yLabels: ["a", "b", "c"],
    title: "Confusion",
  });
  assert.ok(fig.svg!.startsWith(`<svg ${XMLNS}`));
  assert.equal(markCount(fig.svg!, "cell", "rect"), 9);
  assert.equal(markCount(fig.svg!, "text", "text"), 9);
  assert.ok(fig.svg!.includes("linearGradient"), "ramp legend");
  await assert.rejects(
    heatmap([[1, 2]], { xLabels: ["a"] }),
    /1x2 but got 1 yLabels and 1 xLabels/,
  );
  await assert.rejects(heatmap([[1, 2], [3]]), /rectangular/);
});

Deno.test("plotFigure accepts a spec function and adds xmlns", async () => {
  const fig = await plotFigure((Plot) => ({ marks: [Plot.dot([[1, 2], [2, 3], [3, 1]])] }));
  assert.ok(fig.svg!.startsWith(`<svg ${XMLNS}`));
  assert.equal(markCount(fig.svg!, "dot", "circle"), 3);
});

Deno.test("plotly output carries the Plotly JSON and a static SVG fallback", async () => {
  const figure = {
    data: [{ type: "bar", x: ["cat", "dog", "fox"], y: new Float32Array([0.5, 0.25, 0.25]) }],
    layout: { title: { text: "Top-3" } },
  };
  const fig = await plotly(figure);
  assert.deepEqual(fig.bundle["application/vnd.plotly.v1+json"], {
    data: [{ type: "bar", x: ["cat", "dog", "fox"], y: [0.5, 0.25, 0.25] }],
    layout: { title: { text: "Top-3" } },
  });
  const svg = fig.bundle["image/svg+xml"] as string;
  assert.ok(svg.startsWith(`<svg ${XMLNS}`));
  assert.equal(markCount(svg, "bar", "rect"), 3);
  const lines = await plotly({
    data: [{ y: [1, 3, 2], name: "a" }, { y: [2, 1], name: "b", mode: "markers" }],
  });
  assert.equal(markCount(lines.svg!, "line", "path"), 1);
  assert.equal(markCount(lines.svg!, "dot", "circle"), 3 + 2);
  // Two bar traces are grouped per category (one facet each), as Plotly does: 2 x 2 bars.
  const grouped = await plotly({
    data: [
      { type: "bar", x: ["a", "b"], y: [1, 2], name: "x" },
      { type: "bar", x: ["a", "b"], y: [2, 1], name: "y" },
    ],
  });
  const barGroup = grouped.svg!.slice(grouped.svg!.indexOf('aria-label="bar"'));
  assert.equal(barGroup.match(/<rect\b/g)?.length, 4);
  assert.ok(grouped.svg!.includes(">x<") && grouped.svg!.includes(">y<"), "trace legend");
  const heat = await plotly({ data: [{ type: "heatmap", z: [[1, 2], [3, 4]] }] });
  assert.equal(markCount(heat.svg!, "cell", "rect"), 4);
  const other = await plotly({ data: [{ type: "sankey" }] });
  assert.deepEqual(Object.keys(other.bundle).sort(), [
    "application/vnd.plotly.v1+json",
    "text/plain",
  ]);
});

Deno.test("showImage encodes pixels, tensors and scales to PNG", async () => {
  // 2x1 RGB: red, blue.
  const raw = {
    width: 2,
    height: 1,
    channels: 3 as const,
    data: new Uint8Array([255, 0, 0, 0, 0, 255]),
  };
  const fig = await showImage(raw);
  assert.deepEqual(ihdr(fig.png!), { width: 2, height: 1, depth: 8, colorType: 2 });
  assert.deepEqual(pixel(fig.png!, 0, 0), [255, 0, 0]);
  assert.deepEqual(pixel(fig.png!, 1, 0), [0, 0, 255]);
  // Nearest-neighbour zoom x3: 6x3, left half red.
  const big = await showImage(raw, { scale: 3 });
  assert.deepEqual([ihdr(big.png!).width, ihdr(big.png!).height], [6, 3]);
  assert.deepEqual(pixel(big.png!, 2, 2), [255, 0, 0]);
  assert.deepEqual(pixel(big.png!, 3, 0), [0, 0, 255]);
  // A float tensor in [0, 1] maps 1 -> 255, 0.5 -> 128 (127.5 rounded), grey repeated to RGB.
  const tensor = {
    shape: [1, 2],
    dtype: "float32",
    data: () => Promise.resolve(new Float32Array([1, 0.5])),
  };
  const t = await showImage(tensor);
  assert.deepEqual(pixel(t.png!, 0, 0), [255, 255, 255]);
  assert.deepEqual(pixel(t.png!, 1, 0), [128, 128, 128]);
  // Floats outside [0, 1] that are not whole 0..255 pixels (a feature map) are min..max scaled:
  // -1 -> 0, 0.5 -> 255 * 1.5 / 3 = 127.5 -> 128, 2 -> 255; whole numbers 0..255 stay as they are.
  const fmap = {
    shape: [1, 3],
    dtype: "float32",
    data: () => Promise.resolve(new Float32Array([-1, 0.5, 2])),
  };
  const f = await showImage(fmap);
  assert.deepEqual([0, 1, 2].map((x) => pixel(f.png!, x, 0)[0]), [0, 128, 255]);
  const whole = {
    shape: [1, 2],
    dtype: "float32",
    data: () => Promise.resolve(new Float32Array([3, 200])),
  };
  const w = await showImage(whole);
  assert.deepEqual([0, 1].map((x) => pixel(w.png!, x, 0)[0]), [3, 200]);
  // An int32 tensor holds 0..255 pixels as they are (a 0/1 mask stays dark).
  const ints = {
    shape: [1, 2, 1],
    dtype: "int32",
    data: () => Promise.resolve(new Int32Array([1, 200])),
  };
  const i = await showImage(ints);
  assert.deepEqual(pixel(i.png!, 0, 0), [1, 1, 1]);
  assert.deepEqual(pixel(i.png!, 1, 0), [200, 200, 200]);
  // normalize: min..max -> 0..255.
  const n = await showImage(ints, { normalize: true });
  assert.deepEqual(pixel(n.png!, 0, 0), [0, 0, 0]);
  assert.deepEqual(pixel(n.png!, 1, 0), [255, 255, 255]);
  // PNG bytes pass through untouched.
  const again = await showImage(fig.png!);
  assert.equal(again.png, fig.png);
  assert.deepEqual([again.width, again.height], [2, 1]);
  await assert.rejects(
    () => toRgb8({ width: 2, height: 2, channels: 3, data: new Uint8Array(5) }),
    /data has 5 values, expected 2x2x3 = 12/,
  );
  await assert.rejects(
    () =>
      toRgb8({
        shape: [2, 2, 2],
        dtype: "float32",
        data: () => Promise.resolve(new Float32Array(8)),
      }),
    /\[2, 2, 2\]/,
  );
  await assert.rejects(showImage(new Uint8Array([0xff, 0xd8, 0xff, 0])), /frame header/);
});

Deno.test("jpegSize reads the SOF0 frame header", () => {
  // SOI, APP0 (length 4, 2 payload bytes), SOF0: length 17, precision 8, height 0x0120, width 0x0340.
  const bytes = new Uint8Array([
    0xff,
    0xd8,
    0xff,
    0xe0,
    0x00,
    0x04,
    0x00,
    0x00,
    0xff,
    0xc0,
    0x00,
    0x11,
    0x08,
    0x01,
    0x20,
    0x03,
    0x40,
    0x03,
  ]);
  assert.deepEqual(jpegSize(bytes), { width: 0x340, height: 0x120 });
});

Deno.test("imageGrid lays images out in cells, with labels via SVG", async () => {
  const solid = (r: number, g: number, b: number) => ({
    width: 4,
    height: 4,
    channels: 3 as const,
    data: new Uint8Array(16 * 3).map((_, i) => [r, g, b][i % 3]),
  });
  const images = [
    solid(255, 0, 0),
    solid(0, 255, 0),
    solid(0, 0, 255),
    solid(9, 9, 9),
    solid(200, 100, 50),
  ];
  const fig = await imageGrid(images, { cols: 3, cellSize: 8, gap: 2 });
  // 3 columns x 8 px + 2 gaps x 2 px = 28; 2 rows x 8 + 1 gap x 2 = 18.
  assert.deepEqual([ihdr(fig.png!).width, ihdr(fig.png!).height], [28, 18]);
  assert.deepEqual(pixel(fig.png!, 0, 0), [255, 0, 0]);
  assert.deepEqual(pixel(fig.png!, 10 + 7, 7), [0, 255, 0]);
  assert.deepEqual(pixel(fig.png!, 8, 0), [255, 255, 255], "gap is background");
  assert.deepEqual(pixel(fig.png!, 10, 10 + 7), [200, 100, 50]);
  assert.deepEqual(pixel(fig.png!, 27, 17), [255, 255, 255], "empty last cell");
  const labelled = await imageGrid(images, {
    cols: 3,
    cellSize: 32,
    labels: ["a", "b", "c", "d", "e"],
  });
  assert.ok(labelled.svg!.startsWith(`<svg ${XMLNS}`));
  assert.equal(labelled.svg!.match(/<text\b/g)?.length, 5);
  assert.equal(ihdr(labelled.png!).width, 3 * 32 + 2 * 2);
  assert.ok(ihdr(labelled.png!).height > 2 * 32 + 2, "room for captions");
  await assert.rejects(imageGrid(images, { labels: ["a"] }), /1 labels for 5 images/);
  await assert.rejects(imageGrid([]), /non-empty array/);
});

Deno.test("colour maps: viridis from its published table, turbo, jet", () => {
  // Viridis's first, middle and last published colours: #440154, #21918c/#21908d, #fde725.
  assert.deepEqual(viridis(0), [68, 1, 84]);
  assert.deepEqual(viridis(1), [253, 231, 37]);
  // t = 0.5 lies halfway between entries 127 (#21908d) and 128 (#21918c): (33, 144.5, 140.5).
  assert.deepEqual(viridis(0.5), [33, 145, 141]);
  assert.deepEqual(viridis(-1), viridis(0), "clamped");
  assert.deepEqual(viridis(NaN), viridis(0));
  // Viridis gets brighter all along (luma 0.299 R + 0.587 G + 0.114 B), jet does not.
  const luma = ([r, g, b]: number[]) => 0.299 * r + 0.587 * g + 0.114 * b;
  const steps = Array.from({ length: 101 }, (_, i) => i / 100);
  assert.ok(steps.slice(1).every((t, i) => luma(viridis(t)) > luma(viridis(steps[i]))));
  assert.ok(steps.slice(1).some((t, i) => luma(jet(t)) < luma(jet(steps[i]))));
  // turbo's polynomial at the ends: (34.61, 23.31, 27.2) and (144.06, 12.34, -6.19 -> 0).
  assert.deepEqual(turbo(0), [35, 23, 27]);
  assert.deepEqual(turbo(1), [144, 12, 0]);
  // jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0) by the tent formulas -> 128 after rounding.
  assert.deepEqual(jet(0), [0, 0, 128]);
  assert.deepEqual(jet(1), [128, 0, 0]);
  assert.deepEqual(jet(0.5), [128, 255, 128]);
  assert.equal(colormap("turbo"), turbo);
  assert.throws(() => colormap("rainbow" as "jet"), /unknown colour map "rainbow"/);
  const img = colorize({ width: 3, height: 1, data: new Float32Array([2, 4, 6]) });
  assert.deepEqual([...img.data], [...viridis(0), ...viridis(0.5), ...viridis(1)]);
});

Deno.test("colour bar ticks are round numbers within the range", () => {
  const text = (lo: number, hi: number) => colorbarTicks(lo, hi).map((t) => t.text);
  assert.deepEqual(text(0, 1), ["0.00", "0.25", "0.50", "0.75", "1.00"]);
  // Span 6.8: a quarter is 1.7 -> steps of 2.
  assert.deepEqual(text(-3.5, 3.3), ["-2", "0", "2"]);
  assert.deepEqual(text(0, 0.02), ["0.000", "0.005", "0.010", "0.015", "0.020"]);
  assert.deepEqual(text(0, 250000), ["0.0e+0", "5.0e+4", "1.0e+5", "1.5e+5", "2.0e+5", "2.5e+5"]);
  assert.deepEqual(text(1, 1), ["1.00"]);
});

Deno.test("overlayHeatmap blends viridis over the image; title and colour bar in the figure", async () => {
  const photo = {
    width: 8,
    height: 2,
    channels: 3 as const,
    data: new Uint8Array(8 * 2 * 3).fill(100),
  };
  const bare = await overlayHeatmap(photo, [[0, 1]], { alpha: 0.5, colorbar: false });
  assert.deepEqual([ihdr(bare.png!).width, ihdr(bare.png!).height], [8, 2]);
  // Left edge heat 0: 0.5*100 + 0.5*(68, 1, 84) = (84, 50.5, 92) -> (84, 51, 92) after
  // rounding; right edge heat 1: 0.5*100 + 0.5*(253, 231, 37) = (176.5, 165.5, 68.5).
  assert.deepEqual(pixel(bare.png!, 0, 0), [84, 51, 92]);
  assert.deepEqual(pixel(bare.png!, 7, 1), [177, 166, 69]);
  const jetOverlay = await overlayHeatmap(photo, [[0, 1]], { colormap: "jet", colorbar: false });
  // jet(0) = (0, 0, 128): 0.5*100 + 0.5*(0, 0, 128) = (50, 50, 114).
  assert.deepEqual(pixel(jetOverlay.png!, 0, 0), [50, 50, 114]);
  await assert.rejects(overlayHeatmap(photo, [[0, 1]], { alpha: 2 }), /alpha must be within 0..1/);

  // By default the figure carries a colour bar (and here a title): wider than the photo,
  // with the photo below the title, unchanged, and the bar's ends in viridis's end colours.
  const big = { width: 64, height: 48, channels: 3 as const, data: new Uint8Array(64 * 48 * 3) };
  const fig = await overlayHeatmap(big, [[0, 1]], {
    range: [0, 1],
    title: "Grad-CAM",
    label: "weight",
    alpha: 0,
  });
  assert.ok(fig.svg!.includes(">Grad-CAM<") && fig.svg!.includes(">weight<"));
  for (const tick of ["0.00", "0.25", "0.50", "0.75", "1.00"]) {
    assert.ok(fig.svg!.includes(`>${tick}<`), `tick ${tick}`);
  }
  const head = ihdr(fig.png!);
  assert.ok(head.width > 64 + 40 && head.height > 48, `${head.width}x${head.height}`);
  assert.deepEqual([head.width, head.height], [fig.width, fig.height]);
  // The title takes the top 26 px (14 px font + 12); the photo (black, alpha 0) starts there.
  assert.deepEqual(pixel(fig.png!, 10, 26 + 10), [0, 0, 0]);
  // The bar: 10 px right of the image, 14 px wide, as high as the image: the colour at pixel
  // row y is viridis at 1 - (y + 0.5 - 26) / 48 (the top is the range's high end).
  const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) <= 6);
  const top = pixel(fig.png!, 64 + 10 + 7, 26 + 1);
  const bottom = pixel(fig.png!, 64 + 10 + 7, 26 + 46);
  assert.ok(near(top, viridis(1 - 1.5 / 48)), `top of the bar ${top}`);
  assert.ok(near(bottom, viridis(1 - 46.5 / 48)), `bottom of the bar ${bottom}`);
});

Deno.test("svgToPng renders shapes with resvg", async () => {
  const png = await svgToPng(
    `<svg ${XMLNS} width="4" height="2"><rect x="2" width="2" height="2" fill="#00ff00"/></svg>`,
    { scale: 1 },
  );
  assert.deepEqual([ihdr(png).width, ihdr(png).height], [4, 2]);
  assert.deepEqual(pixel(png, 0, 0), [255, 255, 255], "white background");
  assert.deepEqual(pixel(png, 3, 1), [0, 255, 0]);
  assert.ok(encodePng({ width: 1, height: 1, channels: 3, data: new Uint8Array(3) }).length > 8);
});

Deno.test("the kit's RgbImage (no channels, as decoded) shows as RGB everywhere", async () => {
  // 2x1, red then blue: what readImage/evalResizeCrop return, passed on as it is.
  const photo: RgbImage = { width: 2, height: 1, data: new Uint8Array([255, 0, 0, 0, 0, 255]) };
  const shown = await showImage(photo);
  assert.deepEqual(ihdr(shown.png!), { width: 2, height: 1, depth: 8, colorType: 2 });
  assert.deepEqual([pixel(shown.png!, 0, 0), pixel(shown.png!, 1, 0)], [[255, 0, 0], [0, 0, 255]]);
  assert.deepEqual(await toRgb8(photo), { ...photo, channels: 3 });
  const grid = await imageGrid([photo, photo], { cols: 2, cellSize: 2, gap: 0 });
  assert.deepEqual([pixel(grid.png!, 0, 0), pixel(grid.png!, 3, 0)], [[255, 0, 0], [0, 0, 255]]);
  const overlay = await overlayHeatmap(photo, { width: 2, height: 1, data: [0, 0] }, {
    alpha: 0,
    colorbar: false,
  });
  assert.deepEqual(pixel(overlay.png!, 1, 0), [0, 0, 255]);
});

Deno.test("progress outside Jupyter writes throttled lines to stderr", async () => {
  const mod = new URL("../lib/viz/progress.ts", import.meta.url).href;
  const code = `import { progress } from "${mod}";
const p = progress("job", { total: 2, intervalMs: 0 });
await p.update(1, "half");
await p.update(2);
await p.done();
const q = progress("quiet", { intervalMs: 60000 });
await q.update(0.1); await q.update(0.2); await q.update(0.3); await q.done("ok");`;
  const { code: status, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(status, 0, new TextDecoder().decode(stderr));
  assert.equal(new TextDecoder().decode(stdout), "");
  assert.deepEqual(new TextDecoder().decode(stderr).trimEnd().split("\n"), [
    "job:  50% (1/2) half",
    "job: 100% (2/2)",
    "job: 100% (2/2) done",
    // Throttled: the first update, then only the final state.
    "quiet:  10%",
    "quiet: 100% ok",
  ]);
});
