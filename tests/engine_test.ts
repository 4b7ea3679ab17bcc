// Tests of the kernel engine (lib/infer/engine/): each kernel against a plain float64
// JavaScript implementation of its definition (independent of the kernels and of TF.js), on
// odd sizes that exercise every remainder path, for both builds (relaxed SIMD and plain
// SIMD). The whole-model comparison with the stock TF.js path is in fast_test.ts.
import assert from "node:assert/strict";
import { hasRelaxedSimd, KernelEngine } from "../lib/infer/engine/engine.ts";
import { blockChunks, EnginePlan, EngineUnsupported } from "../lib/infer/engine/run.ts";
import type { Plan } from "../lib/infer/plan.ts";

/** Deterministic pseudo-random values in [-scale, scale). */
function random(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 * 2 - 1) * scale;
  }
  return out;
}

/** erf in float64: the Maclaurin series (|x| <= 5: terms stay below 1e10, error < 1e-12). */
function erf(x: number): number {
  if (Math.abs(x) > 5) return Math.sign(x);
  let term = x, sum = x;
  for (let n = 1; n < 200; n++) {
    term *= -x * x / n;
    sum += term / (2 * n + 1);
    if (Math.abs(term) < 1e-17) break;
  }
  return 2 / Math.sqrt(Math.PI) * sum;
}

const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));

function maxRelErr(got: Float32Array, want: Float64Array | number[]): number {
  let scale = 0, err = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    err = Math.max(err, Math.abs(got[i] - want[i]));
  }
  return err / Math.max(scale, 1e-30);
}

const builds = hasRelaxedSimd() ? [true, false] : [false];

for (const relaxed of builds) {
  const name = relaxed ? "relaxed SIMD" : "plain SIMD";

  Deno.test(`gemm (${name}): bias, GELU and residual epilogues, strided rows`, () => {
    const e = KernelEngine.create({ relaxed });
    // Odd M, K, N: remainder rows (M % 4) and a partial last panel (N % 8).
    for (const [m, k, n] of [[13, 37, 21], [4, 8, 8], [1, 3, 5], [37, 96, 24]]) {
      const lda = k + 3, ldc = n + 5, ldr = n + 2;
      const a = random(m * lda, m + k, 1);
      const b = random(k * n, n + 7, 1 / Math.sqrt(k));
      const bias = random(n, 11, 0.5);
      const r = random(m * ldr, 13, 1);
      const pa = e.upload(a), pb = e.packMatrix(b, k, n), pbias = e.upload(bias);
      const pr = e.upload(r);
      for (const mode of [0, 1, 2]) {
        const pc = e.alloc(m * ldc);
        e.write(pc, new Float32Array(m * ldc).fill(7)); // padding columns must stay 7
        const pack = e.alloc(e.kernels.gemm_scratch(k));
        e.kernels.gemm(pa, lda, m, k, pb, n, pbias, pc, ldc, mode, mode === 2 ? pr : 0, ldr, pack);
        e.free(pack);
        const got = e.read(pc, m * ldc);
        const want = new Float64Array(m * n);
        const gotDense = new Float32Array(m * n);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = bias[j];
            for (let q = 0; q < k; q++) s += a[i * lda + q] * b[q * n + j];
            if (mode === 1) s = gelu(s);
            if (mode === 2) s += r[i * ldr + j];
            want[i * n + j] = s;
            gotDense[i * n + j] = got[i * ldc + j];
          }
          for (let j = n; j < ldc; j++) {
            assert.equal(got[i * ldc + j], 7, `gemm ${m}x${k}x${n} wrote past column ${n}`);
          }
        }
        const err = maxRelErr(gotDense, want);
        assert.ok(err < 2e-6, `gemm ${m}x${k}x${n} mode ${mode}: relative error ${err}`);
        e.free(pc);
      }
    }
  });

  Deno.test(`GELU (${name}) is the exact-erf GELU within 2e-7 (relative beyond |x| = 1)`, () => {
    const e = KernelEngine.create({ relaxed });
    const xs = new Float32Array(4001).map((_, i) => -10 + i * 0.005);
    const p = e.upload(xs);
    e.kernels.gelu(p, xs.length, 1);
    const got = e.read(p, xs.length);
    let worst = 0;
    // Beyond |x| = 1 a float32 ulp of GELU(x) ~ x grows with x: compare relative there.
    xs.forEach((x, i) =>
      worst = Math.max(worst, Math.abs(got[i] - gelu(x)) / Math.max(1, Math.abs(x)))
    );
    assert.ok(worst < 2e-7, `max |error| ${worst}`);
  });

  Deno.test(`block (${name}) on a map and on bands equals its definition`, () => {
    const e = KernelEngine.create({ relaxed });
    for (const k of [7, 3]) {
      const n = 2, rows = 6, w = 7, c = 8, hidden = 4 * c, half = (k - 1) / 2;
      const x = random(n * rows * w * c, 1 + k, 1);
      const dww = random(k * k * c, 2 + k, 0.3);
      const dwb = random(c, 3, 0.2);
      const w1 = random(c * hidden, 4, 0.4);
      const b1 = random(hidden, 5, 0.2);
      const w2 = random(hidden * c, 6, 0.2);
      const b2 = random(c, 7, 0.2);
      const eps = 1e-6;
      // padTop/padBottom: a full map, and a band with real rows above and below.
      for (const [padTop, padBottom] of [[half, half], [0, 1], [1, 0]]) {
        const orow = rows + padTop + padBottom - 2 * half;
        if (orow <= 0) continue;
        const want = blockReference(
          { x, n, rows, w, c, k, padTop, padBottom },
          { dww, dwb, w1, b1, w2, b2, eps },
        );
        const px = e.upload(x), out = e.alloc(want.length);
        const tile = 8; // several tiles per image, and a remainder
        const scratch = e.alloc(e.kernels.block_scratch(rows + padTop + padBottom, w, c, k, tile));
        e.kernels.block(
          px,
          n,
          rows,
          w,
          c,
          padTop,
          padBottom,
          k,
          e.upload(dww),
          e.upload(dwb),
          eps,
          e.packMatrix(w1, c, hidden),
          e.upload(b1),
          e.packMatrix(w2, hidden, c),
          e.upload(b2),
          tile,
          scratch,
          out,
        );
        const err = maxRelErr(e.read(out, want.length), want);
        assert.ok(err < 2e-6, `block k=${k} pads ${padTop}/${padBottom}: relative error ${err}`);
      }
    }
  });
}

