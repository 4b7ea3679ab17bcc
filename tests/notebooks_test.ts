// Executes every notebook headlessly on the Deno kernel, offline (notebooks/offline.json:
// fixture weights and data from the repository), and checks each produced its key outputs
// and no error; that at least one number of every notebook, in the fresh run and in the
// committed copy (notebooks/*.ipynb), agrees with a value computed independently of the
// notebook (PyTorch's fixture values, the files on disk, the official architecture); and that
// the committed copies hold the same kinds of output, cell by cell, as the fresh run.
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { findNotebooks, runNotebooks } from "../tools/notebooks/run.ts";
import { offlineEnv } from "../tools/notebooks.ts";

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: string;
  execution_count?: number | null;
  outputs?: Output[];
}

const join1 = (t: string | string[] | undefined) => Array.isArray(t) ? t.join("") : t ?? "";
const REPO = new URL("../", import.meta.url).pathname;
const readJson = async (rel: string) => JSON.parse(await Deno.readTextFile(join(REPO, rel)));
async function readF32(rel: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(join(REPO, rel));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

// ---------------------------------------------------------------------------------------------
// Independent references: none of them comes from the notebooks or from lib/.

/** PyTorch's results for tiny10.pth (tools/fixtures/make_eval_fixture.py). */
const EVAL = await readJson("tests/fixtures/eval/expected.json") as {
  count: number;
  errors: number;
  top1: number;
  top5: number;
  samples: { path: string; error?: string }[];
  photos: { image: string; logits: number[] }[];
};
/** PyTorch's logits of the convnext_tiny-shaped zoo fixture (tools/fixtures/make_zoo_fixture.py):
 * for the formula input of the conversion notebook, and for the notebooks' photo. */
const ZOO_FORMULA = await readF32("tests/fixtures/zoo/logits_224.bin");
const ZOO_CHELSEA = await readF32("tests/fixtures/zoo/logits_chelsea.bin");
/** The photo the classification and feature-map notebooks classify first. */
const PHOTO = "data/images/chelsea.png";
/** ImageNet-1k class names by index (the repository's data file). */
const IMAGENET = (await readJson("data/imagenet_classes.json") as { name: string }[]).map((c) =>
  c.name
);
/** PyTorch's tensor shapes of the torchvision fixture (tools/fixtures/make_checkpoints.py). */
const CHECKPOINT_TENSORS = (await readJson("tests/fixtures/checkpoints/reference.json"))[
  "torchvision_mini.pth"
].tensors as Record<string, { shape: number[] }>;
/** The notebook parameters of the offline run. */
const OFFLINE = await readJson("notebooks/offline.json") as Record<string, string>;
/** Parameters of the official ConvNeXt-T with its 1000-class head (PyTorch's count, asserted by
 * make_zoo_fixture.py; the README rounds it to 28M). */
const CONVNEXT_TINY_PARAMS = 28_589_128;
/** Official ImageNet-1k top-1 (%) of some V1 and V2 checkpoints, from the ConvNeXt and
 * ConvNeXt-V2 READMEs ("Results and Pre-trained Models"). */
const OFFICIAL_TOP1: Record<string, string> = {
  convnext_tiny_1k_224: "82.1",
  convnextv2_atto_1k_224: "76.7",
  convnextv2_tiny_1k_224: "83.0",
  convnextv2_base_1k_224: "84.9",
  convnextv2_huge_22k_512: "88.9",
};
/** The official ConvNeXt-T (paper, Table 9; models/convnext.py `convnext_tiny`). */
const CONVNEXT_TINY = { depths: [3, 3, 9, 3], dims: [96, 192, 384, 768], patch: 4 };

/** Softmax of `logits` at index `k`, in float64. */
function softmaxAt(logits: ArrayLike<number>, k: number): number {
  const values = Array.from(logits);
  const max = Math.max(...values);
  const sum = values.reduce((s, v) => s + Math.exp(v - max), 0);
  return Math.exp(values[k] - max) / sum;
}

/** Whether class `k` has the largest logit (ties allowed: the zoo fixture's periodic head
 * gives every fifth class the same logit). */
function isTop(logits: ArrayLike<number>, k: number): boolean {
  return Array.from(logits).every((v) => v <= logits[k]);
}

/** The tables `console.table` printed in `text`: one record per row, keyed by column name. */
function consoleTables(text: string): Record<string, string>[][] {
  const tables: Record<string, string>[][] = [];
  let header: string[] | null = null;
  let rows: Record<string, string>[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("┌")) {
      header = null;
      rows = [];
    } else if (line.startsWith("│")) {
      const cells = line.split("│").slice(1, -1).map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
      if (header === null) header = cells;
      else rows.push(Object.fromEntries(header.map((h, i) => [h, cells[i]])));
    } else if (line.startsWith("└")) {
      tables.push(rows);
    }
  }
  return tables;
}

