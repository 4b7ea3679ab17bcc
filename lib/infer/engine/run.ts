/**
 * Runs a compiled {@link Plan} on the {@link KernelEngine}: weights are loaded (and the
 * matmul weights packed) once, then every `run` copies the images in, runs the steps in the
 * engine's memory and copies the output back.
 *
 * The engine runs ConvNeXt graphs: fused blocks, patchify convolutions (kernel = stride,
 * no padding: the stem and the downsampling layers), LayerNorm, global average pooling and
 * dense layers. {@link EnginePlan} throws {@link EngineUnsupported} for anything else, and
 * the caller keeps the TF.js executor.
 *
 * @module
 */
import type { BlockStep, DenseStep, LayerNormStep, Plan, PlanStep, SpatialStep } from "../plan.ts";
import { type EngineOptions, KernelEngine } from "./engine.ts";

/** A folded weight as plain values (see ../fold.ts for the keys). */
export interface WeightArray {
  /** Values, row-major. */
  data: Float32Array<ArrayBufferLike>;
  /** Shape. */
  shape: number[];
}

/** Folded weights by key, as plain arrays. */
export type WeightArrays = Record<string, WeightArray>;

/** A plan the engine cannot run; the caller falls back to the TF.js executor. */
export class EngineUnsupported extends Error {}

/**
 * Pixels per block tile: the matmuls of a block run on this many pixels at a time, so the
 * hidden activations (4 x channels per pixel) stay in cache. Measured on convnext_tiny
 * blocks (`deno task bench:kernels`): 64 to 256 pixels were equally fast in stages 1 and 2
 * and 20% faster than 16 to 32 in stages 3 and 4, whose large weights are then streamed
 * fewer times per image.
 */
export const BLOCK_TILE = 128;

interface Buffer {
  ptr: number;
  shape: number[];
}

/**
 * One step as loaded into the engine: kernel parameters and weight pointers (JSON: a
 * worker thread attached to the same memory runs the step from it).
 */
export type EngineStep =
  | {
    op: "block";
    k: number;
    c: number;
    eps: number;
    dww: number;
    dwb: number;
    w1: number;
    b1: number;
    w2: number;
    b2: number;
    /** A ConvNeXt V2 block's GRN (see {@link EnginePlan.grnBlock}). */
    grn?: GrnStep;
  }
  | { op: "conv"; s: number; cin: number; cout: number; w: number; b: number; gelu: boolean }
  | { op: "dense"; cin: number; cout: number; w: number; b: number; gelu: boolean }
  | { op: "layerNorm"; c: number; eps: number; gamma: number; beta: number }
  | { op: "avgPool" }
  | { op: "identity" };

/**
 * A GRN block's extras in the engine: `gamma` (4C floats), the epsilon, and `desc`, four
 * int32s in the shared memory through which the main thread tells every thread which pass
 * {@link EnginePlan.runBlockChunks} runs and where the pass's buffers are: `[pass (1 or 2),
 * hidden, sums, scale]`.
 */
