/**
 * Fine-tuning a ConvNeXt on an ImageFolder dataset, in two modes:
 *
 * - `"full"`: every layer trains (AdamW, no decay on 1-D weights, optional layer-wise lr
 *   decay, warmup + cosine schedule per step, label smoothing, drop path, gradient
 *   accumulation, optional EMA), on augmented images loaded in the background;
 * - `"probe"`: the backbone is frozen; embeddings are computed once (cached) and a Dense
 *   head trains on them.
 *
 * Each epoch ends with a validation pass, an atomic checkpoint (weights, optimizer moments,
 * step, metrics; every random choice derives from the seed and the epoch/step, so a resumed
 * run is the uninterrupted run), a line in `metrics.jsonl`, and the best model so far in
 * `best/`. The run ends with a validation report (`report.json`).
 *
 * The steps live in their own modules: options and plan (./finetune_setup.ts), the model
 * and batches of each mode (./finetune_sources.ts), an epoch (./finetune_epoch.ts), and the
 * checkpointed state (./finetune_state.ts).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { join } from "node:path";
import { installWasmTrainingKernels } from "../backend/wasm_grads.ts";
import { installWebGpuTrainingKernels } from "../backend/webgpu_grads.ts";
import { storedModelConfig } from "../model/config.ts";
import { writeFileAtomic } from "../util/fs.ts";
import type { Sample } from "./data.ts";
import { LoadPool } from "./loader.ts";
import { loadBaseModel } from "./model_setup.ts";
import type { FeatureStats } from "./probe.ts";
import { formatReport, type ValidationReport } from "./report.ts";
import { createTrainer, runEpoch } from "./finetune_epoch.ts";
import { checkRun, planRun, planSummary, type RunPlan, withSize } from "./finetune_setup.ts";
import { batchSources, SkipLog } from "./finetune_sources.ts";
import {
  initialState,
  loadResumeCheckpoint,
  restoreTensors,
  type RunState,
} from "./finetune_state.ts";

/** Options of {@link finetune} (the CLI flags of `deno task finetune`). */
export interface FinetuneOptions {
  /** Starting model: zoo name, converted model directory, model.json, checkpoint file, or a model. */
  model: string | tf.LayersModel;
  /** ImageFolder root (`DIR/<class>/*.jpg`). */
  data: string;
  /**
   * Output directory: new, empty, or one finetune made (it leaves a marker file there); a
   * folder holding anything else is refused, so the user's files are never overwritten.
   */
  out: string;
  /** `"full"` (default) or `"probe"`. */
  mode?: "full" | "probe";
  /** Epochs (default 10 full, 30 probe). */
  epochs?: number;
  /** Images per micro-batch (default 32 full, 64 probe). */
  batch?: number;
  /** Peak learning rate (default 1e-4 full, 1e-3 probe). */
  lr?: number;
  /** Final learning rate of the cosine (default 1e-6). */
  minLr?: number;
  /** Linear warmup epochs (default 0). */
  warmupEpochs?: number;
  /** Micro-batches accumulated per optimizer step, the official `update_freq` (default 1). */
  updateFreq?: number;
  /** AdamW weight decay of the decayed weights (default 0.05). */
  weightDecay?: number;
  /** Layer-wise lr decay (default 1: off); full mode, hierarchical models. */
  layerDecay?: number;
  /**
   * Which layer decay: "group" (V1's 12 groups; V2's base/large recipes) or "single" (one layer
   * per block). Default: the model's own recipe, "single" for ConvNeXt V2, "group" for V1.
   */
  layerDecayType?: "group" | "single";
  /** Stochastic depth rate (default 0.1 full; probe has none). */
  dropPath?: number;
  /** Label smoothing (default 0.1). */
  labelSmoothing?: number;
  /** Keep an EMA of the weights; validation also reports it (default false). */
  ema?: boolean;
  /** EMA decay (default 0.9999, official). */
  emaDecay?: number;
  /** Initial scale of a new head (default 0.001, official fine-tuning). */
  headInitScale?: number;
  /** Seed of the split, order, augmentation, drop path and head init (default 0). */
  seed?: number;
  /** Input size (default: the model's preprocessing size, else 224). */
  size?: number;
  /** Validation fraction per class (default 0.2). */
  valSplit?: number;
  /** Use at most this many images, balanced over classes. */
  limit?: number;
  /** Feature cache directory of the probe mode (default `OUT/features-cache`). */
  featuresCache?: string;
  /** Continue from `OUT/checkpoint` (default false). */
  resume?: boolean;
  /**
   * Start over in an `out` that holds an earlier run: its results (checkpoint, best model,
   * metrics, report) are removed first. Only a folder finetune made is touched; a folder
   * holding anything else is refused, with or without this (default false).
   */
  overwrite?: boolean;
  /** Image loading worker threads (default: cores - 1, at most 4; 0 = main thread). */
  workers?: number;
  /** Batches loaded ahead of training (default 2). */
  prefetch?: number;
  /** No progress bars, no log lines (default false). */
  quiet?: boolean;
  /** Where log lines go (default: stderr). */
  log?: (line: string) => void;
  /** Stops the run (between batches) when aborted; the last checkpoint stays. */
  signal?: AbortSignal;
  /** Called after every training micro-batch (e.g. to interrupt a test run). */
  onBatch?: (info: { epoch: number; batch: number }) => void;
}

