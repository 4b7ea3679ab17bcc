/**
 * The kernel engine's training pass: forward and backward through a ConvNeXt on the
 * engine's own kernels (the training functions at the end of ./kernels.c), for one shard of
 * a batch on one thread. lib/train/engine_grads.ts builds a {@link TrainProgram} from a
 * model, loads its weights, and runs one shard per thread; this module knows nothing of
 * TF.js, so that worker threads attached to the engine's memory run it as they are.
 *
 * Why a whole-model pass rather than a TF.js op per block: the activations then never leave
 * the engine's memory (no copies into and out of the TF.js heap, no TF.js tape), the stem,
 * the downsampling layers and the head run on the same kernels, and a thread runs its
 * shard from the images to the weight gradients without meeting the others.
 *
 * What is kept for the backward pass, per block and pixel: the block's input (the previous
 * step's output), the depthwise conv's output (C floats), LayerNorm's mean and rstd (2),
 * the hidden pre-activations (4C) and, with layer scale, the branch before it (C); a
 * ConvNeXt V2 block also keeps GRN's norms per image and hidden unit. The GELU, its
 * derivative, GRN's output and the normalized activations are recomputed tile by tile.
 *
 * @module
 */
import type { KernelEngine, KernelExports } from "./engine.ts";

/** The training kernels of ./kernels.c (pointers are byte offsets into engine memory). */
export interface TrainKernels extends KernelExports {
  /** Pack `src^T` (src `r x s` row-major) for gemm. */
  pack_bt(src: number, r: number, s: number, dst: number): void;
  /** pack_b with vector copies when `n` is a multiple of 8. */
  pack_b_fast(src: number, k: number, n: number, dst: number): void;
  /**
   * `C[k1 x n] += A^T B` (A `m x k1` at stride lda, B `m x n` at stride ldb), with
   * {@link TrainKernels.gemm_tn_scratch} floats of scratch.
   */
  gemm_tn(
    a: number,
    lda: number,
    b: number,
    ldb: number,
    m: number,
    k1: number,
    n: number,
    c: number,
    ldc: number,
    scratch: number,
  ): void;
  /** Floats of scratch gemm_tn needs for `n` output columns. */
  gemm_tn_scratch(n: number): number;
  /** `acc += ` the column sums of `m` rows. */
  col_sum_acc(x: number, m: number, n: number, ld: number, acc: number): void;
  /** `dst += src` over `size` floats (a multiple of 4). */
  add_into(dst: number, src: number, size: number): void;
  /** Zero `size` floats. */
  zero(dst: number, size: number): void;
  /**
   * One AdamW update of `size` floats (a multiple of 4) of weights `w` with gradients `g` and
   * moments `m`, `v`; `hp` points to 8 floats of hyper-parameters (see kernels.c).
   */
  adamw(w: number, g: number, m: number, v: number, size: number, hp: number): void;
  /** `gt = gelu(h)`, `d *= gelu'(h)` over `size` floats (a multiple of 4); `one` must be 1. */
  gelu_grad(h: number, gt: number, d: number, size: number, one: number): void;
  /** LayerNorm with affine, keeping mean and rstd per row. */
  ln_fwd(
    x: number,
    m: number,
    c: number,
    eps: number,
    gamma: number,
    beta: number,
    out: number,
    stats: number,
  ): void;
  /** LayerNorm backward; `dx` may be `dz`. */
  ln_bwd(
    x: number,
    stats: number,
    dz: number,
    m: number,
    c: number,
    gamma: number,
    dx: number,
    dgamma: number,
    dbeta: number,
  ): void;
  /** Inverse of patchify. */
  unpatchify(d: number, n: number, h: number, w: number, c: number, s: number, dx: number): void;
  /** Average pooling backward. */
  avg_pool_bwd(d: number, n: number, pixels: number, c: number, dx: number): void;
  /** The depthwise kernel rotated by 180 degrees. */
  dw_flip(w: number, k: number, c: number, out: number): void;
  /** Depthwise kernel and bias gradients (accumulated). */
  dw_filter_grad(
    x: number,
    dy: number,
    n: number,
    h: number,
    w: number,
    c: number,
    k: number,
    df: number,
    db: number,
  ): void;
  /** Floats of scratch the block training kernels need. */
  block_train_scratch(w: number, c: number, tile: number): number;
  /** A block's forward pass, keeping what its backward pass needs. */
  block_fwd_train(...args: number[]): void;
  /** A block's backward pass. */
  block_bwd_train(...args: number[]): void;
  /** Floats of scratch the GRN block kernels need (block_train_scratch's and 12C). */
  block_train_scratch_grn(w: number, c: number, tile: number): number;
  /** A ConvNeXt V2 (GRN) block's forward pass for training (see kernels.c). */
  block_fwd_train_grn(...args: number[]): void;
  /** A ConvNeXt V2 (GRN) block's backward pass (see kernels.c). */
  block_bwd_train_grn(...args: number[]): void;
}

