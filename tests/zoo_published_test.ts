/**
 * The zoo's published numbers against the official README, verbatim.
 *
 * `lib/weights/zoo.ts` transcribes the accuracies, parameter counts and FLOPs of the official
 * ConvNeXt (V1) checkpoints from the README of facebookresearch/ConvNeXt. This test holds the
 * README's own markdown (its "Results and Pre-trained Models" tables and its "Evaluation"
 * example, copied byte for byte), parses it, and requires every official V1 entry of the zoo
 * to carry exactly the README's numbers for the file it downloads, and every checkpoint the
 * README links to to be in the zoo. The zoo's transcription is not used to build the
 * reference: a wrong digit, a swapped row or a missing checkpoint fails here.
 *
 * Not covered here: ConvNeXt V2 (its own README) and timm's small V1 sizes (atto, femto,
 * pico, nano; timm's results csv), which are not in this README.
 */

import assert from "node:assert/strict";
import { DEFAULT_BASE_URL, ZOO, type ZooEntry, zooUrl } from "../lib/weights/zoo.ts";

/**
 * facebookresearch/ConvNeXt README.md at commit 048efcea897d999aed302f2639b6270aedf8d4c8
 * (https://github.com/facebookresearch/ConvNeXt/blob/048efcea897d999aed302f2639b6270aedf8d4c8/README.md),
 * "Results and Pre-trained Models": the three tables, verbatim (spacing and the missing
 * trailing `|` of the 22K rows included).
 */
const README_TABLES = String.raw`### ImageNet-1K trained models

| name | resolution |acc@1 | #params | FLOPs | model |
|:---:|:---:|:---:|:---:| :---:|:---:|
| ConvNeXt-T | 224x224 | 82.1 | 28M | 4.5G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth) |
| ConvNeXt-S | 224x224 | 83.1 | 50M | 8.7G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_small_1k_224_ema.pth) |
| ConvNeXt-B | 224x224 | 83.8 | 89M | 15.4G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224_ema.pth) |
| ConvNeXt-B | 384x384 | 85.1 | 89M | 45.0G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_384.pth) |
| ConvNeXt-L | 224x224 | 84.3 | 198M | 34.4G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_large_1k_224_ema.pth) |
| ConvNeXt-L | 384x384 | 85.5 | 198M | 101.0G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_large_1k_384.pth) |

### ImageNet-22K trained models

| name | resolution |acc@1 | #params | FLOPs | 22k model | 1k model |
|:---:|:---:|:---:|:---:| :---:| :---:|:---:|
| ConvNeXt-T | 224x224 | 82.9 | 29M | 4.5G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_tiny_22k_224.pth)   | [model](https://dl.fbaipublicfiles.com/convnext/convnext_tiny_22k_1k_224.pth)
| ConvNeXt-T | 384x384 | 84.1 | 29M | 13.1G |     -          | [model](https://dl.fbaipublicfiles.com/convnext/convnext_tiny_22k_1k_384.pth)
| ConvNeXt-S | 224x224 | 84.6 | 50M | 8.7G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_small_22k_224.pth)   | [model](https://dl.fbaipublicfiles.com/convnext/convnext_small_22k_1k_224.pth)
| ConvNeXt-S | 384x384 | 85.8 | 50M | 25.5G |     -          | [model](https://dl.fbaipublicfiles.com/convnext/convnext_small_22k_1k_384.pth)
| ConvNeXt-B | 224x224 | 85.8 | 89M | 15.4G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth)   | [model](https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_1k_224.pth)
| ConvNeXt-B | 384x384 | 86.8 | 89M | 47.0G |     -          | [model](https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_1k_384.pth)
| ConvNeXt-L | 224x224 | 86.6 | 198M | 34.4G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth)  | [model](https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_1k_224.pth)
| ConvNeXt-L | 384x384 | 87.5 | 198M | 101.0G |    -         | [model](https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_1k_384.pth)
| ConvNeXt-XL | 224x224 | 87.0 | 350M | 60.9G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth) | [model](https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_1k_224_ema.pth)
| ConvNeXt-XL | 384x384 | 87.8 | 350M | 179.0G |  -          | [model](https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_1k_384_ema.pth)


### ImageNet-1K trained models (isotropic)
| name | resolution |acc@1 | #params | FLOPs | model |
|:---:|:---:|:---:|:---:| :---:|:---:|
| ConvNeXt-S | 224x224 | 78.7 | 22M | 4.3G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_iso_small_1k_224_ema.pth) |
| ConvNeXt-B | 224x224 | 82.0 | 87M | 16.9G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_iso_base_1k_224_ema.pth) |
| ConvNeXt-L | 224x224 | 82.6 | 306M | 59.7G | [model](https://dl.fbaipublicfiles.com/convnext/convnext_iso_large_1k_224_ema.pth) |`;

