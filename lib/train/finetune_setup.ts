/**
 * The first steps of `finetune` (./finetune.ts): every option checked and given its default (once,
 * before a model is loaded or downloaded; only the default input size waits for the model),
 * then the run's plan: the split, the batch geometry, the learning-rate schedule and the
 * settings a resumed run must share.
 *
 * @module
 */
import { join, resolve } from "node:path";
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { listImageFolder } from "../data/image_folder.ts";
import { removeIfExists } from "../util/fs.ts";
import { OptionError, type OptionNamer } from "../util/errors.ts";
import { markFolder, someNames, surveyFolder } from "../util/owned.ts";
import { limitSamples, type Sample, splitStratified } from "./data.ts";
import { cosineSchedule } from "./schedule.ts";
import type { FinetuneOptions } from "./finetune.ts";

/** The options of a run, each checked and with its default. */
export interface ResolvedOptions {
  mode: "full" | "probe";
  epochs: number;
  batch: number;
  lr: number;
  minLr: number;
  warmupEpochs: number;
  updateFreq: number;
  weightDecay: number;
  layerDecay: number;
  /** Absent: the model's own recipe (kept absent so older checkpoints resume unchanged). */
  layerDecayType?: "group" | "single";
  dropPath: number;
  labelSmoothing: number;
  ema: boolean;
  emaDecay: number;
  headInitScale: number;
  seed: number;
  size: number;
  valSplit: number;
  limit: number | null;
}

/** {@link ResolvedOptions} before the model is loaded: `size` undefined means the model's. */
export type UnsizedOptions = Omit<ResolvedOptions, "size"> & { size: number | undefined };

/** Throws the one-line error of a bad option. */
function fail(option: string, expected: string, got: unknown): never {
  throw new OptionError(
    option,
    (name) => `finetune: ${name(option)} must be ${expected}, got ${JSON.stringify(got)}`,
  );
}

/** `value` (or the default `d`) checked to be an integer >= `min`. */
function int(option: string, value: number | undefined, d: number, min: number): number {
  const x = value ?? d;
  if (!Number.isInteger(x) || x < min) fail(option, `an integer >= ${min}`, value);
  return x;
}

/** `value` (or the default `d`) checked to be a finite number satisfying `ok`. */
function num(
  option: string,
  value: number | undefined,
  d: number,
  ok: (x: number) => boolean,
  what: string,
): number {
  const x = value ?? d;
  if (!Number.isFinite(x) || !ok(x)) fail(option, what, value);
  return x;
}

/** A `layerDecayType` checked. */
function decayType(value: unknown): "group" | "single" {
  if (value !== "group" && value !== "single") fail("layerDecayType", `"group" or "single"`, value);
  return value;
}

/**
 * Every option checked and given its default, except the input size when it is not given
 * (the loaded model's preprocessing decides it: {@link withSize}).
 *
 * @throws OptionError naming the first bad option.
 */