/** The engine's kernels with the training functions. */
export function trainKernels(engine: KernelEngine): TrainKernels {
  return engine.kernels as TrainKernels;
}

/**
 * Tasks that threads share through {@link runTasks}: records of {@link TASK_INTS} int32 in
 * engine memory, `[op, a, b, c, d, e, f, 0]`.
 */
export const TASK = {
  /** pack_b_fast(a, b, c, d). */
  PACK_B: 1,
  /** pack_bt(a, b, c, d). */
  PACK_BT: 2,
  /** dw_flip(a, b, c, d). */
  DW_FLIP: 3,
  /**
   * Sum a chunk of gradient buffers: for each of the `e` source buffers in the int32 table
   * at `d`, add `c` floats at byte offset `b` into the buffer at `a`.
   */
  REDUCE: 4,
  /** adamw(a, b, c, d, e, f): an AdamW update of a chunk of one parameter. */
  ADAMW: 5,
} as const;

/** Int32 slots of one task record. */
export const TASK_INTS = 8;

/**
 * Run tasks from the table at `table` (`count` records) until none is left: every thread
 * calls this with the same `counter` (an int32 in engine memory, zero at the start) and
 * takes the next task with an atomic increment.
 */
export function runTasks(engine: KernelEngine, table: number, count: number, counter: number) {
  const k = trainKernels(engine);
  for (;;) {
    const buffer = engine.memory.buffer;
    const i = Atomics.add(new Int32Array(buffer, counter, 1), 0, 1);
    if (i >= count) return;
    const [op, a, b, c, d, e, f] = new Int32Array(buffer, table + 4 * TASK_INTS * i, 7);
    if (op === TASK.PACK_B) k.pack_b_fast(a, b, c, d);
    else if (op === TASK.PACK_BT) k.pack_bt(a, b, c, d);
    else if (op === TASK.DW_FLIP) k.dw_flip(a, b, c, d);
    else if (op === TASK.ADAMW) k.adamw(a, b, c, d, e, f);
    else if (op === TASK.REDUCE) {
      const sources = new Int32Array(buffer, d, e);
      for (const src of sources) k.add_into(a + b, (src >>> 0) + b, c);
    } else throw new Error(`runTasks: unknown task ${op}`);
  }
}

/** Where a parameter's gradient lies in a thread's gradient buffer (floats). */
export interface GradSlot {
  /** Parameter name (the model weight's `originalName`). */
  name: string;
  /** Offset in floats from the buffer's start (a multiple of 4). */
  offset: number;
  /** Shape. */
  shape: number[];
}

/**
 * One step of a training program. Weights are byte offsets in engine memory (`wp` packed
 * by pack_b, `wtp` the transpose packed by pack_bt); gradients (`g*`) are float offsets
 * into a thread's gradient buffer (-1: none).
 */
