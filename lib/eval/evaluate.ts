/**
 * ImageNet evaluation as the official `engine.py evaluate()` computes it (top-1 and top-5
 * of the logits over the validation images, preprocessed with the model's eval
 * transform), with sharding, resumable progress and a progress bar.
 *
 * Conventions (documented in the README's evaluation section too):
 * - order: the dataset order of {@link loadEvalDataset} (sorted class, then sorted file);
 * - `shard: {index: I, count: N}` takes images k with `k % N === I` (strided, so every shard
 *   sees every class and its running accuracy is representative);
 * - `limit: L` then keeps the first L images of the shard (a quick partial check;
 *   `--shard 0/50` is a representative 1000-image subset instead);
 * - unreadable images: the official code would stop with an exception. Here each is
 *   reported (stderr and `errors` in the result) and left out of the accuracy
 *   denominator; `count` is the number of images evaluated, `errors.length` the number
 *   left out, so a result with errors is visibly not a full evaluation.
 *
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { imageBatches } from "../data/batches.ts";
import { activeBackend } from "../backend/select.ts";
import { classifierClasses, topIndices } from "../classify.ts";
import { ProgressBar, type ProgressOptions } from "../util/progress.ts";
import { removeIfExists, writeFileAtomic } from "../util/fs.ts";
import {
  evalTransformOptions,
  modelPreprocessing,
  type Preprocessing,
  preprocessingFor,
  storedModelConfig,
} from "../model/config.ts";
import { getZooEntry, isZooName } from "../weights/zoo.ts";
import type { EvalDataset } from "./dataset.ts";
import type { Shard } from "./shard.ts";

export { parseShard, type Shard } from "./shard.ts";

/** The top-5 classes predicted for one image. */
export interface EvalPrediction {
  /** Position of the image in the dataset order. */
  index: number;
  /** The image's name relative to the data directory. */
  image: string;
  /** Its true class index. */
  label: number;
  /** The 5 highest logits' class indices, highest first (fewer if the model has < 5). */
  top5: number[];
}

/** An image that could not be evaluated. */
export interface EvalError {
  /** Position of the image in the dataset order. */
  index: number;
  /** The image's name relative to the data directory. */
  image: string;
  /** One-line reason. */
  message: string;
}

/** What an evaluation (or a merge of shard evaluations) measured. */
export interface EvalResult {
  /** The model as named by the user (zoo name or path). */
  model: string;
  /** Architecture name from the model's metadata. */
  architecture: string;
  /** sha256 of the checkpoint the model was converted from, when known. */
  modelSha256: string | null;
  /** The data directory as given. */
  data: string;
  /** Layout found in it. */
  layout: "imagefolder" | "flat";
  /** Images evaluated (errors excluded): the accuracy denominator. */
  count: number;
  /** Top-1 accuracy in percent. */
  top1: number;
  /** Top-5 accuracy in percent. */
  top5: number;
  /** Images whose top-1 class is the label. */
  correct1: number;
  /** Images whose label is among the top 5. */
  correct5: number;
  /** Official top-1 of this checkpoint (zoo registry / metadata), if published. */
  officialTop1: number | null;
  /** The shard evaluated, or null for all images. */
  shard: Shard | null;
  /** The `limit` option, or null. */
  limit: number | null;
  /** Images assigned to this run (after shard and limit): count + errors. */
  total: number;
  /** Images in the whole dataset listing. */
  datasetSize: number;
  /** {@link EvalDataset.fingerprint}: same images, order and labels. */
  datasetFingerprint: string;
  /** Classes of the model. */
  numClasses: number;
  /** The preprocessing used. */
  preprocessing: Preprocessing;
  /** TF.js backend that ran the model. */
  backend: string;
  /** Seconds spent evaluating (summed over resumed runs, and over merged shards). */
  elapsedSeconds: number;
  /** count / elapsedSeconds. */
  imagesPerSecond: number;
  /** Images taken over from an interrupted run's partial file. */
  resumed: number;
  /** Images that could not be read, left out of `count`. */
  errors: EvalError[];
  /** Per-image predictions (with `predictions: true`). */
  predictions?: EvalPrediction[];
}

