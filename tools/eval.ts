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
 * images k with k % N == I (without it: the shard of a SLURM array task,
 * `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT`, or of a Kubernetes Indexed Job,
 * `JOB_COMPLETION_INDEX`/`CONVNEXT_SHARD_COUNT`; see lib/eval/shard.ts); `--limit N` the
 * first N of those. With `--out`, progress is saved in `<out>.partial.json` and the same
 * command continues an interrupted run (Ctrl-C saves and stops). Unreadable images are
 * reported and left out of the count.
 *
 * @module
 */
import {
  BACKEND_HELP,
  BACKEND_OPTION,
  backendFlag,
  command,
  type CommandHelp,
  errorLine,
  type Fail,
  failer,
  usageLine,
} from "./cli.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { imagenetWnids } from "../lib/data/imagenet.ts";
import { loadEvalDataset } from "../lib/eval/dataset.ts";
import { EvalAbortedError, type EvalResult, evaluate } from "../lib/eval/evaluate.ts";
import { resolveShard, type Shard } from "../lib/eval/shard.ts";
import { mergeResults, readEvalResult } from "../lib/eval/merge.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";
import { classifierClasses } from "../lib/classify.ts";
import { labelsFor, modelConfig } from "../lib/model/config.ts";
import { loadModel } from "../lib/weights/pretrained.ts";

const HELP: CommandHelp = {
  name: "eval",
  synopsis: "--model NAME|DIR|FILE --data DIR [flags]  |  --merge SHARD.json... [--out ALL.json]",
  about: `
ImageNet validation accuracy (Acc@1, Acc@5) of a ConvNeXt, with the official evaluation's
preprocessing. DIR is the validation set as an ImageFolder (DIR/<wnid>/*.JPEG) or in the flat
layout (LOC_val_solution.csv + LOC_synset_mapping.txt). With --out, progress is saved and the
same command continues an interrupted run (Ctrl-C saves and stops). Shards (--shard, a SLURM
array task or a Kubernetes Indexed Job) are combined with --merge.`,
  flags: {
    model: { value: "NAME|DIR|FILE", help: "zoo name, converted model folder or checkpoint" },
    data: { value: "DIR", help: "the validation images" },
    limit: { value: "N", help: "only the first N images (of the shard)" },
    batch: { value: "B", help: "images per forward pass", default: "32" },
    shard: {
      value: "I/N",
      help: "images k with k % N == I (default: from SLURM/Kubernetes variables, else all)",
    },
    out: { value: "FILE.json", help: "write the result there (and resume from FILE.partial.json)" },
    synsets: { value: "FILE", help: "class order (one wnid per line) for a subset of classes" },
    predictions: { help: "keep every image's top-5 in the result" },
    workers: { value: "W", help: "image decoding threads", default: "cores - 1, at most 16" },
    merge: { help: "merge shard results (the positional files) into one" },
    json: { help: "print the result as one JSON line (the --out file's content) instead" },
    ...BACKEND_HELP,
  },
  env: [
    "CONVNEXT_BACKEND",
    "CONVNEXT_CACHE",
    "CONVNEXT_BASE_URL",
    "SLURM_ARRAY_TASK_ID",
    "JOB_COMPLETION_INDEX",
  ],
  examples: [
    "deno task eval --model convnext_tiny_1k_224 --data imagenet/val --out tiny.json",
    "deno task eval --model convnext_tiny_1k_224 --data imagenet/val --shard 0/4 --out s0.json",
    "deno task eval --merge s0.json s1.json s2.json s3.json --out tiny.json",
  ],
};
const USAGE = usageLine(HELP);

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
const { values, positionals } = command(HELP, {
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
  json: { type: "boolean", default: false },
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
    if (values.json) console.log(JSON.stringify(merged));
    else {
      console.log(`merged ${positionals.length} shards of ${merged.model}`);
      console.log(summary(merged));
      if (values.out) console.log(`wrote ${values.out}`);
    }
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
// --shard, else a SLURM array task or a Kubernetes Indexed Job pod (lib/eval/shard.ts).
let shard: Shard | undefined;
let shardSource = "";
try {
  const resolved = resolveShard(values.shard);
  shard = resolved.shard;
  if (resolved.source && resolved.source !== "option") shardSource = ` from ${resolved.source}`;
  const was = resolved.overridden;
  if (was) {
    console.error(
      `eval: --shard ${values.shard} replaces shard ${was.shard.index}/${was.shard.count} of ${was.source}`,
    );
  }
} catch (e) {
  fail(errorLine(e, "eval"));
}

const controller = new AbortController();
let interrupts = 0;
const onInterrupt = () => {
  // First Ctrl-C: finish the batch, save progress, stop. Second: stop now.
  if (++interrupts > 1) Deno.exit(130);
  console.error("\neval: stopping after this batch (Ctrl-C again to quit at once)");
  controller.abort();
};
Deno.addSignalListener("SIGINT", onInterrupt);

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
    ...(shard ? [`shard ${shard.index}/${shard.count}${shardSource}`] : []),
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
  if (values.json) console.log(JSON.stringify(result));
  else {
    console.log(summary(result));
    if (values.out) console.log(`wrote ${values.out}`);
  }
} catch (e) {
  if (e instanceof EvalAbortedError) fail(e.message, 130);
  fail(errorLine(e, "eval"), 1);
}
// Not Deno.exit: the program ends on its own (the listener would keep it alive), after the
// inference threads have stopped (a thread torn down while the process exits can crash it).
Deno.removeSignalListener("SIGINT", onInterrupt);
