/**
 * Benchmark one training step (forward + backward + AdamW update, as the fine-tuning loop
 * does it) of a ConvNeXt with random weights on random images, after warm-up, and print
 * milliseconds per step and per image, on two paths:
 *
 * - `engine` (wasm and cpu; the default path of `finetune` there): the whole model on the
 *   kernel engine (lib/train/engine_grads.ts), the batch split over `--threads N` threads
 *   (default: one per core, at most the batch; or CONVNEXT_TRAIN_THREADS).
 * - `stock`: TF.js's kernels with lib/backend/wasm_grads.ts; on wasm the batch split over
 *   worker threads (lib/train/parallel.ts), then the main thread alone; on webgpu one
 *   thread (every read asynchronous).
 *
 * `--path both` (the default on wasm and cpu) runs each path in a process of its own, so
 * that each peak RSS is its own and a stock run that exhausts the 4 GiB wasm heap does not
 * stop the engine's, then prints the engine's speed-up over the stock path's best run.
 *
 * Usage:
 *   deno task bench:train [--model convnext_tiny] [--batch 2] [--size 224] [--steps 3]
 *     [--warmup 1] [--classes 1000] [--backend wasm|cpu|webgpu] [--threads N]
 *     [--path stock|engine|both] [--no-matmul-fix] [--profile] [--json]
 *
 * The backend is selected with lib/backend/select.ts (no silent fallback).
 *
 * `--json` prints JSON lines only on stdout (the progress goes to stderr), one per measured
 * run: `{"model", "backend", "path", "threads", "batch", "size", "msPerStep",
 * "minMsPerStep", "msPerImage", "peakRssMB"}`; the stock path's lines add `"split"`
 * ("parallel": over worker threads, "main": the main thread alone), `"params"`,
 * `"cpuMsPerStep"`, `"matMulFix"` on wasm and `"adapter"` on webgpu (e.g. llvmpipe for
 * Mesa's software Vulkan driver). `peakRssMB` is the process's peak resident memory (VmHWM).
 *
 * `--no-matmul-fix` keeps wasm's own BatchMatMul/_FusedMatMul (transpose flags passed
 * down) to measure what the fix is worth; `--profile` prints the stock path's kernels that
 * took the most time in one step. Wall time on a shared machine includes waiting for a
 * core, so the stock path prints the process CPU time per step too.
 *
 * Figures for convnext_tiny at 224 on the 2-core development machine are in the README
 * (Fine-tuning): the engine at 676-741 ms/image with 2 threads, the stock path at ~2100.
 *
 * @example
 * ```sh
 * deno task bench:train --model convnext_tiny --batch 2
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { type BackendRequest, selectBackend, webGpuAdapterInfo } from "../lib/backend/select.ts";
import { installWasmTrainingKernels } from "../lib/backend/wasm_grads.ts";
import { installWebGpuTrainingKernels } from "../lib/backend/webgpu_grads.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { crossEntropy } from "../lib/train/losses.ts";
import { AdamW, modelParams } from "../lib/train/optimizer.ts";
import { ParallelGradients, trainThreads } from "../lib/train/parallel.ts";
import {
  peakRssMB,
  runTrainBench,
  speedupLine,
  type TrainBenchRecord,
} from "../lib/train/engine_bench.ts";
import { machineLine } from "../lib/util/machine.ts";
import {
  architectureFlag,
  command,
  type CommandHelp,
  type Fail,
  failer,
  positiveInt,
} from "./cli.ts";

/** Backends this benchmark accepts. */
const TRAIN_BACKENDS = ["wasm", "cpu", "webgpu"] as const;
type TrainBackend = (typeof TRAIN_BACKENDS)[number];

interface BenchArgs {
  model: string;
  batch: number;
  size: number;
  steps: number;
  warmup: number;
  classes: number;
  backend: TrainBackend;
  matMulFix: boolean;
  profile: boolean;
  /** Threads of the parallel run; null: automatic (min(cores, batch)). */
  threads: number | null;
  /** JSON lines on stdout, the progress on stderr. */
  json: boolean;
  /** Which training path: TF.js's kernels ("stock"), the kernel engine, or both. */
  path: "stock" | "engine" | "both";
}

