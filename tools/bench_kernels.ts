/**
 * `deno task bench:kernels`: speed of the kernel engine's pieces on convnext_tiny's shapes
 * (one thread): each stage's block at several tile sizes, and its two matmuls alone, in
 * GFLOP/s. Best of `--iters` runs; random weights.
 *
 *   deno task bench:kernels [--iters 9] [--plain] [--json]
 *
 * `--plain` measures the plain-SIMD build instead of relaxed SIMD (fused multiply-add).
 * `--json` prints one JSON line per measurement instead of a line per stage:
 * `{"build", "iters", "height", "width", "channels", "kernel", "tile"?, "ms", "gflops"}` with
 * `kernel` one of `matmul+gelu`, `matmul+residual` (the block's two matmuls) and `block`.
 *
 * @module
 */
import { KernelEngine } from "../lib/infer/engine/engine.ts";
import { BLOCK_TILE } from "../lib/infer/engine/run.ts";
import { command, type CommandHelp, type Fail, failer, positiveInt } from "./cli.ts";

const HELP: CommandHelp = {
  name: "bench:kernels",
  synopsis: "[flags]",
  about: `
Speed of the WebAssembly kernels behind the optimized inference path, on one thread, at
convnext_tiny's four stage shapes (random weights): each stage's whole block at several tile sizes
(ms), and the block's two matmuls alone (GFLOP/s). Each figure is the best of --iters runs.`,
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
  const k = engine.kernels;
  let seed = 1;
  const random = (n: number) =>
    Float32Array.from({ length: n }, () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed / 2 ** 32 - 0.5;
    });
  const best = (f: () => void) => {
    f();
    let ms = Infinity;
    for (let i = 0; i < iters; i++) {
      const t0 = performance.now();
      f();
      ms = Math.min(ms, performance.now() - t0);
    }
    return ms;
  };
  const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;
  if (!values.json) console.log(`build: ${build}, best of ${iters}`);
  const tiles = [32, 64, BLOCK_TILE, 256].filter((t, i, a) => a.indexOf(t) === i);
  for (const [c, side] of [[96, 56], [192, 28], [384, 14], [768, 7]]) {
    const m = side * side, hidden = 4 * c;
    const x = engine.upload(random(m * c));
    const out = engine.alloc(m * c), h = engine.alloc(m * hidden);
    const w1 = engine.packMatrix(random(c * hidden), c, hidden);
    const w2 = engine.packMatrix(random(c * hidden), hidden, c);
    const b1 = engine.upload(random(hidden)), b2 = engine.upload(random(c));
    const dww = engine.upload(random(49 * c)), dwb = engine.upload(random(c));
    const flops = 2 * m * c * hidden;
    const pack = engine.alloc(k.gemm_scratch(hidden));
    const g1 = best(() => k.gemm(x, c, m, c, w1, hidden, b1, h, hidden, 1, 0, 0, pack));
    const g2 = best(() => k.gemm(h, hidden, m, hidden, w2, c, b2, out, c, 2, x, c, pack));
    const blocks = tiles.map((tile) => {
      const scratch = engine.alloc(k.block_scratch(side, side, c, 7, tile));
      const ms = best(() =>
        k.block(x, 1, side, side, c, 3, 3, 7, dww, dwb, 1e-6, w1, b1, w2, b2, tile, scratch, out)
      );
      engine.free(scratch);
      return { tile, ms };
    });
    if (values.json) {
      const shape = { build, iters, height: side, width: side, channels: c };
      // Block FLOPs: the two matmuls and the 7x7 depthwise convolution.
      const blockFlops = 2 * flops + 2 * 49 * m * c;
      const lines = [
        { ...shape, kernel: "matmul+gelu", ms: round(g1, 3), gflops: round(flops / g1 / 1e6, 1) },
        {
          ...shape,
          kernel: "matmul+residual",
          ms: round(g2, 3),
          gflops: round(flops / g2 / 1e6, 1),
        },
        ...blocks.map(({ tile, ms }) => ({
          ...shape,
          kernel: "block",
          tile,
          ms: round(ms, 3),
          gflops: round(blockFlops / ms / 1e6, 1),
        })),
      ];
      for (const line of lines) console.log(JSON.stringify(line));
    } else {
      console.log(
        `${side}x${side}x${c}: matmul+GELU ${(flops / g1 / 1e6).toFixed(1)} GFLOP/s, ` +
          `matmul+residual ${(flops / g2 / 1e6).toFixed(1)} GFLOP/s; block ${
            blocks.map(({ tile, ms }) => `tile ${tile}: ${ms.toFixed(1)} ms`).join(", ")
          }`,
      );
    }
    for (const p of [x, out, h, w1, w2, b1, b2, dww, dwb, pack]) engine.free(p);
  }
}