function tableWith(text: string, column: string): Record<string, string>[] {
  const table = consoleTables(text).find((t) => t.length > 0 && column in t[0]);
  assert.ok(table, `a table with a "${column}" column`);
  return table;
}

/** |printed - expected| within the rounding of a number printed with `decimals` decimals,
 * plus `slack`. */
function assertPrinted(
  printed: string,
  expected: number,
  decimals: number,
  slack: number,
  what: string,
) {
  const diff = Math.abs(Number(printed) - expected);
  assert.ok(
    Number.isFinite(Number(printed)) && diff <= 0.5 * 10 ** -decimals + slack,
    `${what}: printed ${printed}, reference ${expected} (diff ${diff})`,
  );
}

const IMAGE_EXTENSIONS = /\.(jpe?g|png|webp|bmp|gif)$/i;

/**
 * Per notebook: numbers in its outputs against the independent references above. Each runs on
 * the committed copy and on the fresh offline run (`text`: every stream and text/plain output).
 */
const NUMBERS: Record<string, (text: string) => void | Promise<void>> = {
  "classification.ipynb": (text) => {
    assert.equal(OFFLINE.CONVNEXT_IMAGES, undefined, "the notebook's default photos are used");
    // The variant table classifies the first photo, chelsea.png, with every variant.
    const rows = tableWith(text, "probability");
    const tiny10 = rows.find((r) => r.model === "tiny10.pth");
    assert.ok(tiny10, "the tiny10.pth row");
    const ref = EVAL.photos.find((p) => p.image === PHOTO)!.logits;
    const k = Number(/^class (\d+)$/.exec(tiny10["top-1"])?.[1]);
    assert.ok(isTop(ref, k), `tiny10 top-1 ${tiny10["top-1"]}, PyTorch's logits ${ref}`);
    assertPrinted(tiny10.probability, softmaxAt(ref, k), 3, 1e-4, "tiny10 top-1 probability");
    const zoo = rows.find((r) => r.model === "convnext_tiny_1k_224_ema.pth");
    assert.ok(zoo, "the convnext_tiny_1k_224_ema.pth row");
    const top = IMAGENET.flatMap((name, i) =>
      name === zoo["top-1"] && isTop(ZOO_CHELSEA, i) ? [i] : []
    );
    assert.ok(top.length > 0, `zoo fixture top-1 ${zoo["top-1"]} is not PyTorch's`);
    assertPrinted(
      zoo.probability,
      softmaxAt(ZOO_CHELSEA, top[0]),
      3,
      1e-4,
      "zoo top-1 probability",
    );
    // The V1-vs-V2 figure of the first photo: V1's top-5 (its text form) against PyTorch's
    // logits; V2's five classes of the 10-class fixture, most likely first.
    const figure = text.split("\n").indexOf(PHOTO.split("/").at(-1)!);
    assert.ok(figure >= 0, "the V1/V2 figure of the first photo");
    const v1 = /^V1: convnext_tiny_1k_224_ema\.pth: (.*)$/.exec(text.split("\n")[figure + 1]);
    const v2 = /^V2: official_v2\.pt: (.*)$/.exec(text.split("\n")[figure + 2]);
    assert.ok(v1 && v2, "V1 and V2 lines under the photo's name");
    const v1Top = v1[1].split(", ").map((e) => /^(.*) ([0-9.e-]+)$/.exec(e)!);
    assert.equal(v1Top.length, 5);
    for (const [, label, p] of v1Top) {
      const k = IMAGENET.findIndex((name, i) => name === label && isTop(ZOO_CHELSEA, i));
      assert.ok(k >= 0, `V1 class ${label} is not among PyTorch's top classes`);
      assertPrinted(p, softmaxAt(ZOO_CHELSEA, k), 3, 1e-4, `V1 probability of ${label}`);
    }
    const v2Top = v2[1].split(", ").map((e) => /^class (\d) ([0-9.]+)$/.exec(e)!);
    assert.ok(v2Top.length === 5 && v2Top.every((m) => m !== null), v2[1]);
    const probs = v2Top.map((m) => Number(m[2]));
    assert.ok(probs.every((p, i) => p <= 1 && (i === 0 || p <= probs[i - 1])), v2[1]);
  },
  "feature_maps.ipynb": (text) => {
    assert.equal(OFFLINE.CONVNEXT_IMAGE, undefined, "the notebook's default photo is used");
    // Stage outputs of ConvNeXt-T at 224 px: 56, 28, 14, 7 pixels, the stage widths, named after
    // each stage's last block.
    CONVNEXT_TINY.depths.forEach((depth, i) => {
      const side = 224 / CONVNEXT_TINY.patch / 2 ** i;
      const line = `stages_${i}_block_${depth - 1}: ${side} x ${side} x ${CONVNEXT_TINY.dims[i]}`;
      assert.ok(text.includes(line), `missing "${line}"`);
    });
    const m = /class (\d+) \((.*)\), logit (-?[0-9.]+)/.exec(text);
    assert.ok(m, "the Grad-CAM class line");
    const k = Number(m[1]);
    assert.ok(isTop(ZOO_CHELSEA, k), `Grad-CAM class ${k} is not PyTorch's top-1`);
    assert.equal(m[2], IMAGENET[k]);
    assertPrinted(m[3], ZOO_CHELSEA[k], 3, 1e-4, "Grad-CAM logit");
  },
  "accuracy_table.ipynb": (text) => {
    const m = /\| tiny10 \| - \| ([0-9.]+) \| ([0-9.]+) \| (\d+) \(partial: (\d+) unreadable\) \|/
      .exec(text);
    assert.ok(m, "the tiny10 row of the accuracy table");
    assert.equal(m[1], EVAL.top1.toFixed(2), "acc@1");
    assert.equal(m[2], EVAL.top5.toFixed(2), "acc@5");
    assert.equal(Number(m[3]), EVAL.count, "images");
    assert.equal(Number(m[4]), EVAL.errors, "unreadable images");
    assert.match(text, new RegExp(`tiny10 on ${EVAL.count + EVAL.errors} images`));
    const broken = EVAL.samples.find((s) => s.error)!.path;
    assert.ok(text.includes(`cannot decode image '../tests/fixtures/eval/imagefolder/${broken}'`));
    // The V2 fixture is evaluated too (no official number: not a zoo model).
    assert.match(text, /\| official_v2 \| - \| [0-9.]+ \| [0-9.]+ \| \d+ \(partial/);
    // The published numbers, V1 and V2 rows.
    for (const [name, top1] of Object.entries(OFFICIAL_TOP1)) {
      const row = new RegExp(`^\\| ${name} \\| (V1|V2) \\|.*\\| ([0-9.]+) \\| [^|]+ \\|$`, "m")
        .exec(text);
      assert.ok(row, `the published row of ${name}`);
      assert.equal(row[1], name.startsWith("convnextv2") ? "V2" : "V1", `${name}: family`);
      assert.equal(Number(row[2]), Number(top1), `${name}: official top-1`);
    }
  },
  "conversion.ipynb": async (text) => {
    const params = /architecture convnext_tiny, 1000 classes, ([\d,]+) parameters/.exec(text);
    assert.ok(params, "the parameter count of the converted fixture");
    assert.equal(Number(params[1].replaceAll(",", "")), CONVNEXT_TINY_PARAMS);
    // The side-by-side table: the TF.js column against PyTorch's logits, read here.
    const rows = tableWith(text, "tfjs");
    assert.equal(rows.length, 8);
    for (const r of rows) {
      const c = Number(r.class);
      // PyTorch's column is the fixture file as it was at the run (regenerated since: 7e-6).
      assertPrinted(r.pytorch, ZOO_FORMULA[c], 6, 1e-5, `PyTorch's logit ${c}`);
      assertPrinted(r.tfjs, ZOO_FORMULA[c], 6, 1e-4, `TF.js logit ${c}`);
    }
    const max = /max \|TF\.js - PyTorch\| over all 1000 logits: ([0-9.e+-]+)/.exec(text);
    assert.ok(max && Number(max[1]) <= 1e-4, `max diff ${max?.[1]}`);
    // The converted torchvision checkpoint: its parameters are PyTorch's tensors, its sha256
    // the file's.
    const total = Object.values(CHECKPOINT_TENSORS)
      .reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    assert.match(text, new RegExp(`Total params: ${total}\\n`));
    const file = await Deno.readFile(join(REPO, "tests/fixtures/checkpoints/torchvision_mini.pth"));
    const sha = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", file)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    assert.ok(text.includes(`file: "torchvision_mini.pth",\n    sha256: "${sha}"`), "sha256");
  },
  "fine_tuning.ipynb": async (text) => {
    // Images per class: the table against the files on disk.
    // Relative paths resolve from notebooks/, the kernel's working directory.
    const data = resolve(
      REPO,
      "notebooks",
      OFFLINE.CONVNEXT_FT_DATA.replaceAll("{repo}", REPO.replace(/\/$/, "")),
    );
    const counts = tableWith(text, "images");
    const onDisk: Record<string, number> = {};
    for await (const d of Deno.readDir(data)) {
      if (!d.isDirectory) continue;
      let n = 0;
      for await (const f of Deno.readDir(join(data, d.name))) {
        if (f.isFile && IMAGE_EXTENSIONS.test(f.name)) n++;
      }
      onDisk[d.name] = n;
    }
    assert.deepEqual(Object.fromEntries(counts.map((r) => [r.class, Number(r.images)])), onDisk);
    // One row per epoch; validation accuracies are counts out of the validation images: the
    // images per class (all, or CONVNEXT_FT_LIMIT spread over the classes) times the default
    // split 0.2.
    const epochs = tableWith(text, "valAccuracy");
    assert.equal(epochs.length, Number(OFFLINE.CONVNEXT_FT_EPOCHS));
    const classes = Object.keys(onDisk).length;
    const limit = OFFLINE.CONVNEXT_FT_LIMIT ? Number(OFFLINE.CONVNEXT_FT_LIMIT) : Infinity;
    const perClass = Math.min(...Object.values(onDisk), limit / classes);
    const nVal = classes * Math.round(perClass * 0.2);
    for (const r of epochs) {
      const correct = Number(r.valAccuracy) * nVal;
      assert.ok(
        Math.abs(correct - Math.round(correct)) <= 0.0005 * nVal,
        `valAccuracy ${r.valAccuracy}`,
      );
    }
    const best = /best: epoch (\d+), validation accuracy ([0-9.]+)/.exec(text);
    assert.ok(best, "the best epoch");
    const top = Math.max(...epochs.map((r) => Number(r.valAccuracy)));
    assert.equal(Number(best[2]), top, "the best epoch has the highest validation accuracy");
    assert.equal(epochs.find((r) => r.epoch === best[1])?.valAccuracy, best[2]);
  },
};

/** What each notebook must show; a notebook not listed here only has to run cleanly. */
const EXPECTATIONS: Record<string, (cells: Cell[], text: string, mimes: string[]) => void> = {
  "classification.ipynb": (cells, text) => {
    const svgs = svgOutputs(cells);
    // Four V1-vs-V2 figures (photo + two top-5 charts) and the 22k chart.
    assert.equal(svgs.length, 5, "the top-5 figures");
    assert.equal(svgs.filter((s) => s.includes("data:image/png;base64,")).length, 4, "photos");
    for (const svg of svgs) {
      // Probabilities on a fixed 0..1 axis: ticks 0, 0.25, 0.5, 0.75 and 1 under every chart.
      const charts = svg.match(/>probability/g)?.length ?? 0;
      assert.ok(charts >= 1, "a probability axis");
      for (const tick of ["0.25", "0.5", "0.75", "1"]) {
        assert.equal(svg.match(new RegExp(`>${tick}<`, "g"))?.length, charts, `tick ${tick}`);
      }
    }
    for (const photo of ["chelsea.png", "coffee.jpg", "rocket.jpg", "astronaut.jpg"]) {
      assert.match(text, new RegExp(`^${photo}\nV1: .*\nV2: .*$`, "m"), `V1 and V2 on ${photo}`);
    }
    assert.match(text, /21841 classes/);
    assert.match(text, /224px resize-crop/);
  },
  "accuracy_table.ipynb": (_cells, text, mimes) => {
    assert.match(text, /\| name \| original acc@1 \| ours acc@1 \|/);
    assert.match(text, /\| name \| family \| pretraining \| resolution \|/);
    assert.ok(mimes.includes("text/markdown") && mimes.includes("image/svg+xml"));
  },
  "fine_tuning.ipynb": (_cells, text, mimes) => {
    // Loss and accuracy curves and the confusion matrix; sample and prediction grids.
    assert.ok(
      mimes.filter((m) => m === "image/svg+xml").length >= 3,
      "curves and confusion matrix",
    );
    assert.ok(mimes.filter((m) => m === "image/png").length >= 2, "image grids");
    assert.ok(mimes.includes("application/vnd.plotly.v1+json"), "the interactive Plotly figure");
    assert.match(text, /valAccuracy/);
    assert.match(text, /best: epoch \d+/);
  },
  "conversion.ipynb": (_cells, text, mimes) => {
    const m = /max \|TF\.js - PyTorch\| over all 1000 logits: ([0-9.e+-]+)/.exec(text);
    assert.ok(m, "the side-by-side check printed its maximum difference");
    assert.ok(Number(m[1]) <= 1e-4, `max diff ${m[1]}`);
    assert.ok(mimes.includes("image/svg+xml"), "the logits bar chart");
    assert.match(text, /Total params: /);
  },
  "feature_maps.ipynb": (_cells, text, mimes) => {
    // The photo, 4 channel grids, 4 mean-activation overlays and the Grad-CAM overlay, with
    // their titles in the figures (named in the text/plain stand-ins).
    assert.ok(mimes.filter((m) => m === "image/png").length >= 10, `${mimes.length} outputs`);
    assert.match(text, /stages_3_block_2: 7 x 7 x 768/);
    const grids = [...text.matchAll(/<feature map grid, stage \d: .*: (\d+)x(\d+) PNG>/g)];
    assert.equal(grids.length, 4, "4 channel grids");
    // 8 columns of cells of at least 112 px, and room for the colour bar.
    for (const g of grids) assert.ok(Number(g[1]) >= 8 * 112 + 40, `grid width ${g[1]}`);
    const overlays = text.match(/<heat overlay, stage \d: mean over \d+ channels/g) ?? [];
    assert.equal(overlays.length, 4, "4 mean-activation overlays");
    assert.match(text, /<heat overlay, Grad-CAM: class \d+ \(.*\), logit /);
  },
};

/** The SVG outputs of some cells, in order. */
function svgOutputs(cells: Cell[]): string[] {
  return cells.flatMap((c) => c.outputs ?? []).flatMap((o) => {
    const svg = o.data?.["image/svg+xml"];
    return svg === undefined ? [] : [join1(svg)];
  });
}

function codeCells(nb: { cells: Cell[] }): Cell[] {
  return nb.cells.filter((c) => c.cell_type === "code");
}

/** Every stream and text/plain output, joined. */
function outputText(cells: Cell[]): string {
  return cells.flatMap((c) => c.outputs ?? [])
    .map((o) => join1(o.text) + join1(o.data?.["text/plain"])).join("\n");
}

/**
 * The kinds of output of each code cell: the streams it wrote to (a set: how a stream is cut
 * into outputs depends on timing) and each rich output's type and MIME types, in order.
 */
function outputKinds(cells: Cell[]): { streams: string[]; rich: string[] }[] {
  return cells.map((c) => {
    const outs = c.outputs ?? [];
    const streams = [
      ...new Set(outs.filter((o) => o.output_type === "stream").map((o) => o.name!)),
    ];
    const rich = outs.filter((o) => o.output_type !== "stream")
      .map((o) => `${o.output_type}: ${Object.keys(o.data ?? {}).sort().join(", ")}`);
    return { streams: streams.sort(), rich };
  });
}

async function readNotebook(path: string): Promise<{ cells: Cell[] }> {
  return JSON.parse(await Deno.readTextFile(path));
}

Deno.test("committed notebooks: their numbers agree with independent references", async () => {
  const notebooks = await findNotebooks();
  assert.ok(notebooks.length >= 2, "notebooks/ holds the notebooks");
  for (const path of notebooks) {
    const name = path.split("/").at(-1)!;
    const check = NUMBERS[name];
    assert.ok(check, `${name}: no number checked against an independent reference`);
    try {
      await check(outputText(codeCells(await readNotebook(path))));
    } catch (e) {
      throw new Error(`committed ${name}: ${e instanceof Error ? e.message : e}`, { cause: e });
    }
  }
});

Deno.test("every notebook runs offline with its key outputs and no error", async () => {
  const notebooks = await findNotebooks();
  assert.ok(notebooks.length >= 2, "notebooks/ holds the notebooks");
  const out = await Deno.makeTempDir();
  try {
    const result = await runNotebooks({ notebooks, out, env: await offlineEnv(), capture: true });
    assert.deepEqual(result.failures, []);
    assert.equal(result.code, 0, result.stderr);
    for (const path of notebooks) {
      const name = path.split("/").at(-1)!;
      const code = codeCells(await readNotebook(join(out, name)));
      for (const [i, cell] of code.entries()) {
        assert.ok(cell.execution_count, `${name}: code cell ${i} was executed`);
        const errors = (cell.outputs ?? []).filter((o) => o.output_type === "error");
        assert.deepEqual(errors.map((e) => `${e.ename}: ${e.evalue}`), [], `${name}: cell ${i}`);
      }
      const outputs = code.flatMap((c) => c.outputs ?? []);
      const text = outputText(code);
      const mimes = outputs.flatMap((o) => Object.keys(o.data ?? {}));
      EXPECTATIONS[name]?.(code, text, mimes);
      try {
        await NUMBERS[name]?.(text);
      } catch (e) {
        throw new Error(`fresh run of ${name}: ${e instanceof Error ? e.message : e}`, {
          cause: e,
        });
      }
      // The committed copy was made by the same offline run: same cells, same kinds of output.
      const committed = codeCells(await readNotebook(path));
      assert.equal(committed.length, code.length, `${name}: code cells`);
      const fresh = outputKinds(code);
      outputKinds(committed).forEach((kinds, i) => {
        assert.deepEqual(
          kinds,
          fresh[i],
          `${name}: code cell ${i}: committed outputs vs a fresh run`,
        );
      });
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