export interface GrnStep {
  /** GRN gamma. */
  gamma: number;
  /** GRN epsilon. */
  eps: number;
  /** The pass descriptor. */
  desc: number;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** A matmul over rows: `c = epilogue(a b + bias)` (see kernels.c `gemm`; no residual). */
export interface GemmJob {
  /** Rows of A, at stride `lda` floats. */
  a: number;
  /** Row stride of A. */
  lda: number;
  /** Rows. */
  m: number;
  /** Inner dimension. */
  k: number;
  /** Packed B. */
  b: number;
  /** Columns. */
  n: number;
  /** Bias (0: none). */
  bias: number;
  /** Output rows, at stride `ldc`. */
  c: number;
  /** Row stride of C. */
  ldc: number;
  /** 0 bias, 1 bias + GELU. */
  mode: number;
}

/** A LayerNorm over rows (see kernels.c `layer_norm`). */
export interface LayerNormJob {
  /** Input rows of `c` floats. */
  x: number;
  /** Rows. */
  m: number;
  /** Channels. */
  c: number;
  /** Epsilon. */
  eps: number;
  /** Affine scale (0: none). */
  gamma: number;
  /** Affine shift. */
  beta: number;
  /** Output rows. */
  out: number;
}

/**
 * A block cut into chunks that threads take one at a time (see
 * {@link EnginePlan.runBlockChunks}): `count` chunks of `size` images (`byImages`) or of
 * `size` rows of a single image.
 */
export interface BlockChunks {
  /** Chunks are whole images (else bands of rows of one image). */
  byImages: boolean;
  /** Images or rows per chunk. */
  size: number;
  /** Number of chunks. */
  count: number;
}

/**
 * Chunks for a block on a `[n, h, w, c]` map shared by `threads` threads: about four per
 * thread, so that a thread slowed down (the other guests of a shared machine, the
 * runtime's own threads) takes fewer and the others more, rather than all of them waiting
 * for it. Fewer chunks where they would be under 128 pixels (stages 3 and 4): each chunk
 * streams the block's large weights through the cache once.
 */
export function blockChunks(shape: number[], threads: number): BlockChunks {
  const [n, h, w] = shape;
  const byImages = n > 1;
  const total = byImages ? n : h;
  const pixels = byImages ? h * w : w; // per image, or per row
  // 4, 2 or 1 chunks per thread (a multiple of the threads keeps the shares even): the
  // most whose chunks still have 128 pixels, as many as a block tile.
  const sizeFor = (perThread: number) => Math.max(1, Math.ceil(total / (threads * perThread)));
  const perThread = [4, 2].find((k) => sizeFor(k) * pixels >= 128) ?? 1;
  const size = sizeFor(perThread);
  return { byImages, size, count: Math.ceil(total / size) };
}

/**
 * How {@link EnginePlan.run} runs its steps: each hook replaces the main thread's own
 * call (the thread pool splits the work over its threads; see ../pool.ts).
 */
export interface EngineHooks {
  /** Run block step `index` on the map at `x` (`shape`), filling `out`. */
  block?(index: number, step: BlockStep, x: number, shape: number[], out: number): void;
  /** Run a matmul. */
  gemm?(job: GemmJob): void;
  /** Run a LayerNorm. */
  layerNorm?(job: LayerNormJob): void;
}

/** Folded weight `key`; a missing one is a broken weights file, not an unsupported step. */
function weightOf(weights: WeightArrays, key: string): WeightArray {
  const w = weights[key];
  if (!w) throw new Error(`EnginePlan: missing folded weight ${key}`);
  return w;
}

/** Throws {@link EngineUnsupported} naming the step (so the caller can say what fell back). */
function unsupported(step: PlanStep, why: string): never {
  throw new EngineUnsupported(
    `step ${step.op}${"prefix" in step ? ` ${step.prefix}` : ""}: ${why}`,
  );
}

/**
 * A plan with its weights loaded into an engine. `ConvNeXtModel` (../model.ts) builds one
 * from a compiled plan and its folded weights read into Float32Arrays, then calls
 * `run(pixels, [n, h, w, 3])` for each batch.
 */
export class EnginePlan {
  /** The engine the weights live in. */
  readonly engine: KernelEngine;
  /** The loaded steps (pointers into the engine's memory), by plan step. */
  readonly steps: EngineStep[];
  private readonly owned: number[] = [];