const HELP: CommandHelp = {
  name: "bench:train",
  synopsis: "[flags]",
  about: `
Time one training step (forward, backward and the AdamW update, as fine-tuning does it) of a
ConvNeXt architecture with random weights on random images, after warm-up, on the kernel engine
("engine", wasm and cpu) and on TF.js's kernels ("stock"), each in its own process, then the
engine's speed-up. The stock path on wasm splits the batch over worker threads, then runs it on
the main thread alone; its wasm heap is capped at 4 GiB (convnext_tiny at 224: batch 2 on one
thread, batch 4 on two). Wall time on a shared machine includes waiting for a core: the stock path
prints the process CPU time per step and a reference matmul speed too.`,
  flags: {
    model: { value: "ARCH", help: "architecture, random weights" },
    batch: { value: "N", help: "images per step", default: "2" },
    size: { value: "PX", help: "input side in pixels", default: "224" },
    steps: { value: "N", help: "timed steps per run, averaged", default: "3" },
    warmup: { value: "N", help: "untimed steps before each run (0 for none)", default: "1" },
    classes: { value: "N", help: "width of the classifier head", default: "1000" },
    threads: {
      value: "N",
      help: "threads of the engine, and of the stock path's split run (1: the main thread only)",
      default: "min(cores, batch)",
    },
    backend: {
      value: TRAIN_BACKENDS.join("|"),
      help: "wasm (with the worker split), cpu or webgpu; used as named (no auto)",
    },
    "no-matmul-fix": {
      help: "wasm: keep its own BatchMatMul/_FusedMatMul, to measure the fix (one thread)",
    },
    profile: { help: "also print the kernels that took the most time in one step" },
    json: {
      help: "JSON lines on stdout, one per run (the progress goes to stderr)",
    },
    path: {
      value: "stock|engine|both",
      help: "TF.js's kernels, the kernel engine (wasm, cpu), or both, each in its own process",
      default: "both; stock on webgpu",
    },
  },
  env: ["CONVNEXT_BACKEND", "CONVNEXT_TRAIN_THREADS"],
  examples: [
    "deno task bench:train                                # convnext_tiny, batch 2, 224, wasm",
    "deno task bench:train --model convnext_atto --batch 4 --size 128 --threads 2",
    "deno task bench:train --batch 4 --path both --json           # stock vs engine",
    "deno task bench:train --backend webgpu --batch 32 --json",
  ],
};

function parseArgs(argv: string[]): BenchArgs {
  const fail: Fail = failer("bench:train");
  const { values, positionals } = command(
    HELP,
    {
      model: { type: "string", default: "convnext_tiny" },
      batch: { type: "string" },
      size: { type: "string" },
      steps: { type: "string" },
      warmup: { type: "string" },
      classes: { type: "string" },
      threads: { type: "string" },
      backend: { type: "string", default: "wasm" },
      "no-matmul-fix": { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      path: { type: "string" },
    },
    fail,
    argv,
  );
  const path = values.path ?? (values.backend === "webgpu" ? "stock" : "both");
  if (path !== "stock" && path !== "engine" && path !== "both") {
    fail(`--path: expected stock, engine or both, got "${values.path}"`);
  }
  if (values.backend === "webgpu" && path !== "stock") {
    fail(`--path ${path}: the kernel engine trains on wasm and cpu only; use --path stock`);
  }
  if (positionals.length > 0) {
    fail(`unexpected argument "${positionals[0]}" (the architecture goes in --model)`);
  }
  const model = architectureFlag(values.model, fail);
  if (!(TRAIN_BACKENDS as readonly string[]).includes(values.backend)) {
    fail(`--backend must be ${TRAIN_BACKENDS.join(", ")}, got "${values.backend}"`);
  }
  const warmup = values.warmup === undefined ? 1 : Number(values.warmup);
  if (!Number.isInteger(warmup) || warmup < 0) {
    fail(`--warmup must be an integer >= 0, got "${values.warmup}"`);
  }
  return {
    model,
    batch: positiveInt(values.batch, "--batch", 2, fail),
    size: positiveInt(values.size, "--size", 224, fail),
    steps: positiveInt(values.steps, "--steps", 3, fail),
    warmup,
    classes: positiveInt(values.classes, "--classes", 1000, fail),
    backend: values.backend as TrainBackend,
    matMulFix: !values["no-matmul-fix"],
    profile: values.profile,
    threads: values.threads === undefined
      ? null
      : positiveInt(values.threads, "--threads", 1, fail),
    json: values.json,
    path,
  };
}

/**
 * CPU time this process has used (user + system, ms) from /proc (Linux), or null.
 * On a shared machine wall time includes waiting for a core; CPU time does not (wasm runs
 * on one thread; V8's helper threads add a little).
 */
function processCpuMs(): number | null {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10; // clock ticks of 10 ms
  } catch {
    return null;
  }
}

/**
 * Throughput of a plain 512x384x1536 matmul (GMAC/s, best of 5): the speed the machine
 * gives this process right now, to compare step times taken under different loads. Reads
 * asynchronously (webgpu cannot read synchronously under Deno).
 */
