/**
 * One epoch of a `finetune` (./finetune.ts) run: train on its micro-batches (gradients accumulated
 * over `updateFreq` of them per AdamW step, then the EMA update), validate (the EMA's
 * averaged weights too), keep the best model in `best/`, then checkpoint the run and write
 * `metrics.jsonl`, so that an interruption loses at most the epoch in progress.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { basename, join, resolve } from "node:path";
import { saveModel } from "../model/io.ts";
import { MODEL_CONFIG_KEY, preprocessingFor, type storedModelConfig } from "../model/config.ts";
import { HEAD_FC } from "../model/names.ts";
import { CUSTOM_ARCHITECTURE } from "../model/architecture.ts";
import { writeFileAtomic } from "../util/fs.ts";
import { ProgressBar } from "../util/progress.ts";
import { saveCheckpoint } from "./checkpoint.ts";
import { ModelEma } from "./ema.ts";
import { countCorrect, crossEntropy } from "./losses.ts";
import { AdamW, type AdamWKernel, modelParams } from "./optimizer.ts";
import {
  type GradientStepOptions,
  type GradientStepResult,
  ParallelGradients,
  trainThreads,
} from "./parallel.ts";
import { engineGradientsFor } from "./engine_grads.ts";
import { validationReport } from "./report.ts";
import { hashSeed, STREAM, withSeededMathRandom } from "./rng.ts";
import type { EpochMetrics, FinetuneOptions, FinetuneResult } from "./finetune.ts";
import type { ResolvedOptions, RunPlan } from "./finetune_setup.ts";
import type { BatchSources, TensorBatch, TrainBatch } from "./finetune_sources.ts";
import { collectTensors, type RunState } from "./finetune_state.ts";

/** A batch's loss gradients off the main thread's TF.js tape: the engine, or TF.js threads. */
export interface GradientSource {
  /** The gradients of `scale * mean loss` of a batch, by parameter name. */
  gradients(
    x: tf.Tensor,
    labels: Int32Array,
    options: GradientStepOptions & { tensors?: boolean },
  ): GradientStepResult;
}

/** What updates the weights: the optimizer, the EMA, and the worker threads if any. */
export interface Trainer {
  /** The model being trained. */
  model: tf.LayersModel;
  /** AdamW over the model's trainable weights. */
  optimizer: AdamW;
  /** The weights' moving average, with `ema`. */
  ema: ModelEma | undefined;
  /**
   * Where the gradients come from: the kernel engine (./engine_grads.ts), TF.js on worker
   * threads (./parallel.ts), or null for TF.js on the main thread.
   */
  parallel: GradientSource | null;
  /** Parameter name of each variable name (the gradients' keys). */
  paramName: Map<string, string>;
  /**
   * AdamW on the kernel engine (./engine_adamw.ts) when the engine trains with one
   * micro-batch per update: the gradients then stay in the engine (no tensors).
   */
  engineAdamW: AdamWKernel | null;
}

/**
 * The optimizer, EMA and (full mode) gradient source of `model`: on wasm and cpu the kernel
 * engine when it can run the model (./engine_grads.ts; `CONVNEXT_TRAIN_PATH=stock` keeps
 * TF.js), else TF.js's kernels, split over threads on wasm. Each is handed to `own` as soon
 * as it exists, to be disposed when the run ends.
 */
export async function createTrainer(
  model: tf.LayersModel,
  plan: RunPlan,
  own: (d: { dispose(): void }) => void,
  log: (line: string) => void,
): Promise<Trainer> {
  const { o } = plan;
  const params = modelParams(model, {
    weightDecay: o.weightDecay,
    layerDecay: o.mode === "full" ? o.layerDecay : 1,
    layerDecayType: o.layerDecayType,
  });
  const optimizer = new AdamW(params);
  own(optimizer);
  const ema = o.ema ? new ModelEma(model, o.emaDecay) : undefined;
  if (ema) own(ema);
  const paramName = new Map(params.map((p) => [p.variable.name, p.name]));
  // The kernel engine (wasm and cpu), its threads sharing one copy of the weights; its
  // drop-path masks are the single-threaded TF.js path's, whatever the thread count.
  // With one micro-batch per update, AdamW runs on the engine too, on the gradients where
  // they are (accumulating micro-batches keeps TF.js's sum and update).
  const engine = o.mode === "full"
    ? await engineGradientsFor(model, params, trainThreads(plan.batch), {
      adamw: o.updateFreq === 1,
    })
    : null;
  if (engine) {
    own(engine);
    const t = engine.threads;
    log(`training on the kernel engine, ${t} thread${t > 1 ? "s" : ""}`);
    return { model, optimizer, ema, parallel: engine, paramName, engineAdamW: engine.adamw };
  }
  // TF.js on wasm: split each micro-batch over worker threads (./parallel.ts), one wasm
  // backend each; CONVNEXT_TRAIN_THREADS=1 keeps the single-threaded path.
  // Drop-path masks depend on the thread count (each shard has its own seed), so an exact
  // resume with drop path needs the same thread count as the interrupted run.
  const threads = o.mode === "full" && tf.getBackend() === "wasm" ? trainThreads(plan.batch) : 1;
  let parallel: ParallelGradients | null = null;
  if (threads > 1) {
    parallel = await ParallelGradients.start(model, params, { threads });
    own(parallel);
    log(`training on ${threads} threads (data parallel)`);
  }
  return { model, optimizer, ema, parallel, paramName, engineAdamW: null };
}

