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

type Loaded =
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

/**
 * A plan with its weights loaded into an engine.
 *
 * @example
 * ```ts
 * const plan = compilePlan(model);
 * const weights = weightArrays(foldWeights(model, plan)); // see ../model.ts
 * const runner = new EnginePlan(plan, weights);
 * const { data, shape } = runner.run(pixels, [1, 224, 224, 3]);
 * ```
 */
export class EnginePlan {
  /** The engine the weights live in. */
  readonly engine: KernelEngine;
  private readonly loaded: Loaded[];
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
      this.loaded = specs.map((load) => load());
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
  private check(step: PlanStep, weights: WeightArrays): () => Loaded {
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

  /** Free the weights (the engine itself stays usable). */
  dispose(): void {
    for (const p of this.owned.splice(0)) this.engine.free(p);
  }

  /**
   * Run block step `index` on a slab at `x` (`[n, rows, w, c]` in engine memory) with
   * `padTop`/`padBottom` zero rows outside it (see kernels.c `block`), into `out`.
   */
  blockOnSlab(
    index: number,
    x: number,
    shape: number[],
    padTop: number,
    padBottom: number,
    out: number,
  ): void {
    const l = this.loaded[index];
    if (l?.op !== "block") throw new Error(`EnginePlan: step ${index} is not a block`);
    const [n, rows, w, c] = shape;
    if (c !== l.c) throw new Error(`EnginePlan: block ${index} expects ${l.c} channels, got ${c}`);
    const tile = BLOCK_TILE;
    const scratch = this.engine.alloc(
      this.engine.kernels.block_scratch(rows + padTop + padBottom, w, c, l.k, tile),
    );
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
        tile,
        scratch,
        out,
      );
    } finally {
      this.engine.free(scratch);
    }
  }

  /**
   * Run the plan on `input` (`[n, h, w, c]`, NHWC float32). `runBlock`, when given, runs
   * the blocks instead (e.g. split over threads): it gets the step index, the input buffer
   * and its shape, and must fill `out` (same shape).
   */
  run(
    input: Float32Array<ArrayBufferLike>,
    shape: number[],
    runBlock?: (index: number, step: BlockStep, x: number, shape: number[], out: number) => void,
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
        const l = this.loaded[i];
        const x = read("input" in step ? step.input : -1);
        let out: Buffer;
        switch (l.op) {
          case "block": {
            const [n, h, w, c] = x.shape;
            if (c !== l.c) {
              throw new Error(`EnginePlan.run: block ${i}: ${c} channels, expected ${l.c}`);
            }
            out = alloc(x.shape);
            if (runBlock) runBlock(i, step as BlockStep, x.ptr, x.shape, out.ptr);
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
            k.gemm(
              a.ptr,
              kk,
              n * oh * ow,
              kk,
              l.w,
              l.cout,
              l.b,
              out.ptr,
              l.cout,
              l.gelu ? 1 : 0,
              0,
              0,
            );
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
            k.gemm(x.ptr, c, m, c, l.w, l.cout, l.b, out.ptr, l.cout, l.gelu ? 1 : 0, 0, 0);
            break;
          }
          case "layerNorm": {
            const c = x.shape[x.shape.length - 1];
            if (c !== l.c) {
              throw new Error(`EnginePlan.run: LayerNorm ${i}: ${c} channels, expected ${l.c}`);
            }
            out = alloc(x.shape);
            k.layer_norm(x.ptr, size(x.shape) / c, c, l.eps, l.gamma, l.beta, out.ptr);
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
