/**
 * The model a `finetune` (./finetune.ts) run trains and the batches it trains and validates on:
 * in `"full"` mode the rebuilt ConvNeXt on augmented images loaded in the background; in
 * `"probe"` mode a Dense head on backbone features computed once (and cached).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { join } from "node:path";
import { OptionError } from "../util/errors.ts";
import { ProgressBar } from "../util/progress.ts";
import type { Sample } from "./data.ts";
import { loadBatches, type LoadPool } from "./loader.ts";
import { rebuildForTraining } from "./model_setup.ts";
import { createProbeHead, extractFeatures, type FeatureStats } from "./probe.ts";
import { hashSeed, mulberry32, permutation, STREAM } from "./rng.ts";
import type { FinetuneResult } from "./finetune.ts";
import type { RunPlan } from "./finetune_setup.ts";

/** A training micro-batch or validation batch as tensors. */
export interface TensorBatch {
  /** Images (full) or features (probe); the consumer disposes it. */
  x: tf.Tensor;
  /** Class index of each row. */
  labels: Int32Array;
}

/** A training micro-batch and its position in the epoch. */
export interface TrainBatch extends TensorBatch {
  /** 0-based micro-batch index in the epoch. */
  index: number;
}

/** What the epochs train and feed. */
export interface BatchSources {
  /** The model the optimizer updates (probe: the head only). */
  trainable: tf.LayersModel;
  /** The full model saved as `best/` (full mode: `trainable` itself). */
  fullModel: tf.LayersModel;
  /** The micro-batches of an epoch, in its seeded order. */
  trainBatches: (epoch: number) => AsyncGenerator<TrainBatch>;
  /** The validation batches. */
  valBatches: () => AsyncGenerator<TensorBatch>;
  /** Probe mode: what the feature extraction did. */
  featureStats?: FeatureStats;
}

/** What building the sources needs besides the plan. */
export interface SourceContext {
  /** The loaded starting model (left alive: the caller disposes it). */
  base: tf.LayersModel;
  /** The run's plan. */
  plan: RunPlan;
  /** Image loading workers. */
  pool: LoadPool;
  /** Reports an unreadable image (once per path). */
  skip: (sample: Sample, message: string) => void;
  /** Takes ownership of a model as soon as it exists (disposed when the run ends). */
  own: (model: tf.LayersModel) => void;
  /** Options of the run that concern loading. */
  options: { data: string; quiet?: boolean; featuresCache?: string; prefetch?: number };
  /** Log lines. */
  log: (line: string) => void;
}

/**
 * Collects unreadable images: each is logged and listed once however often it is tried.
 */
export class SkipLog {
  /** The unreadable images, in the order met. */
  readonly skipped: FinetuneResult["skipped"] = [];
  readonly #seen = new Set<string>();
  readonly #log: (line: string) => void;

