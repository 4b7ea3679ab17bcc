/**
 * Tests of the kernel engine's training path (lib/infer/engine/train.ts, the training
 * kernels of kernels.c, lib/train/engine_grads.ts): the loss and every variable's gradient
 * against TF.js's autodiff on the cpu backend (the independent reference), for hierarchical
 * and isotropic models with drop path, layer scale and label smoothing, on one and several
 * threads, with the engine beside the cpu and the wasm backend; the kernels the models do
 * not reach (odd sizes, remainders) against float64 definitions; and the choice of path.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { installWasmTrainingKernels } from "../lib/backend/wasm_grads.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { KernelEngine } from "../lib/infer/engine/engine.ts";
import { trainKernels } from "../lib/infer/engine/train.ts";
import {
  EngineGradients,
  engineTrainSupport,
  useEngineTraining,
} from "../lib/train/engine_grads.ts";
import { dropScales } from "../lib/train/engine_program.ts";
import { crossEntropy } from "../lib/train/losses.ts";
import { modelParams } from "../lib/train/optimizer.ts";
import { withSeededMathRandom } from "../lib/train/rng.ts";
import { relErr } from "./numeric_helpers.ts";

installWasmTrainingKernels();
await tf.setBackend("cpu");
(tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;

const HIERARCHICAL = {
  kind: "hierarchical",
  depths: [2, 1, 2, 1],
  dims: [8, 16, 24, 32],
  layerScaleInit: 0.5,
} as const;
const ISOTROPIC = { kind: "isotropic", depth: 3, dim: 16, layerScaleInit: 0.5 } as const;
const NO_LAYER_SCALE = { ...HIERARCHICAL, layerScaleInit: 0 } as const;
/** ConvNeXt V2 blocks (GRN, no layer scale); the GRN weights get random values below. */
const V2 = { ...HIERARCHICAL, layerScaleInit: 0, grn: true } as const;

/** Deterministic values in [-scale, scale). */
function random(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 * 2 - 1) * scale;
  }
  return out;
}

interface Case {
  spec: typeof HIERARCHICAL | typeof ISOTROPIC | typeof NO_LAYER_SCALE | typeof V2;
  /** Square size, or [height, width]. */
  size: number | [number, number];
  batch: number;
  threads: number;
  /** Bytes of tapes allowed (small: shards run in several passes). */
  tapeBudget?: number;
}

/** Gradients by parameter name, as plain arrays. */
type Grads = Map<string, Float32Array>;

/**
 * The reference: loss and gradients of `scale * crossEntropy(..., smoothing)` by TF.js
 * autodiff (on the cpu backend in these tests), drop-path masks drawn under `seed`.
 */
function reference(
  model: tf.LayersModel,
  x: tf.Tensor,
  labels: Int32Array,
  o: { seed: number; smoothing: number; scale: number },
): { loss: number; grads: Grads } {
  const params = modelParams(model, { weightDecay: 0.05 });
  const l = tf.tensor1d(labels, "int32");
  const { value, grads } = withSeededMathRandom(o.seed, () =>
    tf.variableGrads(() => {
      const y = model.apply(x, { training: true }) as tf.Tensor;
      return tf.mul(crossEntropy(y, l, o.smoothing), o.scale) as tf.Scalar;
    }, params.map((p) => p.variable)));
  const out = {
    loss: value.dataSync()[0] / o.scale,
    grads: new Map(params.map((p) => [p.name, grads[p.variable.name].dataSync() as Float32Array])),
  };
  tf.dispose([l, value, ...Object.values(grads)]);
  return out;
}

/** Names of the variables whose engine gradient is off by more than 1e-4. */
function mismatches(want: Grads, got: Map<string, tf.Tensor>): string[] {
  const bad: string[] = [];
  for (const [name, ref] of want) {
    const g = got.get(name)?.dataSync() as Float32Array;
    assert.ok(g, `no engine gradient for ${name}`);
    let gmax = 0;
    for (const v of ref) gmax = Math.max(gmax, Math.abs(v));
    assert.ok(gmax > 0, `${name}: zero gradient, the test would prove nothing`);
    // Over the whole variable (2-norm), and element by element against the variable's
    // largest gradient: two float32 sums over thousands of pixels in different orders
    // differ by ~1e-6 of the terms, which is large relative to an element that cancels.
    let elem = 0;
    for (let i = 0; i < ref.length; i++) elem = Math.max(elem, Math.abs(g[i] - ref[i]) / gmax);
    const norm = relErr(g, ref);
    if (!(norm <= 1e-4 && elem <= 1e-4)) bad.push(`${name}: ${norm}, elementwise ${elem}`);
  }
  return bad;
}

