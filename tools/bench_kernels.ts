/**
 * `deno task bench:kernels`: speed of the kernel engine's pieces on convnext_tiny's shapes
 * (one thread): each stage's block at several tile sizes, and its two matmuls alone, in
 * GFLOP/s. Best of `--iters` runs; random weights.
 *
 *   deno task bench:kernels [--iters 9] [--plain]
 *
 * `--plain` measures the plain-SIMD build instead of relaxed SIMD (fused multiply-add).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { KernelEngine } from "../lib/infer/engine/engine.ts";
import { BLOCK_TILE } from "../lib/infer/engine/run.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { iters: { type: "string", default: "9" }, plain: { type: "boolean" } },
  });
  const iters = Number(values.iters);
  if (!(Number.isInteger(iters) && iters > 0)) {
    console.error(`bench:kernels: --iters expects a positive integer, got "${values.iters}"`);
    Deno.exit(2);
  }
  const engine = KernelEngine.create({ relaxed: !values.plain });
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
  console.log(`build: ${engine.relaxed ? "relaxed SIMD" : "plain SIMD"}, best of ${iters}`);
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
      return `tile ${tile}: ${ms.toFixed(1)} ms`;
    });
    console.log(
      `${side}x${side}x${c}: matmul+GELU ${(flops / g1 / 1e6).toFixed(1)} GFLOP/s, ` +
        `matmul+residual ${(flops / g2 / 1e6).toFixed(1)} GFLOP/s; block ${blocks.join(", ")}`,
    );
    for (const p of [x, out, h, w1, w2, b1, b2, dww, dwb, pack]) engine.free(p);
  }
}
