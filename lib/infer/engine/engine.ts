/**
 * The kernel engine: ConvNeXt's inference kernels (./kernels.c, compiled to WebAssembly
 * SIMD and embedded in ./kernels_wasm.ts) with their own linear memory and a small
 * allocator over it.
 *
 * Why our own kernels next to TF.js's wasm backend: a ConvNeXt block is a depthwise conv,
 * a LayerNorm, two matmuls, a GELU and a residual add. As separate TF.js kernels each one
 * streams a whole activation map through memory, and the 4x-wide hidden map never fits a
 * cache. Here one `block` call runs all of them tile by tile, so the hidden activations stay
 * in cache, and bias, GELU and residual ride in the matmul's epilogue.
 *
 * The memory is a shared `WebAssembly.Memory`: the main thread's engine owns it (weights,
 * activations, the allocator), and worker threads {@link KernelEngine.attach} their own
 * kernel instances to it, each with its own stack, to run their share of a block in place:
 * no copies, and one copy of the weights for all threads.
 *
 * @module
 */
import { KERNELS_RELAXED_SIMD, KERNELS_SIMD } from "./kernels_wasm.ts";

/** The kernels' exports (pointers are byte offsets into the engine's memory). */
export interface KernelExports {
  /** Pack a `K x N` row-major matrix into panels of 8 columns (see kernels.c). */
  pack_b(src: number, k: number, n: number, dst: number): void;
  /** `C = epilogue(A B + bias)`; mode 0 bias, 1 bias + GELU, 2 bias + residual `R`. */
  gemm(
    a: number,
    lda: number,
    m: number,
    k: number,
    bp: number,
    n: number,
    bias: number,
    c: number,
    ldc: number,
    mode: number,
    r: number,
    ldr: number,
    pack: number,
  ): void;
  /** LayerNorm over the last axis; `gamma` 0 skips the affine. */
  layer_norm(
    x: number,
    m: number,
    c: number,
    eps: number,
    gamma: number,
    beta: number,
    out: number,
  ): void;
  /** Floats of scratch a {@link KernelExports.block} call needs. */
  block_scratch(rows: number, w: number, c: number, k: number, tile: number): number;
  /** Floats of `pack` scratch {@link KernelExports.gemm} needs for inner dimension `k`. */
  gemm_scratch(k: number): number;
  /** One fused ConvNeXt block on a slab (see kernels.c). */
  block(
    x: number,
    n: number,
    rows: number,
    w: number,
    c: number,
    padTop: number,
    padBottom: number,
    k: number,
    dww: number,
    dwb: number,
    eps: number,
    w1p: number,
    b1: number,
    w2p: number,
    b2: number,
    tile: number,
    scratch: number,
    out: number,
  ): void;
  /**
   * Pass 1 of a ConvNeXt V2 (GRN) block on a slab laid out as {@link KernelExports.block}'s:
   * the GELU'd hidden rows into `hidden`, per image the hidden units' sums of squares into
   * `sums` (see kernels.c).
   */
  grn_hidden(
    x: number,
    n: number,
    rows: number,
    w: number,
    c: number,
    padTop: number,
    padBottom: number,
    k: number,
    dww: number,
    dwb: number,
    eps: number,
    w1p: number,
    b1: number,
    tile: number,
    scratch: number,
    hidden: number,
    sums: number,
  ): void;
  /**
   * Pass 2 of a GRN block: hidden rows scaled in place per image, then
   * `out = res + hidden W2 + b2` (see kernels.c).
   */
  grn_out(
    hidden: number,
    n: number,
    pixels: number,
    c: number,
    scale: number,
    w2p: number,
    b2: number,
    res: number,
    tile: number,
    pack: number,
    out: number,
  ): void;
  /** Patches of a kernel = stride convolution as GEMM rows. */
  patchify(x: number, n: number, h: number, w: number, c: number, s: number, out: number): void;
  /** Mean over the pixels of each image. */
  avg_pool(x: number, n: number, pixels: number, c: number, out: number): void;
  /** Exact GELU in place. */
  gelu(x: number, size: number, one: number): void;
  /** `iters` rounds of 12 multiply-adds on registers only: the machine's ceiling (bench). */
  fma_peak(iters: number): number;
  /** First free byte after the kernels' own stack and data. */
  __heap_base: WebAssembly.Global;
  /** The instance's stack pointer (each thread's instance gets its own stack). */
  __stack_pointer: WebAssembly.Global;
}