async function compare(c: Case, backend: "cpu" | "wasm"): Promise<void> {
  await tf.setBackend("cpu");
  const [h, w] = typeof c.size === "number" ? [c.size, c.size] : c.size;
  const model = createConvNeXt(c.spec, {
    numClasses: 5,
    inputShape: [h, w, 3],
    seed: 3,
    dropPathRate: 0.3,
  });
  // GRN starts as the identity (gamma = beta = 0), where its own gradients vanish through
  // the norms: random values make every path count.
  model.layers.filter((l) => l.getClassName() === "GlobalResponseNorm").forEach((l, i) => {
    const n = l.getWeights()[0].size;
    l.setWeights([tf.tensor1d(random(n, 40 + i, 0.8)), tf.tensor1d(random(n, 60 + i, 0.3))]);
  });
  const x = tf.tensor4d(random(c.batch * h * w * 3, 11), [c.batch, h, w, 3]);
  const labels = Int32Array.from({ length: c.batch }, (_, i) => (3 * i + 1) % 5);
  const seed = 12345;
  const want = reference(model, x, labels, { seed, smoothing: 0.1, scale: 0.5 });
  await tf.setBackend(backend);
  const params = modelParams(model, { weightDecay: 0.05 });
  const engine = await EngineGradients.start(model, params, {
    threads: c.threads,
    tapeBudget: c.tapeBudget,
  });
  try {
    const xb = tf.tensor4d(x.dataSync(), x.shape as [number, number, number, number]);
    const got = engine.gradients(xb, labels, { smoothing: 0.1, scale: 0.5, seed });
    xb.dispose();
    assert.ok(Math.abs(got.loss - want.loss) < 1e-5, `loss ${got.loss} vs ${want.loss}`);
    assert.equal(got.grads.size, params.length);
    assert.deepEqual(mismatches(want.grads, got.grads), []);
    // Each thread with images timed its shard, within the step's shards time.
    const { threadMs, shards } = engine.timings;
    assert.equal(threadMs.length, Math.min(c.threads, c.batch));
    for (const ms of threadMs) assert.ok(ms > 0 && ms <= shards, `${threadMs} of ${shards} ms`);
    tf.dispose([...got.grads.values()]);
  } finally {
    engine.close();
    await tf.setBackend("cpu");
    x.dispose();
    model.dispose();
  }
}

Deno.test("drop-path masks of the test seed drop some images and keep others", () => {
  // Otherwise the gradient tests below would not test drop path.
  const rates = [0.3 / 5, 0.6 / 5, 0.9 / 5, 1.2 / 5, 0.3];
  const s = withSeededMathRandom(12345, () => dropScales(rates, 5));
  assert.ok(s.some((v) => v === 0), "no image dropped");
  assert.ok(s.some((v, i) => v > 1 && i >= 5), "no image kept in a drop-path block");
});

for (const backend of ["cpu", "wasm"] as const) {
  Deno.test(`engine gradients equal TF.js's within 1e-4: hierarchical, 1 thread, beside ${backend}`, () =>
    compare({ spec: HIERARCHICAL, size: 64, batch: 5, threads: 1 }, backend));
  Deno.test(`engine gradients equal TF.js's within 1e-4: isotropic, 2 threads, beside ${backend}`, () =>
    compare({ spec: ISOTROPIC, size: 48, batch: 4, threads: 2 }, backend));
}

for (const backend of ["cpu", "wasm"] as const) {
  Deno.test(`engine gradients equal TF.js's within 1e-4: ConvNeXt V2 (GRN), 2 threads, beside ${backend}`, () =>
    compare({ spec: V2, size: 64, batch: 5, threads: 2 }, backend));
}

