/**
 * A ConvNeXt `tf.LayersModel` as a training program of the kernel engine
 * (lib/infer/engine/train.ts): the graph is read with the inference plan compiler
 * (lib/infer/plan.ts, which fuses each block), every weight gets a place in the engine's
 * memory (matmul weights also packed, and packed transposed for the backward pass) and a
 * place in the gradient buffers. {@link syncWeights} copies the weights that changed since
 * the last step (the optimizer's `assign` gives a variable a new data id).
 *
 * Anything outside the chain stem, LayerNorm, blocks (V1, or V2 with GRN), downsampling,
 * pooling, LayerNorm, linear head is {@link EngineTrainUnsupported}: the caller keeps the
 * TF.js path.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import {
  type BlockStep,
  compilePlan,
  type DenseStep,
  type LayerNormStep,
  PlanUnsupported,
  type SpatialStep,
} from "../infer/plan.ts";
import type { KernelEngine } from "../infer/engine/engine.ts";
import { type GradSlot, TASK, type TrainOp, type TrainProgram } from "../infer/engine/train.ts";

/** A model the training kernels cannot run; the message says why. */
export class EngineTrainUnsupported extends Error {}

type Layer = tf.layers.Layer;

/** A task of lib/infer/engine/train.ts's runTasks: `[op, a, b, c, d, e?]`. */
export type Task = number[];

/** One model weight in the engine: its raw copy and what is derived from it. */
interface WeightSlot {
  /** The backing variable (its data id changes on every assignment). */
  variable: tf.Variable;
  /** Byte offset of the raw copy. */
  raw: number;
  /** Tasks rebuilding the derived buffers (packed, transposed, rotated) after a copy. */
  derive: Task[];
  /** Data id of the last copy. */
  version?: unknown;
}

/** A {@link TrainProgram} with its weights in an engine. */
export interface LoadedProgram {
  /** The program (JSON: worker threads receive it). */
  program: TrainProgram;
  /** The weights, in program order. */
  weights: WeightSlot[];
  /** Drop rate of each drop-path block (rows of the scale table), in forward order. */
  dropRates: number[];
  /** Every buffer allocated for weights (to free). */
  owned: number[];
}

/**
 * Pixels per tile of a block's pointwise layers in training. Wide blocks take 256: their
 * weights (and weight gradients) stream through the cache once per tile. Measured on
 * convnext_tiny (64 to 512 pixels per stage): within the noise of a shared machine, 128
 * and 256 were as fast as any choice.
 */
export function trainTile(c: number): number {
  return c <= 192 ? 128 : 256;
}

function weightOf(layer: Layer, name: string): tf.Variable {
  const found = layer.weights.filter((w) => w.originalName.split("/").pop() === name);
  if (found.length !== 1) {
    throw new EngineTrainUnsupported(`layer ${layer.name} has no single weight "${name}"`);
  }
  return found[0].read() as tf.Variable;
}

/** Builds a program step by step: weight and gradient placement. */
class Builder {
  readonly weights: WeightSlot[] = [];
  readonly slots: GradSlot[] = [];
  readonly owned: number[] = [];
  readonly names = new Set<string>();
  gradFloats = 0;

  constructor(readonly engine: KernelEngine, readonly model: tf.LayersModel) {}

  alloc(floats: number): number {
    const p = this.engine.alloc(floats);
    this.owned.push(p);
    return p;
  }

  /** A weight's raw copy and gradient offset; `derive` rebuilds what depends on it. */
  add(variable: tf.Variable, name: string, derive: Task[] = []) {
    const raw = this.alloc(variable.size);
    this.weights.push({ variable, raw, derive });
    const offset = this.gradFloats;
    this.slots.push({ name, offset, shape: variable.shape });
    this.names.add(name);
    this.gradFloats += Math.ceil(variable.size / 4) * 4;
    return { raw, grad: offset };
  }