/** A ConvNeXt block in float64 by its definition, on a band of `rows` rows with padding. */
function blockReference(
  m: {
    x: Float32Array;
    n: number;
    rows: number;
    w: number;
    c: number;
    k: number;
    padTop: number;
    padBottom: number;
  },
  p: Record<"dww" | "dwb" | "w1" | "b1" | "w2" | "b2", Float32Array> & { eps: number },
): Float64Array {
  const { x, n, rows, w, c, k, padTop, padBottom } = m;
  const half = (k - 1) / 2, hidden = 4 * c;
  const orow = rows + padTop + padBottom - 2 * half;
  const want = new Float64Array(n * orow * w * c);
  for (let img = 0; img < n; img++) {
    for (let oy = 0; oy < orow; oy++) {
      for (let ox = 0; ox < w; ox++) {
        const y = new Float64Array(c);
        for (let ch = 0; ch < c; ch++) {
          let s = p.dwb[ch];
          for (let ky = 0; ky < k; ky++) {
            const iy = oy + ky - padTop;
            if (iy < 0 || iy >= rows) continue;
            for (let kx = 0; kx < k; kx++) {
              const ix = ox + kx - half;
              if (ix < 0 || ix >= w) continue;
              s += x[((img * rows + iy) * w + ix) * c + ch] * p.dww[(ky * k + kx) * c + ch];
            }
          }
          y[ch] = s;
        }
        const mean = y.reduce((a, b) => a + b, 0) / c;
        const v = y.reduce((a, b) => a + (b - mean) ** 2, 0) / c;
        const z = y.map((t) => (t - mean) / Math.sqrt(v + p.eps));
        const h = new Float64Array(hidden);
        for (let j = 0; j < hidden; j++) {
          let s = p.b1[j];
          for (let q = 0; q < c; q++) s += z[q] * p.w1[q * hidden + j];
          h[j] = gelu(s);
        }
        const resRow = oy + half - padTop;
        for (let ch = 0; ch < c; ch++) {
          let s = p.b2[ch];
          for (let j = 0; j < hidden; j++) s += h[j] * p.w2[j * c + ch];
          want[((img * orow + oy) * w + ox) * c + ch] = s +
            x[((img * rows + resRow) * w + ox) * c + ch];
        }
      }
    }
  }
  return want;
}

