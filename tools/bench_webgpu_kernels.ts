/**
 * `deno task bench:webgpu-kernels`: this project's webgpu kernels against the TF.js kernels
 * they replace, at convnext_tiny's shapes: the convolutions' filter and input gradients of the
 * stem, the depthwise 7x7 convs of each stage and the downsampling layers
 * (lib/backend/webgpu_conv_grads.ts, against tfjs-backend-webgpu's own kernels); then the
 * pointwise layers' weight gradients, TF.js's matmul against a split-K candidate.
 *
 *   deno task bench:webgpu-kernels [--batch 32] [--size 224] [--iters 5] [--json]
 *
 * Prints one line per kernel, shape and formulation (`--json`: `{"backend","adapter","kernel",
 * "x","filter" (or "m","k","n"),"formulation","ms"}`), the best of --iters calls, each timed to its result's
 * read, after one untimed call (compiling the shader), with the machine and adapter first.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { selectBackend, webGpuAdapterInfo } from "../lib/backend/select.ts";
import { quietHeadlessVulkan } from "../lib/backend/webgpu_compat.ts";
import {
  type ConvGradKernel,
  installWebGpuConvGrads,
  stockConvGradKernel,
} from "../lib/backend/webgpu_conv_grads.ts";
import { machineLine } from "../lib/util/machine.ts";
import { command, type CommandHelp, type Fail, failer, positiveInt } from "./cli.ts";

const HELP: CommandHelp = {
  name: "bench:webgpu-kernels",
  synopsis: "[flags]",
  about: `
This project's webgpu kernels against the TF.js kernels they replace, at convnext_tiny's shapes
for --batch images of --size pixels: the filter gradients of the stem, of each stage's depthwise
7x7 conv and of the downsampling layers, and the input gradients of the last two, as
lib/backend/webgpu_conv_grads.ts computes them ("ours": matrix products for the stem and
downsampling, a split reduction for the depthwise filter, a forward conv for its input) and as
tfjs-backend-webgpu does ("stock"); then the pointwise layers' weight gradients (a^T b over the
batch's pixels) as TF.js runs them and split over the pixels into batched products ("split-k
P", a candidate not in use yet). Each figure is the best of --iters calls timed to the read of the
result, after one untimed call that compiles the shader.`,
  flags: {
    batch: { value: "N", help: "images", default: "32" },
    size: { value: "PX", help: "input side in pixels (a multiple of 32)", default: "224" },
    iters: { value: "N", help: "timed calls per kernel and formulation", default: "5" },
    json: {
      help: "JSON lines: {backend, adapter, kernel, x, filter (or m, k, n), formulation, ms}",
    },
  },
  env: [],
  examples: [
    "deno task bench:webgpu-kernels",
    "deno task bench:webgpu-kernels --batch 2 --size 64 --iters 2   # a quick run",
  ],
};

/** One convolution gradient to time: the conv's input, filter, stride and padding. */
interface Case {
  kernel: ConvGradKernel;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  strides: number;
  pad: "same" | "valid";
}

/**
 * convnext_tiny's convolution gradients at `batch` x `size`: the filter gradients of the
 * stem, and for each stage of the depthwise 7x7 and the downsampling layer after it, with
 * their input gradients (the stem's input, the image, needs none).
 */
function tinyCases(batch: number, size: number): Case[] {
  const cases: Case[] = [{
    kernel: "Conv2DBackpropFilter",
    x: [batch, size, size, 3],
    filter: [4, 4, 3, 96],
    strides: 4,
    pad: "valid",
  }];
  [96, 192, 384, 768].forEach((c, s) => {
    const x: Case["x"] = [batch, size / 4 / 2 ** s, size / 4 / 2 ** s, c];
    for (
      const kernel of [
        "DepthwiseConv2dNativeBackpropFilter",
        "DepthwiseConv2dNativeBackpropInput",
      ] as const
    ) {
      cases.push({ kernel, x, filter: [7, 7, c, 1], strides: 1, pad: "same" });
    }
    if (s === 3) return;
    for (const kernel of ["Conv2DBackpropFilter", "Conv2DBackpropInput"] as const) {
      cases.push({ kernel, x, filter: [2, 2, c, 2 * c], strides: 2, pad: "valid" });
    }
  });
  return cases;
}

/** Best milliseconds of `iters` calls of `kernelFunc` on `c`, each to its result's read. */
async function time(c: Case, kernelFunc: tf.KernelFunc, iters: number): Promise<number> {
  const info = tf.backend_util.computeConv2DInfo(
    c.x,
    c.filter,
    c.strides,
    1,
    c.pad,
    undefined,
    c.kernel.startsWith("Depthwise"),
  );
  const dy = tf.randomNormal([c.x[0], info.outHeight, info.outWidth, info.outChannels]);
  // Filter gradients read the input, input gradients the filter.
  const input = c.kernel.endsWith("Input");
  const other = tf.randomNormal(input ? c.filter : c.x);
  await Promise.all([other.data(), dy.data()]); // on the GPU before timing
  const backend = tf.backend();
  const inputs = input ? { dy, filter: other } : { x: other, dy };
  const attrs = {
    strides: c.strides,
    pad: c.pad,
    dilations: 1,
    dataFormat: "NHWC",
    ...(input ? { inputShape: c.x } : { filterShape: c.filter }),
  };
  const call = async () => {
    const start = performance.now();
    const info = kernelFunc({ inputs, backend, attrs }) as tf.TensorInfo;
    const out = tf.engine().makeTensorFromTensorInfo(info);
    await out.data();
    out.dispose();
    return performance.now() - start;
  };
  await call();
  let best = Infinity;
  for (let i = 0; i < iters; i++) best = Math.min(best, await call());
  tf.dispose([other, dy]);
  return best;
}