/** Per-batch information for {@link EvaluateOptions.onBatch}. */
export interface EvalBatchInfo {
  /** Dataset positions of the images in this batch (readable ones). */
  indices: number[];
  /** Their logits, `indices.length * numClasses` values. */
  logits: Float32Array;
  /** Images done so far in this run (including resumed ones and errors). */
  done: number;
  /** Images assigned to this run. */
  total: number;
}

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** Name of the model in the result (default: its zoo name or checkpoint file name). */
  modelName?: string;
  /** Images per forward pass (default 32). */
  batch?: number;
  /** Evaluate only the first `limit` images (after sharding). */
  limit?: number;
  /** Evaluate one shard. */
  shard?: Shard;
  /**
   * Write the result here (atomically). Progress goes to `<out>.partial.json` every few
   * batches, a rerun with the same arguments continues from it, and it is deleted once
   * the result is written.
   */
  out?: string;
  /** Batches between partial saves (default 20; also at least once a minute). */
  saveEvery?: number;
  /** Include per-image predictions in the result. */
  predictions?: boolean;
  /** Stops after the current batch (progress is saved first); evaluate then throws. */
  signal?: AbortSignal;
  /**
   * Preprocessing worker threads (default {@link evalWorkerCount}: cores - 1, at most 16, as
   * a fast backend needs many decoders to keep up).
   */
  workers?: number;
  /** Progress bar options (`{quiet: true}` for none). */
  progress?: Partial<Omit<ProgressOptions, "total">>;
  /** Reports each batch's logits (tests, custom metrics). */
  onBatch?: (info: EvalBatchInfo) => void;
  /** Called for each unreadable image (default: a line on stderr). */
  onError?: (error: EvalError) => void;
}

/** Default decoding threads of {@link evaluate}: all cores but one, at most 16. */
export function evalWorkerCount(): number {
  return Math.max(1, Math.min(16, (navigator.hardwareConcurrency ?? 2) - 1));
}

/** Path of the partial-progress file of an output file. */
export function partialPath(out: string): string {
  return `${out}.partial.json`;
}

/** Dataset positions a run covers: `k % count === index`, then the first `limit`. */
export function selectIndices(size: number, shard?: Shard, limit?: number): number[] {
  const out: number[] = [];
  const step = shard?.count ?? 1;
  for (let k = shard?.index ?? 0; k < size; k += step) out.push(k);
  return limit === undefined ? out : out.slice(0, limit);
}

/** Everything a partial file must agree on to be resumed. */
interface PartialKey {
  model: string;
  modelSha256: string | null;
  datasetFingerprint: string;
  shard: Shard | null;
  limit: number | null;
  size: number;
  cropPct: number;
}

interface PartialFile {
  kind: "convnext-eval-partial";
  version: 1;
  key: PartialKey;
  elapsedSeconds: number;
  predictions: EvalPrediction[];
  errors: EvalError[];
}

/** Thrown when {@link EvaluateOptions.signal} stops a run; progress was saved. */
export class EvalAbortedError extends Error {
  /** Images done, saved in the partial file (if any). */
  readonly done: number;
  /** Where the progress is. */
  readonly partial: string | undefined;
  /** @internal */
  constructor(done: number, partial: string | undefined) {
    super(
      `evaluation stopped after ${done} images` +
        (partial ? `; progress saved in ${partial}, rerun the same command to continue` : ""),
    );
    this.name = "EvalAbortedError";
    this.done = done;
    this.partial = partial;
  }
}

