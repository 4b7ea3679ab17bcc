/**
 * `deno task bench:kernels`: speed of the kernel engine's pieces on convnext_tiny's shapes
 * (one thread): the machine's register-only multiply-add ceiling, then per stage the
 * inference block at several tile sizes and its two matmuls alone, and the training block's
 * forward and backward passes with the share of their pointwise matmuls. Best of `--iters`
 * runs; random weights.
 *
 *   deno task bench:kernels [--iters 9] [--plain] [--json]
 *
 * `--plain` measures the plain-SIMD build instead of relaxed SIMD (fused multiply-add).
 * `--json` prints one JSON line per measurement instead of a line per stage:
 * `{"build", "iters", "height", "width", "channels", "kernel", "tile"?, "images"?, "ms",
 * "gflops"}` with `kernel` one of `peak` (no shape), `matmul+gelu`, `matmul+residual` (the
 * block's two matmuls), `block`, `train-forward`, `train-backward` and `train-matmuls` (the
 * six pointwise matmuls of one training step of the block, timed alone).
 *
 * @module
 */
import { KernelEngine } from "../lib/infer/engine/engine.ts";
import { BLOCK_TILE } from "../lib/infer/engine/run.ts";
import { trainKernels } from "../lib/infer/engine/train.ts";
import { trainTile } from "../lib/train/engine_program.ts";
import { command, type CommandHelp, type Fail, failer, positiveInt } from "./cli.ts";

const HELP: CommandHelp = {
  name: "bench:kernels",
  synopsis: "[flags]",
  about: `
Speed of the WebAssembly kernels behind the optimized inference path and the training engine, on
one thread, at convnext_tiny's four stage shapes (random weights): the machine's ceiling (multiply-
adds on registers only, no memory access), each stage's inference block at several tile sizes (ms)
and its two matmuls alone (GFLOP/s), and the training block's forward and backward passes on two
images with the time its six pointwise matmuls take alone. Each figure is the best of --iters runs.`,
  flags: {
    iters: { value: "N", help: "timed runs per measurement; the best is kept", default: "9" },
    plain: { help: "the plain-SIMD build instead of relaxed SIMD (fused multiply-add)" },
    json: {
      help: "JSON lines: {build, height, width, channels, kernel, tile, ms, gflops, ...}",
    },
  },
  env: [],
  examples: [
    "deno task bench:kernels",
    "deno task bench:kernels --plain --iters 5          # without fused multiply-add",
    "deno task bench:kernels --json > kernels.jsonl",
  ],
};

/** Images per training measurement (a thread's share of a small batch). */
const TRAIN_IMAGES = 2;

/** One measurement: a kernel at a tile size (where it has one), its time and speed. */
interface Measurement {
  kernel: string;
  tile?: number;
  images?: number;
  ms: number;
  gflops: number;
}

/** Best-of timing and deterministic random data on one engine. */
class Bench {
  #seed = 1;
  constructor(readonly engine: KernelEngine, readonly iters: number) {}

  /** `n` floats in [-scale / 2, scale / 2) uploaded to the engine. */
  random(n: number, scale = 1): number {
    return this.engine.upload(this.values(n, scale));
  }