/** Best milliseconds of `iters` runs of `f`, each to its result's read (after one untimed). */
async function timeOp(f: () => tf.Tensor, iters: number): Promise<number> {
  let best = Infinity;
  for (let i = 0; i <= iters; i++) {
    const start = performance.now();
    const out = f();
    await out.data();
    out.dispose();
    if (i > 0) best = Math.min(best, performance.now() - start);
  }
  return best;
}

/**
 * A pointwise layer's weight gradient, `a^T b` over the batch's pixels (`m` rows: a few
 * output tiles, a long inner dimension), as TF.js runs it ("stock") and split over the rows
 * in `slices` batched products then summed ("split-k"): a candidate, not in use yet, that
 * gives a large GPU more workgroups (TF.js splits K only for at most 8 output tiles).
 */
async function weightGradient(m: number, k: number, n: number, iters: number) {
  // At least 1024 rows a slice: split K, not the work into crumbs.
  const slices = [16, 8, 4, 2].find((p) => m % p === 0 && m / p >= 1024) ?? 1;
  const [a, b] = [tf.randomNormal([m, k]), tf.randomNormal([m, n])];
  await Promise.all([a.data(), b.data()]);
  const stock = await timeOp(() => tf.matMul(a, b, true, false), iters);
  const sliced = () => {
    const [as, bs] = [a.reshape([slices, m / slices, k]), b.reshape([slices, m / slices, n])];
    return tf.sum(tf.matMul(as, bs, true, false), 0);
  };
  const split = slices === 1 ? undefined : await timeOp(() => tf.tidy(sliced), iters);
  tf.dispose([a, b]);
  return { slices, stock, split };
}

if (import.meta.main) {
  const fail: Fail = failer("bench:webgpu-kernels");
  const { values, positionals } = command(HELP, {
    batch: { type: "string" },
    size: { type: "string" },
    iters: { type: "string" },
    json: { type: "boolean", default: false },
  }, fail);
  if (positionals.length > 0) fail(`unexpected argument "${positionals[0]}"`);
  const batch = positiveInt(values.batch, "--batch", 32, fail);
  const size = positiveInt(values.size, "--size", 224, fail);
  if (size % 32 !== 0) fail(`--size must be a multiple of 32, got ${size}`);
  const iters = positiveInt(values.iters, "--iters", 5, fail);
  quietHeadlessVulkan();
  await selectBackend("webgpu");
  installWebGpuConvGrads();
  const adapter = webGpuAdapterInfo();
  const log = values.json ? console.error : console.log;
  log(`machine: ${machineLine()}`);
  log(`adapter: ${adapter?.description || adapter?.vendor || "?"}`);
  for (const c of tinyCases(batch, size)) {
    const formulations: [string, tf.KernelFunc][] = [
      ["stock", stockConvGradKernel(c.kernel)],
      ["ours", tf.getKernel(c.kernel, "webgpu")!.kernelFunc],
    ];
    for (const [formulation, f] of formulations) {
      const ms = Math.round(await time(c, f, iters) * 100) / 100;
      const line = { backend: "webgpu", adapter, kernel: c.kernel, x: c.x, filter: c.filter };
      if (values.json) console.log(JSON.stringify({ ...line, formulation, ms }));
      else console.log(`${c.kernel} x [${c.x}] filter [${c.filter}]: ${formulation} ${ms} ms`);
    }
  }
  // The pointwise layers' weight gradients of stages 1 and 2 ([c, 4c] and [4c, c] over the
  // pixels: 36 and 144 output tiles of 32 x 32; the later stages have hundreds).
  for (const [s, c] of [96, 192].entries()) {
    const m = batch * (size / 4 / 2 ** s) ** 2;
    for (const [k, n] of [[c, 4 * c], [4 * c, c]]) {
      const { slices, stock, split } = await weightGradient(m, k, n, iters);
      const rows: [string, number | undefined][] = [["stock", stock], [`split-k ${slices}`, split]];
      for (const [formulation, ms] of rows) {
        if (ms === undefined) continue; // too few rows to split
        const line = { backend: "webgpu", adapter, kernel: "BatchMatMul a^T b", m, k, n };
        const rounded = Math.round(ms * 100) / 100;
        const shapes = `[${m}, ${k}]^T [${m}, ${n}]`;
        console.log(
          values.json
            ? JSON.stringify({ ...line, formulation, ms: rounded })
            : `weight gradient ${shapes}: ${formulation} ${rounded} ms`,
        );
      }
    }
  }
}