Deno.test("engine gradients equal TF.js's within 1e-4: ConvNeXt V2, 72x56, passes of one image", () =>
  compare({ spec: V2, size: [72, 56], batch: 3, threads: 2, tapeBudget: 1 }, "wasm"));

Deno.test("engine gradients equal TF.js's within 1e-4: 3 threads on 5 images (uneven shards)", () =>
  compare({ spec: HIERARCHICAL, size: 64, batch: 5, threads: 3 }, "wasm"));

Deno.test("engine gradients equal TF.js's within 1e-4: 72x56 (maps not halved evenly), no layer scale", () =>
  compare({ spec: NO_LAYER_SCALE, size: [72, 56], batch: 3, threads: 2 }, "wasm"));

Deno.test("engine gradients equal TF.js's within 1e-4: shards in passes of one image", () =>
  compare({ spec: HIERARCHICAL, size: 64, batch: 5, threads: 2, tapeBudget: 1 }, "wasm"));

Deno.test("the engine's steps follow the weights the optimizer assigns", async () => {
  const model = createConvNeXt(HIERARCHICAL, { numClasses: 5, inputShape: [32, 32, 3], seed: 1 });
  const params = modelParams(model, { weightDecay: 0.05 });
  const engine = await EngineGradients.start(model, params, { threads: 1 });
  const x = tf.tensor4d(random(2 * 32 * 32 * 3, 5), [2, 32, 32, 3]);
  const labels = Int32Array.from([1, 4]);
  try {
    const first = engine.gradients(x, labels);
    tf.dispose([...first.grads.values()]);
    // A new value for one weight: the next step must see it (the reference does).
    const head = params.find((p) => p.name.startsWith("head_fc") && p.name.endsWith("kernel"))!;
    head.variable.assign(tf.mul(head.variable, 3));
    const got = engine.gradients(x, labels);
    const want = reference(model, x, labels, { seed: 0, smoothing: 0, scale: 1 });
    assert.ok(Math.abs(got.loss - want.loss) < 1e-5, `loss ${got.loss} vs ${want.loss}`);
    assert.deepEqual(mismatches(want.grads, got.grads), []);
    tf.dispose([...got.grads.values()]);
  } finally {
    engine.close();
    x.dispose();
    model.dispose();
  }
});

Deno.test("the engine's choice: unsupported models and CONVNEXT_TRAIN_PATH", () => {
  const plain = createConvNeXt(HIERARCHICAL, { numClasses: 3, inputShape: [32, 32, 3] });
  const softmax = createConvNeXt(HIERARCHICAL, {
    numClasses: 3,
    inputShape: [32, 32, 3],
    classifierActivation: "softmax",
  });
  assert.equal(engineTrainSupport(plain), null);
  assert.match(engineTrainSupport(softmax) ?? "", /activation softmax/);
  const notices: string[] = [];
  const error = console.error;
  console.error = (line: string) => notices.push(line);
  const env = Deno.env.get("CONVNEXT_TRAIN_PATH");
  try {
    Deno.env.delete("CONVNEXT_TRAIN_PATH");
    assert.equal(useEngineTraining(plain, "cpu"), true);
    assert.equal(useEngineTraining(softmax, "cpu"), false);
    assert.equal(useEngineTraining(plain, "webgl"), false);
    assert.equal(notices.length, 1, "the fallback notice comes once");
    assert.match(notices[0], /TF\.js path/);
    Deno.env.set("CONVNEXT_TRAIN_PATH", "stock");
    assert.equal(useEngineTraining(plain, "wasm"), false);
    Deno.env.set("CONVNEXT_TRAIN_PATH", "engine");
    assert.equal(useEngineTraining(plain, "wasm"), true);
    assert.throws(() => useEngineTraining(softmax, "wasm"), /cannot train here: .*softmax/);
    assert.throws(() => useEngineTraining(plain, "webgpu"), /cannot train here: backend webgpu/);
    Deno.env.set("CONVNEXT_TRAIN_PATH", "fast");
    assert.throws(() => useEngineTraining(plain, "wasm"), /CONVNEXT_TRAIN_PATH/);
  } finally {
    console.error = error;
    if (env === undefined) Deno.env.delete("CONVNEXT_TRAIN_PATH");
    else Deno.env.set("CONVNEXT_TRAIN_PATH", env);
    plain.dispose();
    softmax.dispose();
  }
});