async function matmulGmacs(): Promise<number> {
  const a = tf.randomNormal([512, 384]);
  const b = tf.randomNormal([384, 1536]);
  const run = async () => {
    const c = tf.matMul(a, b);
    await c.data();
    c.dispose();
  };
  await run();
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await run();
    best = Math.min(best, performance.now() - t0);
  }
  tf.dispose([a, b]);
  return (512 * 384 * 1536) / best / 1e6;
}

/** Starts a new peak of resident memory (Linux: VmHWM); false where that is not allowed. */
function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

function heapMiB(): string {
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm;
  return wasm ? `${(wasm.HEAPU8.buffer.byteLength / 2 ** 20).toFixed(0)} MiB` : "n/a";
}

/** What one timed run measured. */
interface Run {
  /** Mean and minimum wall time per step, ms. */
  mean: number;
  min: number;
  /** Mean process CPU time per step, ms (NaN where /proc is missing). */
  cpu: number;
  /** The process's peak resident memory during the run, MB (null where unknown). */
  peakRssMB: number | null;
}

/** Set in the runs `--path both` starts (they print no machine line of their own). */
const CHILD_ENV = "CONVNEXT_BENCH_CHILD";

/**
 * Both paths, each in a process of its own (so that each peak RSS is its own, and a stock
 * run that exhausts the wasm heap does not stop the engine's): their JSON lines, then the
 * speed-up of the engine over the stock path's best run.
 */
async function bothPaths(args: BenchArgs): Promise<void> {
  const records: Record<string, unknown>[] = [];
  const argv = Deno.args.filter((a, i, all) =>
    a !== "--json" && !a.startsWith("--path") && all[i - 1] !== "--path"
  );
  for (const path of ["stock", "engine"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, ...argv, "--path", path, "--json"],
      env: { [CHILD_ENV]: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const lines = new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.startsWith("{"));
    if (!out.success && lines.length === 0) {
      console.error(`bench:train: the ${path} path failed (exit ${out.code})`);
    }
    for (const line of lines) {
      records.push(JSON.parse(line));
      if (args.json) console.log(line);
    }
  }
  const stock = records.filter((r) => r.path === "stock");
  const engine = records.find((r) => r.path === "engine");
  const best = stock.sort((a, b) => (a.msPerStep as number) - (b.msPerStep as number))[0];
  const line = engine && best
    ? speedupLine(best as unknown as TrainBenchRecord, engine as unknown as TrainBenchRecord)
    : "a path failed: no comparison";
  (args.json ? console.error : console.log)(`summary: ${line}`);
}

/** The kernel engine's training step (lib/train/engine_bench.ts), in this process. */
async function enginePath(args: BenchArgs, log: (line: string) => void): Promise<void> {
  const record = await runTrainBench("engine", {
    model: args.model,
    batch: args.batch,
    size: args.size,
    steps: args.steps,
    warmup: args.warmup,
    classes: args.classes,
    threads: args.threads ?? trainThreads(args.batch),
    log,
  });
  if (args.json) console.log(JSON.stringify(record));
  else {
    log(
      `engine: mean ${record.msPerStep} ms/step (min ${record.minMsPerStep}), ` +
        `${record.msPerImage} ms/image, ${record.threads} threads; peak RSS ${record.peakRssMB} MB`,
    );
  }
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  // With --json, stdout carries the JSON lines only; the progress goes to stderr.
  const log = args.json ? console.error : console.log;
  // Once per command: the runs of --path both are children of this process.
  if (!Deno.env.get(CHILD_ENV)) log(`machine: ${machineLine()}`);
  if (args.path === "both") return await bothPaths(args);
  if (args.backend === "wasm") installWasmTrainingKernels({ matMulFix: args.matMulFix });
  const backend = await selectBackend(args.backend as BackendRequest);
  if (backend !== args.backend) {
    throw new Error(`bench_train: CONVNEXT_BACKEND selected ${backend}, not ${args.backend}`);
  }
  if (backend === "webgpu") installWebGpuTrainingKernels();
  if (args.path === "engine") return await enginePath(args, log);
  await stockPath(args, log);
}

/** The stock path's model, batch and optimizer, and the worker split while it runs. */
interface StockBench {
  args: BenchArgs;
  log: (line: string) => void;
  model: tf.LayersModel;
  /** Parameter count. */
  params: number;
  /** The WebGPU adapter, or null on other backends. */
  adapter: ReturnType<typeof webGpuAdapterInfo> | null;
  x: tf.Tensor;
  labelIds: Int32Array;
  labels: tf.Tensor;
  trained: ReturnType<typeof modelParams>;
  optimizer: AdamW;
  /** The batch split over worker threads, while the multi-threaded run goes on. */
  parallel: ParallelGradients | null;
}