  /** A layer's weight by last name segment, added. */
  own(layer: Layer, short: string, derive?: (raw: number) => Task[]) {
    const found = layer.weights.find((w) => w.originalName.split("/").pop() === short);
    if (!found) throw new EngineTrainUnsupported(`layer ${layer.name} has no weight "${short}"`);
    const variable = weightOf(layer, short);
    const slot = this.add(variable, found.originalName);
    if (derive) this.weights[this.weights.length - 1].derive = derive(slot.raw);
    return slot;
  }

  /** A `k x n` matrix weight packed for gemm, and its transpose packed for the backward. */
  matrix(layer: Layer, short: string, k: number, n: number) {
    const wp = this.alloc(k * Math.ceil(n / 8) * 8);
    const wtp = this.alloc(n * Math.ceil(k / 8) * 8);
    const slot = this.own(layer, short, (raw) => [
      [TASK.PACK_B, raw, k, n, wp],
      [TASK.PACK_BT, raw, k, n, wtp],
    ]);
    return { ...slot, wp, wtp };
  }
}

function config(layer: Layer): Record<string, unknown> {
  return layer.getConfig() as Record<string, unknown>;
}

function noActivation(layer: Layer): void {
  const a = config(layer).activation ?? "linear";
  if (a !== "linear") throw new EngineTrainUnsupported(`${layer.name}: activation ${a}`);
}

function convOp(b: Builder, step: SpatialStep): TrainOp {
  const layer = b.model.getLayer(step.prefix);
  const w = weightOf(layer, "kernel");
  const [kh, kw, cin, cout] = w.shape;
  const [sh, sw] = step.strides;
  if (!(kh === kw && sh === kh && sw === kw && (step.padding === "valid" || kh === 1))) {
    throw new EngineTrainUnsupported(`${step.prefix}: ${kh}x${kw} conv at ${sh}x${sw}`);
  }
  noActivation(layer);
  const m = b.matrix(layer, "kernel", kh * kw * cin, cout);
  const bias = step.bias ? b.own(layer, "bias") : null;
  return {
    op: "conv",
    s: kh,
    cin,
    cout,
    wp: m.wp,
    wtp: m.wtp,
    b: bias?.raw ?? 0,
    gw: m.grad,
    gb: bias?.grad ?? -1,
  };
}

function denseOp(b: Builder, step: DenseStep): TrainOp {
  const layer = b.model.getLayer(step.prefix);
  noActivation(layer);
  const [cin, cout] = weightOf(layer, "kernel").shape;
  const m = b.matrix(layer, "kernel", cin, cout);
  const bias = step.bias ? b.own(layer, "bias") : null;
  return {
    op: "dense",
    cin,
    cout,
    wp: m.wp,
    wtp: m.wtp,
    b: bias?.raw ?? 0,
    gw: m.grad,
    gb: bias?.grad ?? -1,
  };
}

function layerNormOp(b: Builder, step: LayerNormStep): TrainOp {
  const layer = b.model.getLayer(step.prefix);
  const gamma = b.own(layer, "gamma");
  const beta = b.own(layer, "beta");
  const c = weightOf(layer, "gamma").shape[0];
  if (c % 4 !== 0) throw new EngineTrainUnsupported(`${step.prefix}: ${c} channels`);
  return {
    op: "layerNorm",
    c,
    eps: step.epsilon,
    gamma: gamma.raw,
    beta: beta.raw,
    gg: gamma.grad,
    gb: beta.grad,
  };
}

