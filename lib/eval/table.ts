/**
 * The accuracy table of the README: official top-1 (zoo registry) next to ours.
 *
 * @module
 */

import { getZooEntry, isZooName, ZOO_NAMES } from "../weights/zoo.ts";
import type { EvalResult } from "./evaluate.ts";

/** Images in the ImageNet-1k (ILSVRC2012) validation set. */
export const IMAGENET_VAL_SIZE = 50000;

/** Why a result is not a full evaluation of the validation set, or null if it is. */
export function partialReason(r: EvalResult): string | null {
  if (r.shard) return `shard ${r.shard.index}/${r.shard.count}`;
  if (r.limit !== null && r.limit !== undefined) return `--limit ${r.limit}`;
  if (r.errors?.length) return `${r.errors.length} unreadable`;
  if (r.count < r.datasetSize) return `${r.count} of ${r.datasetSize}`;
  if (r.datasetSize !== IMAGENET_VAL_SIZE) {
    return `${r.datasetSize} images, not ${IMAGENET_VAL_SIZE}`;
  }
  return null;
}

function officialTop1(r: EvalResult): number | null {
  if (isZooName(r.model)) return getZooEntry(r.model).top1;
  return r.officialTop1 ?? null;
}

function fmt(x: number | null | undefined, digits: number): string {
  return x === null || x === undefined ? "-" : x.toFixed(digits);
}

/**
 * The Markdown table `| name | original acc@1 | ours acc@1 | ours acc@5 | images |`, rows
 * in zoo order (other models after, in the given order). Original numbers come from the
 * zoo registry (the official README); results that did not cover the whole 50,000-image
 * validation set are flagged in the images column and a note under the table.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { loadModel } from "../weights/pretrained.ts";
 * import { loadEvalDataset } from "./dataset.ts";
 * import { evaluate } from "./evaluate.ts";
 * import { accuracyTable } from "./table.ts";
 * // The real run: loadModel("convnext_tiny_1k_224") and the ImageNet validation folder; here
 * // the small evaluation fixture of the tests (10 classes, a few images).
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * await selectBackend("cpu");
 * const model = await loadModel(`${fix}tiny10.pth`);
 * const synsets = `${fix}synsets.txt`;
 * const data = await loadEvalDataset(`${fix}flat`, { synsets, numClasses: 10 });
 * const result = await evaluate(model, data, { modelName: "tiny10", progress: { quiet: true } });
 * console.log(accuracyTable([result]));
 * // | name | original acc@1 | ours acc@1 | ours acc@5 | images |, then one row per result
 * ```
 */
export function accuracyTable(results: readonly EvalResult[]): string {
  const rank = (r: EvalResult) => {
    const i = isZooName(r.model) ? ZOO_NAMES.indexOf(getZooEntry(r.model).name) : -1;
    return i < 0 ? ZOO_NAMES.length : i;
  };
  const rows = results.map((r, i) => ({ r, i })).sort((a, b) => rank(a.r) - rank(b.r) || a.i - b.i);
  const lines = [
    "| name | original acc@1 | ours acc@1 | ours acc@5 | images |",
    "| --- | ---: | ---: | ---: | ---: |",
  ];
  let partial = false;
  for (const { r } of rows) {
    const name = isZooName(r.model) ? getZooEntry(r.model).name : r.model;
    const why = partialReason(r);
    if (why) partial = true;
    const images = why ? `${r.count} (partial: ${why})` : `${r.count}`;
    const original = officialTop1(r);
    lines.push(
      `| ${name} | ${original === null ? "-" : String(original)} | ${fmt(r.top1, 2)} | ${
        fmt(r.top5, 2)
      } | ${images} |`,
    );
  }
  if (partial) {
    lines.push(
      "",
      `Rows marked partial did not evaluate all ${IMAGENET_VAL_SIZE} ImageNet validation images; ` +
        "their accuracy is not comparable to the official numbers.",
    );
  }
  return lines.join("\n") + "\n";
}