Deno.test("layer_norm, patchify and avg_pool equal their definitions", () => {
  const e = KernelEngine.create();
  // LayerNorm with affine over 12 channels of 5 rows.
  const m = 5, c = 12;
  const x = random(m * c, 21, 3);
  const gamma = random(c, 22, 1), beta = random(c, 23, 1);
  const out = e.alloc(m * c);
  e.kernels.layer_norm(e.upload(x), m, c, 1e-6, e.upload(gamma), e.upload(beta), out);
  const want = new Float64Array(m * c);
  for (let i = 0; i < m; i++) {
    const r = Array.from(x.subarray(i * c, (i + 1) * c));
    const mean = r.reduce((a, b) => a + b, 0) / c;
    const v = r.reduce((a, b) => a + (b - mean) ** 2, 0) / c;
    r.forEach((t, j) => want[i * c + j] = (t - mean) / Math.sqrt(v + 1e-6) * gamma[j] + beta[j]);
  }
  assert.ok(maxRelErr(e.read(out, m * c), want) < 1e-6, "layer_norm");
  // Patches of a 2x2 stride-2 conv over a 5x4 map (the last row is dropped, as "valid" does).
  const [n, h, w, ch, s] = [2, 5, 4, 3, 2];
  const img = random(n * h * w * ch, 24, 1);
  const ph = Math.floor(h / s), pw = Math.floor(w / s);
  const patches = e.alloc(n * ph * pw * s * s * ch);
  e.kernels.patchify(e.upload(img), n, h, w, ch, s, patches);
  const got = e.read(patches, n * ph * pw * s * s * ch);
  let at = 0;
  for (let b = 0; b < n; b++) {
    for (let py = 0; py < ph; py++) {
      for (let px = 0; px < pw; px++) {
        for (let ky = 0; ky < s; ky++) {
          for (let kx = 0; kx < s; kx++) {
            for (let q = 0; q < ch; q++) {
              const v = img[((b * h + py * s + ky) * w + px * s + kx) * ch + q];
              assert.equal(got[at++], v, `patch value at ${b},${py},${px},${ky},${kx},${q}`);
            }
          }
        }
      }
    }
  }
  // Average pool over 6 pixels of 4 channels, 2 images.
  const pooled = e.alloc(8);
  const map = random(2 * 6 * 4, 25, 1);
  e.kernels.avg_pool(e.upload(map), 2, 6, 4, pooled);
  const means = Array.from({ length: 8 }, (_, i) => {
    const [b, q] = [Math.floor(i / 4), i % 4];
    let sum = 0;
    for (let p = 0; p < 6; p++) sum += map[(b * 6 + p) * 4 + q];
    return sum / 6;
  });
  assert.ok(maxRelErr(e.read(pooled, 8), means) < 1e-6, "avg_pool");
});

Deno.test("the engine allocator reuses and merges freed blocks, and rejects bad frees", () => {
  const e = KernelEngine.create();
  const a = e.alloc(100), b = e.alloc(100), c = e.alloc(100);
  assert.ok(a < b && b < c, "bump allocation grows upward");
  e.free(a);
  e.free(b);
  // a and b merged: a block of 200 floats fits where they were.
  assert.equal(e.alloc(200), a);
  assert.throws(() => e.free(a + 4), /is not allocated/);
  assert.throws(() => e.alloc(-1), /non-negative integer/);
  const before = e.byteLength;
  const big = e.alloc(4 << 20); // 16 MiB: the memory grows
  assert.ok(e.byteLength > before);
  e.free(big);
  e.free(c);
});

Deno.test("an attached instance runs kernels on the owner's shared memory, and cannot allocate", () => {
  const owner = KernelEngine.create();
  const values = new Float32Array([-3, -1, -0.25, 0, 0.5, 2, 6, 9]);
  const p = owner.upload(values);
  const worker = KernelEngine.attach(owner.memory, owner.relaxed, owner.allocStack());
  worker.kernels.gelu(p, values.length, 1);
  // The owner sees the attached instance's writes: the same memory, no copy.
  const got = owner.read(p, values.length);
  values.forEach((x, i) => assert.ok(Math.abs(got[i] - gelu(x)) < 1e-6, `gelu(${x})`));
  assert.throws(() => worker.alloc(4), /attached engine cannot allocate/);
});