export type TrainOp =
  | {
    op: "conv";
    s: number;
    cin: number;
    cout: number;
    wp: number;
    wtp: number;
    b: number;
    gw: number;
    gb: number;
  }
  | {
    op: "dense";
    cin: number;
    cout: number;
    wp: number;
    wtp: number;
    b: number;
    gw: number;
    gb: number;
  }
  | { op: "layerNorm"; c: number; eps: number; gamma: number; beta: number; gg: number; gb: number }
  | { op: "avgPool" }
  | {
    op: "block";
    k: number;
    c: number;
    eps: number;
    dww: number;
    dwb: number;
    dwflip: number;
    gamma: number;
    beta: number;
    w1p: number;
    w1tp: number;
    b1: number;
    w2p: number;
    w2tp: number;
    b2: number;
    /** Layer scale (0: none). */
    ls: number;
    /** Row of the drop-path scale table (-1: no drop path). */
    drop: number;
    /** Gradient offsets in kernels.c's block_grads order (ls -1 without layer scale). */
    grads: number[];
    /** Pixels per tile of the pointwise layers. */
    tile: number;
    /**
     * ConvNeXt V2: the GRN on the hidden layer (its gamma and beta, byte offsets, and
     * epsilon); its two gradients are the last two of `grads`.
     */
    grn?: { gamma: number; beta: number; eps: number };
  };