/**
 * The same README, "Evaluation": the single-GPU example command and the output it "should
 * give", verbatim. Its only top-5 accuracy.
 */
const README_EVALUATION = String.raw`python main.py --model convnext_base --eval true \
--resume https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_1k_224.pth \
--input_size 224 --drop_path 0.2 \
--data_path /path/to/imagenet-1k
* Acc@1 85.820 Acc@5 97.868 loss 0.563`;

/** What the README publishes for one checkpoint file. */
interface Published {
  url: string;
  architecture: string;
  resolution: number;
  numClasses: number;
  top1: number | null;
  top5: number | null;
  paramsM: number | null;
  gflops: number | null;
}

const SIZES: Readonly<Record<string, string>> = {
  T: "tiny",
  S: "small",
  B: "base",
  L: "large",
  XL: "xlarge",
};

function cells(line: string): string[] {
  const parts = line.split("|").map((c) => c.trim());
  assert.equal(parts[0], "", `row does not start with |: ${line}`);
  parts.shift();
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

function quantity(cell: string, unit: "M" | "G"): number {
  const m = new RegExp(`^(\\d+(?:\\.\\d+)?)${unit}$`).exec(cell);
  assert.ok(m, `expected a number with unit ${unit}, got ${JSON.stringify(cell)}`);
  return Number(m[1]);
}

/** Parses the README's tables into one record per linked checkpoint file. */
function parseReadme(tables: string, evaluation: string): Published[] {
  const resume = /--resume (\S+)/.exec(evaluation);
  const result = /\* Acc@1 (\d+\.\d+) Acc@5 (\d+\.\d+)/.exec(evaluation);
  assert.ok(resume && result, "evaluation example not found");
  const top5Url = resume[1];

  const out: Published[] = [];
  let heading = "";
  let header: string[] | null = null;
  for (const line of tables.split("\n")) {
    if (line.startsWith("### ")) {
      heading = line.slice(4).trim();
      header = null;
      continue;
    }
    if (!line.startsWith("|")) continue;
    const row = cells(line);
    if (header === null) {
      header = row;
      assert.deepEqual(header.slice(0, 5), ["name", "resolution", "acc@1", "#params", "FLOPs"]);
      continue;
    }
    if (row.every((c) => /^:?-+:?$/.test(c))) continue; // the alignment row
    assert.equal(row.length, header.length, `cells of ${line}`);
    const name = /^ConvNeXt-(T|S|B|L|XL)$/.exec(row[0]);
    assert.ok(name, `model name ${row[0]}`);
    const isotropic = heading.includes("(isotropic)");
    const architecture = `convnext_${isotropic ? "iso_" : ""}${SIZES[name[1]]}`;
    const res = /^(\d+)x(\d+)$/.exec(row[1]);
    assert.ok(res && res[1] === res[2], `resolution ${row[1]}`);
    const resolution = Number(res[1]);
    const top1 = Number(row[2]);
    assert.ok(/^\d+\.\d$/.test(row[2]), `acc@1 ${row[2]}`);
    const paramsM = quantity(row[3], "M");
    const gflops = quantity(row[4], "G");
    const columns: string[] = header;
    for (let col = 5; col < columns.length; col++) {
      if (row[col] === "-") continue;
      const link = /^\[model\]\((https:\/\/[^)\s]+)\)$/.exec(row[col]);
      assert.ok(link, `link cell ${JSON.stringify(row[col])}`);
      const url = link[1];
      // "model" (ImageNet-1K tables) and "1k model": a 1000-class head, the row's numbers.
      // "22k model": the 21841-class ImageNet-22K checkpoint, for which the README publishes
      // no ImageNet-1K accuracy; the row's numbers are its 1k fine-tuned sibling's.
      const head22k: boolean = columns[col] === "22k model";
      assert.ok(head22k || columns[col] === "model" || columns[col] === "1k model", columns[col]);
      out.push({
        url,
        architecture,
        resolution,
        numClasses: head22k ? 21841 : 1000,
        top1: head22k ? null : top1,
        top5: !head22k && url === top5Url ? Number(result[2]) : null,
        paramsM: head22k ? null : paramsM,
        gflops: head22k ? null : gflops,
      });
    }
  }
  // The evaluation example's top-1 is the table's, to the table's one decimal.
  const example = out.find((p) => p.url === top5Url);
  assert.ok(example, "the evaluation example's checkpoint is in the tables");
  assert.equal(example.top1, Math.round(Number(result[1]) * 10) / 10);
  return out;
}