Deno.test("gemm_tn and pack_bt equal their definitions on odd sizes", () => {
  const e = KernelEngine.create();
  const k = trainKernels(e);
  // Remainders of every loop: K1 % 4, N % 8, M beyond one pass of 128 rows.
  for (const [m, k1, n] of [[7, 5, 11], [300, 36, 24], [1, 4, 8], [130, 9, 3]]) {
    const lda = k1 + 2, ldb = n + 3, ldc = n + 1;
    const a = random(m * lda, m + 1), b = random(m * ldb, n + 2), c0 = random(k1 * ldc, 3);
    const pa = e.upload(a), pb = e.upload(b), pc = e.upload(c0);
    const scratch = e.alloc(k.gemm_tn_scratch(n));
    k.gemm_tn(pa, lda, pb, ldb, m, k1, n, pc, ldc, scratch);
    const got = e.read(pc, k1 * ldc);
    let err = 0;
    for (let f = 0; f < k1; f++) {
      for (let j = 0; j < n; j++) {
        let s = c0[f * ldc + j];
        for (let i = 0; i < m; i++) s += a[i * lda + f] * b[i * ldb + j];
        err = Math.max(err, Math.abs(got[f * ldc + j] - s));
      }
    }
    assert.ok(err < 1e-4, `gemm_tn ${m}x${k1}x${n}: error ${err}`);
    // pack_bt: the transpose of a k1 x n matrix, packed as pack_b packs it.
    const w = random(k1 * n, 9);
    const pw = e.upload(w), t = new Float32Array(n * k1);
    for (let i = 0; i < k1; i++) for (let j = 0; j < n; j++) t[j * k1 + i] = w[i * n + j];
    const packed = e.alloc(n * Math.ceil(k1 / 8) * 8), want = e.alloc(n * Math.ceil(k1 / 8) * 8);
    k.pack_bt(pw, k1, n, packed);
    k.pack_b(e.upload(t), n, k1, want);
    assert.deepEqual(
      e.read(packed, n * Math.ceil(k1 / 8) * 8),
      e.read(want, n * Math.ceil(k1 / 8) * 8),
    );
  }
});

Deno.test("the GELU's derivative equals its definition", () => {
  const e = KernelEngine.create();
  const k = trainKernels(e);
  // GELU': Phi(v) + v phi(v) in float64, on [-8, 8].
  const v = random(4096, 7, 8), d = random(4096, 8);
  const pv = e.upload(v), pd = e.upload(d), gt = e.alloc(4096);
  k.gelu_grad(pv, gt, pd, 4096, 1);
  const got = e.read(pd, 4096);
  const erf = (x: number) => {
    let term = x, sum = x;
    for (let i = 1; i < 200 && Math.abs(term) > 1e-17; i++) {
      term *= -x * x / i;
      sum += term / (2 * i + 1);
    }
    return Math.abs(x) > 5 ? Math.sign(x) : 2 / Math.sqrt(Math.PI) * sum;
  };
  let err = 0;
  for (let i = 0; i < 4096; i++) {
    const x = v[i];
    const want =
      (0.5 * (1 + erf(x / Math.SQRT2)) + x * Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI)) * d[i];
    err = Math.max(err, Math.abs(got[i] - want));
  }
  assert.ok(err < 1e-6, `gelu_grad error ${err}`);
});