const modules: Partial<Record<"relaxed" | "simd", WebAssembly.Module>> = {};

function decode(base64: string): Uint8Array<ArrayBuffer> {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** Whether this runtime runs relaxed SIMD (fused multiply-add); checked once. */
export function hasRelaxedSimd(): boolean {
  return WebAssembly.validate(decode(KERNELS_RELAXED_SIMD));
}

function kernelModule(relaxed: boolean): WebAssembly.Module {
  const key = relaxed ? "relaxed" : "simd";
  // Compiled once per thread; synchronous, because predict() is.
  modules[key] ??= new WebAssembly.Module(decode(relaxed ? KERNELS_RELAXED_SIMD : KERNELS_SIMD));
  return modules[key]!;
}

/** Options of {@link KernelEngine.create}. */
export interface EngineOptions {
  /** Use the relaxed-SIMD build (FMA); default: when the runtime supports it. */
  relaxed?: boolean;
}

const PAGE = 65536;
const ALIGN = 64;
/** WebAssembly's 4 GiB, in pages: a shared memory needs a maximum. */
const MAX_PAGES = 65536;
/** Bytes of stack for an attached instance (the kernels use a few hundred). */
export const STACK_BYTES = 65536;

/**
 * A kernel instance with its memory. Buffers are `alloc`ed in floats and addressed by byte
 * offset; the allocator is first fit with coalescing, and grows the memory on demand.
 *
 * @example
 * ```ts
 * const engine = KernelEngine.create();
 * const p = engine.alloc(4);
 * engine.write(p, new Float32Array([1, 2, 3, 4]));
 * engine.kernels.gelu(p, 4, 1); // the 1 keeps the kernel's constants in registers
 * console.log(engine.read(p, 4));
 * engine.free(p);
 * ```
 */
export class KernelEngine {
  /** The kernels. */
  readonly kernels: KernelExports;
  /** Whether the relaxed-SIMD (FMA) build runs. */
  readonly relaxed: boolean;
  /** The shared memory (post it to a worker to {@link KernelEngine.attach} there). */
  readonly memory: WebAssembly.Memory;
  /** Attached instances run kernels only; the owning engine allocates. */
  readonly attached: boolean;
  private top: number;
  /** Free blocks, sorted by address: [start, bytes]. */
  private freeList: [number, number][] = [];
  private readonly sizes = new Map<number, number>();

  private constructor(relaxed: boolean, memory?: WebAssembly.Memory, stackTop?: number) {
    this.relaxed = relaxed;
    this.attached = memory !== undefined;
    this.memory = memory ?? KernelEngine.newMemory();
    const instance = new WebAssembly.Instance(kernelModule(relaxed), {
      env: { memory: this.memory },
    });
    this.kernels = instance.exports as unknown as KernelExports;
    if (stackTop !== undefined) this.kernels.__stack_pointer.value = stackTop;
    this.top = Math.ceil(Number(this.kernels.__heap_base.value) / ALIGN) * ALIGN;
  }

  /**
   * A shared memory that may grow to WebAssembly's 4 GiB: V8 reserves that much address
   * space at once (shared memories never move), which a `ulimit -v` can forbid.
   */
  private static newMemory(): WebAssembly.Memory {
    try {
      return new WebAssembly.Memory({ initial: 32, maximum: MAX_PAGES, shared: true });
    } catch (e) {
      throw new Error(
        `KernelEngine: cannot reserve a 4 GiB shared WebAssembly memory (${
          (e as Error).message
        }); CONVNEXT_EXECUTOR=tfjs runs inference without it`,
      );
    }
  }

  /** A new engine with its own memory (compiles the kernels on first use in this thread). */
  static create(options: EngineOptions = {}): KernelEngine {
    const relaxed = options.relaxed ?? hasRelaxedSimd();
    if (relaxed && !hasRelaxedSimd()) {
      throw new Error("KernelEngine: this runtime has no relaxed SIMD (relaxed: true)");
    }
    return new KernelEngine(relaxed);
  }

  /**
   * A kernel instance on another engine's `memory` (in a worker thread), with its stack
   * ending at `stackTop` (from the owner's {@link KernelEngine.allocStack}). It runs
   * kernels on buffers the owner allocated; it cannot allocate itself.
   */
  static attach(memory: WebAssembly.Memory, relaxed: boolean, stackTop: number): KernelEngine {
    return new KernelEngine(relaxed, memory, stackTop);
  }

  /** A stack for an attached instance: returns its top (stacks grow down). */
  allocStack(): number {
    return this.alloc(STACK_BYTES / 4) + STACK_BYTES;
  }

  /** Bytes of memory the engine holds. */
  get byteLength(): number {
    return this.memory.buffer.byteLength;
  }

  /** Allocate `floats` floats (64-byte aligned); returns the byte offset. */
  alloc(floats: number): number {
    if (this.attached) throw new Error("KernelEngine.alloc: an attached engine cannot allocate");
    if (!(Number.isInteger(floats) && floats >= 0)) {
      throw new Error(`KernelEngine.alloc: floats must be a non-negative integer, got ${floats}`);
    }
    const bytes = Math.max(ALIGN, Math.ceil((floats * 4) / ALIGN) * ALIGN);
    for (let i = 0; i < this.freeList.length; i++) {
      const [start, size] = this.freeList[i];
      if (size < bytes) continue;
      if (size === bytes) this.freeList.splice(i, 1);
      else this.freeList[i] = [start + bytes, size - bytes];
      this.sizes.set(start, bytes);
      return start;
    }
    const start = this.top;
    const end = start + bytes;
    if (end > this.memory.buffer.byteLength) {
      const pages = Math.ceil((end - this.memory.buffer.byteLength) / PAGE);
      // Shared memories grow in place: attached instances see the new size on their next call.
      try {
        this.memory.grow(pages);
      } catch {
        throw new Error(
          `KernelEngine: cannot grow the memory to ${Math.ceil(end / 2 ** 20)} MiB ` +
            `(WebAssembly's limit is 4096 MiB; use a smaller batch)`,
        );
      }
    }
    this.top = end;
    this.sizes.set(start, bytes);
    return start;
  }

  /** Return a buffer from {@link KernelEngine.alloc}. */
  free(ptr: number): void {
    if (this.attached) throw new Error("KernelEngine.free: an attached engine cannot free");
    const bytes = this.sizes.get(ptr);
    if (bytes === undefined) throw new Error(`KernelEngine.free: ${ptr} is not allocated`);
    this.sizes.delete(ptr);
    let i = this.freeList.findIndex(([s]) => s > ptr);
    if (i < 0) i = this.freeList.length;
    this.freeList.splice(i, 0, [ptr, bytes]);
    // Merge with the next block, then with the previous one.
    const next = this.freeList[i + 1];
    if (next && ptr + bytes === next[0]) {
      this.freeList[i] = [ptr, bytes + next[1]];
      this.freeList.splice(i + 1, 1);
    }
    const prev = this.freeList[i - 1];
    if (prev && prev[0] + prev[1] === ptr) {
      this.freeList[i - 1] = [prev[0], prev[1] + this.freeList[i][1]];
      this.freeList.splice(i, 1);
    }
    // A free block at the top goes back to the bump pointer.
    const last = this.freeList[this.freeList.length - 1];
    if (last && last[0] + last[1] === this.top) {
      this.top = last[0];
      this.freeList.pop();
    }
  }

  /** A view of `floats` floats at `ptr` (invalid after the next alloc). */
  view(ptr: number, floats: number): Float32Array<SharedArrayBuffer> {
    return new Float32Array(this.memory.buffer as SharedArrayBuffer, ptr, floats);
  }

  /** Copy `data` to `ptr`. */
  write(ptr: number, data: Float32Array<ArrayBufferLike>): void {
    new Float32Array(this.memory.buffer, ptr, data.length).set(data);
  }

  /** A copy of `floats` floats at `ptr`. */
  read(ptr: number, floats: number): Float32Array<ArrayBuffer> {
    // slice() of a view on shared memory is a plain (unshared) copy.
    const out = new Float32Array(floats);
    out.set(new Float32Array(this.memory.buffer, ptr, floats));
    return out;
  }

  /** Allocate and fill a buffer with `data`. */
  upload(data: Float32Array<ArrayBufferLike>): number {
    const ptr = this.alloc(data.length);
    this.write(ptr, data);
    return ptr;
  }

  /** Pack a `k x n` matrix for {@link KernelExports.gemm}; returns the packed buffer. */
  packMatrix(data: Float32Array<ArrayBufferLike>, k: number, n: number): number {
    if (data.length !== k * n) {
      throw new Error(`KernelEngine.packMatrix: expected ${k}x${n} values, got ${data.length}`);
    }
    const packed = this.alloc(k * Math.ceil(n / 8) * 8);
    const src = this.upload(data);
    this.kernels.pack_b(src, k, n, packed);
    this.free(src);
    return packed;
  }
}