Deno.test("blockChunks: 4, 2 or 1 chunks per thread, the most with 128 pixels per chunk", () => {
  assert.deepEqual(blockChunks([8, 56, 56, 96], 2), { byImages: true, size: 1, count: 8 });
  assert.deepEqual(blockChunks([32, 14, 14, 384], 2), { byImages: true, size: 4, count: 8 });
  assert.deepEqual(blockChunks([8, 7, 7, 768], 2), { byImages: true, size: 4, count: 2 });
  assert.deepEqual(blockChunks([1, 56, 56, 96], 2), { byImages: false, size: 7, count: 8 });
  assert.deepEqual(blockChunks([1, 14, 14, 384], 2), { byImages: false, size: 7, count: 2 });
  assert.deepEqual(blockChunks([1, 28, 28, 192], 2), { byImages: false, size: 7, count: 4 });
  assert.deepEqual(blockChunks([1, 7, 7, 768], 2), { byImages: false, size: 4, count: 2 });
  assert.deepEqual(blockChunks([3, 28, 28, 192], 1), { byImages: true, size: 1, count: 3 });
});

Deno.test("a block run chunk by chunk (images, bands of rows) equals the block on the whole map", () => {
  const [c, hidden, k] = [8, 32, 7];
  const plan: Plan = {
    input: 0,
    output: 1,
    inputChannels: c,
    steps: [{ op: "block", input: 0, output: 1, prefix: "b", kernelSize: k, epsilon: 1e-6 }],
    lastUse: [0, 1],
    sources: [],
  };
  const w = (name: string, shape: number[], seed: number, scale: number) => ({
    [`b/${name}`]: { data: random(shape.reduce((a, b) => a * b, 1), seed, scale), shape },
  });
  const weights = {
    ...w("dw_kernel", [k, k, c, 1], 31, 0.3),
    ...w("dw_bias", [c], 32, 0.2),
    ...w("w1", [c, hidden], 33, 0.4),
    ...w("b1", [hidden], 34, 0.2),
    ...w("w2", [hidden, c], 35, 0.2),
    ...w("b2", [c], 36, 0.2),
  };
  const runner = new EnginePlan(plan, weights);
  const e = runner.engine;
  for (const shape of [[3, 9, 5, c], [1, 11, 6, c]]) {
    const size = shape.reduce((a, b) => a * b, 1);
    const x = e.upload(random(size, 37, 1));
    const whole = e.alloc(size), chunked = e.alloc(size);
    runner.blockOnSlab(0, x, shape, 3, 3, whole);
    // Single images, and bands of 2 rows (halos cut at the map's edges).
    const chunks = shape[0] > 1
      ? { byImages: true, size: 1, count: shape[0] }
      : { byImages: false, size: 2, count: Math.ceil(shape[1] / 2) };
    const counter = e.alloc(1);
    e.view(counter, 1).fill(0);
    const scratch = e.alloc(runner.chunkScratch(0, shape, chunks));
    runner.runBlockChunks(0, x, shape, chunked, chunks, counter, scratch);
    assert.deepEqual(e.read(chunked, size), e.read(whole, size), `chunks of ${shape}`);
  }
});

Deno.test("plans outside the kernels are EngineUnsupported (the caller keeps TF.js)", () => {
  const plan: Plan = {
    input: 0,
    output: 1,
    inputChannels: 3,
    steps: [{
      op: "conv",
      input: 0,
      output: 1,
      prefix: "c",
      strides: [1, 1],
      padding: "same",
      bias: false,
      activation: "linear",
    }],
    lastUse: [0, 1],
    sources: [],
  };
  const weights = { "c/kernel": { data: new Float32Array(3 * 3 * 3 * 4), shape: [3, 3, 3, 4] } };
  assert.throws(() => new EnginePlan(plan, weights), EngineUnsupported);
});

Deno.test("inference threads: every core for the kernel engine, at most 4 for the TF.js executor", async () => {
  const { inferenceThreads } = await import("../lib/infer/pool.ts");
  const { withEnv } = await import("./env_helpers.ts");
  const saved = Deno.env.get("CONVNEXT_THREADS");
  Deno.env.delete("CONVNEXT_THREADS");
  // A 16-core machine, as navigator reports it.
  Object.defineProperty(navigator, "hardwareConcurrency", { value: 16, configurable: true });
  try {
    assert.equal(inferenceThreads("kernels"), 16);
    assert.equal(inferenceThreads("tfjs"), 4);
    await withEnv({ CONVNEXT_THREADS: "6" }, () => {
      assert.equal(inferenceThreads("kernels"), 6);
      assert.equal(inferenceThreads("tfjs"), 6);
      return Promise.resolve();
    });
  } finally {
    delete (navigator as { hardwareConcurrency?: number }).hardwareConcurrency;
    if (saved !== undefined) Deno.env.set("CONVNEXT_THREADS", saved);
  }
  assert.ok(navigator.hardwareConcurrency >= 1, "the real core count is back");
});