/** Builds the stock path's model and batch on the selected backend. */
function stockBench(args: BenchArgs, log: (line: string) => void): StockBench {
  const t0 = performance.now();
  const model = createConvNeXt(args.model, {
    inputShape: [args.size, args.size, 3],
    numClasses: args.classes,
    seed: 0,
  });
  const params = model.countParams();
  const adapter = args.backend === "webgpu" ? webGpuAdapterInfo() ?? null : null;
  log(
    `${args.model}: ${(params / 1e6).toFixed(1)} M parameters, built in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; backend ${args.backend}${
      adapter ? ` (${adapter.description || adapter.vendor})` : ""
    }, batch ${args.batch}, ${args.size}x${args.size}, matMul fix ${
      args.backend === "wasm" ? (args.matMulFix ? "on" : "off") : "n/a"
    }`,
  );
  const labelIds = Int32Array.from({ length: args.batch }, (_, i) => i % args.classes);
  const trained = modelParams(model, { weightDecay: 0.05 });
  return {
    args,
    log,
    model,
    params,
    adapter,
    x: tf.randomUniform([args.batch, args.size, args.size, 3], -1, 1, "float32", 1),
    labelIds,
    labels: tf.tensor1d(labelIds, "int32"),
    trained,
    optimizer: new AdamW(trained),
    parallel: null,
  };
}

/**
 * The fine-tuning loop's step: loss gradients (split over threads or not), then AdamW. The
 * loss is read (asynchronously) after the update is queued, so that on webgpu the read
 * waits for the whole step.
 */
async function stockStep(b: StockBench): Promise<number> {
  let loss: number | tf.Tensor;
  let grads: Map<string, tf.Tensor>;
  if (b.parallel) {
    ({ loss, grads } = b.parallel.gradients(b.x, b.labelIds));
  } else {
    const r = tf.variableGrads(
      () => crossEntropy(b.model.apply(b.x, { training: true }) as tf.Tensor, b.labels),
      b.optimizer.variables,
    );
    loss = r.value;
    grads = new Map(b.trained.map((p) => [p.name, r.grads[p.variable.name]]));
  }
  b.optimizer.step(grads, 1e-4);
  tf.dispose([...grads.values()]);
  if (typeof loss === "number") return loss;
  const value = (await loss.data())[0];
  loss.dispose();
  return value;
}

const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;

/** Warm-up, then timed steps: mean and min ms/step, CPU ms/step, peak resident MB. */
async function measure(b: StockBench, label: string): Promise<Run> {
  const { args, log } = b;
  log(`-- ${label}`);
  resetPeakRss();
  for (let i = 0; i < args.warmup; i++) {
    const t0 = performance.now();
    const loss = await stockStep(b);
    log(
      `warm-up ${i + 1}: ${(performance.now() - t0).toFixed(0)} ms (loss ${
        loss.toFixed(4)
      }, heap ${heapMiB()})`,
    );
  }
  const gmacsBefore = await matmulGmacs();
  const times: number[] = [];
  const cpuTimes: number[] = [];
  for (let i = 0; i < args.steps; i++) {
    const cpu0 = processCpuMs();
    const t0 = performance.now();
    const loss = await stockStep(b);
    times.push(performance.now() - t0);
    const cpu1 = processCpuMs();
    const cpu = cpu0 != null && cpu1 != null ? cpu1 - cpu0 : NaN;
    cpuTimes.push(cpu);
    const t = b.parallel?.timings;
    const split = t
      ? `; main shard ${t.own.toFixed(0)} ms, then waited ${
        t.wait.toFixed(0)
      } ms for the workers, weights out ${t.publish.toFixed(0)} ms, gradient sum ${
        t.sum.toFixed(0)
      } ms`
      : "";
    log(
      `step ${i + 1}: ${times[i].toFixed(0)} ms (process CPU ${cpu.toFixed(0)} ms, loss ${
        loss.toFixed(4)
      }${split})`,
    );
  }
  // Process CPU time counts every thread of the process, workers included.
  log(
    `${label}: mean ${mean(times).toFixed(0)} ms/step, min ${Math.min(...times).toFixed(0)} ms; ` +
      `process CPU mean ${mean(cpuTimes).toFixed(0)} ms/step; ` +
      `${tf.memory().numTensors} tensors, main heap ${heapMiB()}`,
  );
  const peak = peakRssMB();
  log(
    `reference matmul: ${gmacsBefore.toFixed(1)} GMAC/s before the steps, ${
      (await matmulGmacs()).toFixed(1)
    } after (lower means a busier machine); peak RSS ${peak ?? "n/a"} MB`,
  );
  return { mean: mean(times), min: Math.min(...times), cpu: mean(cpuTimes), peakRssMB: peak };
}

