/**
 * `deno task finetune`: fine-tune a ConvNeXt on an ImageFolder dataset (`DIR/<class>/*.jpg`).
 *
 *   deno task finetune --model NAME|DIR|FILE --data DIR --out DIR [--mode full|probe]
 *     [--epochs N] [--batch B] [--lr X] [--min-lr X] [--warmup-epochs N] [--update-freq K]
 *     [--weight-decay W] [--layer-decay D] [--drop-path R] [--label-smoothing S]
 *     [--ema] [--ema-decay D] [--head-init-scale X] [--seed S] [--size 224]
 *     [--val-split F] [--limit N] [--resume | --overwrite] [--workers N]
 *     [--features-cache DIR] [--backend B] [--quiet]
 *
 * Writes OUT/metrics.jsonl (one JSON object per epoch), OUT/checkpoint/ (every epoch,
 * atomically; `--resume` continues from it exactly), OUT/best/ (the best model by validation
 * accuracy, a TF.js layers model with the class names in its metadata) and OUT/report.json
 * (per-class accuracy and confusion matrix). Ctrl-C stops after the current batch; the last
 * epoch's checkpoint stays for `--resume`.
 *
 * OUT must be new or empty, or a folder finetune made (it leaves `.convnext-tfjs.json`
 * there): a folder holding anything else is refused, so the user's files are never
 * overwritten. Over an earlier run, `--resume` continues it and `--overwrite` starts over
 * (removing that run's results, nothing else).
 *
 * @module
 */
import {
  BACKEND_HELP,
  backendFlag,
  command,
  type CommandHelp,
  errorLine,
  type Fail,
  failer,
  type FlagHelp,
  usageLine,
} from "./cli.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { finetune, type FinetuneOptions } from "../lib/train/finetune.ts";

const fail: Fail = failer("finetune");

/** Numeric flags and the FinetuneOptions field each sets. */
const NUMBERS = {
  epochs: "epochs",
  batch: "batch",
  lr: "lr",
  "min-lr": "minLr",
  "warmup-epochs": "warmupEpochs",
  "update-freq": "updateFreq",
  "weight-decay": "weightDecay",
  "layer-decay": "layerDecay",
  "drop-path": "dropPath",
  "label-smoothing": "labelSmoothing",
  "ema-decay": "emaDecay",
  "head-init-scale": "headInitScale",
  seed: "seed",
  size: "size",
  "val-split": "valSplit",
  limit: "limit",
  workers: "workers",
} as const;

/** The help of each numeric flag: placeholder, text, default (full / probe where they differ). */
const NUMBER_HELP: Record<keyof typeof NUMBERS, FlagHelp> = {
  epochs: { value: "N", help: "epochs", default: "10; probe 30" },
  batch: { value: "B", help: "images per step", default: "32; probe 64" },
  lr: {
    value: "X",
    help: "peak learning rate (AdamW, cosine schedule)",
    default: "1e-4; probe 1e-3",
  },
  "min-lr": { value: "X", help: "final learning rate", default: "1e-6" },
  "warmup-epochs": { value: "N", help: "linear warm-up epochs", default: "0" },
  "update-freq": { value: "K", help: "accumulate gradients over K steps", default: "1" },
  "weight-decay": { value: "W", help: "AdamW weight decay", default: "0.05" },
  "layer-decay": { value: "D", help: "layer-wise learning-rate decay (1: none)", default: "1" },
  "drop-path": { value: "R", help: "stochastic depth rate (full mode)", default: "0.1" },
  "label-smoothing": { value: "S", help: "label smoothing", default: "0.1" },
  "ema-decay": { value: "D", help: "decay of the weights' moving average", default: "0.9999" },
  "head-init-scale": { value: "X", help: "scale of the new head's init", default: "0.001" },
  seed: { value: "S", help: "seed of the split, shuffling, augmentation and init", default: "0" },
  size: { value: "PX", help: "input size", default: "the model's" },
  "val-split": { value: "F", help: "fraction of images held out for validation", default: "0.2" },
  limit: { value: "N", help: "use only N images (a quick trial)" },
  workers: {
    value: "N",
    help: "image decoding threads (0: inline)",
    default: "cores - 1, at most 4",
  },
};