  values(n: number, scale = 1): Float32Array {
    return Float32Array.from({ length: n }, () => {
      this.#seed = (Math.imul(this.#seed, 1664525) + 1013904223) >>> 0;
      return (this.#seed / 2 ** 32 - 0.5) * scale;
    });
  }

  /** The best of `iters` timed runs of `f` after one untimed run, ms. */
  best(f: () => void): number {
    f();
    let ms = Infinity;
    for (let i = 0; i < this.iters; i++) {
      const t0 = performance.now();
      f();
      ms = Math.min(ms, performance.now() - t0);
    }
    return ms;
  }
}

const gflops = (flops: number, ms: number) => flops / ms / 1e6;

/** Multiply-adds on registers only: what the kernels could reach without memory access. */
function peak(b: Bench): Measurement {
  const rounds = 2_000_000;
  // Short calls first: V8 runs a new function on its baseline compiler until the optimized
  // code is ready, and a call that started there stays there.
  for (let i = 0; i < 50; i++) b.engine.kernels.fma_peak(rounds / 20);
  const ms = b.best(() => b.engine.kernels.fma_peak(rounds));
  return { kernel: "peak", ms, gflops: gflops(96 * rounds, ms) };
}

/** The inference block of a stage at several tiles, and its two matmuls alone. */
function inferenceStage(b: Bench, c: number, side: number): Measurement[] {
  const { engine } = b;
  const k = engine.kernels;
  const m = side * side, hidden = 4 * c;
  const x = b.random(m * c);
  const out = engine.alloc(m * c), h = engine.alloc(m * hidden);
  const w1 = engine.packMatrix(b.values(c * hidden), c, hidden);
  const w2 = engine.packMatrix(b.values(c * hidden), hidden, c);
  const b1 = b.random(hidden), b2 = b.random(c);
  const dww = b.random(49 * c), dwb = b.random(c);
  const flops = 2 * m * c * hidden;
  const pack = engine.alloc(k.gemm_scratch(hidden));
  const g1 = b.best(() => k.gemm(x, c, m, c, w1, hidden, b1, h, hidden, 1, 0, 0, pack));
  const g2 = b.best(() => k.gemm(h, hidden, m, hidden, w2, c, b2, out, c, 2, x, c, pack));
  // Block FLOPs: the two matmuls and the 7x7 depthwise convolution.
  const blockFlops = 2 * flops + 2 * 49 * m * c;
  const tiles = [32, 64, BLOCK_TILE, 256].filter((t, i, a) => a.indexOf(t) === i);
  const blocks = tiles.map((tile): Measurement => {
    const scratch = engine.alloc(k.block_scratch(side, side, c, 7, tile));
    const ms = b.best(() =>
      k.block(x, 1, side, side, c, 3, 3, 7, dww, dwb, 1e-6, w1, b1, w2, b2, tile, scratch, out)
    );
    engine.free(scratch);
    return { kernel: "block", tile, ms, gflops: gflops(blockFlops, ms) };
  });
  for (const p of [x, out, h, w1, w2, b1, b2, dww, dwb, pack]) engine.free(p);
  return [
    { kernel: "matmul+gelu", ms: g1, gflops: gflops(flops, g1) },
    { kernel: "matmul+residual", ms: g2, gflops: gflops(flops, g2) },
    ...blocks,
  ];
}

/** A training block's buffers in engine memory (random weights and input). */
function trainingBuffers(b: Bench, c: number, side: number) {
  const { engine } = b;
  const k = trainKernels(engine);
  const n = TRAIN_IMAGES, tile = trainTile(c), hidden = 4 * c, m = n * side * side;
  const own: number[] = [];
  const alloc = (floats: number) => (own.push(engine.alloc(floats)), own[own.length - 1]);
  const keep = (ptr: number) => (own.push(ptr), ptr);
  const x = keep(b.random(m * c)), dww = keep(b.random(49 * c, 0.3)), dwb = keep(b.random(c));
  const gamma = keep(b.random(c)), beta = keep(b.random(c)), ls = keep(b.random(c));
  const b1 = keep(b.random(hidden)), b2 = keep(b.random(c));
  const w1 = keep(b.random(c * hidden, 0.1)), w2 = keep(b.random(c * hidden, 0.1));
  const [w1p, w2p, w1tp, w2tp] = [1, 2, 3, 4].map(() => alloc(c * hidden));
  k.pack_b_fast(w1, c, hidden, w1p);
  k.pack_b_fast(w2, hidden, c, w2p);
  k.pack_bt(w1, c, hidden, w1tp);
  k.pack_bt(w2, hidden, c, w2tp);
  const dwflip = alloc(49 * c);
  k.dw_flip(dww, 7, c, dwflip);
  const [y, u, out, dout, dy] = [1, 2, 3, 4, 5].map(() => alloc(m * c));
  // The gradients' pointers, in kernels.c's block_grads order.
  const gradSizes = [49 * c, c, c, c, c * hidden, hidden, c * hidden, c, c];
  const grads = alloc(gradSizes.length);
  new Int32Array(engine.memory.buffer, grads, gradSizes.length).set(gradSizes.map(alloc));
  return {
    k,
    n,
    tile,
    hidden,
    m,
    own,
    ptr: {
      x,
      dww,
      dwb,
      gamma,
      beta,
      ls,
      b1,
      b2,
      w1p,
      w2p,
      w1tp,
      w2tp,
      dwflip,
      y,
      u,
      out,
      dout,
      dy,
    },
    grads,
    scratch: alloc(k.block_train_scratch(side, c, tile)),
    stats: alloc(2 * m),
    h: alloc(m * hidden),
    pack: alloc(Math.max(k.gemm_scratch(hidden), k.gemm_tn_scratch(hidden))),
    gw: alloc(c * hidden),
  };
}

/**
 * The training block of a stage on {@link TRAIN_IMAGES} images (with layer scale, no drop
 * path), forward and backward, and its six pointwise matmuls alone, tile by tile as the
 * block runs them: two forward, and per layer the weight and the input gradient.
 */
function trainingStage(b: Bench, c: number, side: number): Measurement[] {
  const t = trainingBuffers(b, c, side);
  const { k, n, tile, hidden, m, h, pack, gw } = t;
  const { x, y, u, dy, dout, w1p, w2p, w1tp, w2tp } = t.ptr;
  const shape = [n, side, side, c, 7];
  const layers = [t.ptr.gamma, t.ptr.beta];
  const saved = [y, t.stats, h, u];
  const fwd = b.best(() =>
    k.block_fwd_train(
      x,
      ...shape,
      ...[t.ptr.dww, t.ptr.dwb, 1e-6, ...layers, w1p, t.ptr.b1, w2p, t.ptr.b2, t.ptr.ls, 0],
      ...[tile, t.scratch, ...saved, t.ptr.out],
    )
  );
  const d = b.values(m * c);
  const bwd = b.best(() => {
    new Float32Array(b.engine.memory.buffer, dout, m * c).set(d); // the kernel works in place
    k.block_bwd_train(
      x,
      ...shape,
      ...[t.ptr.dwflip, ...layers, w1tp, w2tp, t.ptr.ls, 0, ...saved],
      ...[dout, dy, tile, t.scratch, t.grads, 1],
    );
  });
  const mms = b.best(() => {
    for (let p = 0; p < m; p += tile) {
      const rows = Math.min(tile, m - p), zt = x + 4 * p * c, ht = h + 4 * p * hidden;
      k.gemm(zt, c, rows, c, w1p, hidden, 0, ht, hidden, 0, 0, 0, pack);
      k.gemm(ht, hidden, rows, hidden, w2p, c, 0, u + 4 * p * c, c, 0, 0, 0, pack);
      k.gemm_tn(ht, hidden, zt, c, rows, hidden, c, gw, c, pack);
      k.gemm(zt, c, rows, c, w2tp, hidden, 0, ht, hidden, 0, 0, 0, pack);
      k.gemm_tn(zt, c, ht, hidden, rows, c, hidden, gw, hidden, pack);
      k.gemm(ht, hidden, rows, hidden, w1tp, c, 0, dy + 4 * p * c, c, 0, 0, 0, pack);
    }
  });
  for (const p of t.own) b.engine.free(p);
  const matmul = 2 * m * c * hidden, dw = 2 * 49 * m * c;
  const line = (kernel: string, ms: number, flops: number): Measurement => ({
    kernel,
    images: n,
    tile,
    ms,
    gflops: gflops(flops, ms),
  });
  return [
    line("train-forward", fwd, 2 * matmul + dw),
    line("train-backward", bwd, 4 * matmul + 2 * dw),
    line("train-matmuls", mms, 6 * matmul),
  ];
}

/** One line per stage for people. */
function stageLine(side: number, c: number, lines: Measurement[]): string {
  const of = (kernel: string) => lines.find((l) => l.kernel === kernel)!;
  const blocks = lines.filter((l) => l.kernel === "block")
    .map(({ tile, ms }) => `tile ${tile}: ${ms.toFixed(1)} ms`).join(", ");
  const [f, bw, mm] = ["train-forward", "train-backward", "train-matmuls"].map(of);
  const share = (100 * mm.ms / (f.ms + bw.ms)).toFixed(0);
  return `${side}x${side}x${c}: matmul+GELU ${of("matmul+gelu").gflops.toFixed(1)} GFLOP/s, ` +
    `matmul+residual ${of("matmul+residual").gflops.toFixed(1)} GFLOP/s; block ${blocks}\n` +
    `  training, ${f.images} images: forward ${f.ms.toFixed(1)} ms + backward ${
      bw.ms.toFixed(1)
    } ms; its 6 matmuls alone ${mm.ms.toFixed(1)} ms (${share}%, ${mm.gflops.toFixed(1)} GFLOP/s)`;
}

if (import.meta.main) {
  const fail: Fail = failer("bench:kernels");
  const { values, positionals } = command(HELP, {
    iters: { type: "string" },
    plain: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  }, fail);
  if (positionals.length > 0) fail(`unexpected argument "${positionals[0]}"`);
  const iters = positiveInt(values.iters, "--iters", 9, fail);
  const engine = KernelEngine.create({ relaxed: !values.plain });
  const build = engine.relaxed ? "relaxed SIMD" : "plain SIMD";
  const b = new Bench(engine, iters);
  const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;
  const json = (m: Measurement, shape: object = {}) =>
    console.log(JSON.stringify({
      build,
      iters,
      ...shape,
      ...m,
      ms: round(m.ms, 3),
      gflops: round(m.gflops, 1),
    }));
  const top = peak(b);
  if (values.json) json(top);
  else {
    console.log(`build: ${build}, best of ${iters}, one thread`);
    console.log(`ceiling (multiply-adds on registers only): ${top.gflops.toFixed(1)} GFLOP/s`);
  }
  for (const [c, side] of [[96, 56], [192, 28], [384, 14], [768, 7]]) {
    const lines = [...inferenceStage(b, c, side), ...trainingStage(b, c, side)];
    if (values.json) {
      for (const m of lines) json(m, { height: side, width: side, channels: c });
    } else console.log(stageLine(side, c, lines));
  }
}
