/**
 * Benchmark of a full fine-tuning step (loss gradients, then the AdamW update, as the
 * fine-tuning loop does it) on the two training paths: "stock" (TF.js's kernels, the batch
 * split over threads by ./parallel.ts) and "engine" (the kernel engine, ./engine_grads.ts).
 * tools/bench_train.ts prints both; {@link runTrainBench} measures one path in this
 * process, and {@link alternateTrainBench} both, step by step in turn, so that a shared
 * machine's busy phases hit both alike.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { createConvNeXt } from "../model/convnext.ts";
import { EngineGradients } from "./engine_grads.ts";
import { crossEntropy } from "./losses.ts";
import { AdamW, modelParams } from "./optimizer.ts";
import { ParallelGradients } from "./parallel.ts";

/** A training path. */
export type BenchPath = "stock" | "engine";

/** Options of {@link runTrainBench} and {@link alternateTrainBench}. */
export interface TrainBenchOptions {
  /** Architecture name (default "convnext_tiny"). */
  model?: string;
  /** Images per step (default 4). */
  batch?: number;
  /** Image size (default 224). */
  size?: number;
  /** Timed steps (default 3). */
  steps?: number;
  /** Untimed steps first (default 1). */
  warmup?: number;
  /** Classes of the head (default 1000). */
  classes?: number;
  /** Threads (default min(cores, batch)). */
  threads?: number;
  /** Drop path rate of the model (default 0, as bench_train's model). */
  dropPathRate?: number;
  /** Called with a line per step (default: nothing). */
  log?: (line: string) => void;
}

/** One path's result: the JSON line bench_train prints. */
export interface TrainBenchRecord {
  /** Architecture. */
  model: string;
  /** TF.js backend. */
  backend: string;
  /** Path. */
  path: BenchPath;
  /** Threads. */
  threads: number;
  /** Images per step. */
  batch: number;
  /** Image size. */
  size: number;
  /** Mean wall time of a timed step, ms. */
  msPerStep: number;
  /** msPerStep / batch. */
  msPerImage: number;
  /** Fastest timed step, ms. */
  minMsPerStep: number;
  /** The process's peak resident memory so far (VmHWM), MB; null where unknown. */
  peakRssMB: number | null;
}

/** The process's peak resident set size (VmHWM, Linux), MB, or null. */
export function peakRssMB(): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

/** A training step on one path: `step()` runs gradients and the update, returns the loss. */
export interface BenchStepper {
  /** One step on the benchmark batch; returns the loss. */
  step(): number;
  /** Where the last step spent its time, as text (e.g. "shards 1650 ms, AdamW 310 ms"). */
  detail(): string;
  /** Stop threads, free buffers. */
  close(): void;
}

/**
 * A step function of `path` for `model` on the images `x` and `labels`: gradients by that
 * path, then AdamW (lr 1e-4) on every trainable weight. Start it once; `step()` as often
 * as wanted.
 */
export async function benchStepper(
  model: tf.LayersModel,
  path: BenchPath,
  threads: number,
  x: tf.Tensor4D,
  labels: Int32Array,
): Promise<BenchStepper> {
  const params = modelParams(model, { weightDecay: 0.05 });
  const optimizer = new AdamW(params);
  let updateMs = 0;
  const update = (grads: Map<string, tf.Tensor>) => {
    const t0 = performance.now();
    optimizer.step(grads, 1e-4);
    tf.dispose([...grads.values()]);
    updateMs = performance.now() - t0;
  };
  let source: { gradients: ParallelGradients["gradients"]; close(): void } | null = null;
  let engine: EngineGradients | null = null;
  // The engine path runs AdamW on the engine, as `finetune` does (one micro-batch per step).
  if (path === "engine") {
    source = engine = await EngineGradients.start(model, params, { threads, adamw: true });
  } else if (threads > 1) source = await ParallelGradients.start(model, params, { threads });
  let seed = 0;
  const labelTensor = tf.tensor1d(labels, "int32");
  return {
    step: () => {
      if (engine?.adamw) {
        const r = engine.gradients(x, labels, { seed: seed++, tensors: false });
        const t0 = performance.now();
        optimizer.stepWith(engine.adamw, 1e-4);
        updateMs = performance.now() - t0;
        return r.loss;
      }
      if (source) {
        const r = source.gradients(x, labels, { seed: seed++ });
        update(r.grads);
        return r.loss;
      }
      const r = tf.variableGrads(
        () => crossEntropy(model.apply(x, { training: true }) as tf.Tensor, labelTensor),
        optimizer.variables,
      );
      update(new Map(params.map((p) => [p.name, r.grads[p.variable.name]])));
      const loss = r.value.dataSync()[0];
      r.value.dispose();
      return loss;
    },
    detail: () => {
      const ms = (v: number) => `${v.toFixed(0)} ms`;
      const t = engine?.timings;
      const parts = t
        ? [
          `weights in ${ms(t.weights)}`,
          `shards ${ms(t.shards)} (threads ${t.threadMs.map((v) => v.toFixed(0)).join("/")} ms)`,
          `gradients out ${ms(t.gradients)}`,
        ]
        : [];
      return [...parts, `AdamW ${ms(updateMs)}`].join(", ");
    },
    close: () => {
      source?.close();
      optimizer.dispose();
      labelTensor.dispose();
    },
  };
}

