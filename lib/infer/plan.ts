/**
 * Compiles a ConvNeXt `tf.LayersModel` graph into an inference plan: a flat list of steps
 * over numbered slots, where each ConvNeXt block (depthwise conv, LayerNorm, Dense + GELU,
 * Dense, layer scale, drop path, residual add) becomes one fused step.
 *
 * The plan is plain JSON (no tensors), so it can be sent to worker threads; the weights it
 * names are produced by ./fold.ts and the steps are run by ./execute.ts.
 *
 * A model that normalizes its own 0..255 input (an `InputNormalization` layer, from
 * `createConvNeXt(..., { includePreprocessing: true })`) has the normalization folded into
 * the stem convolution's weights ({@link InputNormalizationFold}); the layer itself becomes
 * an identity step.
 *
 * @module
 */
import type * as tf from "npm:@tensorflow/tfjs@4.22.0";

/** Activations the plan executes itself (anything else: the model keeps the stock path). */
export const PLAN_ACTIVATIONS = ["linear", "relu", "gelu", "sigmoid", "softmax"] as const;
/** An activation a plan step may apply. */
export type PlanActivation = (typeof PLAN_ACTIVATIONS)[number];

/**
 * The slots a step reads and writes: indices into the executor's list of intermediate
 * tensors, so that a step's result can be freed once its last reader has run.
 */
export interface StepSlots {
  /** The slot this step reads. */
  input: number;
  /** The slot this step writes. */
  output: number;
}

/** A ConvNeXt block, fused: `out = in + MLP(LN(dwconv(in)))` with folded weights. */
export interface BlockStep {
  /** Step kind. */
  op: "block";
  /** Input slot (also the residual). */
  input: number;
  /** Output slot. */
  output: number;
  /** Weight key prefix: `<prefix>/dw_kernel`, `dw_bias`, `w1`, `b1`, `w2`, `b2`. */
  prefix: string;
  /** Depthwise kernel size (square). */
  kernelSize: number;
  /** LayerNorm epsilon. */
  epsilon: number;
  /**
   * ConvNeXt V2: a Global Response Normalization on the hidden layer (after the GELU), with
   * this epsilon; weights `<prefix>/grn_gamma`, its beta folded into `<prefix>/b2` (see
   * ./fold.ts). It needs the whole hidden map of an image before the second pointwise layer,
   * so such a block runs on whole images (never split into bands of rows or hidden units).
   */
  grn?: { epsilon: number };
}

/**
 * A model's input normalization `(x / 255 - mean) / std` (per channel), folded into the
 * weights of the convolution that reads it (see ./fold.ts): `W' = W / (255 std)`,
 * `b' = b - sum(W mean / std)`. Exact for a "valid" convolution, where every tap reads a real
 * pixel (a padded tap reads 0, which is not the normalized 0), so only those get one.
 */
export interface InputNormalizationFold {
  /** Per-channel mean (pixels scaled to [0, 1]). */
  mean: number[];
  /** Per-channel standard deviation. */
  std: number[];
}

/**
 * A Conv2D, or a depthwise Conv2D outside a fusable block. Weights `<prefix>/kernel`,
 * optional `/bias`.
 */
export interface SpatialStep extends StepSlots {
  /** Step kind: which convolution. */
  op: "conv" | "depthwise";
  /** Weight key prefix. */
  prefix: string;
  /** Strides `[sh, sw]`. */
  strides: [number, number];
  /** Padding. */
  padding: "valid" | "same";
  /** Whether `<prefix>/bias` exists. */
  bias: boolean;
  /** Activation after the bias. */
  activation: PlanActivation;
  /**
   * The model's input normalization, folded into this conv's kernel and bias (which then
   * exists even if the layer has none): the step reads 0..255 pixels.
   */
  inputNormalization?: InputNormalizationFold;
}

/** LayerNorm over the last axis. Weights `<prefix>/gamma`, `<prefix>/beta`. */
export interface LayerNormStep extends StepSlots {
  /** Step kind. */
  op: "layerNorm";
  /** Weight key prefix. */
  prefix: string;
  /** Variance epsilon. */
  epsilon: number;
}

