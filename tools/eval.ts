/**
 * `deno task eval`: ImageNet validation accuracy of a ConvNeXt, as the official evaluation
 * computes it; and `--merge` of sharded results.
 *
 *   deno task eval --model NAME|DIR|FILE --data DIR [--limit N] [--batch B] [--shard I/N]
 *                  [--out FILE.json] [--synsets FILE] [--predictions] [--workers W]
 *   deno task eval --merge SHARD.json... [--out ALL.json]
 *
 * DIR is the validation set in the ImageFolder layout (`DIR/<wnid>/*.JPEG`; with fewer
 * class folders than the model has classes, `--synsets FILE` numbers the classes) or the
 * flat layout (`LOC_val_solution.csv` + `LOC_synset_mapping.txt`). `--shard I/N` evaluates
 * images k with k % N == I; `--limit N` the first N of those. With `--out`, progress is
 * saved in `<out>.partial.json` and the same command continues an interrupted run
 * (Ctrl-C saves and stops). Unreadable images are reported and left out of the count.
 *
 * @module
 */
import {
  BACKEND_OPTION,
  BACKEND_USAGE,
  backendFlag,
  command,
  errorLine,
  type Fail,
  failer,
} from "./cli.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { imagenetWnids } from "../lib/data/imagenet.ts";
import { loadEvalDataset } from "../lib/eval/dataset.ts";
import {
  EvalAbortedError,
  type EvalResult,
  evaluate,
  parseShard,
  type Shard,
} from "../lib/eval/evaluate.ts";
import { mergeResults, readEvalResult } from "../lib/eval/merge.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";
import { classifierClasses } from "../lib/classify.ts";
import { labelsFor, modelConfig } from "../lib/model/config.ts";
import { loadModel } from "../lib/weights/pretrained.ts";

const USAGE = [
  "usage: deno task eval --model NAME|DIR|FILE --data DIR [--limit N] [--batch B] [--shard I/N]",
  "                      [--out FILE.json] [--synsets FILE] [--predictions] [--workers W]",
  `                      ${BACKEND_USAGE}`,
  "       deno task eval --merge SHARD.json... [--out ALL.json]",
].join("\n");

function integer(value: string | undefined, flag: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) fail(`${flag} expects an integer >= ${min}, got "${value}"`);
  return n;
}

function summary(r: EvalResult): string {
  const official = r.officialTop1 === null ? "" : `  (official Acc@1 ${r.officialTop1})`;
  const errors = r.errors.length ? `, ${r.errors.length} unreadable left out` : "";
  return `* Acc@1 ${r.top1.toFixed(3)} Acc@5 ${r.top5.toFixed(3)}${official}\n` +
    `  ${r.count} images${errors}, ${r.elapsedSeconds.toFixed(1)} s, ` +
    `${r.imagesPerSecond.toFixed(1)} img/s (${r.backend})`;
}

const fail: Fail = failer("eval");
const { values, positionals } = command(USAGE, {
  model: { type: "string" },
  data: { type: "string" },
  limit: { type: "string" },
  batch: { type: "string" },
  shard: { type: "string" },
  out: { type: "string" },
  synsets: { type: "string" },
  predictions: { type: "boolean", default: false },
  workers: { type: "string" },
  merge: { type: "boolean", default: false },
  ...BACKEND_OPTION,
}, fail);
const backend = backendFlag(values.backend, fail);

if (values.merge) {
  if (positionals.length === 0) fail(`--merge needs the shard result files\n${USAGE}`);
  try {
    const results = [];
    for (const file of positionals) results.push(await readEvalResult(file));
    const merged = mergeResults(results, positionals);
    if (values.out) await writeFileAtomic(values.out, JSON.stringify(merged, null, 1) + "\n");
    console.log(`merged ${positionals.length} shards of ${merged.model}`);
    console.log(summary(merged));
    if (values.out) console.log(`wrote ${values.out}`);
  } catch (e) {
    fail((e as Error).message.split("\n")[0], 1);
  }
  Deno.exit(0);
}

if (positionals.length > 0) fail(`unexpected argument "${positionals[0]}"\n${USAGE}`);
if (!values.model) fail(`--model is required\n${USAGE}`);
if (!values.data) fail(`--data DIR is required\n${USAGE}`);
const limit = integer(values.limit, "--limit", 1);
const batch = integer(values.batch, "--batch", 1) ?? 32;
const workers = integer(values.workers, "--workers", 0);
let shard: Shard | undefined;
try {
  shard = values.shard === undefined ? undefined : parseShard(values.shard);
} catch (e) {
  fail(errorLine(e, "eval"));
}

const controller = new AbortController();
let interrupts = 0;
Deno.addSignalListener("SIGINT", () => {
  // First Ctrl-C: finish the batch, save progress, stop. Second: stop now.
  if (++interrupts > 1) Deno.exit(130);
  console.error("\neval: stopping after this batch (Ctrl-C again to quit at once)");
  controller.abort();
});

try {
  await selectBackend(backend);
  const model = await loadModel(values.model);
  const numClasses = classifierClasses(model);
  const labels = modelConfig(model).labels ?? labelsFor(numClasses);
  const dataset = await loadEvalDataset(values.data, {
    synsets: values.synsets,
    numClasses,
    expectWnids: labels === "imagenet-1k" ? imagenetWnids() : undefined,
  });
  const parts = [
    `${dataset.layout} layout`,
    `${dataset.samples.length} images`,
    ...(shard ? [`shard ${shard.index}/${shard.count}`] : []),
    ...(limit ? [`limit ${limit}`] : []),
  ];
  console.error(`eval: ${values.model} on ${values.data} (${parts.join(", ")}), batch ${batch}`);
  if (!values.out) {
    console.error("eval: no --out: the result is not saved and an interrupted run cannot resume");
  }
  const result = await evaluate(model, dataset, {
    modelName: values.model,
    batch,
    limit,
    shard,
    out: values.out,
    predictions: values.predictions,
    signal: controller.signal,
    workers,
  });
  if (result.resumed > 0) {
    console.error(`eval: continued after ${result.resumed} images done earlier`);
  }
  console.log(summary(result));
  if (values.out) console.log(`wrote ${values.out}`);
} catch (e) {
  if (e instanceof EvalAbortedError) fail(e.message, 130);
  fail((e as Error).message.split("\n")[0], 1);
}
Deno.exit(0);