function resolve(o: TrainBenchOptions) {
  const batch = o.batch ?? 4;
  return {
    model: o.model ?? "convnext_tiny",
    batch,
    size: o.size ?? 224,
    steps: o.steps ?? 3,
    warmup: o.warmup ?? 1,
    classes: o.classes ?? 1000,
    threads: o.threads ?? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, batch)),
    dropPathRate: o.dropPathRate ?? 0,
    log: o.log ?? (() => {}),
  };
}

/** The benchmark model and batch. */
function setup(r: ReturnType<typeof resolve>) {
  const model = createConvNeXt(r.model, {
    inputShape: [r.size, r.size, 3],
    numClasses: r.classes,
    dropPathRate: r.dropPathRate,
    seed: 0,
  });
  const x = tf.randomUniform([r.batch, r.size, r.size, 3], -1, 1, "float32", 1) as tf.Tensor4D;
  const labels = Int32Array.from({ length: r.batch }, (_, i) => i % r.classes);
  return { model, x, labels };
}

function record(r: ReturnType<typeof resolve>, path: BenchPath, times: number[]): TrainBenchRecord {
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  return {
    model: r.model,
    backend: tf.getBackend(),
    path,
    threads: r.threads,
    batch: r.batch,
    size: r.size,
    msPerStep: Math.round(mean),
    msPerImage: Math.round(mean / r.batch),
    minMsPerStep: Math.round(Math.min(...times)),
    peakRssMB: peakRssMB(),
  };
}

/**
 * Measure one path in this process: warm-up steps, then timed steps. The peak memory is
 * the process's: run each path in a process of its own to compare memory.
 */
export async function runTrainBench(
  path: BenchPath,
  options: TrainBenchOptions = {},
): Promise<TrainBenchRecord> {
  const r = resolve(options);
  const { model, x, labels } = setup(r);
  const stepper = await benchStepper(model, path, r.threads, x, labels);
  try {
    const times: number[] = [];
    for (let i = 0; i < r.warmup + r.steps; i++) {
      const t0 = performance.now();
      const loss = stepper.step();
      const ms = performance.now() - t0;
      if (i >= r.warmup) times.push(ms);
      r.log(
        `${path} ${i < r.warmup ? "warm-up" : "step"}: ${ms.toFixed(0)} ms (loss ${
          loss.toFixed(4)
        }; ${stepper.detail()})`,
      );
    }
    return record(r, path, times);
  } finally {
    stepper.close();
    x.dispose();
    model.dispose();
  }
}

/**
 * Measure both paths in this process, one step of each in turn (after a warm-up step of
 * each), on the same model and batch: under a shared machine's changing load this keeps
 * the comparison fair. Returns the stock record, then the engine record (peak memory is
 * the process's, both paths together).
 */
export async function alternateTrainBench(
  options: TrainBenchOptions = {},
): Promise<TrainBenchRecord[]> {
  const r = resolve(options);
  const { model, x, labels } = setup(r);
  const paths: BenchPath[] = ["stock", "engine"];
  const steppers: BenchStepper[] = [];
  try {
    for (const p of paths) steppers.push(await benchStepper(model, p, r.threads, x, labels));
    const times: number[][] = [[], []];
    for (let i = 0; i < r.warmup + r.steps; i++) {
      paths.forEach((path, k) => {
        const t0 = performance.now();
        const loss = steppers[k].step();
        const ms = performance.now() - t0;
        if (i >= r.warmup) times[k].push(ms);
        r.log(
          `${path} ${i < r.warmup ? "warm-up" : "step"}: ${ms.toFixed(0)} ms (loss ${
            loss.toFixed(4)
          }; ${steppers[k].detail()})`,
        );
      });
    }
    return paths.map((p, k) => record(r, p, times[k]));
  } finally {
    for (const s of steppers) s.close();
    x.dispose();
    model.dispose();
  }
}

/** The summary line of two records: each path's ms per image and the speed-up. */
export function speedupLine(stock: TrainBenchRecord, engine: TrainBenchRecord): string {
  return `stock ${stock.msPerImage} ms/image, engine ${engine.msPerImage} ms/image ` +
    `(batch ${engine.batch}, ${engine.threads} threads): ${
      (stock.msPerStep / engine.msPerStep).toFixed(2)
    }x`;
}