/** The JSON line of one stock run (--json). */
function jsonLine(b: StockBench, split: "parallel" | "main", threads: number, run: Run): void {
  const { args } = b;
  const round = (v: number) => Number.isFinite(v) ? Math.round(v) : null;
  console.log(JSON.stringify({
    model: args.model,
    backend: args.backend,
    ...(b.adapter !== null ? { adapter: b.adapter } : {}),
    path: "stock",
    // The stock path's batch split over worker threads ("parallel") or the main thread alone.
    split,
    threads,
    batch: args.batch,
    size: args.size,
    params: b.params,
    msPerStep: round(run.mean),
    minMsPerStep: round(run.min),
    msPerImage: Math.round((run.mean / args.batch) * 10) / 10,
    cpuMsPerStep: round(run.cpu),
    peakRssMB: run.peakRssMB,
    ...(args.backend === "wasm" ? { matMulFix: args.matMulFix } : {}),
  }));
}

/** The stock path's runs: split over threads (wasm), then the main thread alone. */
async function stockPath(args: BenchArgs, log: (line: string) => void): Promise<void> {
  if (args.backend === "webgpu" && (args.threads ?? 1) > 1) {
    throw new Error("bench_train: --backend webgpu runs one thread (the worker split is for wasm)");
  }
  const threads = args.threads ??
    (args.matMulFix && args.backend !== "webgpu" ? trainThreads(args.batch) : 1);
  if (threads > 1 && !args.matMulFix) {
    throw new Error("bench_train: --no-matmul-fix measures one thread only; add --threads 1");
  }
  const b = stockBench(args, log);
  let multi: Run | null = null;
  if (threads > 1) {
    const t0 = performance.now();
    b.parallel = await ParallelGradients.start(b.model, b.trained, { threads });
    log(
      `${threads - 1} worker thread(s) started in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    try {
      multi = await measure(b, `${threads} threads`);
      if (args.json) jsonLine(b, "parallel", threads, multi);
    } finally {
      b.parallel.close();
      b.parallel = null;
    }
  }
  let single: Run | null = null;
  try {
    single = await measure(b, "1 thread");
    if (args.json) jsonLine(b, "main", 1, single);
  } catch (e) {
    if (!multi) throw e;
    log(`1 thread: failed: ${(e as Error).message?.split("\n")[0] ?? e}`);
  }
  if (multi) {
    log(
      `summary: 1 thread ${
        single ? `${single.mean.toFixed(0)} ms/step (min ${single.min.toFixed(0)})` : "failed"
      }, ${threads} threads ${multi.mean.toFixed(0)} ms/step (min ${multi.min.toFixed(0)})` +
        (single ? `, speedup ${(single.mean / multi.mean).toFixed(2)}x` : ""),
    );
  }
  if (args.profile) await profileStep(b);
}

/** `--profile`: the kernels that took the most time in one step (tf.profile). */
async function profileStep(b: StockBench): Promise<void> {
  const start = performance.now();
  const info = await tf.profile(async () => {
    await stockStep(b);
  });
  const wall = performance.now() - start;
  const byKernel = new Map<string, { ms: number; calls: number }>();
  for (const k of info.kernels) {
    const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    e.calls++;
    byKernel.set(k.name, e);
  }
  const top = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 20);
  // Ops that wrap a kernel (names ending in "__op") are listed by tf.profile as well.
  const kernelMs = [...byKernel.entries()].filter(([n]) => !n.endsWith("__op"))
    .reduce((acc, [, e]) => acc + e.ms, 0);
  b.log(
    `profiled step: ${wall.toFixed(0)} ms wall (profiling adds overhead), ` +
      `${kernelMs.toFixed(0)} ms in kernels, ${info.kernels.length} kernel calls`,
  );
  b.log("kernel                               ms   calls");
  for (const [name, e] of top) {
    b.log(`${name.padEnd(34)} ${e.ms.toFixed(0).padStart(6)} ${String(e.calls).padStart(7)}`);
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    console.error(msg.split("\n")[0]);
    if (
      /out of memory|OOM|memory access out of bounds|Cannot enlarge memory|Aborted\(/i.test(msg)
    ) {
      console.error(
        "bench_train: the wasm heap is capped at 4 GiB; try a smaller --batch or --size",
      );
    }
    Deno.exit(1);
  }
}
