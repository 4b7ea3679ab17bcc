/**
 * `deno task bench`: forward-pass speed of ConvNeXt models on the active backend.
 *
 *   deno task bench [--model convnext_tiny[,..]] [--batch 1,8] [--size 224] [--backend auto]
 *                   [--path stock|optimized|both] [--warmup 1] [--iters 3] [--json]
 *
 * `--model` takes architecture names (random weights: speed does not depend on them).
 *
 * `--path` picks the inference path: "stock" (TF.js Layers `predict`), "optimized" (the
 * compiled plan with folded weights, lib/infer/, the default of `predict` on wasm, cpu and
 * webgpu) or both (default). The `executor` column says what ran the optimized path:
 * "kernels" (the fused WebAssembly kernels on all cores, the default on wasm and cpu) or
 * "tfjs" (the plan on TF.js kernels: on webgpu, or with `CONVNEXT_EXECUTOR=tfjs`).
 *
 * Each architecture/path/backend runs in its own subprocess, so peak memory (the process's
 * VmHWM, worker threads included) belongs to that measurement alone. On webgpu each JSON
 * line also names the `adapter` (vendor, architecture, device, description, and
 * `isFallbackAdapter`: true for a software adapter such as lavapipe, which is no benchmark).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { fileURLToPath } from "node:url";
import {
  type BackendRequest,
  selectBackend,
  type WebGpuAdapterDescription,
  webGpuAdapterInfo,
} from "../lib/backend/select.ts";
import { quietHeadlessVulkan } from "../lib/backend/webgpu_compat.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import type { ConvNeXtModel } from "../lib/infer/model.ts";
import { inferenceThreads } from "../lib/infer/pool.ts";
import { machineLine } from "../lib/util/machine.ts";
import {
  architectureFlag,
  BACKEND_HELP,
  BACKEND_OPTION,
  backendFlag,
  command,
  type CommandHelp,
  type Fail,
  failer,
} from "./cli.ts";

/** Inference paths the bench measures. */
export const BENCH_PATHS = ["stock", "optimized"] as const;
/** One inference path. */
export type BenchPath = (typeof BENCH_PATHS)[number];

/** One measurement, as printed with --json. */
export interface BenchResult {
  architecture: string;
  backend: string;
  path: BenchPath;
  /**
   * What ran the path: "layers" (stock), "kernels" (the fused WebAssembly kernels of
   * lib/infer/engine/) or "tfjs" (the plan on TF.js kernels, `CONVNEXT_EXECUTOR=tfjs`).
   */
  executor: string;
  /** Threads the optimized path used (`CONVNEXT_THREADS`); 1 for stock. */
  threads: number;
  batch: number;
  size: number;
  msPerImage: number;
  imagesPerSecond: number;
  peakRssMB: number;
  /** On webgpu: the adapter (vendor, architecture, whether it is a software fallback...). */
  adapter?: WebGpuAdapterDescription;
}

const HELP: CommandHelp = {
  name: "bench",
  synopsis: "[flags]",
  about: `
Forward-pass speed of ConvNeXt architectures (random weights) after warm-up: ms/image, images/s
and peak resident memory. Each architecture and path runs in its own process, so the peak memory
belongs to that measurement alone. The stock path is TF.js Layers' predict; the optimized one is
the compiled plan with folded weights, run by the fused WebAssembly kernels on every core (wasm and
cpu) or by TF.js kernels (webgpu, or CONVNEXT_EXECUTOR=tfjs).`,
  flags: {
    model: {
      value: "ARCH[,ARCH...]",
      help: "architectures, comma-separated (random weights)",
    },
    batch: { value: "N[,N...]", help: "batch sizes, comma-separated" },
    size: { value: "PX", help: "input side in pixels" },
    path: { value: "stock|optimized|both", help: "inference path(s) measured" },
    warmup: { value: "N", help: "untimed runs first (0 for none)" },
    iters: { value: "N", help: "timed runs, averaged" },
    json: {
      help: "JSON lines, one per measurement (with the WebGPU adapter on webgpu)",
    },
    child: { help: "internal: measure one architecture and path in this process", hidden: true },
    ...BACKEND_HELP,
  },
  env: ["CONVNEXT_BACKEND", "CONVNEXT_THREADS", "CONVNEXT_EXECUTOR"],
  examples: [
    "deno task bench                                      # convnext_tiny, batch 1 and 8, both paths",
    "deno task bench --model convnext_small --batch 8 --json",
    "CONVNEXT_THREADS=1 deno task bench --path optimized --iters 5",
  ],
};

const fail: Fail = failer("bench");

function list(value: string, what: string): number[] {
  const items = value.split(",").map((v) => Number(v.trim()));
  if (!items.every((n) => Number.isInteger(n) && n > 0)) {
    fail(`--${what} expects positive integers separated by commas, got "${value}"`);
  }
  return items;
}

function peakRssMB(): number {
  try {
    // VmHWM: the process's peak resident set size, in kB (Linux).
    const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
      l.startsWith("VmHWM:")
    );
    if (line) return Math.round(Number(line.split(/\s+/)[1]) / 1024);
  } catch { /* not Linux: fall back to the current RSS */ }
  return Math.round(Deno.memoryUsage().rss / 2 ** 20);
}