/** Dense on the last axis. Weights `<prefix>/kernel`, optional `/bias`. */
export interface DenseStep extends StepSlots {
  /** Step kind. */
  op: "dense";
  /** Weight key prefix. */
  prefix: string;
  /** Whether `<prefix>/bias` exists. */
  bias: boolean;
  /** Activation after the bias. */
  activation: PlanActivation;
}

/** Per-channel scale (`x * gamma`). Weight `<prefix>/gamma`. */
export interface ScaleStep extends StepSlots {
  /** Step kind. */
  op: "scale";
  /** Weight key prefix. */
  prefix: string;
}

/** Global average or max pooling over the two spatial axes. */
export interface PoolStep extends StepSlots {
  /** Step kind. */
  op: "avgPool" | "maxPool";
}

/** Element-wise sum of several slots. */
export interface AddStep {
  /** Step kind. */
  op: "add";
  /** Input slots. */
  inputs: number[];
  /** Output slot. */
  output: number;
}

/** Identity at inference (stochastic depth, dropout). */
export interface IdentityStep extends StepSlots {
  /** Step kind. */
  op: "identity";
}

/** One step of a {@link Plan}. */
export type PlanStep =
  | BlockStep
  | SpatialStep
  | LayerNormStep
  | DenseStep
  | ScaleStep
  | PoolStep
  | AddStep
  | IdentityStep;

/** Where a folded weight comes from: layers and weight names of the source model. */
export interface PlanSource {
  /** Step weight prefix. */
  prefix: string;
  /** Names of the model layers whose weights are folded into this prefix. */
  layers: string[];
}

/** A compiled inference plan. */
export interface Plan {
  /** Slot that receives the model input. */
  input: number;
  /** Slot holding the model output. */
  output: number;
  /** Number of input channels. */
  inputChannels: number;
  /** Steps, in execution order. */
  steps: PlanStep[];
  /** For each slot, the index of the last step reading it (the slot is freed after it). */
  lastUse: number[];
  /** Source layers of every weight prefix (for folding and change detection). */
  sources: PlanSource[];
}

type Layer = tf.layers.Layer;
type Sym = tf.SymbolicTensor;
type Config = Record<string, unknown>;

/** Options of {@link compilePlan}. */
export interface CompileOptions {
  /**
   * Compile ConvNeXt V2 blocks (GRN, see {@link BlockStep.grn}); default false: GRN is
   * refused by name, for consumers of the plan that have no GRN step.
   */
  grn?: boolean;
}

/** Why a model cannot be compiled; the caller then keeps the stock path. */
export class PlanUnsupported extends Error {}

function unsupported(what: string): never {
  throw new PlanUnsupported(what);
}

function pair(v: unknown, what: string): [number, number] {
  const arr = Array.isArray(v) ? v : [v, v];
  if (arr.length !== 2 || !arr.every((n) => Number.isInteger(n))) {
    unsupported(`${what}: expected an integer or a pair, got ${JSON.stringify(v)}`);
  }
  return arr as [number, number];
}

function activationOf(layer: Layer): PlanActivation {
  const config = layer.getConfig() as Config;
  const name = (config.activation ?? "linear") as string;
  if (!(PLAN_ACTIVATIONS as readonly string[]).includes(name)) {
    unsupported(`${layer.name}: activation ${name}`);
  }
  return name as PlanActivation;
}

function checkSpatial(layer: Layer, config: Config, allowStrides: boolean): void {
  if ((config.dataFormat ?? "channelsLast") !== "channelsLast") {
    unsupported(`${layer.name}: dataFormat ${config.dataFormat}`);
  }
  const dilation = pair(config.dilationRate ?? 1, `${layer.name}.dilationRate`);
  if (dilation[0] !== 1 || dilation[1] !== 1) unsupported(`${layer.name}: dilation`);
  if (!allowStrides) {
    const strides = pair(config.strides ?? 1, `${layer.name}.strides`);
    if (strides[0] !== 1 || strides[1] !== 1) unsupported(`${layer.name}: strides`);
  }
  const padding = config.padding;
  if (padding !== "valid" && padding !== "same") unsupported(`${layer.name}: padding ${padding}`);
}