/** A model as the training kernels run it: a chain of steps from images to logits. */
export interface TrainProgram {
  /** The steps, in forward order (each reads the previous one's output). */
  ops: TrainOp[];
  /** Floats of one thread's gradient buffer (a multiple of 4). */
  gradFloats: number;
  /** Where each parameter's gradient lies. */
  slots: GradSlot[];
  /** Blocks with drop path (rows of the scale table). */
  dropBlocks: number;
  /** Classes (the last step's outputs). */
  classes: number;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** The output shape of every step for an input of `shape` (`[n, h, w, c]`). */
export function opShapes(program: TrainProgram, shape: number[]): number[][] {
  const shapes = [shape];
  let s = shape;
  for (const op of program.ops) {
    const [n, h, w] = s;
    switch (op.op) {
      case "conv":
        s = [n, Math.floor(h / op.s), Math.floor(w / op.s), op.cout];
        break;
      case "dense":
        s = [...s.slice(0, -1), op.cout];
        break;
      case "avgPool":
        s = [n, s[3]];
        break;
      default:
        break; // LayerNorm and blocks keep the shape
    }
    shapes.push(s);
  }
  return shapes;
}

/**
 * One thread's buffers for a shard of a given shape (all byte offsets, allocated by the
 * owning engine): the activations and what each step keeps, the gradient ping-pong
 * buffers, scratch, and the thread's gradients.
 */
export interface Tape {
  /** Input shape of the shard `[n, h, w, c]`. */
  shape: number[];
  /** Output of step i at `acts[i + 1]`; `acts[0]` is set per step (the shard's images). */
  acts: number[];
  /** Per step: LayerNorm statistics (LayerNorm, block), else 0. */
  stats: number[];
  /**
   * Per block step: the depthwise conv's output, the hidden pre-activations, the branch and
   * (GRN blocks) each image's GRN statistics (0 where none).
   */
  saved: { y: number; h: number; u: number; grn: number }[];
  /** Two gradient buffers of the largest activation, and the depthwise gradient map. */
  dA: number;
  /** See dA. */
  dB: number;
  /** See dA. */
  dy: number;
  /** The hidden gradient of one image of the largest GRN block (0 without GRN). */
  grnD: number;
  /** Block scratch (block_train_scratch floats; also the gemm packing buffer). */
  scratch: number;
  /** Patches of a patchify conv (forward and backward), and their gradient. */
  patches: number;
  /** The thread's gradients ({@link TrainProgram.gradFloats} floats). */
  grads: number;
  /** Per block step: its gradient pointers (int32, kernels.c's block_grads_grn order). */
  gradPtrs: number[];
  /** Every buffer above (to free). */
  owned: number[];
}

/** Floats of every buffer a {@link Tape} needs, by name (for sizing and allocation). */
function tapeSizes(program: TrainProgram, shape: number[]) {
  const shapes = opShapes(program, shape);
  let maxAct = 0, maxMap = 0, scratch = 0, patches = 0, grnD = 0;
  const acts = shapes.slice(1).map(size);
  const stats: number[] = [];
  const saved: { y: number; h: number; u: number; grn: number }[] = [];
  program.ops.forEach((op, i) => {
    const inShape = shapes[i];
    maxAct = Math.max(maxAct, size(inShape), size(shapes[i + 1]));
    const rows = size(inShape) / inShape[inShape.length - 1];
    stats.push(op.op === "layerNorm" || op.op === "block" ? 2 * rows : 0);
    if (op.op === "conv") {
      patches = Math.max(patches, size(shapes[i + 1]) / op.cout * op.s ** 2 * op.cin);
    }
    if (op.op === "block") {
      const p = size(inShape);
      const [n, h, w] = inShape;
      saved.push({ y: p, h: 4 * p, u: op.ls ? p : 0, grn: op.grn ? 8 * n * op.c : 0 });
      maxMap = Math.max(maxMap, p);
      const grnScratch = op.grn ? 12 * op.c : 0;
      scratch = Math.max(scratch, blockScratchFloats(w, op.c, op.tile) + grnScratch);
      if (op.grn) grnD = Math.max(grnD, h * w * 4 * op.c);
    }
    if (op.op === "conv" || op.op === "dense") {
      const k = op.op === "conv" ? op.s * op.s * op.cin : op.cin;
      scratch = Math.max(scratch, gemmScratch(Math.max(k, op.cout)), tnScratch(op.cout));
    }
  });
  return { shapes, acts, stats, saved, maxAct, maxMap, scratch, patches, grnD };
}

// Mirrors of kernels.c's scratch sizes (for sizing without an engine; allocTape checks).
const gemmScratch = (k: number) => 32 * k;
const tnScratch = (n: number) => 128 * Math.ceil(n / 8) * 8 + 32 * 128 + 64;
function blockScratchFloats(w: number, c: number, tile: number): number {
  return 16 * tile * c + Math.max(gemmScratch(4 * c), tnScratch(4 * c)) + c + w * c + 64;
}

/**
 * Bytes a {@link Tape} for passes of `shape` takes (the gradient buffer included): see
 * {@link imagesPerPass}.
 */
export function tapeBytes(program: TrainProgram, shape: number[]): number {
  const s = tapeSizes(program, shape);
  const floats = s.acts.reduce((a, b) => a + b, 0) + s.stats.reduce((a, b) => a + b, 0) +
    s.saved.reduce((a, b) => a + b.y + b.h + b.u + b.grn, 0) + 2 * s.maxAct + s.maxMap +
    s.scratch + s.patches + s.grnD + program.gradFloats;
  return floats * 4;
}

/**
 * Images per pass of each of `threads` threads such that their tapes stay within
 * `budget` bytes (at least 1): a larger shard runs in several passes.
 */
export function imagesPerPass(
  program: TrainProgram,
  image: number[],
  threads: number,
  budget: number,
): number {
  const one = tapeBytes(program, [1, ...image]);
  const perImage = tapeBytes(program, [2, ...image]) - one;
  return Math.max(1, Math.floor((budget / threads - (one - perImage)) / perImage));
}

/** Allocate a thread's {@link Tape} for passes of `shape` in the owning `engine`. */
export function allocTape(engine: KernelEngine, program: TrainProgram, shape: number[]): Tape {
  const s = tapeSizes(program, shape);
  const k = trainKernels(engine);
  const shapes = opShapes(program, shape);
  program.ops.forEach((op, i) => {
    if (op.op !== "block") return;
    const need = op.grn
      ? k.block_train_scratch_grn(shapes[i][2], op.c, op.tile)
      : k.block_train_scratch(shapes[i][2], op.c, op.tile);
    if (need > s.scratch) {
      throw new Error("allocTape: block scratch larger than sized (kernels.c changed?)");
    }
  });
  const owned: number[] = [];
  const alloc = (floats: number) => {
    const p = engine.alloc(Math.max(1, floats));
    owned.push(p);
    return p;
  };
  try {
    const tape: Tape = {
      shape,
      acts: [0, ...s.acts.map(alloc)],
      stats: s.stats.map((f) => f ? alloc(f) : 0),
      saved: s.saved.map((b) => ({
        y: alloc(b.y),
        h: alloc(b.h),
        u: b.u ? alloc(b.u) : 0,
        grn: b.grn ? alloc(b.grn) : 0,
      })),
      dA: alloc(s.maxAct),
      dB: alloc(s.maxAct),
      dy: alloc(s.maxMap),
      grnD: s.grnD ? alloc(s.grnD) : 0,
      scratch: alloc(s.scratch),
      patches: alloc(s.patches),
      grads: alloc(program.gradFloats),
      gradPtrs: [],
      owned,
    };
    for (const op of program.ops) {
      if (op.op !== "block") continue;
      const table = alloc(BLOCK_GRADS);
      const ptrs = op.grads.map((g) => g < 0 ? 0 : tape.grads + 4 * g);
      new Int32Array(engine.memory.buffer, table, BLOCK_GRADS).set(ptrs);
      tape.gradPtrs.push(table);
    }
    return tape;
  } catch (e) {
    for (const p of owned) engine.free(p);
    throw e;
  }
}

/** Gradient pointers of a block (kernels.c block_grads_grn: block_grads' 9, GRN's 2). */
const BLOCK_GRADS = 11;

/** Free a {@link Tape}. */
export function freeTape(engine: KernelEngine, tape: Tape): void {
  for (const p of tape.owned.splice(0)) engine.free(p);
}

/** One shard's job: where its images, labels and drop-path scales are, and the loss. */
export interface ShardJob {
  /** The shard's images (`count` images of `tape.shape`'s size), byte offset. */
  x: number;
  /** Images in the shard (any number: they go through the tape in passes of its size). */
  count: number;
  /** Its labels (int32), byte offset. */
  labels: number;
  /** The drop-path scale table (`dropBlocks` rows of `batch` floats), or 0. */
  scales: number;
  /** Index of the shard's first image in the batch. */
  first: number;
  /** Images in the whole batch (the loss is the batch mean). */
  batch: number;
  /** Label smoothing. */
  smoothing: number;
  /** Factor on the batch's mean loss (e.g. 1 / updateFreq). */
  scale: number;
}

/** What a shard gives back besides its gradients. */
export interface ShardResult {
  /** Sum of the shard's per-image losses. */
  lossSum: number;
  /** Images classified correctly (training-mode logits). */
  correct: number;
}

/**
 * Run one shard forward and backward on `engine` (owner or attached): the thread's
 * gradients (zeroed first) then hold the gradient of `scale * mean loss over the batch`
 * restricted to this shard's images. A shard larger than the tape goes through it in
 * passes, the gradients adding up (the kernels accumulate): memory bounds the tape, not
 * the batch.
 */
export function runShard(
  engine: KernelEngine,
  program: TrainProgram,
  tape: Tape,
  job: ShardJob,
): ShardResult {
  const k = trainKernels(engine);
  k.zero(tape.grads, program.gradFloats);
  const [room, h, w, c] = tape.shape;
  const total: ShardResult = { lossSum: 0, correct: 0 };
  for (let done = 0; done < job.count; done += room) {
    const n = Math.min(room, job.count - done);
    const pass = { ...job, x: job.x + 4 * done * h * w * c, first: job.first + done, count: n };
    const r = runPass(engine, k, program, tape, [n, h, w, c], pass);
    total.lossSum += r.lossSum;
    total.correct += r.correct;
  }
  return total;
}

/** One pass of `shape[0]` images (at most the tape's) forward, loss and backward. */
function runPass(
  engine: KernelEngine,
  k: TrainKernels,
  program: TrainProgram,
  tape: Tape,
  shape: number[],
  job: ShardJob,
): ShardResult {
  tape.acts[0] = job.x;
  const shapes = opShapes(program, shape);
  forward(k, program, tape, shapes, job);
  const last = shapes[shapes.length - 1];
  const logits = engine.view(tape.acts[program.ops.length], size(last));
  const labels = new Int32Array(engine.memory.buffer, job.labels + 4 * job.first, last[0]);
  const result = softmaxCrossEntropy(logits, labels, program.classes, job, tape.dA, engine);
  backward(k, program, tape, shapes, job);
  return result;
}

/** The drop-path scales of block `op` for this shard (byte offset), or 0. */
function scalesOf(op: { drop: number }, job: ShardJob): number {
  return op.drop < 0 || !job.scales ? 0 : job.scales + 4 * (op.drop * job.batch + job.first);
}

function forward(
  k: TrainKernels,
  program: TrainProgram,
  tape: Tape,
  shapes: number[][],
  job: ShardJob,
): void {
  let blockIndex = 0;
  program.ops.forEach((op, i) => {
    const x = tape.acts[i], out = tape.acts[i + 1];
    const [n, h, w, c] = shapes[i];
    const rows = size(shapes[i]) / shapes[i][shapes[i].length - 1];
    switch (op.op) {
      case "conv": {
        const [, oh, ow] = shapes[i + 1];
        const kk = op.s * op.s * op.cin;
        const a = op.s > 1 ? tape.patches : x;
        if (op.s > 1) k.patchify(x, n, h, w, c, op.s, a);
        k.gemm(a, kk, n * oh * ow, kk, op.wp, op.cout, op.b, out, op.cout, 0, 0, 0, tape.scratch);
        break;
      }
      case "dense":
        k.gemm(x, op.cin, rows, op.cin, op.wp, op.cout, op.b, out, op.cout, 0, 0, 0, tape.scratch);
        break;
      case "layerNorm":
        k.ln_fwd(x, rows, op.c, op.eps, op.gamma, op.beta, out, tape.stats[i]);
        break;
      case "avgPool":
        k.avg_pool(x, n, h * w, c, out);
        break;
      case "block":
        blockForward(k, op, tape, tape.saved[blockIndex++], tape.stats[i], shapes[i], job, x, out);
        break;
    }
  });
}

type BlockOp = TrainOp & { op: "block" };

/** A block's forward pass (kernels.c block_fwd_train) on the map `x` of `shape`. */
function blockForward(
  k: TrainKernels,
  op: BlockOp,
  tape: Tape,
  saved: Tape["saved"][number],
  stats: number,
  shape: number[],
  job: ShardJob,
  x: number,
  out: number,
): void {
  const [n, h, w, c] = shape;
  const { y, h: hidden, u } = saved;
  const weights = [op.dww, op.dwb, op.eps, op.gamma, op.beta, op.w1p, op.b1, op.w2p, op.b2];
  const args = [x, n, h, w, c, op.k, ...weights, op.ls, scalesOf(op, job), op.tile];
  const kept = [tape.scratch, y, stats, hidden, u, out];
  if (op.grn) {
    const { gamma, beta, eps } = op.grn;
    k.block_fwd_train_grn(...args, ...kept, gamma, beta, eps, saved.grn);
  } else {
    k.block_fwd_train(...args, ...kept);
  }
}

/**
 * Block `index`'s backward pass (kernels.c block_bwd_train): `d`, the gradient of its
 * output, becomes the gradient of its input `x`.
 */
function blockBackward(
  k: TrainKernels,
  op: BlockOp,
  tape: Tape,
  index: number,
  stats: number,
  shape: number[],
  job: ShardJob,
  x: number,
  d: number,
): void {
  const [n, h, w, c] = shape;
  const { y, h: hidden, u, grn } = tape.saved[index];
  const weights = [op.dwflip, op.gamma, op.beta, op.w1tp, op.w2tp, op.ls];
  const args = [x, n, h, w, c, op.k, ...weights, scalesOf(op, job), y, stats, hidden, u, d];
  const rest = [tape.dy, op.tile, tape.scratch, tape.gradPtrs[index], 1];
  if (op.grn) {
    const { gamma, beta, eps } = op.grn;
    k.block_bwd_train_grn(...args, ...rest, gamma, beta, eps, grn, tape.grnD);
  } else {
    k.block_bwd_train(...args, ...rest);
  }
}

function backward(
  k: TrainKernels,
  program: TrainProgram,
  tape: Tape,
  shapes: number[][],
  job: ShardJob,
): void {
  let d = tape.dA, spare = tape.dB;
  const g = (offset: number) => tape.grads + 4 * offset;
  let blockIndex = tape.saved.length;
  for (let i = program.ops.length - 1; i >= 0; i--) {
    const op = program.ops[i];
    const x = tape.acts[i];
    const [n, h, w, c] = shapes[i];
    const rows = size(shapes[i]) / shapes[i][shapes[i].length - 1];
    const needInput = i > 0; // nobody wants the images' gradient
    switch (op.op) {
      case "dense":
        k.gemm_tn(x, op.cin, d, op.cout, rows, op.cin, op.cout, g(op.gw), op.cout, tape.scratch);
        if (op.gb >= 0) k.col_sum_acc(d, rows, op.cout, op.cout, g(op.gb));
        if (needInput) {
          k.gemm(
            d,
            op.cout,
            rows,
            op.cout,
            op.wtp,
            op.cin,
            0,
            spare,
            op.cin,
            0,
            0,
            0,
            tape.scratch,
          );
          [d, spare] = [spare, d];
        }
        break;
      case "conv": {
        const [, oh, ow] = shapes[i + 1];
        const m = n * oh * ow, kk = op.s * op.s * op.cin;
        const a = op.s > 1 ? tape.patches : x;
        if (op.s > 1) k.patchify(x, n, h, w, c, op.s, a);
        k.gemm_tn(a, kk, d, op.cout, m, kk, op.cout, g(op.gw), op.cout, tape.scratch);
        if (op.gb >= 0) k.col_sum_acc(d, m, op.cout, op.cout, g(op.gb));
        if (!needInput) break;
        // The patches' gradient lands where the patches were, then goes back to pixels.
        const dp = op.s > 1 ? tape.patches : spare;
        k.gemm(d, op.cout, m, op.cout, op.wtp, kk, 0, dp, kk, 0, 0, 0, tape.scratch);
        if (op.s > 1) k.unpatchify(dp, n, h, w, c, op.s, spare);
        [d, spare] = [spare, d];
        break;
      }
      case "layerNorm":
        k.ln_bwd(x, tape.stats[i], d, rows, op.c, op.gamma, d, g(op.gg), g(op.gb));
        break;
      case "avgPool":
        k.avg_pool_bwd(d, n, h * w, c, spare);
        [d, spare] = [spare, d];
        break;
      case "block":
        --blockIndex;
        blockBackward(k, op, tape, blockIndex, tape.stats[i], shapes[i], job, x, d);
        break;
    }
  }
}

/**
 * Softmax cross entropy with label smoothing on the shard's logits (as lib/train/losses.ts
 * `crossEntropy`: `(1 - s) nll + s mean_c(-log p_c)` per image, averaged over the batch), in
 * float64; writes the logits' gradient of `scale * batch mean` to `dlogits`.
 */
export function softmaxCrossEntropy(
  logits: Float32Array<ArrayBufferLike>,
  labels: Int32Array<ArrayBufferLike>,
  classes: number,
  job: Pick<ShardJob, "smoothing" | "scale" | "batch">,
  dlogits: number,
  engine: KernelEngine,
): ShardResult {
  const n = labels.length;
  const grad = engine.view(dlogits, n * classes);
  const s = job.smoothing;
  const factor = job.scale / job.batch;
  let lossSum = 0, correct = 0;
  for (let i = 0; i < n; i++) {
    const row = logits.subarray(i * classes, (i + 1) * classes);
    let max = -Infinity, arg = 0;
    for (let j = 0; j < classes; j++) {
      if (row[j] > max) [max, arg] = [row[j], j];
    }
    let sum = 0, sumLogits = 0;
    for (let j = 0; j < classes; j++) {
      sum += Math.exp(row[j] - max);
      sumLogits += row[j];
    }
    const logZ = max + Math.log(sum);
    const label = labels[i];
    lossSum += (1 - s) * (logZ - row[label]) + s * (logZ - sumLogits / classes);
    if (arg === label) correct++;
    for (let j = 0; j < classes; j++) {
      const q = (j === label ? 1 - s : 0) + s / classes;
      grad[i * classes + j] = factor * (Math.exp(row[j] - logZ) - q);
    }
  }
  return { lossSum, correct };
}