/** Everything an epoch works with. */
export interface EpochContext {
  /** The run's plan. */
  plan: RunPlan;
  /** The optimizer and friends. */
  trainer: Trainer;
  /** The models and batches. */
  sources: BatchSources;
  /** The run's state, updated by each epoch. */
  state: RunState;
  /** The starting model's metadata (for `best/`'s). */
  baseInfo: ReturnType<typeof storedModelConfig>;
  /** Run options that act during the epochs. */
  options: Pick<FinetuneOptions, "data" | "quiet" | "signal" | "onBatch">;
  /** Log lines. */
  log: (line: string) => void;
}

/** Train, validate, keep the best model, checkpoint, and log epoch `epoch` (0-based). */
export async function runEpoch(ctx: EpochContext, epoch: number): Promise<void> {
  const { state, trainer: { ema } } = ctx;
  const training = await trainEpoch(ctx, epoch);
  const evaluation = await validate(ctx);
  const emaEvaluation = ema ? await ema.withAveraged(() => validate(ctx)) : null;
  const metrics: EpochMetrics = {
    epoch: epoch + 1,
    trainLoss: training.seen > 0 ? training.lossSum / training.seen : NaN,
    trainAccuracy: training.seen > 0 ? training.correct / training.seen : 0,
    valLoss: evaluation?.loss ?? null,
    valAccuracy: evaluation?.accuracy ?? null,
    imagesPerSecond: training.seen / training.seconds,
    lr: training.lr,
  };
  if (ema) {
    metrics.emaValLoss = emaEvaluation?.loss ?? null;
    metrics.emaValAccuracy = emaEvaluation?.accuracy ?? null;
  }
  await keepBest(ctx, epoch, evaluation, emaEvaluation);
  state.epoch = epoch + 1;
  state.metrics = [...state.metrics, metrics];
  await saveProgress(ctx);
  ctx.log(epochLine(ctx.plan.o, metrics, evaluation, emaEvaluation));
}

/** Sums over an epoch's training micro-batches. */
interface EpochTraining {
  /** Sum of the per-image losses. */
  lossSum: number;
  /** Correctly classified images. */
  correct: number;
  /** Images trained on. */
  seen: number;
  /** Seconds the epoch's training took. */
  seconds: number;
  /** Learning rate of the last step. */
  lr: number;
}

/**
 * The training half of an epoch: every micro-batch's gradients, summed over `updateFreq`
 * micro-batches per optimizer step (and the epoch's last one).
 *
 * @throws the signal's reason when the run is aborted (between micro-batches).
 */