  /** Log lines go to `log`. */
  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  /** Records `sample` as unreadable (a no-op when already recorded). */
  report(sample: Sample, message: string): void {
    if (this.#seen.has(sample.path)) return;
    this.#seen.add(sample.path);
    this.skipped.push({ path: sample.path, message });
    this.#log(`skipping unreadable image: ${message}`);
  }
}

/**
 * Sample order of an epoch: a seeded permutation of the training rows, cut into
 * `plan.microBatches` micro-batches of `plan.batch`, repeated if the batches need more.
 */
export function epochOrder(plan: RunPlan, epoch: number): number[][] {
  const { train, batch, o } = plan;
  const perm = permutation(train.length, mulberry32(hashSeed(o.seed, STREAM.order, epoch)));
  return Array.from(
    { length: plan.microBatches },
    (_, b) => Array.from({ length: batch }, (_, k) => perm[(b * batch + k) % train.length]),
  );
}

/** The trainable model and batch sources of the plan's mode. */
export function batchSources(ctx: SourceContext): Promise<BatchSources> | BatchSources {
  return ctx.plan.o.mode === "probe" ? probeSources(ctx) : fullSources(ctx);
}

/**
 * Probe mode: the backbone's features of every image (cached), a new Dense head trained on
 * them, and a full model to copy the head into for `best/`.
 *
 * @throws OptionError naming `data` when no training image is readable.
 */
export async function probeSources(ctx: SourceContext): Promise<BatchSources> {
  const { plan, options } = ctx;
  const { o, train, val, classes } = plan;
  const bar = new ProgressBar({
    label: "features",
    total: train.length + val.length,
    itemName: "img",
    quiet: options.quiet,
  });
  const extracted = await extractFeatures(ctx.base, ctx.pool, [...train, ...val], {
    size: o.size,
    cacheDir: options.featuresCache ?? join(plan.out, "features-cache"),
    batch: o.batch,
    onFailure: ctx.skip,
    onProgress: (done) => bar.update(done),
  });
  bar.done();
  const stats = extracted.stats;
  ctx.log(
    `features: ${stats.memoryHits + stats.diskHits} cached, ` +
      `${stats.decoded} computed, ${stats.failed} unreadable`,
  );
  const dim = extracted.dim;
  const trainFeat = extracted.features.slice(0, train.length);
  const valFeat = extracted.features.slice(train.length);
  const okVal = val.map((_, i) => i).filter((i) => valFeat[i] !== null);
  if (!trainFeat.some((f) => f !== null)) {
    throw new OptionError(
      "data",
      (name) => `finetune: ${name("data")} ${options.data}: no readable training images`,
    );
  }
  const trainable = createProbeHead(dim, classes.length, {
    headInitScale: o.headInitScale,
    seed: hashSeed(o.seed, STREAM.init),
  });
  ctx.own(trainable);
  const fullModel = rebuildForTraining(ctx.base, { numClasses: classes.length }).model;
  ctx.own(fullModel);
  return {
    trainable,
    fullModel,
    featureStats: stats,
    trainBatches: async function* (epoch) {
      for (const [index, rows] of epochOrder(plan, epoch).entries()) {
        const ok = rows.filter((r) => trainFeat[r] !== null);
        if (ok.length > 0) yield { ...featureBatch(ok, trainFeat, train, dim), index };
      }
    },
    valBatches: async function* () {
      for (let k = 0; k < okVal.length; k += o.batch) {
        yield featureBatch(okVal.slice(k, k + o.batch), valFeat, val, dim);
      }
    },
  };
}

/** The features of `rows` as one batch. */
function featureBatch(
  rows: number[],
  features: (Float32Array | null)[],
  samples: Sample[],
  dim: number,
): TensorBatch {
  const data = new Float32Array(rows.length * dim);
  rows.forEach((r, k) => data.set(features[r]!, k * dim));
  return {
    x: tf.tensor2d(data, [rows.length, dim]),
    labels: Int32Array.from(rows, (r) => samples[r].label),
  };
}

/** Full mode: the ConvNeXt rebuilt for training (new head if the classes differ). */
export function fullSources(ctx: SourceContext): BatchSources {
  const { o, classes } = ctx.plan;
  const rebuilt = rebuildForTraining(ctx.base, {
    numClasses: classes.length,
    dropPathRate: o.dropPath,
    headInitScale: o.headInitScale,
    seed: hashSeed(o.seed, STREAM.init),
  });
  const model = rebuilt.model;
  ctx.own(model);
  ctx.log(
    rebuilt.newHead
      ? `new ${classes.length}-class head (init scale ${o.headInitScale})`
      : "keeping the model's head",
  );
  const val = new ValidationImages(ctx);
  return {
    trainable: model,
    fullModel: model,
    trainBatches: (epoch) => augmentedBatches(ctx, epoch),
    valBatches: () => val.batches(),
  };
}

/** The augmented training micro-batches of an epoch, loaded in the background. */
async function* augmentedBatches(ctx: SourceContext, epoch: number): AsyncGenerator<TrainBatch> {
  const { plan, options } = ctx;
  const { o, train, batch } = plan;
  const order = epochOrder(plan, epoch).map((rows) => rows.map((r) => train[r]));
  const batches = loadBatches(ctx.pool, order, {
    size: o.size,
    mode: "train",
    prefetch: options.prefetch,
    seedOf: (b, k) => hashSeed(o.seed, STREAM.augment, epoch, b * batch + k),
  });
  for await (const b of batches) {
    for (const f of b.failures) ctx.skip(f.sample, f.message);
    if (b.samples.length === 0) continue;
    yield {
      x: tf.tensor4d(b.data, [b.samples.length, o.size, o.size, 3]),
      labels: b.labels,
      index: b.index,
    };
  }
}

/**
 * The validation images, preprocessed; kept after the first pass when they fit in 256 MB
 * (every epoch validates on the same images), else reloaded each time.
 */
class ValidationImages {
  readonly #ctx: SourceContext;
  readonly #keep: boolean;
  #cache: { data: Float32Array; labels: Int32Array }[] | null = null;

  constructor(ctx: SourceContext) {
    this.#ctx = ctx;
    const { val, o } = ctx.plan;
    this.#keep = val.length * o.size * o.size * 3 * 4 <= 256 * 1024 * 1024;
  }

  /** The validation batches, from the cache once there is one. */
  async *batches(): AsyncGenerator<TensorBatch> {
    const { plan, options, pool } = this.#ctx;
    const { size } = plan.o;
    const tensor = (data: Float32Array, n: number) => tf.tensor4d(data, [n, size, size, 3]);
    if (this.#cache) {
      for (const b of this.#cache) yield { x: tensor(b.data, b.labels.length), labels: b.labels };
      return;
    }
    const groups: Sample[][] = [];
    for (let k = 0; k < plan.val.length; k += plan.batch) {
      groups.push(plan.val.slice(k, k + plan.batch));
    }
    const kept: { data: Float32Array; labels: Int32Array }[] = [];
    for await (
      const b of loadBatches(pool, groups, { size, mode: "eval", prefetch: options.prefetch })
    ) {
      for (const f of b.failures) this.#ctx.skip(f.sample, f.message);
      if (b.samples.length === 0) continue;
      if (this.#keep) kept.push({ data: b.data, labels: b.labels });
      yield { x: tensor(b.data, b.samples.length), labels: b.labels };
    }
    if (this.#keep) this.#cache = kept;
  }
}
