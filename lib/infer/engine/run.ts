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
import type { BlockStep, Plan, PlanStep } from "../plan.ts";
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
  }
  | { op: "conv"; s: number; cin: number; cout: number; w: number; b: number; gelu: boolean }
  | { op: "dense"; cin: number; cout: number; w: number; b: number; gelu: boolean }
  | { op: "layerNorm"; c: number; eps: number; gamma: number; beta: number }
  | { op: "avgPool" }
  | { op: "identity" };

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
    const get = (key: string): WeightArray => {
      const w = weights[key];
      if (!w) throw new Error(`EnginePlan: missing folded weight ${key}`);
      return w;
    };
    const no = (why: string): never => {
      throw new EngineUnsupported(
        `step ${step.op}${"prefix" in step ? ` ${step.prefix}` : ""}: ${why}`,
      );
    };
    switch (step.op) {
      case "block": {
        const p = step.prefix;
        const [c, hidden] = get(`${p}/w1`).shape;
        if (c % 4 !== 0) no(`${c} channels (the kernels need a multiple of 4)`);
        if (hidden !== 4 * c) no(`hidden width ${hidden} (the kernels need 4 x ${c})`);
        if (step.kernelSize % 2 !== 1) no(`even kernel size ${step.kernelSize}`);
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
        });
      }
      case "conv": {
        const kernel = get(`${step.prefix}/kernel`);
        const [kh, kw, cin, cout] = kernel.shape;
        const [sh, sw] = step.strides;
        const patchify = kh === kw && sh === kh && sw === kw &&
          (step.padding === "valid" || kh === 1);
        if (!patchify) no(`${kh}x${kw} kernel at strides ${sh}x${sw}, padding ${step.padding}`);
        if (step.activation !== "linear" && step.activation !== "gelu") {
          no(`activation ${step.activation}`);
        }
        return () => ({
          op: "conv",
          s: kh,
          cin,
          cout,
          w: this.pack(kernel, kh * kw * cin, cout),
          b: step.bias ? this.upload(get(`${step.prefix}/bias`)) : 0,
          gelu: step.activation === "gelu",
        });
      }
      case "dense": {
        const kernel = get(`${step.prefix}/kernel`);
        const [cin, cout] = kernel.shape;
        if (step.activation !== "linear" && step.activation !== "gelu") {
          no(`activation ${step.activation}`);
        }
        return () => ({
          op: "dense",
          cin,
          cout,
          w: this.pack(kernel, cin, cout),
          b: step.bias ? this.upload(get(`${step.prefix}/bias`)) : 0,
          gelu: step.activation === "gelu",
        });
      }
      case "layerNorm": {
        const gamma = get(`${step.prefix}/gamma`);
        const c = gamma.shape[0];
        if (c % 4 !== 0) no(`${c} channels (the kernels need a multiple of 4)`);
        return () => ({
          op: "layerNorm",
          c,
          eps: step.epsilon,
          gamma: this.upload(gamma),
          beta: this.upload(get(`${step.prefix}/beta`)),
        });
      }
      case "avgPool":
        return () => ({ op: "avgPool" });
      case "identity":
        return () => ({ op: "identity" });
      default:
        return no("not a kernel of the engine");
    }
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
    for (;;) {
      // A fresh view each time: the memory may have grown (a new buffer object).
      const i = Atomics.add(new Int32Array(this.engine.memory.buffer, counter, 1), 0, 1);
      if (i >= chunks.count) return;
      const s = this.chunkSlab(step, x, shape, out, chunks, i);
      this.blockOnSlab(index, s.x, s.shape, s.padTop, s.padBottom, s.out, scratch);
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
    const k = engine.kernels;
    if (shape.length !== 4 || size(shape) !== input.length) {
      throw new Error(
        `EnginePlan.run: expected [n, h, w, c] input, got ${JSON.stringify(shape)} ` +
          `for ${input.length} values`,
      );
    }
    const slots: (Buffer | undefined)[] = [];
    const live = new Set<number>();
    const alloc = (s: number[]): Buffer => {
      const ptr = engine.alloc(size(s));
      live.add(ptr);
      return { ptr, shape: s };
    };
    const release = (b: Buffer) => {
      if (live.delete(b.ptr)) engine.free(b.ptr);
    };
    // The conv (on its patches) and dense steps: `m` rows of `kk` values times the step's
    // packed weights, into `out`.
    const matmul = (
      a: number,
      m: number,
      kk: number,
      l: { w: number; b: number; cout: number; gelu: boolean },
      out: number,
    ) => {
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
    };
    try {
      const x0 = alloc(shape);
      engine.write(x0.ptr, input);
      slots[plan.input] = x0;
      plan.steps.forEach((step, i) => {
        const read = (s: number): Buffer => {
          const b = slots[s];
          if (!b) throw new Error(`EnginePlan.run: slot ${s} is empty`);
          return b;
        };
        const l = this.steps[i];
        const x = read("input" in step ? step.input : -1);
        let out: Buffer;
        switch (l.op) {
          case "block": {
            const [n, h, w, c] = x.shape;
            if (c !== l.c) {
              throw new Error(`EnginePlan.run: block ${i}: ${c} channels, expected ${l.c}`);
            }
            out = alloc(x.shape);
            if (hooks.block) hooks.block(i, step as BlockStep, x.ptr, x.shape, out.ptr);
            else this.blockOnSlab(i, x.ptr, [n, h, w, c], (l.k - 1) / 2, (l.k - 1) / 2, out.ptr);
            break;
          }
          case "conv": {
            const [n, h, w, c] = x.shape;
            if (c !== l.cin) {
              throw new Error(`EnginePlan.run: conv ${i}: ${c} channels, expected ${l.cin}`);
            }
            const oh = Math.floor(h / l.s), ow = Math.floor(w / l.s);
            out = alloc([n, oh, ow, l.cout]);
            const kk = l.s * l.s * l.cin;
            let a = x;
            if (l.s > 1) {
              a = alloc([n * oh * ow, kk]);
              k.patchify(x.ptr, n, h, w, c, l.s, a.ptr);
            }
            matmul(a.ptr, n * oh * ow, kk, l, out.ptr);
            if (a !== x) release(a);
            break;
          }
          case "dense": {
            const c = x.shape[x.shape.length - 1];
            if (c !== l.cin) {
              throw new Error(`EnginePlan.run: dense ${i}: ${c} inputs, expected ${l.cin}`);
            }
            const m = size(x.shape) / c;
            out = alloc([...x.shape.slice(0, -1), l.cout]);
            matmul(x.ptr, m, c, l, out.ptr);
            break;
          }
          case "layerNorm": {
            const c = x.shape[x.shape.length - 1];
            if (c !== l.c) {
              throw new Error(`EnginePlan.run: LayerNorm ${i}: ${c} channels, expected ${l.c}`);
            }
            out = alloc(x.shape);
            const job: LayerNormJob = {
              x: x.ptr,
              m: size(x.shape) / c,
              c,
              eps: l.eps,
              gamma: l.gamma,
              beta: l.beta,
              out: out.ptr,
            };
            if (hooks.layerNorm) hooks.layerNorm(job);
            else this.layerNorm(job);
            break;
          }
          case "avgPool": {
            const [n, h, w, c] = x.shape;
            out = alloc([n, c]);
            k.avg_pool(x.ptr, n, h * w, c, out.ptr);
            break;
          }
          case "identity": {
            out = alloc(x.shape);
            engine.write(out.ptr, engine.view(x.ptr, size(x.shape)));
            break;
          }
        }
        slots[step.output] = out;
        for (const s of "inputs" in step ? step.inputs : [step.input]) {
          if (plan.lastUse[s] === i && s !== plan.output) {
            release(slots[s]!);
            slots[s] = undefined;
          }
        }
      });
      const result = slots[plan.output]!;
      return { data: engine.read(result.ptr, size(result.shape)), shape: result.shape };
    } finally {
      for (const p of live) engine.free(p);
    }
  }
}