async function trainEpoch(ctx: EpochContext, epoch: number): Promise<EpochTraining> {
  const { plan, trainer, state, options } = ctx;
  const { o, batch, microBatches, stepsPerEpoch, lrSchedule } = plan;
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
  for await (const b of ctx.sources.trainBatches(epoch)) {
    if (options.signal?.aborted) {
      b.x.dispose();
      bar.abort();
      throw options.signal.reason ?? new Error("finetune: aborted");
    }
    const step = epoch * stepsPerEpoch + Math.floor(b.index / o.updateFreq);
    const n = b.labels.length;
    const g = await batchGradients(trainer, o, b, epoch);
    if (!Number.isFinite(g.loss)) {
      // A NaN loss would train on NaN for every later step and still exit 0.
      tf.dispose([...g.grads.values(), ...(acc?.values() ?? [])]);
      bar.abort();
      throw new Error(
        `finetune: the loss is ${g.loss} at epoch ${epoch + 1}, step ${step + 1} (micro-batch ${
          b.index + 1
        }): lower lr, or check the model's weights and the data`,
      );
    }
    lossSum += g.loss * n;
    correct += g.correct;
    seen += n;
    acc = acc ? addGradients(acc, g.grads) : g.grads;
    accCount++;
    if (accCount === o.updateFreq || b.index === microBatches - 1) {
      lr = lrSchedule[Math.min(step, lrSchedule.length - 1)];
      if (trainer.engineAdamW) trainer.optimizer.stepWith(trainer.engineAdamW, lr);
      else trainer.optimizer.step(acc, lr);
      trainer.ema?.update();
      for (const t of acc.values()) t.dispose();
      acc = null;
      accCount = 0;
      state.step = step + 1;
    }
    bar.update((b.index + 1) * batch, { loss: lossSum / seen, acc: correct / seen });
    options.onBatch?.({ epoch: epoch + 1, batch: b.index + 1 });
  }
  if (acc) { for (const t of acc.values()) t.dispose(); }
  const seconds = (performance.now() - started) / 1000;
  bar.done();
  return { lossSum, correct, seen, seconds, lr };
}

/**
 * One micro-batch's gradients (already divided by `updateFreq`), its mean loss and its
 * correct count; disposes the batch. Drop path draws from a seed of the epoch and batch.
 */
async function batchGradients(
  trainer: Trainer,
  o: ResolvedOptions,
  b: TrainBatch,
  epoch: number,
): Promise<{ loss: number; correct: number; grads: Map<string, tf.Tensor> }> {
  const stepSeed = hashSeed(o.seed, STREAM.dropPath, epoch, b.index);
  if (trainer.parallel) {
    // Drop-path masks: the engine draws them from stepSeed as the main thread's TF.js path
    // does; TF.js threads draw shard k's from hashSeed(stepSeed, k) (see ./parallel.ts).
    const r = trainer.parallel.gradients(b.x, b.labels, {
      smoothing: o.labelSmoothing,
      scale: 1 / o.updateFreq,
      seed: stepSeed,
      tensors: trainer.engineAdamW === null,
    });
    b.x.dispose();
    return { loss: r.loss, correct: r.correct, grads: r.grads };
  }
  const labels = tf.tensor1d(b.labels, "int32");
  let logits: tf.Tensor | undefined;
  const { value, grads } = withSeededMathRandom(
    stepSeed,
    () =>
      tf.variableGrads(() => {
        const y = trainer.model.apply(b.x, { training: true }) as tf.Tensor;
        logits = tf.keep(y);
        return tf.div(crossEntropy(y, labels, o.labelSmoothing), o.updateFreq) as tf.Scalar;
      }, trainer.optimizer.variables),
  );
  const loss = (await value.data())[0] * o.updateFreq;
  const correct = await countCorrect(logits!, labels);
  tf.dispose([value, logits!, labels, b.x]);
  const named = new Map(
    Object.entries(grads).map(([k, g]) => [trainer.paramName.get(k)!, g] as const),
  );
  return { loss, correct, grads: named };
}

/** `acc` plus `grads`, key by key; both inputs' tensors are disposed. */
function addGradients(
  acc: Map<string, tf.Tensor>,
  grads: Map<string, tf.Tensor>,
): Map<string, tf.Tensor> {
  for (const [k, g] of grads) {
    const sum = tf.add(acc.get(k)!, g);
    tf.dispose([acc.get(k)!, g]);
    acc.set(k, sum);
  }
  return acc;
}

/** A validation pass: mean loss, accuracy, and each image's truth and prediction. */
interface Evaluation {
  loss: number;
  accuracy: number;
  truth: number[];
  pred: number[];
}

/** Validates the trainable model's current weights (null without validation images). */
async function validate(ctx: EpochContext): Promise<Evaluation | null> {
  if (ctx.plan.val.length === 0) return null;
  let lossSum = 0;
  const truth: number[] = [];
  const pred: number[] = [];
  for await (const b of ctx.sources.valBatches()) {
    lossSum += await validateBatch(ctx.trainer.model, b, pred);
    truth.push(...b.labels);
  }
  if (truth.length === 0) return null;
  const correct = truth.filter((t, i) => t === pred[i]).length;
  return { loss: lossSum / truth.length, accuracy: correct / truth.length, truth, pred };
}