/** The single inbound node's input and output tensors of a layer. */
function edges(layer: Layer): { inputs: Sym[]; outputs: Sym[] } {
  const nodes =
    (layer as unknown as { inboundNodes: { inputTensors: Sym[]; outputTensors: Sym[] }[] })
      .inboundNodes;
  if (nodes.length !== 1) unsupported(`${layer.name}: used ${nodes.length} times in the graph`);
  return { inputs: nodes[0].inputTensors, outputs: nodes[0].outputTensors };
}

function className(layer: Layer): string {
  return layer.getClassName();
}

/**
 * Compile `model` into a {@link Plan}.
 *
 * @throws PlanUnsupported when the graph contains something the plan cannot run exactly
 *   (an unknown layer class, a shared layer, several inputs or outputs...).
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "../model/convnext.ts";
 * import { compilePlan } from "./plan.ts";
 * await selectBackend("cpu");
 * const plan = compilePlan(createConvNeXt("convnext_tiny"));
 * console.log(plan.steps.filter((s) => s.op === "block").length); // 18
 * ```
 */
export function compilePlan(model: tf.LayersModel, options: CompileOptions = {}): Plan {
  const inputChannels = checkInputOutput(model);
  const builder = new PlanBuilder(model, options.grn === true);
  for (const layer of model.layers) builder.add(layer);
  return builder.finish(inputChannels);
}

/** The model's input channels; one input `[batch, h, w, channels]` and one output only. */
function checkInputOutput(model: tf.LayersModel): number {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    unsupported(`model has ${model.inputs.length} inputs and ${model.outputs.length} outputs`);
  }
  const inputShape = model.inputs[0].shape;
  const inputChannels = inputShape[inputShape.length - 1];
  if (inputShape.length !== 4 || inputChannels == null) {
    unsupported(`input shape ${JSON.stringify(inputShape)} (expected [batch, h, w, channels])`);
  }
  return inputChannels;
}

/** Consumers of every symbolic tensor, to know which intermediates a fusion may hide. */
function consumersOf(model: tf.LayersModel): Map<number, Layer[]> {
  const consumers = new Map<number, Layer[]>();
  for (const layer of model.layers) {
    if (className(layer) === "InputLayer") continue;
    for (const t of edges(layer).inputs) {
      consumers.set(t.id, [...(consumers.get(t.id) ?? []), layer]);
    }
  }
  return consumers;
}

/** A layer being compiled: its class, config and single inbound node. */
interface LayerNode {
  layer: Layer;
  cls: string;
  config: Config;
  inputs: Sym[];
  output: Sym;
}

/**
 * The plan under construction: slots numbered in definition order, steps and weight
 * sources in model layer order, and the layers already folded into a fused block.
 */
class PlanBuilder {
  readonly #steps: PlanStep[] = [];
  readonly #sources: PlanSource[] = [];
  readonly #slots = new Map<number, number>();
  readonly #done = new Set<Layer>();
  /** Convolutions that absorb an input normalization, and which layer it is. */
  readonly #folds = new Map<Layer, InputNormalizationFold & { layer: string }>();
  readonly #only: (t: Sym, cls: string[]) => Layer | null;
  readonly #model: tf.LayersModel;
  readonly #input: number;
  readonly #grn: boolean;
  #nextSlot = 0;