async function readPartial(path: string, key: PartialKey): Promise<PartialFile | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let data: PartialFile;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message}); delete it to start over`);
  }
  if (data?.kind !== "convnext-eval-partial" || data.version !== 1) {
    throw new Error(`${path}: not an evaluation progress file; delete it to start over`);
  }
  if (JSON.stringify(data.key) !== JSON.stringify(key)) {
    throw new Error(
      `${path} holds progress of a different run (${JSON.stringify(data.key)}); ` +
        `rerun with the same model, data, shard and limit, or delete it to start over`,
    );
  }
  return data;
}

function percent(n: number, d: number): number {
  return d > 0 ? (100 * n) / d : 0;
}

/** Official top-1 of a model: its metadata's, else the zoo's for a zoo name. */
function officialTop1(model: tf.LayersModel, name: string): number | null {
  const fromInfo = storedModelConfig(model)?.officialTop1;
  if (fromInfo !== undefined && fromInfo !== null) return fromInfo;
  return isZooName(name) ? getZooEntry(name).top1 : null;
}

/**
 * Evaluate a classifier on a validation set: top-1 / top-5 accuracy, exactly as the
 * official evaluation counts them, with the model's preprocessing. See the module doc for
 * the shard, limit and error conventions.
 *
 * @throws EvalAbortedError when `signal` stops the run (after saving the progress)
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { loadModel } from "../weights/pretrained.ts";
 * import { loadEvalDataset } from "./dataset.ts";
 * import { evaluate } from "./evaluate.ts";
 * // The real run: loadModel("convnext_tiny_1k_224") and the ImageNet validation folder; here
 * // the small evaluation fixture of the tests (10 classes, a few images).
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * await selectBackend("cpu");
 * const model = await loadModel(`${fix}tiny10.pth`);
 * const synsets = `${fix}synsets.txt`;
 * const data = await loadEvalDataset(`${fix}flat`, { synsets, numClasses: 10 });
 * const r = await evaluate(model, data, { modelName: "tiny10", progress: { quiet: true } });
 * console.log(r.top1, r.top5, r.count); // percentages, as the official evaluation
 * ```
 */
export async function evaluate(
  model: tf.LayersModel,
  dataset: EvalDataset,
  options: EvaluateOptions = {},
): Promise<EvalResult> {
  const setup = prepareRun(model, dataset, options);
  const partial = options.out ? partialPath(options.out) : undefined;
  const previous = partial ? await readPartial(partial, setup.key) : undefined;
  const tally = new Tally(previous);
  const progress = new RunProgress(setup, options, tally, previous, partial);
  await predictAll(setup, options, tally, progress);
  const result = resultOf(setup, options, tally, progress.elapsed());
  if (options.out) {
    await writeFileAtomic(options.out, JSON.stringify(result, null, 1) + "\n");
    if (partial) await removeIfExists(partial);
  }
  return result;
}

/** What a run evaluates, decided from the model, the dataset and the options. */
interface RunSetup {
  model: tf.LayersModel;
  dataset: EvalDataset;
  /** The model's name in the result. */
  name: string;
  info: ReturnType<typeof storedModelConfig>;
  numClasses: number;
  preprocessing: Preprocessing;
  /** The eval transform of the preprocessing. */
  transform: ReturnType<typeof evalTransformOptions>;
  batch: number;
  /** Dataset positions this run covers (after shard and limit). */
  selected: number[];
  /** What a partial file must agree on. */
  key: PartialKey;
}

/** Checks the options against the model and the data and decides what the run covers. */
function prepareRun(
  model: tf.LayersModel,
  dataset: EvalDataset,
  options: EvaluateOptions,
): RunSetup {
  const batch = options.batch ?? 32;
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`evaluate: batch must be an integer >= 1, got ${batch}`);
  }
  if (options.limit !== undefined && !(Number.isInteger(options.limit) && options.limit >= 1)) {
    throw new RangeError(`evaluate: limit must be an integer >= 1, got ${options.limit}`);
  }
  const info = storedModelConfig(model);
  const name = options.modelName ?? info?.source?.zoo ?? info?.source?.file ??
    info?.architecture ?? model.name;
  const numClasses = classifierClasses(model);
  // Says (inModel) whether the model normalizes itself; the transform then keeps 0..255.
  const preprocessing = modelPreprocessing(model, info?.preprocessing ?? preprocessingFor(224));
  const transform = evalTransformOptions(preprocessing);
  const maxLabel = dataset.samples.reduce((m, s) => Math.max(m, s.label), -1);
  if (maxLabel >= numClasses) {
    throw new Error(
      `evaluate: the data has labels up to ${maxLabel} but the model ${numClasses} classes`,
    );
  }
  const selected = selectIndices(dataset.samples.length, options.shard, options.limit);
  const key: PartialKey = {
    model: name,
    modelSha256: info?.source?.sha256 ?? null,
    datasetFingerprint: dataset.fingerprint,
    shard: options.shard ?? null,
    limit: options.limit ?? null,
    size: transform.size,
    cropPct: preprocessing.cropPct,
  };
  return {
    model,
    dataset,
    name,
    info,
    numClasses,
    preprocessing,
    transform,
    batch,
    selected,
    key,
  };
}