/** One validation batch: appends its predictions to `pred`, returns its summed loss. */
async function validateBatch(
  model: tf.LayersModel,
  b: TensorBatch,
  pred: number[],
): Promise<number> {
  const labels = tf.tensor1d(b.labels, "int32");
  const [loss, argmax] = tf.tidy(() => {
    const logits = model.apply(b.x, { training: false }) as tf.Tensor;
    return [crossEntropy(logits, labels, 0), tf.argMax(logits, -1)];
  });
  const sum = (await loss.data())[0] * b.labels.length;
  pred.push(...await argmax.data());
  tf.dispose([loss, argmax, labels, b.x]);
  return sum;
}

/**
 * Best model: highest validation accuracy (the EMA's when it is higher); without validation
 * images, the last epoch. A new best is saved to `best/` with its report.
 */
async function keepBest(
  ctx: EpochContext,
  epoch: number,
  evaluation: Evaluation | null,
  emaEvaluation: Evaluation | null,
): Promise<void> {
  const { state, trainer, plan } = ctx;
  const useEma = !!emaEvaluation && !!evaluation && emaEvaluation.accuracy > evaluation.accuracy;
  const candidate = useEma ? emaEvaluation : evaluation;
  const previous = state.best?.valAccuracy ?? -1;
  if (state.best && candidate !== null && !(candidate.accuracy > previous)) return;
  state.best = {
    epoch: epoch + 1,
    valAccuracy: candidate?.accuracy ?? null,
    weights: useEma ? "ema" : "model",
  };
  state.report = candidate ? validationReport(plan.classes, candidate.truth, candidate.pred) : null;
  const best = state.best;
  const save = () => saveBest(ctx, best);
  if (useEma) await trainer.ema!.withAveraged(save);
  else await save();
}

/** Saves the full model with the trained weights as `best/`. */
async function saveBest(ctx: EpochContext, best: NonNullable<FinetuneResult["best"]>) {
  const { plan, sources } = ctx;
  if (plan.o.mode === "probe") copyHead(sources.trainable, sources.fullModel);
  await saveModel(sources.fullModel, plan.bestDir, {
    overwrite: true,
    metadata: bestMetadata(sources.fullModel, ctx.baseInfo, plan, best, ctx.options.data),
  });
}

/** The checkpoint of the state after an epoch, and `metrics.jsonl` with every epoch's line. */
async function saveProgress(ctx: EpochContext): Promise<void> {
  const { plan, state, trainer } = ctx;
  await saveCheckpoint(plan.checkpointDir, {
    state,
    tensors: await collectTensors(trainer.model, trainer.optimizer, trainer.ema),
  });
  await writeFileAtomic(
    join(plan.out, "metrics.jsonl"),
    state.metrics.map((m) => JSON.stringify(m)).join("\n") + "\n",
  );
}

/** The log line of a finished epoch. */
function epochLine(
  o: ResolvedOptions,
  metrics: EpochMetrics,
  evaluation: Evaluation | null,
  emaEvaluation: Evaluation | null,
): string {
  const pct = (x: number) => (x * 100).toFixed(1);
  return `epoch ${metrics.epoch}/${o.epochs}: train loss ${metrics.trainLoss.toFixed(4)} acc ${
    pct(metrics.trainAccuracy)
  }%` +
    (evaluation
      ? `, val loss ${evaluation.loss.toFixed(4)} acc ${pct(evaluation.accuracy)}%`
      : "") +
    (emaEvaluation ? `, ema val acc ${pct(emaEvaluation.accuracy)}%` : "") +
    `, ${metrics.imagesPerSecond.toFixed(1)} img/s`;
}

/** Copies the probe head's weights into the full model's `head_fc`. */
function copyHead(head: tf.LayersModel, full: tf.LayersModel): void {
  const target = new Map(full.getLayer(HEAD_FC).weights.map((w) => [w.originalName, w]));
  for (const w of head.getLayer(HEAD_FC).weights) target.get(w.originalName)!.write(w.read());
}

/** Metadata stored with the best model: the ModelInfo of the new task and the class names. */
function bestMetadata(
  model: tf.LayersModel,
  baseInfo: ReturnType<typeof storedModelConfig>,
  plan: RunPlan,
  best: NonNullable<FinetuneResult["best"]>,
  data: string,
): Record<string, unknown> {
  const { o, classes, modelLabel } = plan;
  return {
    [MODEL_CONFIG_KEY]: {
      architecture: baseInfo?.architecture ?? CUSTOM_ARCHITECTURE,
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