export function resolveOptions(o: FinetuneOptions): UnsizedOptions {
  const mode = o.mode ?? "full";
  if (mode !== "full" && mode !== "probe") fail("mode", `"full" or "probe"`, mode);
  const probe = mode === "probe";
  const fraction = (x: number) => x >= 0 && x < 1;
  // The key order is that of the checkpoint's stored settings (state.json).
  const r: UnsizedOptions = {
    mode,
    epochs: int("epochs", o.epochs, probe ? 30 : 10, 1),
    batch: int("batch", o.batch, probe ? 64 : 32, 1),
    lr: num("lr", o.lr, probe ? 1e-3 : 1e-4, (x) => x > 0, "a number > 0"),
    minLr: num("minLr", o.minLr, 1e-6, (x) => x >= 0, "a number >= 0"),
    warmupEpochs: num("warmupEpochs", o.warmupEpochs, 0, (x) => x >= 0, "a number >= 0"),
    updateFreq: int("updateFreq", o.updateFreq, 1, 1),
    weightDecay: num("weightDecay", o.weightDecay, 0.05, (x) => x >= 0, "a number >= 0"),
    layerDecay: num("layerDecay", o.layerDecay, 1, (x) => x > 0 && x <= 1, "a number in (0, 1]"),
    ...(o.layerDecayType === undefined ? {} : { layerDecayType: decayType(o.layerDecayType) }),
    dropPath: probe ? 0 : num("dropPath", o.dropPath, 0.1, fraction, "a number in [0, 1)"),
    labelSmoothing: num("labelSmoothing", o.labelSmoothing, 0.1, fraction, "a number in [0, 1)"),
    ema: o.ema ?? false,
    emaDecay: num("emaDecay", o.emaDecay, 0.9999, fraction, "a number in [0, 1)"),
    headInitScale: num("headInitScale", o.headInitScale, 0.001, (x) => x > 0, "a number > 0"),
    seed: int("seed", o.seed, 0, 0),
    size: o.size === undefined || o.size === null ? undefined : int("size", o.size, 0, 33),
    valSplit: num("valSplit", o.valSplit, 0.2, fraction, "a number in [0, 1)"),
    limit: o.limit === undefined ? null : int("limit", o.limit, 0, 1),
  };
  if (probe && o.dropPath) fail("dropPath", "0 in probe mode (the backbone is frozen)", o.dropPath);
  return r;
}

/** The options with the input size decided: the one given, else `defaultSize`. */
export function withSize(options: UnsizedOptions, defaultSize: number): ResolvedOptions {
  return { ...options, size: int("size", options.size, defaultSize, 33) };
}

/** The output directory's two parts. */
export function runDirs(out: string): { checkpointDir: string; bestDir: string } {
  return { checkpointDir: join(out, "checkpoint"), bestDir: join(out, "best") };
}

/** What a run writes into `out` (and their temporary copies): anything else is the user's. */
export const RUN_ENTRIES: readonly string[] = [
  "checkpoint",
  "best",
  "metrics.jsonl",
  "report.json",
  "features-cache",
];

/**
 * What `overwrite` removes: the results of the earlier run. The feature cache stays: its
 * files are keyed by the backbone's weights and each image's path and mtime, so they stay
 * valid and save the new run the forward passes.
 */
const RESULT_ENTRIES = ["checkpoint", "best", "metrics.jsonl", "report.json"];

/**
 * Everything `finetune` (./finetune.ts) can check before it loads (maybe downloads) a model: the
 * dataset, every option and the output directory ({@link prepareOut}), which is then ready.
 *
 * @throws OptionError for a bad option or output directory; Error for an unreadable dataset.
 */
export async function checkRun(
  options: FinetuneOptions,
): Promise<{ classes: string[]; samples: Sample[]; settings: UnsizedOptions }> {
  if (!options.out) fail("out", "an output directory", options.out);
  const dataset = await listImageFolder(options.data);
  const settings = resolveOptions(options);
  await prepareOut(options);
  return { classes: dataset.classes, samples: dataset.samples, settings };
}

/**
 * Makes `out` ready for the run, never touching files finetune did not write there. `out`
 * may be new or empty, or a folder finetune made (its marker, or only a run's entries, as
 * an earlier version left them). Any other folder is refused, unless `resume` finds a
 * checkpoint in it. A checkpoint there needs `resume` (continue) or `overwrite` (remove the
 * earlier run's results, and only those, then start over).
 *
 * @throws OptionError naming `out`, `resume` or `overwrite`.
 */
