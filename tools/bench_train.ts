/**
 * Benchmark one training step (forward + backward + AdamW update, as the fine-tuning loop
 * does it) of a ConvNeXt on the wasm backend (or another), after warm-up, and print
 * milliseconds per step: first with the batch split over `--threads N` threads
 * (lib/train/parallel.ts; default: min(cores, batch), or CONVNEXT_TRAIN_THREADS), then on
 * the main thread alone, so that the speedup shows in one run.
 *
 * Usage:
 *   deno task bench:train [--model convnext_tiny] [--batch 2] [--size 224] [--steps 3]
 *     [--warmup 1] [--classes 1000] [--backend wasm|cpu|webgpu] [--threads N]
 *     [--no-matmul-fix] [--profile]
 *
 * The backend is selected with lib/backend/select.ts (no silent fallback). On webgpu every
 * read is asynchronous and one thread runs (the worker split of lib/train/parallel.ts is for
 * wasm). The last line is a JSON summary; on webgpu it names the
 * adapter (`"adapter"`), e.g. llvmpipe for Mesa's software Vulkan driver.
 *
 * `--threads 1` measures the single-threaded step only. The multi-threaded run goes first:
 * a batch too large for one wasm heap can abort the single-threaded run (reported), and an
 * aborted wasm instance cannot run anything afterwards.
 *
 * `--no-matmul-fix` keeps wasm's own BatchMatMul/_FusedMatMul (transpose flags passed
 * down) to measure what the fix is worth; `--profile` prints the kernels that took the
 * most time in one step. Wall time on a shared machine includes waiting for a core, so the
 * process CPU time per step is printed too.
 *
 * The wasm heap is capped at 4 GiB and never shrinks: convnext_tiny at 224 peaks at about
 * 2.5 GiB at batch 2 (with the Identity sharing of lib/backend/share_data.ts; 3.2 GiB
 * without), batch 3 at 3.3 GiB; batch 4 runs one step at 3.9 GiB and aborts ("Aborted()") in
 * the next. With 2 threads each heap holds the activations of half the batch: batch 4 then
 * runs (main heap 2.7 GiB).
 *
 * Measured on the 2-core development machine (AMD EPYC VM, otherwise idle), convnext_tiny
 * 224: batch 2, 1 thread 5.0 to 5.6 s/step, 2 threads 4.4 to 4.7 s/step (about 1.2x: each
 * thread's shard runs 20 to 50 % slower while the other core is busy, though plain
 * compute and memory copies scale 2x there); batch 4, 2 threads 7.1 to 8.0 s/step (1 thread
 * aborts).
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
import { command, type Fail, failer, positiveInt } from "./cli.ts";

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
}

const USAGE =
  `usage: deno task bench:train [--model convnext_tiny] [--batch 2] [--size 224] [--steps 3]
  [--warmup 1] [--classes 1000] [--backend wasm|cpu|webgpu] [--threads N] [--no-matmul-fix]
  [--profile]`;

function parseArgs(argv: string[]): BenchArgs {
  const fail: Fail = failer("bench:train");
  const { values, positionals } = command(
    USAGE,
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
    },
    fail,
    argv,
  );
  if (positionals.length > 0) fail(`unexpected argument "${positionals[0]}"\n${USAGE}`);
  if (!(TRAIN_BACKENDS as readonly string[]).includes(values.backend)) {
    fail(`--backend must be ${TRAIN_BACKENDS.join(", ")}, got "${values.backend}"`);
  }
  const warmup = values.warmup === undefined ? 1 : Number(values.warmup);
  if (!Number.isInteger(warmup) || warmup < 0) {
    fail(`--warmup must be an integer >= 0, got "${values.warmup}"`);
  }
  return {
    model: values.model,
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

function heapMiB(): string {
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm;
  return wasm ? `${(wasm.HEAPU8.buffer.byteLength / 2 ** 20).toFixed(0)} MiB` : "n/a";
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  if (args.backend === "wasm") installWasmTrainingKernels({ matMulFix: args.matMulFix });
  const backend = await selectBackend(args.backend as BackendRequest);
  if (backend !== args.backend) {
    throw new Error(`bench_train: CONVNEXT_BACKEND selected ${backend}, not ${args.backend}`);
  }
  if (backend === "webgpu") installWebGpuTrainingKernels();
  const adapter = backend === "webgpu" ? webGpuAdapterInfo() ?? null : null;

  let t0 = performance.now();
  const model = createConvNeXt(args.model, {
    inputShape: [args.size, args.size, 3],
    numClasses: args.classes,
    seed: 0,
  });
  const params = model.countParams();
  console.log(
    `${args.model}: ${(params / 1e6).toFixed(1)} M parameters, built in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; backend ${args.backend}${
      adapter ? ` (${adapter.description || adapter.vendor})` : ""
    }, batch ${args.batch}, ${args.size}x${args.size}, matMul fix ${
      args.backend === "wasm" ? (args.matMulFix ? "on" : "off") : "n/a"
    }`,
  );

  const x = tf.randomUniform([args.batch, args.size, args.size, 3], -1, 1, "float32", 1);
  const labelIds = Int32Array.from({ length: args.batch }, (_, i) => i % args.classes);
  const labels = tf.tensor1d(labelIds, "int32");
  const trained = modelParams(model, { weightDecay: 0.05 });
  const optimizer = new AdamW(trained);
  let parallel: ParallelGradients | null = null;
  // The fine-tuning loop's step: loss gradients (split over threads or not), then AdamW.
  // The loss is read (asynchronously) after the update is queued, so that on webgpu the
  // read waits for the whole step.
  const step = async (): Promise<number> => {
    let loss: number | tf.Tensor;
    let grads: Map<string, tf.Tensor>;
    if (parallel) {
      ({ loss, grads } = parallel.gradients(x, labelIds));
    } else {
      const r = tf.variableGrads(
        () => crossEntropy(model.apply(x, { training: true }) as tf.Tensor, labels),
        optimizer.variables,
      );
      loss = r.value;
      grads = new Map(trained.map((p) => [p.name, r.grads[p.variable.name]]));
    }
    optimizer.step(grads, 1e-4);
    tf.dispose([...grads.values()]);
    if (typeof loss === "number") return loss;
    const value = (await loss.data())[0];
    loss.dispose();
    return value;
  };

  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  /** Warm-up, then timed steps; returns the mean and min ms/step. */
  const measure = async (label: string): Promise<{ mean: number; min: number }> => {
    console.log(`-- ${label}`);
    for (let i = 0; i < args.warmup; i++) {
      t0 = performance.now();
      const loss = await step();
      console.log(
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
      t0 = performance.now();
      const loss = await step();
      times.push(performance.now() - t0);
      const cpu1 = processCpuMs();
      const cpu = cpu0 != null && cpu1 != null ? cpu1 - cpu0 : NaN;
      cpuTimes.push(cpu);
      const t = parallel?.timings;
      const split = t
        ? `; main shard ${t.own.toFixed(0)} ms, then waited ${
          t.wait.toFixed(0)
        } ms for the workers, weights out ${t.publish.toFixed(0)} ms, gradient sum ${
          t.sum.toFixed(0)
        } ms`
        : "";
      console.log(
        `step ${i + 1}: ${times[i].toFixed(0)} ms (process CPU ${cpu.toFixed(0)} ms, loss ${
          loss.toFixed(4)
        }${split})`,
      );
    }
    // Process CPU time counts every thread of the process, workers included.
    console.log(
      `${label}: mean ${mean(times).toFixed(0)} ms/step, min ${
        Math.min(...times).toFixed(0)
      } ms; ` +
        `process CPU mean ${mean(cpuTimes).toFixed(0)} ms/step; ` +
        `${tf.memory().numTensors} tensors, main heap ${heapMiB()}`,
    );
    console.log(
      `reference matmul: ${gmacsBefore.toFixed(1)} GMAC/s before the steps, ${
        (await matmulGmacs()).toFixed(1)
      } after (lower means a busier machine)`,
    );
    return { mean: mean(times), min: Math.min(...times) };
  };

  if (args.backend === "webgpu" && (args.threads ?? 1) > 1) {
    throw new Error("bench_train: --backend webgpu runs one thread (the worker split is for wasm)");
  }
  const threads = args.threads ??
    (args.matMulFix && args.backend !== "webgpu" ? trainThreads(args.batch) : 1);
  if (threads > 1 && !args.matMulFix) {
    throw new Error("bench_train: --no-matmul-fix measures one thread only; add --threads 1");
  }
  let multi: { mean: number; min: number } | null = null;
  if (threads > 1) {
    t0 = performance.now();
    parallel = await ParallelGradients.start(model, trained, { threads });
    console.log(
      `${threads - 1} worker thread(s) started in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    try {
      multi = await measure(`${threads} threads`);
    } finally {
      parallel.close();
      parallel = null;
    }
  }
  let single: { mean: number; min: number } | null = null;
  try {
    single = await measure("1 thread");
  } catch (e) {
    if (!multi) throw e;
    console.log(`1 thread: failed: ${(e as Error).message?.split("\n")[0] ?? e}`);
  }
  if (multi) {
    console.log(
      `summary: 1 thread ${
        single ? `${single.mean.toFixed(0)} ms/step (min ${single.min.toFixed(0)})` : "failed"
      }, ${threads} threads ${multi.mean.toFixed(0)} ms/step (min ${multi.min.toFixed(0)})` +
        (single ? `, speedup ${(single.mean / multi.mean).toFixed(2)}x` : ""),
    );
  }

  if (args.profile) {
    const start = performance.now();
    const info = await tf.profile(async () => {
      await step();
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
    console.log(
      `profiled step: ${wall.toFixed(0)} ms wall (profiling adds overhead), ` +
        `${kernelMs.toFixed(0)} ms in kernels, ${info.kernels.length} kernel calls`,
    );
    console.log("kernel                               ms   calls");
    for (const [name, e] of top) {
      console.log(
        `${name.padEnd(34)} ${e.ms.toFixed(0).padStart(6)} ${String(e.calls).padStart(7)}`,
      );
    }
  }

  // One machine-readable line: the single-threaded run, and the multi-threaded one if any.
  const round = (v: number | undefined) => v === undefined ? null : Math.round(v);
  console.log(JSON.stringify({
    model: args.model,
    backend: args.backend,
    ...(adapter !== null ? { adapter } : {}),
    batch: args.batch,
    size: args.size,
    params,
    msPerStep: round(single?.mean),
    minMsPerStep: round(single?.min),
    ...(multi ? { threads, msPerStepThreads: round(multi.mean) } : {}),
  }));
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