function blockOp(b: Builder, step: BlockStep, sources: string[], drops: number[]): TrainOp {
  const layers = sources.map((n) => b.model.getLayer(n));
  const [dw, norm, fc1, fc2] = layers;
  const scale = layers.find((l) => l.getClassName() === "LayerScale");
  const drop = layers.find((l) => l.getClassName() === "StochasticDepth");
  const k = step.kernelSize;
  const [c, hidden] = weightOf(fc1, "kernel").shape;
  if (c % 4 !== 0 || hidden !== 4 * c || k > 15) {
    throw new EngineTrainUnsupported(
      `${step.prefix}: ${c} channels, hidden ${hidden}, kernel ${k}`,
    );
  }
  const dwflip = b.alloc(k * k * c);
  const dww = b.own(dw, "depthwise_kernel", (raw) => [[TASK.DW_FLIP, raw, k, c, dwflip]]);
  const dwb = b.own(dw, "bias");
  const gamma = b.own(norm, "gamma");
  const beta = b.own(norm, "beta");
  const w1 = b.matrix(fc1, "kernel", c, hidden);
  const b1 = b.own(fc1, "bias");
  const w2 = b.matrix(fc2, "kernel", hidden, c);
  const b2 = b.own(fc2, "bias");
  const ls = scale ? b.own(scale, "gamma") : null;
  const grnLayer = layers.find((l) => l.getClassName() === "GlobalResponseNorm");
  const grn = grnLayer && step.grn
    ? { gamma: b.own(grnLayer, "gamma"), beta: b.own(grnLayer, "beta"), eps: step.grn.epsilon }
    : null;
  const rate = drop ? (drop as unknown as { rate: number }).rate : 0;
  if (rate > 0) drops.push(rate);
  return {
    op: "block",
    k,
    c,
    eps: step.epsilon,
    dww: dww.raw,
    dwb: dwb.raw,
    dwflip,
    gamma: gamma.raw,
    beta: beta.raw,
    w1p: w1.wp,
    w1tp: w1.wtp,
    b1: b1.raw,
    w2p: w2.wp,
    w2tp: w2.wtp,
    b2: b2.raw,
    ls: ls?.raw ?? 0,
    drop: rate > 0 ? drops.length - 1 : -1,
    // kernels.c's block_grads_grn order: -1 where the block has no such weight.
    grads: [dww, dwb, gamma, beta, w1, b1, w2, b2].map((s) => s.grad).concat(
      ls?.grad ?? -1,
      grn?.gamma.grad ?? -1,
      grn?.beta.grad ?? -1,
    ),
    tile: trainTile(c),
    ...(grn ? { grn: { gamma: grn.gamma.raw, beta: grn.beta.raw, eps: grn.eps } } : {}),
  };
}

/**
 * Why the training kernels cannot run `model` (its graph, layers or activations), or null
 * when they can. Builds nothing in any engine.
 */
export function engineTrainSupport(model: tf.LayersModel): string | null {
  try {
    checkGraph(model);
    return null;
  } catch (e) {
    if (e instanceof EngineTrainUnsupported || e instanceof PlanUnsupported) return e.message;
    throw e;
  }
}

/** The plan's steps, checked to be a chain the training kernels run. */
function checkGraph(model: tf.LayersModel) {
  const plan = compilePlan(model, { grn: true });
  let slot = plan.input;
  for (const step of plan.steps) {
    if (!("input" in step) || step.input !== slot) {
      throw new EngineTrainUnsupported(`step ${step.op}: not a chain of single-input steps`);
    }
    if (!["conv", "dense", "layerNorm", "avgPool", "block"].includes(step.op)) {
      throw new EngineTrainUnsupported(`step ${step.op}: no training kernel`);
    }
    if ((step.op === "conv" || step.op === "dense") && step.activation !== "linear") {
      throw new EngineTrainUnsupported(`${step.prefix}: activation ${step.activation}`);
    }
    slot = step.output;
  }
  if (slot !== plan.output) throw new EngineTrainUnsupported("the last step is not the output");
  const last = plan.steps[plan.steps.length - 1];
  if (last?.op !== "dense") {
    throw new EngineTrainUnsupported("the model does not end in a dense head");
  }
  return plan;
}

/**
 * Build `model`'s training program in `engine` (weights not loaded yet: call
 * {@link syncWeights}).
 *
 * @throws EngineTrainUnsupported when the kernels cannot run the model.
 */
