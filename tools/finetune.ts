/**
 * `deno task finetune`: fine-tune a ConvNeXt on an ImageFolder dataset (`DIR/<class>/*.jpg`).
 *
 *   deno task finetune --model NAME|DIR|FILE --data DIR --out DIR [--mode full|probe]
 *     [--epochs N] [--batch B] [--lr X] [--min-lr X] [--warmup-epochs N] [--update-freq K]
 *     [--weight-decay W] [--layer-decay D] [--drop-path R] [--label-smoothing S]
 *     [--ema] [--ema-decay D] [--head-init-scale X] [--seed S] [--size 224]
 *     [--val-split F] [--limit N] [--resume | --overwrite] [--workers N]
 *     [--features-cache DIR] ${BACKEND_USAGE} [--quiet]
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
import { BACKEND_USAGE, backendFlag, command, errorLine, type Fail, failer } from "./cli.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { finetune, type FinetuneOptions } from "../lib/train/finetune.ts";

const USAGE =
  `usage: deno task finetune --model NAME|DIR|FILE --data DIR --out DIR [--mode full|probe]
  [--epochs N] [--batch B] [--lr X] [--min-lr X] [--warmup-epochs N] [--update-freq K]
  [--weight-decay W] [--layer-decay D] [--drop-path R] [--label-smoothing S] [--ema]
  [--ema-decay D] [--head-init-scale X] [--seed S] [--size 224] [--val-split F] [--limit N]
  [--resume | --overwrite] [--workers N] [--features-cache DIR] ${BACKEND_USAGE} [--quiet]`;

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

const parsed = command(USAGE, {
  model: { type: "string" },
  data: { type: "string" },
  out: { type: "string" },
  mode: { type: "string" },
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