  /**
   * @param plan the compiled plan.
   * @param weights its folded weights (../fold.ts keys) as arrays.
   * @param engine an engine to load into (default: a new one).
   * @throws EngineUnsupported when a step is outside what the kernels run.
   */
  constructor(
    readonly plan: Plan,
    weights: WeightArrays,
    engine?: KernelEngine,
    options: EngineOptions = {},
  ) {
    // Check everything before touching the engine's memory.
    const specs = plan.steps.map((step) => this.check(step, weights));
    this.engine = engine ?? KernelEngine.create(options);
    try {
      this.steps = specs.map((load) => load());
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  private upload(w: WeightArray): number {
    const ptr = this.engine.upload(w.data);
    this.owned.push(ptr);
    return ptr;
  }

  private pack(w: WeightArray, k: number, n: number): number {
    const ptr = this.engine.packMatrix(w.data, k, n);
    this.owned.push(ptr);
    return ptr;
  }

  /** Validate one step; returns the loader that puts its weights into the engine. */
  private check(step: PlanStep, weights: WeightArrays): () => EngineStep {
    switch (step.op) {
      case "block":
        return this.checkBlock(step, weights);
      case "conv":
        return this.checkConv(step, weights);
      case "dense":
        return this.checkDense(step, weights);
      case "layerNorm":
        return this.checkLayerNorm(step, weights);
      case "avgPool":
        return () => ({ op: "avgPool" });
      case "identity":
        return () => ({ op: "identity" });
      default:
        return unsupported(step, "not a kernel of the engine");
    }
  }

  /**
   * A block step: the kernels tile channels by 4 and assume the 4x hidden width and a
   * centred (odd) depthwise kernel.
   */
  private checkBlock(step: BlockStep, weights: WeightArrays): () => EngineStep {
    const get = (key: string) => weightOf(weights, key);
    const p = step.prefix;
    const [c, hidden] = get(`${p}/w1`).shape;
    if (c % 4 !== 0) unsupported(step, `${c} channels (the kernels need a multiple of 4)`);
    if (hidden !== 4 * c) unsupported(step, `hidden width ${hidden} (the kernels need 4 x ${c})`);
    if (step.kernelSize % 2 !== 1) unsupported(step, `even kernel size ${step.kernelSize}`);
    return () => ({
      op: "block",
      k: step.kernelSize,
      c,
      eps: step.epsilon,
      dww: this.upload(get(`${p}/dw_kernel`)),
      dwb: this.upload(get(`${p}/dw_bias`)),
      w1: this.pack(get(`${p}/w1`), c, hidden),
      b1: this.upload(get(`${p}/b1`)),
      w2: this.pack(get(`${p}/w2`), hidden, c),
      b2: this.upload(get(`${p}/b2`)),
      ...(step.grn
        ? {
          grn: {
            gamma: this.upload(get(`${p}/grn_gamma`)),
            eps: step.grn.epsilon,
            desc: this.upload({ data: new Float32Array(4), shape: [4] }),
          },
        }
        : {}),
    });
  }

  /** A conv step: only patchify convs (kernel = stride, no padding) run as one matmul. */
  private checkConv(step: SpatialStep, weights: WeightArrays): () => EngineStep {
    const kernel = weightOf(weights, `${step.prefix}/kernel`);
    const [kh, kw, cin, cout] = kernel.shape;
    const [sh, sw] = step.strides;
    const patchify = kh === kw && sh === kh && sw === kw &&
      (step.padding === "valid" || kh === 1);
    if (!patchify) {
      unsupported(step, `${kh}x${kw} kernel at strides ${sh}x${sw}, padding ${step.padding}`);
    }
    if (step.activation !== "linear" && step.activation !== "gelu") {
      unsupported(step, `activation ${step.activation}`);
    }
    return () => ({
      op: "conv",
      s: kh,
      cin,
      cout,
      w: this.pack(kernel, kh * kw * cin, cout),
      b: step.bias ? this.upload(weightOf(weights, `${step.prefix}/bias`)) : 0,
      gelu: step.activation === "gelu",
    });
  }

  /** A dense step: the matmul kernel fuses only GELU after the bias. */
  private checkDense(step: DenseStep, weights: WeightArrays): () => EngineStep {
    const kernel = weightOf(weights, `${step.prefix}/kernel`);
    const [cin, cout] = kernel.shape;
    if (step.activation !== "linear" && step.activation !== "gelu") {
      unsupported(step, `activation ${step.activation}`);
    }
    return () => ({
      op: "dense",
      cin,
      cout,
      w: this.pack(kernel, cin, cout),
      b: step.bias ? this.upload(weightOf(weights, `${step.prefix}/bias`)) : 0,
      gelu: step.activation === "gelu",
    });
  }

  /** A LayerNorm step: the kernel tiles channels by 4. */
  private checkLayerNorm(step: LayerNormStep, weights: WeightArrays): () => EngineStep {
    const gamma = weightOf(weights, `${step.prefix}/gamma`);
    const c = gamma.shape[0];
    if (c % 4 !== 0) unsupported(step, `${c} channels (the kernels need a multiple of 4)`);
    return () => ({
      op: "layerNorm",
      c,
      eps: step.epsilon,
      gamma: this.upload(gamma),
      beta: this.upload(weightOf(weights, `${step.prefix}/beta`)),
    });
  }

  /**
   * The plan on an engine attached to the owner's memory (a worker thread), with the
   * owner's loaded `steps`: it runs blocks in place, and owns nothing.
   */
  static attach(plan: Plan, steps: EngineStep[], engine: KernelEngine): EnginePlan {
    const runner = Object.create(EnginePlan.prototype) as EnginePlan;
    Object.assign(runner, { plan, steps, engine, owned: [] });
    return runner;
  }

  /** Free the weights (the engine itself stays usable). */
  dispose(): void {
    for (const p of this.owned.splice(0)) this.engine.free(p);
  }

  /** Floats of scratch {@link EnginePlan.blockOnSlab} needs for a slab of `shape`. */
  blockScratch(index: number, shape: number[], padTop: number, padBottom: number): number {
    const l = this.steps[index];
    if (l?.op !== "block") throw new Error(`EnginePlan: step ${index} is not a block`);
    const [, rows, w, c] = shape;
    return this.engine.kernels.block_scratch(rows + padTop + padBottom, w, c, l.k, BLOCK_TILE);
  }

  /** The slab of chunk `i` of a block on the map at `x` (`shape`), writing into `out`. */
  chunkSlab(
    step: BlockStep,
    x: number,
    shape: number[],
    out: number,
    chunks: BlockChunks,
    i: number,
  ): { x: number; out: number; shape: number[]; padTop: number; padBottom: number } {
    const [n, h, w, c] = shape;
    const half = (step.kernelSize - 1) / 2;
    const row = w * c * 4; // bytes
    const first = i * chunks.size;
    if (chunks.byImages) {
      const count = Math.min(chunks.size, n - first);
      const offset = first * h * row;
      return {
        x: x + offset,
        out: out + offset,
        shape: [count, h, w, c],
        padTop: half,
        padBottom: half,
      };
    }
    const count = Math.min(chunks.size, h - first);
    const a = Math.max(0, first - half);
    const b = Math.min(h, first + count + half);
    return {
      x: x + a * row,
      out: out + first * row,
      shape: [1, b - a, w, c],
      padTop: half - (first - a),
      padBottom: half - (b - first - count),
    };
  }

  /** Floats of scratch the largest chunk of {@link EnginePlan.runBlockChunks} needs. */
  chunkScratch(index: number, shape: number[], chunks: BlockChunks): number {
    const [n, h, w, c] = shape;
    const step = this.plan.steps[index] as BlockStep;
    const half = (step.kernelSize - 1) / 2;
    return chunks.byImages
      ? this.blockScratch(index, [Math.min(n, chunks.size), h, w, c], half, half)
      : this.blockScratch(index, [1, Math.min(h, chunks.size + 2 * half), w, c], 0, 0);
  }

  /**
   * Run chunks of block step `index` until none is left: each thread calls this with the
   * same `counter` (an int32 in the engine's shared memory, zero at the start) and takes
   * the next chunk with an atomic increment. `scratch`: {@link EnginePlan.chunkScratch}
   * floats of this thread's own.
   */
  runBlockChunks(
    index: number,
    x: number,
    shape: number[],
    out: number,
    chunks: BlockChunks,
    counter: number,
    scratch: number,
  ): void {
    const step = this.plan.steps[index] as BlockStep;
    const l = this.steps[index];
    const grn = l?.op === "block" ? l.grn : undefined;
    for (;;) {
      // A fresh view each time: the memory may have grown (a new buffer object).
      const i = Atomics.add(new Int32Array(this.engine.memory.buffer, counter, 1), 0, 1);
      if (i >= chunks.count) return;
      if (grn) {
        this.grnChunk(index, x, shape, out, chunks, i, scratch);
        continue;
      }
      const s = this.chunkSlab(step, x, shape, out, chunks, i);
      this.blockOnSlab(index, s.x, s.shape, s.padTop, s.padBottom, s.out, scratch);
    }
  }

  /**
   * Chunk `i` of the pass of GRN block `index` that its descriptor names (see
   * {@link EnginePlan.grnBlock}): pass 1 runs the chunk's rows (with the halo its
   * depthwise conv reads) into the hidden map and its sums of squares (by image for chunks
   * of images, by chunk for bands of one image); pass 2 scales the chunk's hidden rows and
   * runs the second matmul and the residual into `out`.
   */
  private grnChunk(
    index: number,
    x: number,
    shape: number[],
    out: number,
    chunks: BlockChunks,
    i: number,
    scratch: number,
  ): void {
    const l = this.steps[index];
    if (l?.op !== "block" || !l.grn) throw new Error(`EnginePlan: step ${index} has no GRN`);
    const step = this.plan.steps[index] as BlockStep;
    const desc = new Int32Array(this.engine.memory.buffer, l.grn.desc, 4);
    const [pass, hidden, sums, scale] = [0, 1, 2, 3].map((k) => Atomics.load(desc, k) >>> 0);
    const [n, h, w, c] = shape;
    const hid = 4 * c;
    const first = i * chunks.size;
    // First image and row of the chunk, its images and its rows per image.
    const count = Math.min(chunks.size, (chunks.byImages ? n : h) - first);
    const row0 = chunks.byImages ? first * h : first; // in rows of the whole batch
    if (pass === 1) {
      const s = this.chunkSlab(step, x, shape, out, chunks, i);
      this.engine.kernels.grn_hidden(
        s.x,
        s.shape[0],
        s.shape[1],
        w,
        c,
        s.padTop,
        s.padBottom,
        l.k,
        l.dww,
        l.dwb,
        l.eps,
        l.w1,
        l.b1,
        BLOCK_TILE,
        scratch,
        hidden + row0 * w * hid * 4,
        sums + first * hid * 4,
      );
    } else if (pass === 2) {
      const images = chunks.byImages ? count : 1;
      const pixels = chunks.byImages ? h * w : count * w;
      this.engine.kernels.grn_out(
        hidden + row0 * w * hid * 4,
        images,
        pixels,
        c,
        scale + (chunks.byImages ? first : 0) * hid * 4,
        l.w2,
        l.b2,
        x + row0 * w * c * 4,
        BLOCK_TILE,
        scratch,
        out + row0 * w * c * 4,
      );
    } else {
      throw new Error(`EnginePlan: GRN block ${index}: no pass ${pass}`);
    }
  }

  /**
   * GRN block `index` (ConvNeXt V2) on the map at `x` (`shape`) into `out`, in two passes
   * over a hidden map `[n, h, w, 4c]` (GRN needs all of an image's hidden units before the
   * second matmul): pass 1 (depthwise conv, LayerNorm, first matmul, GELU, sums of squares),
   * then the per-image scale `gamma Nx + 1` here, then pass 2 (scale, second matmul with
   * GRN's beta in its bias, residual). Each pass is shared out in chunks as a plain block
   * (`hooks.block`, the threads; else this thread).
   */
  private grnBlock(
    index: number,
    step: BlockStep,
    x: number,
    shape: number[],
    out: number,
    hooks: EngineHooks,
  ): void {
    const l = this.steps[index];
    if (l?.op !== "block" || !l.grn) throw new Error(`EnginePlan: step ${index} has no GRN`);
    const { engine } = this;
    const [n, h, w, c] = shape;
    const hid = 4 * c;
    // Partial sums: by image (chunks of images) or by chunk (bands of rows, at most h).
    const partRows = n > 1 ? n : h;
    const hidden = engine.alloc(n * h * w * hid);
    const sums = engine.alloc(partRows * hid);
    const scale = engine.alloc(n * hid);
    const runPass = (pass: number) => {
      const desc = new Int32Array(engine.memory.buffer, l.grn!.desc, 4);
      [pass, hidden, sums, scale].forEach((v, k) => Atomics.store(desc, k, v | 0));
      if (hooks.block) hooks.block(index, step, x, shape, out);
      else this.ownChunks(index, x, shape, out);
    };
    try {
      engine.view(sums, partRows * hid).fill(0);
      runPass(1);
      // Per image: Gx = sqrt(sum of squares), Nx = Gx / (mean Gx + eps), s = gamma Nx + 1.
      const part = engine.view(sums, partRows * hid);
      const gamma = engine.view(l.grn.gamma, hid);
      const s = new Float32Array(n * hid);
      const gx = new Float64Array(hid);
      for (let img = 0; img < n; img++) {
        gx.fill(0);
        const from = n > 1 ? img : 0, to = n > 1 ? img + 1 : partRows;
        for (let r = from; r < to; r++) {
          for (let j = 0; j < hid; j++) gx[j] += part[r * hid + j];
        }
        let mean = 0;
        for (let j = 0; j < hid; j++) mean += gx[j] = Math.sqrt(gx[j]);
        const inv = 1 / (mean / hid + l.grn.eps);
        for (let j = 0; j < hid; j++) s[img * hid + j] = gamma[j] * gx[j] * inv + 1;
      }
      engine.write(scale, s);
      runPass(2);
    } finally {
      for (const p of [hidden, sums, scale]) engine.free(p);
    }
  }

  /** All chunks of a block on this thread (what the thread pool shares out). */
  private ownChunks(index: number, x: number, shape: number[], out: number): void {
    const chunks = blockChunks(shape, 1);
    const counter = this.engine.alloc(1);
    const scratch = this.engine.alloc(this.chunkScratch(index, shape, chunks));
    try {
      new Int32Array(this.engine.memory.buffer, counter, 1)[0] = 0;
      this.runBlockChunks(index, x, shape, out, chunks, counter, scratch);
    } finally {
      this.engine.free(counter);
      this.engine.free(scratch);
    }
  }

  /**
   * Run block step `index` on a slab at `x` (`[n, rows, w, c]` in engine memory) with
   * `padTop`/`padBottom` zero rows outside it (see kernels.c `block`), into `out`;
   * `scratch` ({@link EnginePlan.blockScratch} floats) is allocated here when not given.
   */
  blockOnSlab(
    index: number,
    x: number,
    shape: number[],
    padTop: number,
    padBottom: number,
    out: number,
    scratch?: number,
  ): void {
    const l = this.steps[index];
    if (l?.op !== "block") throw new Error(`EnginePlan: step ${index} is not a block`);
    const [n, rows, w, c] = shape;
    if (c !== l.c) throw new Error(`EnginePlan: block ${index} expects ${l.c} channels, got ${c}`);
    const own = scratch === undefined;
    const buffer = own
      ? this.engine.alloc(this.blockScratch(index, shape, padTop, padBottom))
      : scratch;
    try {
      this.engine.kernels.block(
        x,
        n,
        rows,
        w,
        c,
        padTop,
        padBottom,
        l.k,
        l.dww,
        l.dwb,
        l.eps,
        l.w1,
        l.b1,
        l.w2,
        l.b2,
        BLOCK_TILE,
        buffer,
        out,
      );
    } finally {
      if (own) this.engine.free(buffer);
    }
  }

  /** Run a matmul on this thread; `pack` scratch is allocated here when not given. */
  gemm(job: GemmJob, pack?: number): void {
    const own = pack === undefined;
    const scratch = own ? this.engine.alloc(this.engine.kernels.gemm_scratch(job.k)) : pack;
    try {
      const { a, lda, m, k, b, n, bias, c, ldc, mode } = job;
      this.engine.kernels.gemm(a, lda, m, k, b, n, bias, c, ldc, mode, 0, 0, scratch);
    } finally {
      if (own) this.engine.free(scratch);
    }
  }

  /** Run a LayerNorm on this thread. */
  layerNorm(job: LayerNormJob): void {
    const { x, m, c, eps, gamma, beta, out } = job;
    this.engine.kernels.layer_norm(x, m, c, eps, gamma, beta, out);
  }

  /**
   * Run the plan on `input` (`[n, h, w, c]`, NHWC float32). `hooks` run blocks, matmuls
   * and LayerNorms instead of this thread (e.g. split over threads).
   */
  run(
    input: Float32Array<ArrayBufferLike>,
    shape: number[],
    hooks: EngineHooks = {},
  ): { data: Float32Array<ArrayBuffer>; shape: number[] } {
    const { plan, engine } = this;
    if (shape.length !== 4 || size(shape) !== input.length) {
      throw new Error(
        `EnginePlan.run: expected [n, h, w, c] input, got ${JSON.stringify(shape)} ` +
          `for ${input.length} values`,
      );
    }
    const buffers = new RunBuffers(engine);
    const slots: (Buffer | undefined)[] = [];
    try {
      const x0 = buffers.alloc(shape);
      engine.write(x0.ptr, input);
      slots[plan.input] = x0;
      plan.steps.forEach((step, i) => {
        const x = slots["input" in step ? step.input : -1];
        if (!x) throw new Error(`EnginePlan.run: step ${i}'s input slot is empty`);
        slots[step.output] = this.runStep(i, step, x, buffers, hooks);
        // Free each slot after its last reader, so a run holds a few activations at a time.
        for (const s of "inputs" in step ? step.inputs : [step.input]) {
          if (plan.lastUse[s] === i && s !== plan.output) {
            buffers.release(slots[s]!);
            slots[s] = undefined;
          }
        }
      });
      const result = slots[plan.output]!;
      return { data: engine.read(result.ptr, size(result.shape)), shape: result.shape };
    } finally {
      buffers.freeAll();
    }
  }

  /** Step `i` of the plan on `x`, into a new buffer of `buffers`. */
  private runStep(
    i: number,
    step: PlanStep,
    x: Buffer,
    buffers: RunBuffers,
    hooks: EngineHooks,
  ): Buffer {
    const l = this.steps[i];
    switch (l.op) {
      case "block":
        return this.runBlock(i, l, step as BlockStep, x, buffers, hooks);
      case "conv":
        return this.runConv(i, l, x, buffers, hooks);
      case "dense": {
        const c = channelsOf(x, l.cin, `dense ${i}`, "inputs");
        const out = buffers.alloc([...x.shape.slice(0, -1), l.cout]);
        this.runMatmul(x.ptr, size(x.shape) / c, c, l, out.ptr, hooks);
        return out;
      }
      case "layerNorm": {
        const c = channelsOf(x, l.c, `LayerNorm ${i}`, "channels");
        const out = buffers.alloc(x.shape);
        const { eps, gamma, beta } = l;
        const job: LayerNormJob = {
          x: x.ptr,
          m: size(x.shape) / c,
          c,
          eps,
          gamma,
          beta,
          out: out.ptr,
        };
        if (hooks.layerNorm) hooks.layerNorm(job);
        else this.layerNorm(job);
        return out;
      }
      case "avgPool": {
        const [n, h, w, c] = x.shape;
        const out = buffers.alloc([n, c]);
        this.engine.kernels.avg_pool(x.ptr, n, h * w, c, out.ptr);
        return out;
      }
      case "identity": {
        const out = buffers.alloc(x.shape);
        this.engine.write(out.ptr, this.engine.view(x.ptr, size(x.shape)));
        return out;
      }
    }
  }

  /** A ConvNeXt block: GRN blocks in two passes, others by `hooks.block` or on this thread. */
  private runBlock(
    i: number,
    l: Extract<EngineStep, { op: "block" }>,
    step: BlockStep,
    x: Buffer,
    buffers: RunBuffers,
    hooks: EngineHooks,
  ): Buffer {
    channelsOf(x, l.c, `block ${i}`, "channels");
    const out = buffers.alloc(x.shape);
    const pad = (l.k - 1) / 2;
    if (l.grn) this.grnBlock(i, step, x.ptr, x.shape, out.ptr, hooks);
    else if (hooks.block) hooks.block(i, step, x.ptr, x.shape, out.ptr);
    else this.blockOnSlab(i, x.ptr, x.shape, pad, pad, out.ptr);
    return out;
  }

  /** A stride-s s x s conv (the stem, a downsampling layer): a matmul on its patches. */
  private runConv(
    i: number,
    l: Extract<EngineStep, { op: "conv" }>,
    x: Buffer,
    buffers: RunBuffers,
    hooks: EngineHooks,
  ): Buffer {
    const [n, h, w, c] = x.shape;
    channelsOf(x, l.cin, `conv ${i}`, "channels");
    const oh = Math.floor(h / l.s), ow = Math.floor(w / l.s);
    const out = buffers.alloc([n, oh, ow, l.cout]);
    const kk = l.s * l.s * l.cin;
    if (l.s === 1) {
      this.runMatmul(x.ptr, n * oh * ow, kk, l, out.ptr, hooks);
      return out;
    }
    const patches = buffers.alloc([n * oh * ow, kk]);
    this.engine.kernels.patchify(x.ptr, n, h, w, c, l.s, patches.ptr);
    this.runMatmul(patches.ptr, n * oh * ow, kk, l, out.ptr, hooks);
    buffers.release(patches);
    return out;
  }

  /** `m` rows of `kk` values at `a` times a conv or dense step's packed weights, into `out`. */
  private runMatmul(
    a: number,
    m: number,
    kk: number,
    l: { w: number; b: number; cout: number; gelu: boolean },
    out: number,
    hooks: EngineHooks,
  ): void {
    const job: GemmJob = {
      a,
      lda: kk,
      m,
      k: kk,
      b: l.w,
      n: l.cout,
      bias: l.b,
      c: out,
      ldc: l.cout,
      mode: l.gelu ? 1 : 0,
    };
    if (hooks.gemm) hooks.gemm(job);
    else this.gemm(job);
  }
}

/** `x`'s last dimension, checked against the `expected` count of a step (named by `what`). */
function channelsOf(x: Buffer, expected: number, what: string, unit: string): number {
  const c = x.shape[x.shape.length - 1];
  if (c !== expected) {
    throw new Error(`EnginePlan.run: ${what}: ${c} ${unit}, expected ${expected}`);
  }
  return c;
}

/** The engine buffers of one {@link EnginePlan.run}: all freed at its end, even on error. */
class RunBuffers {
  private readonly live = new Set<number>();
  constructor(private readonly engine: KernelEngine) {}

  /** A new buffer of `shape`'s size (float32 values). */
  alloc(shape: number[]): Buffer {
    const ptr = this.engine.alloc(size(shape));
    this.live.add(ptr);
    return { ptr, shape };
  }

  /** Free `b` now (once: a buffer already freed is left alone). */
  release(b: Buffer): void {
    if (this.live.delete(b.ptr)) this.engine.free(b.ptr);
  }

  /** Free every buffer still held. */
  freeAll(): void {
    for (const p of this.live) this.engine.free(p);
    this.live.clear();
  }
}