/** The predictions and errors so far (a resumed run's included) and the top-k counts. */
class Tally {
  readonly predictions = new Map<number, EvalPrediction>();
  readonly errors = new Map<number, EvalError>();
  /** Images taken over from the partial file. */
  readonly resumed: number;
  correct1 = 0;
  correct5 = 0;

  constructor(previous: PartialFile | undefined) {
    for (const p of previous?.predictions ?? []) this.predictions.set(p.index, p);
    for (const e of previous?.errors ?? []) this.errors.set(e.index, e);
    this.resumed = this.predictions.size + this.errors.size;
    for (const p of this.predictions.values()) this.#count(p);
  }

  #count(p: EvalPrediction): void {
    if (p.top5[0] === p.label) this.correct1++;
    if (p.top5.includes(p.label)) this.correct5++;
  }

  /** Images done (predicted or unreadable). */
  get done(): number {
    return this.predictions.size + this.errors.size;
  }

  /** Records a prediction. */
  predicted(p: EvalPrediction): void {
    this.predictions.set(p.index, p);
    this.#count(p);
  }

  /** Predictions in dataset order. */
  sortedPredictions(): EvalPrediction[] {
    return [...this.predictions.values()].sort((a, b) => a.index - b.index);
  }

  /** Errors in dataset order. */
  sortedErrors(): EvalError[] {
    return [...this.errors.values()].sort((a, b) => a.index - b.index);
  }
}

/**
 * The progress of a run: the bar, the elapsed time (a resumed run's included) and the
 * partial file, saved every `saveEvery` batches and at least once a minute.
 */
class RunProgress {
  readonly bar: ProgressBar;
  readonly #tally: Tally;
  readonly #key: PartialKey;
  readonly #partial: string | undefined;
  readonly #earlierSeconds: number;
  readonly #saveEvery: number;
  readonly #start = performance.now();
  #lastSave = performance.now();
  #sinceSave = 0;

  constructor(
    setup: RunSetup,
    options: EvaluateOptions,
    tally: Tally,
    previous: PartialFile | undefined,
    partial: string | undefined,
  ) {
    this.bar = new ProgressBar({
      label: `eval ${setup.name}`,
      itemName: "img",
      ...options.progress,
      total: setup.selected.length,
    });
    this.bar.setStartValue(tally.resumed);
    this.#tally = tally;
    this.#key = setup.key;
    this.#partial = partial;
    this.#earlierSeconds = previous?.elapsedSeconds ?? 0;
    this.#saveEvery = options.saveEvery ?? 20;
  }

  /** The partial file's path, if the run has an `out`. */
  get partial(): string | undefined {
    return this.#partial;
  }

  /** Seconds spent evaluating, over this run and the runs it resumes. */
  elapsed(): number {
    return this.#earlierSeconds + (performance.now() - this.#start) / 1000;
  }

  /** After a batch: the bar, and a save when it is due. */
  async batchDone(): Promise<void> {
    const { predictions, errors, correct1, correct5 } = this.#tally;
    const n = predictions.size;
    this.bar.update(n + errors.size, {
      top1: `${percent(correct1, n).toFixed(2)}%`,
      top5: `${percent(correct5, n).toFixed(2)}%`,
      ...(errors.size ? { errors: errors.size } : {}),
    });
    this.#sinceSave++;
    if (this.#sinceSave >= this.#saveEvery || performance.now() - this.#lastSave > 60_000) {
      await this.save();
    }
  }