/** The zoo's official V1 entries: not V2, not timm's small sizes. */
function officialV1(): ZooEntry[] {
  return ZOO.filter((e) =>
    e.name.startsWith("convnext_") && !e.name.startsWith("convnextv2_") &&
    !/^convnext_(atto|femto|pico|nano)_/.test(e.name)
  );
}

function published(e: ZooEntry): Omit<Published, "url"> {
  return {
    architecture: e.architecture,
    resolution: e.resolution,
    numClasses: e.numClasses,
    top1: e.top1,
    top5: e.top5,
    paramsM: e.paramsM,
    gflops: e.gflops,
  };
}

const README = parseReadme(README_TABLES, README_EVALUATION);

Deno.test("zoo published: the README's tables parse into its 24 checkpoint files", () => {
  // 6 ImageNet-1K, 5 ImageNet-22K and 10 fine-tuned 22k->1k, 3 isotropic.
  assert.equal(README.length, 24);
  assert.equal(new Set(README.map((p) => p.url)).size, README.length);
  assert.equal(README.filter((p) => p.numClasses === 21841).length, 5);
  assert.equal(README.filter((p) => p.top5 !== null).length, 1);
  for (const p of README) assert.ok(p.url.startsWith(DEFAULT_BASE_URL), p.url);
});

Deno.test("zoo published: every official V1 entry carries the README's numbers exactly", () => {
  const byUrl = new Map(README.map((p) => [p.url, p]));
  const entries = officialV1();
  assert.ok(entries.length > 0);
  let heads1k = 0;
  for (const e of entries) {
    const url = zooUrl(e, DEFAULT_BASE_URL);
    const p = byUrl.get(url);
    assert.ok(p, `${e.name}: ${url} is not linked from the README`);
    const { url: _, ...expected } = p;
    assert.deepEqual(published(e), expected, e.name);
    if (e.numClasses === 1000) heads1k++;
  }
  // All 19 ImageNet-1K-head checkpoints were compared.
  assert.equal(heads1k, 19);
});

Deno.test("zoo published: every checkpoint the README links to is in the zoo", () => {
  const zooUrls = new Set(officialV1().map((e) => zooUrl(e, DEFAULT_BASE_URL)));
  for (const p of README) assert.ok(zooUrls.has(p.url), `${p.url} is missing from the zoo`);
  assert.equal(zooUrls.size, README.length);
});