export function buildTrainProgram(model: tf.LayersModel, engine: KernelEngine): LoadedProgram {
  const plan = checkGraph(model);
  const b = new Builder(engine, model);
  const drops: number[] = [];
  try {
    const ops = plan.steps.map((step): TrainOp => {
      switch (step.op) {
        case "conv":
          return convOp(b, step);
        case "dense":
          return denseOp(b, step);
        case "layerNorm":
          return layerNormOp(b, step);
        case "block":
          return blockOp(
            b,
            step,
            plan.sources.find((s) => s.prefix === step.prefix)!.layers,
            drops,
          );
        default:
          return { op: "avgPool" };
      }
    });
    for (const w of model.trainableWeights) {
      if (!b.names.has(w.originalName)) {
        throw new EngineTrainUnsupported(
          `weight ${w.originalName} is outside the training kernels`,
        );
      }
    }
    const classes = (ops[ops.length - 1] as { cout: number }).cout;
    const program: TrainProgram = {
      ops,
      gradFloats: b.gradFloats,
      slots: b.slots,
      dropBlocks: drops.length,
      classes,
    };
    return { program, weights: b.weights, dropRates: drops, owned: b.owned };
  } catch (e) {
    for (const p of b.owned) engine.free(p);
    throw e;
  }
}

/** Free a program's weights. */
export function freeProgram(engine: KernelEngine, loaded: LoadedProgram): void {
  for (const p of loaded.owned.splice(0)) engine.free(p);
}

/**
 * A variable's values without a copy where the backend allows: the wasm backend's
 * `typedArrayFromHeap` views its heap (valid until the next TF.js op, so it is used at
 * once); elsewhere `dataSync()` (the cpu backend returns its own array, no copy either).
 */
function values(variable: tf.Variable): Float32Array<ArrayBufferLike> {
  const backend = tf.backend() as unknown as {
    typedArrayFromHeap?: (t: tf.Tensor) => Float32Array<ArrayBufferLike>;
  };
  if (tf.getBackend() === "wasm" && typeof backend.typedArrayFromHeap === "function") {
    return backend.typedArrayFromHeap(variable);
  }
  return variable.dataSync() as Float32Array;
}

/**
 * A float32 tensor of `shape` holding the engine's floats at `ptr`. The wasm backend copies
 * a new tensor's values into its heap at once, so a view of the engine's memory does and
 * saves a copy; the cpu backend keeps the array it is given, so it gets a copy.
 */
export function engineTensor(engine: KernelEngine, ptr: number, shape: number[]): tf.Tensor {
  const floats = shape.reduce((a, b) => a * b, 1);
  const values = tf.getBackend() === "wasm" ? engine.view(ptr, floats) : engine.read(ptr, floats);
  return tf.tensor(values, shape, "float32");
}

/**
 * Copy the weights that changed since the last call into the engine. Returns the tasks
 * that rebuild their packed forms (run them before the next step: lib/infer/engine/
 * train.ts `runTasks`, shared by the threads).
 */
export function syncWeights(engine: KernelEngine, loaded: LoadedProgram): Task[] {
  const tasks: Task[] = [];
  for (const w of loaded.weights) {
    const id = (w.variable as unknown as { dataId: unknown }).dataId;
    if (w.version === id) continue;
    engine.write(w.raw, values(w.variable));
    tasks.push(...w.derive);
    w.version = id;
  }
  return tasks;
}

/**
 * The drop-path factors of one step for a batch of `n` images: for each drop-path block
 * (forward order), each image's 0 or 1 / keep, drawn exactly as the StochasticDepth layer
 * draws them (`floor(U[0,1) + keep)` from `tf.randomUniform`, which seeds itself from
 * `Math.random`): under the same seeded `Math.random` (lib/train/rng.ts), the stock path's
 * masks. Returns `dropRates.length` rows of `n` floats.
 */
export function dropScales(dropRates: number[], n: number): Float32Array {
  const out = new Float32Array(dropRates.length * n);
  dropRates.forEach((rate, row) => {
    const keep = 1 - rate;
    const mask = tf.tidy(() => tf.floor(tf.add(tf.randomUniform([n, 1, 1, 1], 0, 1), keep)));
    const values = mask.dataSync();
    mask.dispose();
    for (let i = 0; i < n; i++) out[row * n + i] = values[i] / keep;
  });
  return out;
}