/** One line of `metrics.jsonl`. */
export interface EpochMetrics {
  /** 1-based epoch. */
  epoch: number;
  /** Mean training loss (label-smoothed, augmented images). */
  trainLoss: number;
  /** Training accuracy (augmented images, training mode). */
  trainAccuracy: number;
  /** Validation loss (plain cross entropy), null without validation images. */
  valLoss: number | null;
  /** Validation accuracy, null without validation images. */
  valAccuracy: number | null;
  /** Training images per second (loading overlapped, validation excluded). */
  imagesPerSecond: number;
  /** Learning rate at the epoch's last step. */
  lr: number;
  /** With `ema`: validation loss of the averaged weights. */
  emaValLoss?: number | null;
  /** With `ema`: validation accuracy of the averaged weights. */
  emaValAccuracy?: number | null;
}

/** What {@link finetune} returns. */
export interface FinetuneResult {
  /** Class names (head index order). */
  classes: string[];
  /** Metrics of every epoch, including those of an earlier interrupted run. */
  metrics: EpochMetrics[];
  /** Best epoch (1-based) and its validation accuracy (null without validation). */
  best: { epoch: number; valAccuracy: number | null; weights: "model" | "ema" } | null;
  /** The final validation report of the best model, null without validation images. */
  report: ValidationReport | null;
  /** Directory of the best model. */
  bestDir: string;
  /** Epoch the run started at (> 0 after a resume). */
  startEpoch: number;
  /** Probe mode: what the feature extraction did (cache hits, decodes, forwards). */
  featureStats?: FeatureStats;
  /** Images that could not be read, with reasons (each reported once). */
  skipped: { path: string; message: string }[];
  /** The held-out validation images (path and class index), e.g. to show predictions. */
  validation: Sample[];
}

/**
 * Fine-tune a ConvNeXt (see the module doc). Resolves when all epochs are done.
 *
 * The steps: check the options and the output directory ({@link checkRun}), load the model,
 * plan the run, load the checkpoint to resume, build the trained model and its batches,
 * restore the checkpoint's tensors, run the remaining epochs, write the final report.
 *
 * @throws OptionError (lib/util/errors.ts) with a one-line message naming the option for bad
 *   options, a dataset without images, or a checkpoint that does not match the options on
 *   `resume`.
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { finetune } from "./finetune.ts";
 * await selectBackend("cpu");
 * // The real run: finetune({ model: "convnext_tiny_1k_224", data: "flowers/", out, epochs: 5 }).
 * // Here: the tests' small checkpoint and a 5-class image folder, a linear probe.
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * const out = `${await Deno.makeTempDir()}/run`;
 * const result = await finetune({
 *   model: `${fix}tiny10.pth`, data: `${fix}imagefolder`, out, mode: "probe", epochs: 2,
 *   size: 64, valSplit: 0.34, workers: 0, quiet: true,
 * });
 * console.log(result.best?.valAccuracy, result.bestDir); // the best model is saved there
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function finetune(options: FinetuneOptions): Promise<FinetuneResult> {
  const log = options.quiet ? () => {} : options.log ?? ((line: string) => console.error(line));
  // Everything is checked before a model is loaded (maybe downloaded).
  const { classes, samples, settings } = await checkRun(options);
  const base = await loadBaseModel(options.model);
  // A model loaded here is ours to free: once its weights are copied, or when we leave.
  let ownBase = typeof options.model === "string";
  const disposables: { dispose(): void }[] = [];
  let pool: LoadPool | undefined;
  try {
    const baseInfo = storedModelConfig(base);
    const o = withSize(settings, baseInfo?.preprocessing.size ?? 224);
    const plan = planRun(options, o, classes, samples);
    log(planSummary(plan));
    const checkpoint = options.resume ? await loadResumeCheckpoint(plan, log) : undefined;
    if (tf.getBackend() === "wasm" && o.mode === "full") installWasmTrainingKernels();
    if (tf.getBackend() === "webgpu") installWebGpuTrainingKernels();

    const skips = new SkipLog(log);
    pool = new LoadPool(options.workers);
    const sources = await batchSources({
      base,
      plan,
      pool,
      skip: (sample, message) => skips.report(sample, message),
      own: (model) => disposables.push(model),
      options,
      log,
    });
    // Every weight the run needs now lives in the sources' models.
    if (ownBase) {
      base.dispose();
      ownBase = false;
    }
    const trainer = await createTrainer(sources.trainable, plan, (d) => disposables.push(d), log);

    let state: RunState = initialState(plan.config);
    if (checkpoint) {
      state = checkpoint.state;
      restoreTensors(trainer.model, trainer.optimizer, trainer.ema, checkpoint.tensors, state.step);
      log(`resumed from ${plan.checkpointDir} after epoch ${state.epoch} (step ${state.step})`);
    }
    const startEpoch = state.epoch;
    const ctx = { plan, trainer, sources, state, baseInfo, options, log };
    for (let epoch = startEpoch; epoch < o.epochs; epoch++) await runEpoch(ctx, epoch);

    await writeFinalReport(plan, state, log);
    return {
      classes,
      metrics: state.metrics,
      best: state.best,
      report: state.report,
      bestDir: plan.bestDir,
      startEpoch,
      featureStats: sources.featureStats,
      skipped: skips.skipped,
      validation: plan.val,
    };
  } finally {
    await pool?.close();
    for (const d of disposables.reverse()) d.dispose();
    if (ownBase) base.dispose();
  }
}

/** `report.json` (the best epoch's validation report) and its summary in the log. */
async function writeFinalReport(
  plan: RunPlan,
  state: RunState,
  log: (line: string) => void,
): Promise<void> {
  if (!state.report) return;
  await writeFileAtomic(
    join(plan.out, "report.json"),
    JSON.stringify({ best: state.best, ...state.report }, null, 2) + "\n",
  );
  log(`best model: epoch ${state.best!.epoch} (${state.best!.weights} weights) in ${plan.bestDir}`);
  log(formatReport(state.report));
}
