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
  encodePng,
  heatmap,
  imageGrid,
  inJupyter,
  jet,
  lineChart,
  overlayHeatmap,
  plotFigure,
  plotly,
  showImage,
  svgToPng,
  toRgb8,
  withXmlns,
} from "../lib/viz/mod.ts";
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

Deno.test("overlayHeatmap blends the jet colour map over the image", async () => {
  // jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0) by the tent formulas -> 128 after rounding.
  assert.deepEqual(jet(0), [0, 0, 128]);
  assert.deepEqual(jet(1), [128, 0, 0]);
  assert.deepEqual(jet(0.5), [128, 255, 128]);
  const photo = {
    width: 8,
    height: 2,
    channels: 3 as const,
    data: new Uint8Array(8 * 2 * 3).fill(100),
  };
  const fig = await overlayHeatmap(photo, [[0, 1]], { alpha: 0.5 });
  assert.deepEqual([ihdr(fig.png!).width, ihdr(fig.png!).height], [8, 2]);
  // Left edge heat 0: 0.5*100 + 0.5*(0,0,128) = (50, 50, 114); right edge heat 1: (114, 50, 50).
  assert.deepEqual(pixel(fig.png!, 0, 0), [50, 50, 114]);
  assert.deepEqual(pixel(fig.png!, 7, 1), [114, 50, 50]);
  await assert.rejects(overlayHeatmap(photo, [[0, 1]], { alpha: 2 }), /alpha must be within 0..1/);
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