  /** Writes the partial file (a no-op without `out`). */
  async save(): Promise<void> {
    if (!this.#partial) return;
    const data: PartialFile = {
      kind: "convnext-eval-partial",
      version: 1,
      key: this.#key,
      elapsedSeconds: this.elapsed(),
      predictions: this.#tally.sortedPredictions(),
      errors: this.#tally.sortedErrors(),
    };
    await writeFileAtomic(this.#partial, JSON.stringify(data));
    this.#lastSave = performance.now();
    this.#sinceSave = 0;
  }
}

/**
 * Predicts every selected image not done yet, batch by batch, saving progress on the way.
 *
 * @throws EvalAbortedError when `signal` stops the run; any other error after saving.
 */
async function predictAll(
  setup: RunSetup,
  options: EvaluateOptions,
  tally: Tally,
  progress: RunProgress,
): Promise<void> {
  const { dataset, batch } = setup;
  const bar = progress.bar;
  const reportError = options.onError ?? ((e: EvalError) => {
    bar.abort(); // end a redrawn line first (a no-op when not on a terminal)
    console.error(`eval: ${e.message}`);
  });
  const todo = setup.selected.filter((k) => !tally.predictions.has(k) && !tally.errors.has(k));
  try {
    const paths = todo.map((k) => dataset.samples[k].path);
    const workers = options.workers ?? evalWorkerCount();
    for await (const b of imageBatches(paths, { ...setup.transform, batch, workers })) {
      for (const f of b.failures) {
        const k = todo[f.index];
        const e = { index: k, image: dataset.samples[k].name, message: f.message };
        tally.errors.set(k, e);
        reportError(e);
      }
      if (b.indices.length > 0) await predictBatch(setup, options, tally, b, todo);
      await progress.batchDone();
      if (options.signal?.aborted) {
        await progress.save();
        bar.abort();
        throw new EvalAbortedError(tally.done, progress.partial);
      }
    }
  } catch (e) {
    if (!(e instanceof EvalAbortedError)) {
      // Keep what is done for a rerun, whatever stopped us.
      await progress.save().catch(() => {});
      bar.abort();
    }
    throw e;
  }
  bar.done();
}

/** One batch's forward pass: each readable image's top-5, recorded in `tally`. */
async function predictBatch(
  setup: RunSetup,
  options: EvaluateOptions,
  tally: Tally,
  b: { data: Float32Array; shape: [number, number, number, number]; indices: number[] },
  todo: number[],
): Promise<void> {
  const { model, dataset, numClasses } = setup;
  const x = tf.tensor4d(b.data, b.shape);
  const y = tf.tidy(() => model.predict(x) as tf.Tensor);
  x.dispose();
  let logits: Float32Array;
  try {
    logits = await y.data() as Float32Array;
  } finally {
    y.dispose();
  }
  const k5 = Math.min(5, numClasses);
  const indices = b.indices.map((i) => todo[i]);
  indices.forEach((k, row) => {
    const sample = dataset.samples[k];
    const top5 = topIndices(logits.subarray(row * numClasses, (row + 1) * numClasses), k5);
    tally.predicted({ index: k, image: sample.name, label: sample.label, top5 });
  });
  options.onBatch?.({ indices, logits, done: tally.done, total: setup.selected.length });
}

/** The result of a finished run. */
function resultOf(
  setup: RunSetup,
  options: EvaluateOptions,
  tally: Tally,
  seconds: number,
): EvalResult {
  const { model, dataset, name, info } = setup;
  const count = tally.predictions.size;
  return {
    model: name,
    architecture: info?.architecture ?? "unknown",
    modelSha256: info?.source?.sha256 ?? null,
    data: dataset.root,
    layout: dataset.layout,
    count,
    top1: percent(tally.correct1, count),
    top5: percent(tally.correct5, count),
    correct1: tally.correct1,
    correct5: tally.correct5,
    officialTop1: officialTop1(model, name),
    shard: options.shard ?? null,
    limit: options.limit ?? null,
    total: setup.selected.length,
    datasetSize: dataset.samples.length,
    datasetFingerprint: dataset.fingerprint,
    numClasses: setup.numClasses,
    preprocessing: setup.preprocessing,
    backend: activeBackend(),
    elapsedSeconds: seconds,
    imagesPerSecond: seconds > 0 ? count / seconds : 0,
    resumed: tally.resumed,
    errors: tally.sortedErrors(),
    ...(options.predictions ? { predictions: tally.sortedPredictions() } : {}),
  };
}