const HELP: CommandHelp = {
  name: "finetune",
  synopsis: "--model NAME|DIR|FILE --data DIR --out DIR [flags]",
  about: `
Fine-tune a ConvNeXt on an ImageFolder dataset (DIR/<class>/*.jpg) with the official recipe
(AdamW, cosine schedule, layer decay, drop path, label smoothing, EMA). Writes OUT/metrics.jsonl
(one line per epoch), OUT/checkpoint/ (every epoch; --resume continues it exactly), OUT/best/
(the best model by validation accuracy) and OUT/report.json (per-class accuracy, confusion
matrix). Ctrl-C stops after the current batch and keeps the checkpoint. OUT must be new, empty
or a folder finetune wrote: the user's files are never overwritten.`,
  flags: {
    model: { value: "NAME|DIR|FILE", help: "zoo name, converted model folder or checkpoint" },
    data: { value: "DIR", help: "the images, one folder per class" },
    out: { value: "DIR", help: "where the results go" },
    mode: { value: "full|probe", help: "train every weight, or a linear probe", default: "full" },
    "layer-decay-type": {
      value: "group|single",
      help: "with --layer-decay: V1's 12 groups of blocks, or one layer per block",
      default: "single for ConvNeXt V2, else group",
    },
    "features-cache": { value: "DIR", help: "probe mode: keep the backbone's features there" },
    backend: BACKEND_HELP.backend,
    ema: { help: "keep an exponential moving average of the weights" },
    resume: { help: "continue the run in OUT from its checkpoint" },
    overwrite: { help: "start over in OUT, removing the earlier run's results (nothing else)" },
    quiet: { help: "no progress bars" },
    ...NUMBER_HELP,
  },
  env: ["CONVNEXT_BACKEND", "CONVNEXT_CACHE", "CONVNEXT_BASE_URL", "CONVNEXT_TRAIN_THREADS"],
  examples: [
    "deno task finetune --model convnext_tiny_1k_224 --data flowers --out runs/flowers",
    "deno task finetune --model convnext_tiny_1k_224 --data flowers --out runs/probe --mode probe",
    "deno task finetune --model convnext_tiny_1k_224 --data flowers --out runs/flowers --resume",
  ],
};
const USAGE = usageLine(HELP);

const parsed = command(HELP, {
  model: { type: "string" },
  data: { type: "string" },
  out: { type: "string" },
  mode: { type: "string" },
  "layer-decay-type": { type: "string" },
  "features-cache": { type: "string" },
  backend: { type: "string", default: "auto" },
  ema: { type: "boolean", default: false },
  resume: { type: "boolean", default: false },
  overwrite: { type: "boolean", default: false },
  quiet: { type: "boolean", default: false },
  ...Object.fromEntries(Object.keys(NUMBERS).map((k) => [k, { type: "string" as const }])),
}, fail);
if (parsed.positionals.length > 0) fail(`unexpected argument "${parsed.positionals[0]}"\n${USAGE}`);
const values = parsed.values as Record<string, string | boolean | undefined>;
for (const flag of ["model", "data", "out"]) {
  if (typeof values[flag] !== "string" || values[flag] === "") {
    fail(`--${flag} is required\n${USAGE}`);
  }
}
if (values.mode !== undefined && values.mode !== "full" && values.mode !== "probe") {
  fail(`--mode: expected "full" or "probe", got "${values.mode}"`);
}
const backend = backendFlag(values.backend as string | undefined, fail);

const options: FinetuneOptions = {
  model: values.model as string,
  data: values.data as string,
  out: values.out as string,
  mode: values.mode as FinetuneOptions["mode"],
  layerDecayType: values["layer-decay-type"] as FinetuneOptions["layerDecayType"],
  ema: values.ema as boolean,
  resume: values.resume as boolean,
  overwrite: values.overwrite as boolean,
  quiet: values.quiet as boolean,
  featuresCache: values["features-cache"] as string | undefined,
};
for (const [flag, field] of Object.entries(NUMBERS)) {
  const raw = values[flag];
  if (raw === undefined) continue;
  const n = Number(raw);
  if (raw === "" || !Number.isFinite(n)) fail(`--${flag}: expected a number, got "${raw}"`);
  (options as unknown as Record<string, number>)[field] = n;
}

// Ctrl-C: stop between batches (the last completed epoch stays checkpointed); twice: now.
const controller = new AbortController();
let interrupts = 0;
const onInterrupt = () => {
  if (++interrupts > 1) Deno.exit(130);
  console.error("\nfinetune: stopping after this batch (Ctrl-C again to quit now)");
  controller.abort(new Error("interrupted"));
};
Deno.addSignalListener("SIGINT", onInterrupt);

try {
  console.error(`finetune: backend ${await selectBackend(backend)}`);
  const result = await finetune({ ...options, signal: controller.signal });
  console.error(
    `finetune: done; best model ${result.bestDir}` +
      (result.best?.valAccuracy != null
        ? ` (epoch ${result.best.epoch}, val accuracy ${
          (result.best.valAccuracy * 100).toFixed(2)
        }%)`
        : ""),
  );
} catch (e) {
  if (controller.signal.aborted) {
    fail(`interrupted; continue with the same arguments plus --resume`, 130);
  }
  // The library names options (`epochs`, `resume: true`); say them as this tool's flags.
  fail(errorLine(e, "finetune"), 1);
} finally {
  Deno.removeSignalListener("SIGINT", onInterrupt);
}