export async function prepareOut(options: FinetuneOptions): Promise<void> {
  const { out, resume, overwrite } = options;
  if (resume && overwrite) {
    throw new OptionError(
      "overwrite",
      (name) =>
        `finetune: ${name("resume", true)} continues the run in ${out}, ${
          name("overwrite", true)
        } starts it over: pass one of them`,
    );
  }
  const survey = await surveyFolder(out, (entry) => RUN_ENTRIES.includes(entry));
  const refuse = (why: string, hint: (name: OptionNamer) => string): never => {
    throw new OptionError("out", (name) => `finetune: ${name("out")} ${out} ${why}; ${hint(name)}`);
  };
  if (survey.kind === "not-a-folder") {
    refuse("is a file", (name) => `choose a folder for ${name("out")}`);
  }
  if (survey.kind === "folder" && survey.entries.length > 0) {
    const ours = survey.marker !== null || survey.foreign.length === 0;
    const checkpoint = survey.entries.includes("checkpoint/");
    if (!ours && !(resume && checkpoint)) {
      refuse(
        `is not empty and finetune did not create it (it holds ${someNames(survey.foreign)})`,
        (name) => `choose a new or empty folder for ${name("out")}`,
      );
    }
    if (checkpoint && !resume && !overwrite) {
      refuse(
        "holds a checkpoint of an earlier run",
        (name) =>
          `pass ${name("resume", true)} to continue it, ${
            name("overwrite", true)
          } to start over, ` +
          `or choose another ${name("out")}`,
      );
    }
    if (overwrite) { for (const entry of RESULT_ENTRIES) await removeIfExists(join(out, entry)); }
  }
  await markFolder(out, "finetune");
}

/** What a run does, decided before any training: split, batches, schedule, settings. */
export interface RunPlan {
  /** The resolved options. */
  o: ResolvedOptions;
  /** Class names (head index order). */
  classes: string[];
  /** Training images. */
  train: Sample[];
  /** Validation images. */
  val: Sample[];
  /** Images per micro-batch (`o.batch`, at most the training images). */
  batch: number;
  /** Optimizer steps per epoch. */
  stepsPerEpoch: number;
  /** Micro-batches per epoch (`stepsPerEpoch * o.updateFreq`). */
  microBatches: number;
  /** Learning rate of every step. */
  lrSchedule: Float64Array;
  /** The starting model as named in the metadata and settings. */
  modelLabel: string;
  /** Settings that must match on resume (stored in the checkpoint). */
  config: Record<string, unknown>;
  /** The output directory. */
  out: string;
  /** `OUT/checkpoint`. */
  checkpointDir: string;
  /** `OUT/best`. */
  bestDir: string;
}

/**
 * The plan of a run on `samples` with the resolved options `o`.
 *
 * @throws OptionError when no training image is left after the split.
 */
export function planRun(
  options: { model: string | tf.LayersModel; data: string; out: string },
  o: ResolvedOptions,
  classes: string[],
  samples: Sample[],
): RunPlan {
  const used = o.limit ? limitSamples(samples, o.limit) : samples;
  const { train, val } = splitStratified(used, o.valSplit, o.seed);
  if (train.length === 0) {
    throw new OptionError(
      "data",
      (name) => `finetune: ${name("data")} ${options.data}: no training images after the split`,
    );
  }
  const batch = Math.min(o.batch, train.length);
  const stepsPerEpoch = Math.max(1, Math.floor(train.length / (batch * o.updateFreq)));
  const lrSchedule = cosineSchedule({
    base: o.lr,
    final: o.minLr,
    epochs: o.epochs,
    stepsPerEpoch,
    warmupEpochs: o.warmupEpochs,
  });
  const modelLabel = typeof options.model === "string" ? options.model : options.model.name;
  const config: Record<string, unknown> = {
    ...o,
    batch,
    model: modelLabel,
    data: resolve(options.data),
    classes,
    train: train.length,
    val: val.length,
  };
  return {
    o,
    classes,
    train,
    val,
    batch,
    stepsPerEpoch,
    microBatches: stepsPerEpoch * o.updateFreq,
    lrSchedule,
    modelLabel,
    config,
    out: options.out,
    ...runDirs(options.out),
  };
}

/** The run's first log line: what it trains, on how much, how. */
export function planSummary(plan: RunPlan): string {
  const { o, classes, train, val, batch, stepsPerEpoch } = plan;
  return `finetune (${o.mode}): ${classes.length} classes, ${train.length} train / ${val.length} val images, ` +
    `batch ${batch} x ${o.updateFreq}, ${stepsPerEpoch} steps/epoch, ${o.epochs} epochs, size ${o.size}`;
}