Deno.test("the depthwise conv's input and filter gradients equal their definitions", () => {
  const e = KernelEngine.create();
  const k = trainKernels(e);
  // Depthwise 7x7 gradients on an 9 x 13 map (edges and interior), 8 channels, 2 images,
  // against the definition (float64).
  const [n, h, w, c, kk] = [2, 9, 13, 8, 7];
  const x = random(n * h * w * c, 21), dy = random(n * h * w * c, 22), f = random(kk * kk * c, 23);
  const px = e.upload(x), pdy = e.upload(dy), pf = e.upload(f);
  const df = e.alloc(kk * kk * c), db = e.alloc(c), flip = e.alloc(kk * kk * c);
  k.zero(df, kk * kk * c);
  k.zero(db, c);
  k.dw_filter_grad(px, pdy, n, h, w, c, kk, df, db);
  k.dw_flip(pf, kk, c, flip);
  const dx = e.alloc(n * h * w * c), zeros = e.alloc(c), row = e.alloc(w * c);
  k.zero(dx, n * h * w * c);
  k.zero(zeros, c);
  (k as unknown as { dw_input_grad(...a: number[]): void }).dw_input_grad(
    pdy,
    n,
    h,
    w,
    c,
    kk,
    flip,
    zeros,
    row,
    dx,
  );
  const wantDf = new Float64Array(kk * kk * c), wantDx = new Float64Array(n * h * w * c);
  const at = (b: number, yy: number, xx: number, ch: number) => ((b * h + yy) * w + xx) * c + ch;
  for (let b = 0; b < n; b++) {
    for (let oy = 0; oy < h; oy++) {
      for (let ox = 0; ox < w; ox++) {
        for (let ky = 0; ky < kk; ky++) {
          for (let kx = 0; kx < kk; kx++) {
            const iy = oy + ky - 3, ix = ox + kx - 3;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            for (let ch = 0; ch < c; ch++) {
              wantDf[(ky * kk + kx) * c + ch] += x[at(b, iy, ix, ch)] * dy[at(b, oy, ox, ch)];
              wantDx[at(b, iy, ix, ch)] += f[(ky * kk + kx) * c + ch] * dy[at(b, oy, ox, ch)];
            }
          }
        }
      }
    }
  }
  const f32 = (a: Float64Array) => Float32Array.from(a);
  assert.ok(relErr(e.read(df, kk * kk * c), f32(wantDf)) < 1e-5, "depthwise kernel gradient");
  assert.ok(relErr(e.read(dx, n * h * w * c), f32(wantDx)) < 1e-5, "depthwise input gradient");
});

Deno.test("LayerNorm's input gradient equals a central difference of its definition", () => {
  const e = KernelEngine.create();
  const k = trainKernels(e);
  // LayerNorm backward: against a central difference of the definition (float64).
  const [m, ch] = [3, 12];
  const lx = random(m * ch, 31, 2), gamma = random(ch, 32), beta = random(ch, 33);
  const dz = random(m * ch, 34);
  const stats = e.alloc(2 * m), out = e.alloc(m * ch);
  const plx = e.upload(lx), pg = e.upload(gamma);
  k.ln_fwd(plx, m, ch, 1e-6, pg, e.upload(beta), out, stats);
  const ldx = e.alloc(m * ch), dg = e.alloc(ch), dbeta = e.alloc(ch);
  k.zero(dg, ch);
  k.zero(dbeta, ch);
  k.ln_bwd(plx, stats, e.upload(dz), m, ch, pg, ldx, dg, dbeta);
  const loss = (xs: Float64Array) => {
    let s = 0;
    for (let i = 0; i < m; i++) {
      const r = xs.subarray(i * ch, (i + 1) * ch);
      const mean = r.reduce((a, b) => a + b, 0) / ch;
      const va = r.reduce((a, b) => a + (b - mean) ** 2, 0) / ch;
      r.forEach((t, j) =>
        s += ((t - mean) / Math.sqrt(va + 1e-6) * gamma[j] + beta[j]) * dz[i * ch + j]
      );
    }
    return s;
  };
  const base = Float64Array.from(lx);
  const numeric = new Float64Array(m * ch);
  for (let i = 0; i < m * ch; i++) {
    const p = Float64Array.from(base), q = Float64Array.from(base);
    p[i] += 1e-5;
    q[i] -= 1e-5;
    numeric[i] = (loss(p) - loss(q)) / 2e-5;
  }
  assert.ok(
    relErr(e.read(ldx, m * ch), Float32Array.from(numeric)) < 1e-4,
    "LayerNorm input gradient",
  );
});