async function measure(
  arch: string,
  backend: BackendRequest,
  batches: number[],
  size: number,
  warmup: number,
  iters: number,
  path: BenchPath,
): Promise<BenchResult[]> {
  quietHeadlessVulkan(); // headless Linux: no "XDG_RUNTIME_DIR is invalid" noise
  const active = await selectBackend(backend);
  const adapter = active === "webgpu" ? webGpuAdapterInfo() : undefined;
  const model = createConvNeXt(arch, { inputShape: [size, size, 3], seed: 0 }) as ConvNeXtModel;
  // "optimized" forces the plan on any backend (generic TF.js ops), "stock" the Layers path.
  model.inferencePath = path;
  const results: BenchResult[] = [];
  for (const batch of batches) {
    const x = tf.randomNormal([batch, size, size, 3], 0, 1, "float32", 1);
    const run = async () => {
      const y = model.predict(x) as tf.Tensor;
      await y.data(); // wait for the backend to finish, as a user reading the logits would
      y.dispose();
    };
    for (let i = 0; i < warmup; i++) await run();
    const start = performance.now();
    for (let i = 0; i < iters; i++) await run();
    const ms = (performance.now() - start) / iters / batch;
    x.dispose();
    results.push({
      architecture: arch,
      backend: active,
      path,
      executor: path === "stock" ? "layers" : model.optimizedExecutor(),
      // The kernels use the pool on every backend, the TF.js executor on wasm only.
      threads: path === "stock" ||
          (model.optimizedExecutor() === "tfjs" && active !== "wasm")
        ? 1
        : inferenceThreads(model.optimizedExecutor()),
      batch,
      size,
      msPerImage: Math.round(ms * 10) / 10,
      imagesPerSecond: Math.round((1000 / ms) * 100) / 100,
      peakRssMB: peakRssMB(),
      ...(adapter ? { adapter } : {}),
    });
  }
  model.dispose();
  return results;
}

function table(rows: BenchResult[]): string {
  const head = [
    "architecture",
    "backend",
    "path",
    "executor",
    "threads",
    "batch",
    "size",
    "ms/image",
    "images/s",
    "peak RSS MB",
  ];
  const body = rows.map((r) => [
    r.architecture,
    r.backend,
    r.path,
    r.executor,
    String(r.threads),
    String(r.batch),
    String(r.size),
    r.msPerImage.toFixed(1),
    r.imagesPerSecond.toFixed(2),
    String(r.peakRssMB),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
  return [fmt(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(fmt)].join("\n");
}

if (import.meta.main) {
  if (Deno.args.some((a) => a === "--arch" || a.startsWith("--arch="))) {
    fail("--arch is now --model (architecture names, comma-separated)");
  }
  const { values, positionals } = command(HELP, {
    model: { type: "string", default: "convnext_tiny" },
    batch: { type: "string", default: "1,8" },
    size: { type: "string", default: "224" },
    path: { type: "string", default: "both" },
    warmup: { type: "string", default: "1" },
    iters: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
    child: { type: "boolean", default: false },
    ...BACKEND_OPTION,
  }, fail);
  if (positionals.length > 0) {
    fail(`unexpected argument "${positionals[0]}" (architectures go in --model)`);
  }
  const archs = values.model.split(",").map((a) => architectureFlag(a, fail));
  const backend = backendFlag(values.backend, fail);
  if (values.path !== "both" && !(BENCH_PATHS as readonly string[]).includes(values.path)) {
    fail(`--path: expected stock, optimized or both, got "${values.path}"`);
  }
  const paths: BenchPath[] = values.path === "both" ? [...BENCH_PATHS] : [values.path as BenchPath];
  const batches = list(values.batch, "batch");
  const [size] = list(values.size, "size");
  const [warmup] = values.warmup === "0" ? [0] : list(values.warmup, "warmup");
  const [iters] = list(values.iters, "iters");

  if (values.child) {
    const rows = await measure(
      archs[0],
      backend,
      batches,
      size,
      warmup,
      iters,
      paths[0],
    );
    for (const r of rows) console.log(JSON.stringify(r));
    // The child ends on its own (no Deno.exit): its inference threads stop first.
  } else {
    // With --json, stdout carries the JSON lines only.
    (values.json ? console.error : console.log)(`machine: ${machineLine()}`);
    const rows: BenchResult[] = [];
    for (const arch of archs) {
      for (const path of paths) {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            fileURLToPath(import.meta.url),
            "--child",
            `--model=${arch}`,
            `--batch=${values.batch}`,
            `--size=${size}`,
            `--backend=${backend}`,
            `--warmup=${warmup}`,
            `--iters=${iters}`,
            `--path=${path}`,
          ],
          stdout: "piped",
          stderr: "inherit",
        }).output();
        if (!out.success) fail(`measuring ${arch} (${path}) failed (exit ${out.code})`, 1);
        for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
          if (!line.startsWith("{")) continue;
          const r = JSON.parse(line) as BenchResult;
          rows.push(r);
          if (values.json) console.log(JSON.stringify(r));
        }
      }
    }
    if (!values.json) console.log(table(rows));
  }
}