  constructor(model: tf.LayersModel, grn: boolean) {
    this.#model = model;
    this.#grn = grn;
    const consumers = consumersOf(model);
    const outputId = model.outputs[0].id;
    // The single consumer of `t` if it has one of the classes `cls` (never the output).
    this.#only = (t, cls) => {
      const users = consumers.get(t.id) ?? [];
      if (t.id === outputId || users.length !== 1) return null;
      return cls.includes(className(users[0])) ? users[0] : null;
    };
    this.#input = this.#define(model.inputs[0]);
  }

  #slotOf(t: Sym): number {
    const s = this.#slots.get(t.id);
    if (s === undefined) unsupported(`tensor ${t.name} is used before it is computed`);
    return s;
  }

  #define(t: Sym): number {
    const s = this.#nextSlot++;
    this.#slots.set(t.id, s);
    return s;
  }

  /** The slot of a one-input layer's input. */
  #one(node: LayerNode): number {
    if (node.inputs.length !== 1) unsupported(`${node.layer.name}: ${node.inputs.length} inputs`);
    return this.#slotOf(node.inputs[0]);
  }

  /** A step whose weights are the layer's own. */
  #pushOwn(step: PlanStep & { prefix: string }): void {
    this.#steps.push(step);
    this.#sources.push({ prefix: step.prefix, layers: [step.prefix] });
  }

  /** Compiles `layer` (a no-op for the input and for layers fused into a block). */
  add(layer: Layer): void {
    if (this.#done.has(layer)) return;
    this.#done.add(layer);
    const cls = className(layer);
    if (cls === "InputLayer") return;
    const { inputs, outputs } = edges(layer);
    if (outputs.length !== 1) unsupported(`${layer.name}: ${outputs.length} outputs`);
    const node = { layer, cls, config: layer.getConfig() as Config, inputs, output: outputs[0] };
    this.#compile(node);
  }

  #compile(node: LayerNode): void {
    const { layer, cls, config } = node;
    switch (cls) {
      case "DepthwiseConv2D":
        if (this.#block(node)) return;
        if (config.depthMultiplier !== 1) unsupported(`${layer.name}: depthMultiplier`);
        return this.#spatial(node, "depthwise");
      case "Conv2D":
        if ((config.groups ?? 1) !== 1) unsupported(`${layer.name}: groups`);
        return this.#spatial(node, "conv");
      case "ConvNeXtLayerNorm": {
        const x = this.#one(node);
        const output = this.#define(node.output);
        const epsilon = Number(config.epsilon);
        return this.#pushOwn({ op: "layerNorm", input: x, output, prefix: layer.name, epsilon });
      }
      case "Dense": {
        const x = this.#one(node);
        return this.#pushOwn({
          op: "dense",
          input: x,
          output: this.#define(node.output),
          prefix: layer.name,
          bias: config.useBias !== false,
          activation: activationOf(layer),
        });
      }
      case "LayerScale": {
        const x = this.#one(node);
        const output = this.#define(node.output);
        return this.#pushOwn({ op: "scale", input: x, output, prefix: layer.name });
      }
      case "GlobalAveragePooling2D":
      case "GlobalMaxPooling2D":
        return this.#pool(node);
      case "Add": {
        const inputs = node.inputs.map((t) => this.#slotOf(t));
        this.#steps.push({ op: "add", inputs, output: this.#define(node.output) });
        return;
      }
      case "StochasticDepth":
      case "Dropout": {
        const x = this.#one(node);
        this.#steps.push({ op: "identity", input: x, output: this.#define(node.output) });
        return;
      }
      case "InputNormalization":
        return this.#inputNormalization(node);
      case "GlobalResponseNorm":
        // ConvNeXt V2 blocks compile as fused blocks (#block) when GRN is asked for; a GRN
        // left over (outside a block, or not asked for by a consumer without a GRN step) is
        // refused by name so the reason says so.
        return unsupported(
          this.#grn
            ? `${layer.name}: GRN (ConvNeXt V2) outside a fusable block is not in the plan`
            : `${layer.name}: GRN (ConvNeXt V2) is not in this plan (compiled without GRN)`,
        );
      default:
        unsupported(`${layer.name}: layer class ${cls}`);
    }
  }

  /** A whole ConvNeXt block starting at this depthwise conv, if it matches; else false. */
  #block(node: LayerNode): boolean {
    const fused = matchBlock(node.layer, this.#only, this.#grn);
    if (!fused) return false;
    const x = this.#one(node);
    fused.layers.forEach((l) => this.#done.add(l));
    const prefix = fused.add.name;
    this.#steps.push({
      op: "block",
      input: x,
      output: this.#define(edges(fused.add).outputs[0]),
      prefix,
      kernelSize: fused.kernelSize,
      epsilon: fused.epsilon,
      ...(fused.grnEpsilon !== undefined ? { grn: { epsilon: fused.grnEpsilon } } : {}),
    });
    this.#sources.push({ prefix, layers: fused.layers.map((l) => l.name) });
    return true;
  }

  /**
   * A plain (depthwise) convolution step, with the layer's strides, padding, bias, activation,
   * and the input normalization folded into it, if any.
   */
  #spatial(node: LayerNode, op: "conv" | "depthwise"): void {
    const { layer, config } = node;
    checkSpatial(layer, config, true);
    const x = this.#one(node);
    const fold = op === "conv" ? this.#folds.get(layer) : undefined;
    this.#steps.push({
      op,
      input: x,
      output: this.#define(node.output),
      prefix: layer.name,
      strides: pair(config.strides ?? 1, `${layer.name}.strides`),
      padding: config.padding as "valid" | "same",
      bias: fold !== undefined || config.useBias !== false,
      activation: activationOf(layer),
      ...(fold ? { inputNormalization: { mean: fold.mean, std: fold.std } } : {}),
    });
    // The normalization layer is listed as a source: the fold depends on it (no weights).
    const layers = fold ? [fold.layer, layer.name] : [layer.name];
    this.#sources.push({ prefix: layer.name, layers });
  }

  /**
   * An input normalization (`(x / 255 - mean) / std`), folded into the single "valid"
   * Conv2D that reads it (./fold.ts); anything else reads normalized values the plan has no
   * step for, and is refused (the model keeps the stock path).
   *
   * The layer stays in the plan as an identity step (a copy of the pixels, small next to any
   * block) rather than an alias of the input slot: a consumer that runs conv steps with the
   * layer's own, unfolded weights (the training kernels) then meets a step it refuses, never
   * a stem that silently skips the normalization.
   */
  #inputNormalization(node: LayerNode): void {
    const { layer, config } = node;
    const mean = config.mean, std = config.std;
    const numbers = (v: unknown): v is number[] =>
      Array.isArray(v) && v.every((n) => typeof n === "number" && Number.isFinite(n));
    if (!numbers(mean) || !numbers(std) || mean.length !== std.length) {
      unsupported(`${layer.name}: mean ${JSON.stringify(mean)} and std ${JSON.stringify(std)}`);
    }
    const conv = this.#only(node.output, ["Conv2D"]);
    const c = conv?.getConfig() as Config | undefined;
    if (!conv || c?.padding !== "valid" || (c?.groups ?? 1) !== 1) {
      unsupported(
        `${layer.name}: the input normalization folds only into a single "valid" Conv2D reading it alone${
          conv ? `, ${conv.name} has padding ${c?.padding}` : ""
        }`,
      );
    }
    this.#folds.set(conv, { mean: [...mean], std: [...std], layer: layer.name });
    const x = this.#one(node);
    this.#steps.push({ op: "identity", input: x, output: this.#define(node.output) });
  }

  /** A global average or max pooling step (channels last, no kept dimensions). */
  #pool(node: LayerNode): void {
    const { layer, config } = node;
    if ((config.dataFormat ?? "channelsLast") !== "channelsLast") {
      unsupported(`${layer.name}: dataFormat`);
    }
    if (config.keepDims) unsupported(`${layer.name}: keepDims`);
    const x = this.#one(node);
    this.#steps.push({
      op: node.cls === "GlobalAveragePooling2D" ? "avgPool" : "maxPool",
      input: x,
      output: this.#define(node.output),
    });
  }

  /** The plan, with each slot's last reader (the output slot is never freed). */
  finish(inputChannels: number): Plan {
    const output = this.#slotOf(this.#model.outputs[0]);
    const steps = this.#steps;
    const lastUse = new Array<number>(this.#nextSlot).fill(-1);
    steps.forEach((step, i) => {
      const reads = step.op === "add" ? step.inputs : [step.input];
      for (const s of reads) lastUse[s] = i;
    });
    lastUse[output] = steps.length; // never freed by the executor
    return { input: this.#input, output, inputChannels, steps, lastUse, sources: this.#sources };
  }
}

interface BlockMatch {
  layers: Layer[];
  add: Layer;
  kernelSize: number;
  epsilon: number;
  /** The GRN's epsilon (a V2 block), else undefined. */
  grnEpsilon?: number;
}

/**
 * Match `dwconv -> LayerNorm -> Dense(gelu) -> [GRN] -> Dense -> [LayerScale] ->
 * [StochasticDepth] -> Add(input, branch)` starting at a depthwise layer, where every
 * intermediate has a single consumer (so fusing hides nothing a model output needs). GRN
 * only when `grn` (else such a block does not match). The block's layers are listed with
 * `[dw, norm, fc1, fc2]` first (./fold.ts reads them so), the GRN last.
 */
function matchBlock(
  dw: Layer,
  only: (t: Sym, cls: string[]) => Layer | null,
  grn: boolean,
): BlockMatch | null {
  const dwConfig = dw.getConfig() as Config;
  const kernel = pair(dwConfig.kernelSize, `${dw.name}.kernelSize`);
  const strides = pair(dwConfig.strides ?? 1, `${dw.name}.strides`);
  const dilation = pair(dwConfig.dilationRate ?? 1, `${dw.name}.dilationRate`);
  if (
    kernel[0] !== kernel[1] || kernel[0] % 2 !== 1 || strides[0] !== 1 || strides[1] !== 1 ||
    dilation[0] !== 1 || dilation[1] !== 1 || dwConfig.padding !== "same" ||
    dwConfig.depthMultiplier !== 1 || dwConfig.useBias === false ||
    (dwConfig.activation ?? "linear") !== "linear" ||
    (dwConfig.dataFormat ?? "channelsLast") !== "channelsLast"
  ) return null;
  const out = (l: Layer) => edges(l).outputs[0];
  const norm = only(out(dw), ["ConvNeXtLayerNorm"]);
  if (!norm) return null;
  const fc1 = only(out(norm), ["Dense"]);
  if (!fc1) return null;
  const c1 = fc1.getConfig() as Config;
  if (c1.activation !== "gelu" || c1.useBias === false) return null;
  const afterFc1 = only(out(fc1), grn ? ["Dense", "GlobalResponseNorm"] : ["Dense"]);
  const grnLayer = afterFc1 && className(afterFc1) === "GlobalResponseNorm" ? afterFc1 : null;
  let grnEpsilon: number | undefined;
  if (grnLayer) {
    grnEpsilon = Number((grnLayer.getConfig() as Config).epsilon ?? 1e-6);
    if (!Number.isFinite(grnEpsilon)) return null;
  }
  const fc2 = grnLayer ? only(out(grnLayer), ["Dense"]) : afterFc1;
  if (!fc2) return null;
  const c2 = fc2.getConfig() as Config;
  if ((c2.activation ?? "linear") !== "linear" || c2.useBias === false) return null;
  const layers = [dw, norm, fc1, fc2];
  let tail = fc2;
  let next = only(out(tail), ["LayerScale", "StochasticDepth", "Add"]);
  if (next && className(next) === "LayerScale") {
    layers.push(next);
    tail = next;
    next = only(out(tail), ["StochasticDepth", "Add"]);
  }
  if (next && className(next) === "StochasticDepth") {
    layers.push(next);
    tail = next;
    next = only(out(tail), ["Add"]);
  }
  if (!next || className(next) !== "Add") return null;
  const addInputs = edges(next).inputs;
  const residual = edges(dw).inputs[0];
  if (
    addInputs.length !== 2 || !addInputs.some((t) => t.id === residual.id) ||
    !addInputs.some((t) => t.id === out(tail).id)
  ) return null;
  layers.push(next);
  if (grnLayer) layers.push(grnLayer);
  return {
    layers,
    add: next,
    kernelSize: kernel[0],
    epsilon: Number((norm.getConfig() as Config).epsilon),
    ...(grnEpsilon !== undefined ? { grnEpsilon } : {}),
  };
}
