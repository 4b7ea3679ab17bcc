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
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { basename, join, resolve } from "node:path";
import { installWasmTrainingKernels } from "../backend/wasm_grads.ts";
import { saveModel } from "../model/io.ts";
import { modelInfo, preprocessingFor } from "../weights/pretrained.ts";
import { exists, writeFileAtomic } from "../util/fs.ts";
import { ProgressBar } from "../util/progress.ts";
import {
  type Checkpoint,
  type CheckpointTensor,
  loadCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import { limitSamples, type Sample, splitStratified } from "./data.ts";
import { listImageFolder } from "../data/image_folder.ts";
import { ModelEma } from "./ema.ts";
import { loadBatches, LoadPool } from "./loader.ts";
import { correctCount, crossEntropy } from "./losses.ts";
import { loadBaseModel, rebuildForTraining } from "./model_setup.ts";
import { AdamW, type AdamWParam, type AdamWState, modelParams } from "./optimizer.ts";
import { ParallelGradients, trainThreads } from "./parallel.ts";
import { createProbeHead, extractFeatures, type FeatureStats } from "./probe.ts";
import { formatReport, type ValidationReport, validationReport } from "./report.ts";
import { hashSeed, mulberry32, permutation, STREAM, withSeededMathRandom } from "./rng.ts";
import { cosineSchedule } from "./schedule.ts";

/** Options of {@link finetune} (the CLI flags of `deno task finetune`). */
export interface FinetuneOptions {
  /** Starting model: zoo name, converted model directory, model.json, checkpoint file, or a model. */
  model: string | tf.LayersModel;
  /** ImageFolder root (`DIR/<class>/*.jpg`). */
  data: string;
  /** Output directory. */
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

interface ResolvedOptions {
  mode: "full" | "probe";
  epochs: number;
  batch: number;
  lr: number;
  minLr: number;
  warmupEpochs: number;
  updateFreq: number;
  weightDecay: number;
  layerDecay: number;
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

/** What a checkpoint's state.json holds. */
interface RunState {
  /** Settings that must match on resume. */
  config: Record<string, unknown>;
  /** Completed epochs. */
  epoch: number;
  /** Optimizer steps done. */
  step: number;
  metrics: EpochMetrics[];
  best: FinetuneResult["best"];
  report: ValidationReport | null;
}

function fail(flag: string, expected: string, got: unknown): never {
  throw new Error(`${flag}: expected ${expected}, got ${JSON.stringify(got)}`);
}

function resolveOptions(o: FinetuneOptions, defaultSize: number): ResolvedOptions {
  const mode = o.mode ?? "full";
  if (mode !== "full" && mode !== "probe") fail("--mode", `"full" or "probe"`, mode);
  const probe = mode === "probe";
  const int = (flag: string, v: number | undefined, d: number, min: number) => {
    const x = v ?? d;
    if (!Number.isInteger(x) || x < min) fail(flag, `an integer >= ${min}`, v);
    return x;
  };
  const num = (
    flag: string,
    v: number | undefined,
    d: number,
    ok: (x: number) => boolean,
    what: string,
  ) => {
    const x = v ?? d;
    if (!Number.isFinite(x) || !ok(x)) fail(flag, what, v);
    return x;
  };
  const r: ResolvedOptions = {
    mode,
    epochs: int("--epochs", o.epochs, probe ? 30 : 10, 1),
    batch: int("--batch", o.batch, probe ? 64 : 32, 1),
    lr: num("--lr", o.lr, probe ? 1e-3 : 1e-4, (x) => x > 0, "a number > 0"),
    minLr: num("--min-lr", o.minLr, 1e-6, (x) => x >= 0, "a number >= 0"),
    warmupEpochs: num("--warmup-epochs", o.warmupEpochs, 0, (x) => x >= 0, "a number >= 0"),
    updateFreq: int("--update-freq", o.updateFreq, 1, 1),
    weightDecay: num("--weight-decay", o.weightDecay, 0.05, (x) => x >= 0, "a number >= 0"),
    layerDecay: num("--layer-decay", o.layerDecay, 1, (x) => x > 0 && x <= 1, "a number in (0, 1]"),
    dropPath: probe
      ? 0
      : num("--drop-path", o.dropPath, 0.1, (x) => x >= 0 && x < 1, "a number in [0, 1)"),
    labelSmoothing: num(
      "--label-smoothing",
      o.labelSmoothing,
      0.1,
      (x) => x >= 0 && x < 1,
      "a number in [0, 1)",
    ),
    ema: o.ema ?? false,
    emaDecay: num("--ema-decay", o.emaDecay, 0.9999, (x) => x >= 0 && x < 1, "a number in [0, 1)"),
    headInitScale: num("--head-init-scale", o.headInitScale, 0.001, (x) => x > 0, "a number > 0"),
    seed: int("--seed", o.seed, 0, 0),
    size: int("--size", o.size, defaultSize, 33),
    valSplit: num("--val-split", o.valSplit, 0.2, (x) => x >= 0 && x < 1, "a number in [0, 1)"),
    limit: o.limit === undefined ? null : int("--limit", o.limit, 0, 1),
  };
  if (probe && o.dropPath) {
    fail("--drop-path", "0 in probe mode (the backbone is frozen)", o.dropPath);
  }
  return r;
}

/** A training micro-batch or validation batch as tensors. */
interface TensorBatch {
  x: tf.Tensor;
  labels: Int32Array;
}

/**
 * Fine-tune a ConvNeXt (see the module doc). Resolves when all epochs are done.
 *
 * @throws Error with a one-line message for bad options, a dataset without images, or a
 *   checkpoint that does not match the options on `resume`.
 * @example
 * ```ts
 * import { finetune } from "./finetune.ts";
 * const result = await finetune({
 *   model: "convnext_tiny_1k_224", data: "flowers/", out: "runs/flowers", epochs: 5,
 * });
 * console.log(result.best, result.report?.accuracy);
 * ```
 */
export async function finetune(options: FinetuneOptions): Promise<FinetuneResult> {
  const log = options.quiet ? () => {} : options.log ?? ((line: string) => console.error(line));
  const out = options.out;
  if (!out) fail("--out", "an output directory", out);
  const dataset = await listImageFolder(options.data);
  // Check every option and the output directory before loading (maybe downloading) a model.
  resolveOptions(options, 224);
  const checkpointDir = join(out, "checkpoint");
  const bestDir = join(out, "best");
  if (!options.resume && await exists(checkpointDir)) {
    throw new Error(
      `--out ${out}: holds a checkpoint of an earlier run; pass --resume to continue it or choose another --out`,
    );
  }
  const base = await loadBaseModel(options.model);
  const ownsBase = typeof options.model === "string";
  /** Frees a model loaded here before an error leaves (later, the finally block does). */
  const bail = (e: Error): never => {
    if (ownsBase) base.dispose();
    throw e;
  };
  const baseInfo = modelInfo(base);
  const o = resolveOptions(options, baseInfo?.preprocessing.size ?? 224);
  const classes = dataset.classes;
  const samples = o.limit ? limitSamples(dataset.samples, o.limit) : dataset.samples;
  const { train, val } = splitStratified(samples, o.valSplit, o.seed);
  if (train.length === 0) {
    bail(new Error(`--data ${options.data}: no training images after the split`));
  }
  const batch = Math.min(o.batch, train.length);
  const stepsPerEpoch = Math.max(1, Math.floor(train.length / (batch * o.updateFreq)));
  const microBatches = stepsPerEpoch * o.updateFreq;
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
  log(
    `finetune (${o.mode}): ${classes.length} classes, ${train.length} train / ${val.length} val images, ` +
      `batch ${batch} x ${o.updateFreq}, ${stepsPerEpoch} steps/epoch, ${o.epochs} epochs, size ${o.size}`,
  );

  let checkpoint: Checkpoint<RunState> | undefined;
  if (options.resume) {
    checkpoint = await loadCheckpoint<RunState>(checkpointDir).catch(bail);
    if (!checkpoint) log(`--resume: no checkpoint in ${checkpointDir}; starting from epoch 1`);
  }
  if (checkpoint) {
    const saved = checkpoint.state.config;
    const diff = Object.keys({ ...saved, ...config }).filter((k) =>
      JSON.stringify(saved[k]) !== JSON.stringify(config[k])
    );
    if (diff.length > 0) {
      bail(
        new Error(
          `--resume: the checkpoint in ${checkpointDir} was made with other settings: ${
            diff.map((k) => `${k} ${JSON.stringify(saved[k])} (now ${JSON.stringify(config[k])})`)
              .join(", ")
          }`,
        ),
      );
    }
  }

  if (tf.getBackend() === "wasm" && o.mode === "full") installWasmTrainingKernels();

  const skipped: FinetuneResult["skipped"] = [];
  const reported = new Set<string>();
  const reportFailure = (sample: Sample, message: string) => {
    if (reported.has(sample.path)) return;
    reported.add(sample.path);
    skipped.push({ path: sample.path, message });
    log(`skipping unreadable image: ${message}`);
  };

  let baseAlive = true;
  const pool = new LoadPool(options.workers);
  const disposables: { dispose(): void }[] = [];
  try {
    // ---- The trainable model, its forward pass and the batch sources. --------------------
    let trainable: tf.LayersModel;
    /** The full model saved as `best/`. */
    let fullModel: tf.LayersModel;
    let trainBatches: (epoch: number) => AsyncGenerator<TensorBatch & { index: number }>;
    let valBatches: () => AsyncGenerator<TensorBatch>;
    let featureStats: FeatureStats | undefined;
    const perImage = o.size * o.size * 3;

    /** Sample order of an epoch: a seeded permutation, repeated if batches need more. */
    const epochOrder = (epoch: number) => {
      const perm = permutation(train.length, mulberry32(hashSeed(o.seed, STREAM.order, epoch)));
      return Array.from(
        { length: microBatches },
        (_, b) => Array.from({ length: batch }, (_, k) => perm[(b * batch + k) % train.length]),
      );
    };

    if (o.mode === "probe") {
      const bar = new ProgressBar({
        label: "features",
        total: train.length + val.length,
        itemName: "img",
        quiet: options.quiet,
      });
      const all = [...train, ...val];
      const extracted = await extractFeatures(base, pool, all, {
        size: o.size,
        cacheDir: options.featuresCache ?? join(out, "features-cache"),
        batch: o.batch,
        onFailure: reportFailure,
        onProgress: (done) => bar.update(done),
      });
      bar.done();
      featureStats = extracted.stats;
      log(
        `features: ${extracted.stats.memoryHits + extracted.stats.diskHits} cached, ` +
          `${extracted.stats.decoded} computed, ${extracted.stats.failed} unreadable`,
      );
      const dim = extracted.dim;
      const trainFeat = extracted.features.slice(0, train.length);
      const valFeat = extracted.features.slice(train.length);
      const okTrain = train.map((_, i) => i).filter((i) => trainFeat[i] !== null);
      const okVal = val.map((_, i) => i).filter((i) => valFeat[i] !== null);
      if (okTrain.length === 0) {
        throw new Error(`--data ${options.data}: no readable training images`);
      }
      trainable = createProbeHead(dim, classes.length, {
        headInitScale: o.headInitScale,
        seed: hashSeed(o.seed, STREAM.init),
      });
      disposables.push(trainable);
      fullModel = rebuildForTraining(base, { numClasses: classes.length }).model;
      disposables.push(fullModel);
      const toBatch = (rows: number[], feats: (Float32Array | null)[], labelsOf: Sample[]) => {
        const data = new Float32Array(rows.length * dim);
        rows.forEach((r, k) => data.set(feats[r]!, k * dim));
        return {
          x: tf.tensor2d(data, [rows.length, dim]),
          labels: Int32Array.from(rows, (r) => labelsOf[r].label),
        };
      };
      trainBatches = async function* (epoch) {
        for (const [index, rows] of epochOrder(epoch).entries()) {
          const ok = rows.filter((r) => trainFeat[r] !== null);
          if (ok.length > 0) yield { ...toBatch(ok, trainFeat, train), index };
        }
      };
      valBatches = async function* () {
        for (let k = 0; k < okVal.length; k += o.batch) {
          yield toBatch(okVal.slice(k, k + o.batch), valFeat, val);
        }
      };
    } else {
      const rebuilt = rebuildForTraining(base, {
        numClasses: classes.length,
        dropPathRate: o.dropPath,
        headInitScale: o.headInitScale,
        seed: hashSeed(o.seed, STREAM.init),
      });
      trainable = fullModel = rebuilt.model;
      disposables.push(trainable);
      log(
        rebuilt.newHead
          ? `new ${classes.length}-class head (init scale ${o.headInitScale})`
          : "keeping the model's head",
      );
      trainBatches = async function* (epoch) {
        const order = epochOrder(epoch).map((rows) => rows.map((r) => train[r]));
        const batches = loadBatches(pool, order, {
          size: o.size,
          mode: "train",
          prefetch: options.prefetch,
          seedOf: (b, k) => hashSeed(o.seed, STREAM.augment, epoch, b * batch + k),
        });
        for await (const b of batches) {
          for (const f of b.failures) reportFailure(f.sample, f.message);
          if (b.samples.length === 0) continue;
          yield {
            x: tf.tensor4d(b.data, [b.samples.length, o.size, o.size, 3]),
            labels: b.labels,
            index: b.index,
          };
        }
      };
      // Keep the preprocessed validation images when they fit in 256 MB, else reload.
      const cacheVal = val.length * perImage * 4 <= 256 * 1024 * 1024;
      let valCache: { data: Float32Array; labels: Int32Array }[] | null = null;
      valBatches = async function* () {
        if (valCache) {
          for (const b of valCache) {
            yield {
              x: tf.tensor4d(b.data, [b.labels.length, o.size, o.size, 3]),
              labels: b.labels,
            };
          }
          return;
        }
        const groups: Sample[][] = [];
        for (let k = 0; k < val.length; k += batch) groups.push(val.slice(k, k + batch));
        const kept: { data: Float32Array; labels: Int32Array }[] = [];
        for await (
          const b of loadBatches(pool, groups, {
            size: o.size,
            mode: "eval",
            prefetch: options.prefetch,
          })
        ) {
          for (const f of b.failures) reportFailure(f.sample, f.message);
          if (b.samples.length === 0) continue;
          if (cacheVal) kept.push({ data: b.data, labels: b.labels });
          yield { x: tf.tensor4d(b.data, [b.samples.length, o.size, o.size, 3]), labels: b.labels };
        }
        if (cacheVal) valCache = kept;
      };
    }
    // Every weight the run needs now lives in `trainable`/`fullModel`.
    if (ownsBase) {
      base.dispose();
      baseAlive = false;
    }

    const forward = (x: tf.Tensor, training: boolean) =>
      trainable.apply(x, { training }) as tf.Tensor;
    const params: AdamWParam[] = modelParams(trainable, {
      weightDecay: o.weightDecay,
      layerDecay: o.mode === "full" ? o.layerDecay : 1,
    });
    const optimizer = new AdamW(params);
    disposables.push(optimizer);
    const ema = o.ema ? new ModelEma(trainable, o.emaDecay) : undefined;
    if (ema) disposables.push(ema);
    const paramName = new Map(params.map((p) => [p.variable.name, p.name]));
    // Full mode on wasm: split each micro-batch over worker threads (./parallel.ts), one wasm
    // backend each; CONVNEXT_TRAIN_THREADS=1 keeps the single-threaded path below.
    // Drop-path masks depend on the thread count (each shard has its own seed), so an exact
    // resume with drop path needs the same thread count as the interrupted run.
    const threads = o.mode === "full" && tf.getBackend() === "wasm" ? trainThreads(batch) : 1;
    let parallel: ParallelGradients | null = null;
    if (threads > 1) {
      parallel = await ParallelGradients.start(trainable, params, { threads });
      disposables.push(parallel);
      log(`training on ${threads} threads (data parallel)`);
    }

    // ---- Resume. --------------------------------------------------------------------------
    let state: RunState = { config, epoch: 0, step: 0, metrics: [], best: null, report: null };
    if (checkpoint) {
      state = checkpoint.state;
      restoreTensors(trainable, optimizer, ema, checkpoint.tensors, state.step);
      log(`resumed from ${checkpointDir} after epoch ${state.epoch} (step ${state.step})`);
    }
    const startEpoch = state.epoch;

    // ---- Epochs. --------------------------------------------------------------------------
    const evaluate = async (): Promise<
      { loss: number; accuracy: number; truth: number[]; pred: number[] } | null
    > => {
      if (val.length === 0) return null;
      let lossSum = 0;
      const truth: number[] = [];
      const pred: number[] = [];
      for await (const b of valBatches()) {
        const labels = tf.tensor1d(b.labels, "int32");
        const [loss, argmax] = tf.tidy(() => {
          const logits = forward(b.x, false);
          return [crossEntropy(logits, labels, 0), tf.argMax(logits, -1)];
        });
        lossSum += (await loss.data())[0] * b.labels.length;
        pred.push(...await argmax.data());
        truth.push(...b.labels);
        tf.dispose([loss, argmax, labels, b.x]);
      }
      if (truth.length === 0) return null;
      const correct = truth.filter((t, i) => t === pred[i]).length;
      return { loss: lossSum / truth.length, accuracy: correct / truth.length, truth, pred };
    };

    for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      const bar = new ProgressBar({
        label: `epoch ${epoch + 1}/${o.epochs}`,
        total: microBatches * batch,
        itemName: "img",
        quiet: options.quiet,
      });
      let lossSum = 0, correct = 0, seen = 0;
      let acc: Map<string, tf.Tensor> | null = null;
      let accCount = 0;
      const started = performance.now();
      let lr = lrSchedule[epoch * stepsPerEpoch];
      for await (const b of trainBatches(epoch)) {
        if (options.signal?.aborted) {
          b.x.dispose();
          bar.abort();
          throw options.signal.reason ?? new Error("finetune: aborted");
        }
        const step = epoch * stepsPerEpoch + Math.floor(b.index / o.updateFreq);
        const n = b.labels.length;
        const stepSeed = hashSeed(o.seed, STREAM.dropPath, epoch, b.index);
        let named: Map<string, tf.Tensor>;
        if (parallel) {
          // Shard k's drop-path masks come from hashSeed(stepSeed, k) (see ./parallel.ts).
          const r = parallel.gradients(b.x, b.labels, {
            smoothing: o.labelSmoothing,
            scale: 1 / o.updateFreq,
            seed: stepSeed,
          });
          lossSum += r.loss * n;
          correct += r.correct;
          b.x.dispose();
          named = r.grads;
        } else {
          const labels = tf.tensor1d(b.labels, "int32");
          let logits: tf.Tensor | undefined;
          const { value, grads } = withSeededMathRandom(
            stepSeed,
            () =>
              tf.variableGrads(() => {
                const y = forward(b.x, true);
                logits = tf.keep(y);
                return tf.div(
                  crossEntropy(y, labels, o.labelSmoothing),
                  o.updateFreq,
                ) as tf.Scalar;
              }, optimizer.variables),
          );
          lossSum += (await value.data())[0] * o.updateFreq * n;
          correct += correctCount(logits!, labels);
          tf.dispose([value, logits!, labels, b.x]);
          named = new Map(Object.entries(grads).map(([k, g]) => [paramName.get(k)!, g]));
        }
        seen += n;
        // Sum the micro-batch gradients (each already divided by updateFreq).
        if (!acc) {
          acc = named;
        } else {
          for (const [k, g] of named) {
            const sum = tf.add(acc.get(k)!, g);
            tf.dispose([acc.get(k)!, g]);
            acc.set(k, sum);
          }
        }
        accCount++;
        if (accCount === o.updateFreq || b.index === microBatches - 1) {
          lr = lrSchedule[Math.min(step, lrSchedule.length - 1)];
          optimizer.step(acc, lr);
          ema?.update();
          for (const g of acc.values()) g.dispose();
          acc = null;
          accCount = 0;
          state.step = step + 1;
        }
        bar.update((b.index + 1) * batch, { loss: lossSum / seen, acc: correct / seen });
        options.onBatch?.({ epoch: epoch + 1, batch: b.index + 1 });
      }
      if (acc) { for (const g of acc.values()) g.dispose(); }
      const seconds = (performance.now() - started) / 1000;
      bar.done();
      const evaluation = await evaluate();
      const emaEvaluation = ema ? await ema.withAveraged(evaluate) : null;
      const metrics: EpochMetrics = {
        epoch: epoch + 1,
        trainLoss: seen > 0 ? lossSum / seen : NaN,
        trainAccuracy: seen > 0 ? correct / seen : 0,
        valLoss: evaluation?.loss ?? null,
        valAccuracy: evaluation?.accuracy ?? null,
        imagesPerSecond: seen / seconds,
        lr,
      };
      if (ema) {
        metrics.emaValLoss = emaEvaluation?.loss ?? null;
        metrics.emaValAccuracy = emaEvaluation?.accuracy ?? null;
      }
      // Best model: highest validation accuracy (the EMA's when it is higher); without
      // validation images, the last epoch.
      const useEma = !!emaEvaluation && !!evaluation &&
        emaEvaluation.accuracy > evaluation.accuracy;
      const candidate = useEma ? emaEvaluation : evaluation;
      const previous = state.best?.valAccuracy ?? -1;
      if (!state.best || candidate === null || candidate.accuracy > previous) {
        state.best = {
          epoch: epoch + 1,
          valAccuracy: candidate?.accuracy ?? null,
          weights: useEma ? "ema" : "model",
        };
        state.report = candidate
          ? validationReport(classes, candidate.truth, candidate.pred)
          : null;
        const save = async () => {
          if (o.mode === "probe") copyHead(trainable, fullModel);
          await saveModel(fullModel, bestDir, {
            overwrite: true,
            metadata: bestMetadata(
              fullModel,
              baseInfo,
              o,
              classes,
              state.best!,
              modelLabel,
              options.data,
            ),
          });
        };
        if (useEma) await ema!.withAveraged(save);
        else await save();
      }
      state.epoch = epoch + 1;
      state.metrics = [...state.metrics, metrics];
      await saveCheckpoint(checkpointDir, {
        state,
        tensors: await collectTensors(trainable, optimizer, ema),
      });
      await writeFileAtomic(
        join(out, "metrics.jsonl"),
        state.metrics.map((m) => JSON.stringify(m)).join("\n") + "\n",
      );
      log(
        `epoch ${epoch + 1}/${o.epochs}: train loss ${metrics.trainLoss.toFixed(4)} acc ${
          (metrics.trainAccuracy * 100).toFixed(1)
        }%` +
          (evaluation
            ? `, val loss ${evaluation.loss.toFixed(4)} acc ${
              (evaluation.accuracy * 100).toFixed(1)
            }%`
            : "") +
          (emaEvaluation ? `, ema val acc ${(emaEvaluation.accuracy * 100).toFixed(1)}%` : "") +
          `, ${metrics.imagesPerSecond.toFixed(1)} img/s`,
      );
    }

    if (state.report) {
      await writeFileAtomic(
        join(out, "report.json"),
        JSON.stringify({ best: state.best, ...state.report }, null, 2) + "\n",
      );
      log(`best model: epoch ${state.best!.epoch} (${state.best!.weights} weights) in ${bestDir}`);
      log(formatReport(state.report));
    }
    return {
      classes,
      metrics: state.metrics,
      best: state.best,
      report: state.report,
      bestDir,
      startEpoch,
      featureStats,
      skipped,
      validation: val,
    };
  } finally {
    pool.close();
    for (const d of disposables.reverse()) d.dispose();
    if (ownsBase && baseAlive) base.dispose();
  }
}

/** Copies the probe head's weights into the full model's `head_fc`. */
function copyHead(head: tf.LayersModel, full: tf.LayersModel): void {
  const target = new Map(full.getLayer("head_fc").weights.map((w) => [w.originalName, w]));
  for (const w of head.getLayer("head_fc").weights) target.get(w.originalName)!.write(w.read());
}

/** Metadata stored with the best model: the ModelInfo of the new task and the class names. */
function bestMetadata(
  model: tf.LayersModel,
  baseInfo: ReturnType<typeof modelInfo>,
  o: ResolvedOptions,
  classes: string[],
  best: NonNullable<FinetuneResult["best"]>,
  modelLabel: string,
  data: string,
): Record<string, unknown> {
  return {
    convnext: {
      architecture: baseInfo?.architecture ?? "convnext_custom",
      spec: baseInfo?.spec ?? undefined,
      numClasses: classes.length,
      labels: null,
      preprocessing: preprocessingFor(o.size),
      source: baseInfo?.source ?? { file: basename(modelLabel), sha256: "", layout: "tfjs" },
    },
    classes,
    finetune: {
      mode: o.mode,
      from: modelLabel,
      data: resolve(data),
      epoch: best.epoch,
      valAccuracy: best.valAccuracy,
      weights: best.weights,
      model: model.name,
    },
  };
}

async function collectTensors(
  model: tf.LayersModel,
  optimizer: AdamW,
  ema: ModelEma | undefined,
): Promise<CheckpointTensor[]> {
  const out: CheckpointTensor[] = [];
  for (const w of model.weights) {
    out.push({
      group: "model",
      name: w.originalName,
      shape: w.shape as number[],
      data: await w.read().data() as Float32Array,
    });
  }
  const s = await optimizer.getState();
  for (const slot of s.slots) {
    out.push({ group: "adam_m", name: slot.name, shape: slot.shape, data: slot.m });
    out.push({ group: "adam_v", name: slot.name, shape: slot.shape, data: slot.v });
  }
  for (const e of await ema?.getState() ?? []) {
    out.push({ group: "ema", name: e.name, shape: e.shape, data: e.data });
  }
  return out;
}

function restoreTensors(
  model: tf.LayersModel,
  optimizer: AdamW,
  ema: ModelEma | undefined,
  tensors: CheckpointTensor[],
  step: number,
): void {
  const group = (g: string) =>
    new Map(tensors.filter((t) => t.group === g).map((t) => [t.name, t]));
  const weights = group("model");
  for (const w of model.weights) {
    const t = weights.get(w.originalName);
    if (!t || t.shape.join() !== w.shape.join()) {
      throw new Error(
        `--resume: the checkpoint has no weight "${w.originalName}" of shape [${w.shape}]`,
      );
    }
    const value = tf.tensor(t.data, t.shape, "float32");
    w.write(value);
    value.dispose();
  }
  const m = group("adam_m");
  const v = group("adam_v");
  const state: AdamWState = {
    step,
    slots: [...m.values()].map((t) => ({
      name: t.name,
      shape: t.shape,
      m: t.data,
      v: v.get(t.name)?.data ?? new Float32Array(0),
    })),
  };
  optimizer.setState(state);
  if (ema) {
    ema.setState(
      [...group("ema").values()].map((t) => ({ name: t.name, shape: t.shape, data: t.data })),
    );
  }
}
