/**
 * The ConvNeXt family as TF.js Layers models, faithful to the official PyTorch code
 * (facebookresearch/ConvNeXt `models/convnext.py` and `models/convnext_isotropic.py`;
 * facebookresearch/ConvNeXt-V2 `models/convnextv2.py` for the V2 block, which adds GRN after
 * the GELU and has no layer scale).
 *
 * Layer names are deterministic so that weights map by name, never by position; `./names.ts`
 * owns them:
 *
 * - hierarchical: `stem_conv`, `stem_norm`; `stages_{i}_downsample_norm`,
 *   `stages_{i}_downsample_conv` (i = 1..3); per block `stages_{i}_block_{j}_dwconv`,
 *   `_norm`, `_pwconv1` (Dense + exact GELU), `_grn` (V2 only), `_pwconv2`, `_layer_scale`,
 *   `_drop_path`, and `stages_{i}_block_{j}` (the residual add: the block's output);
 * - isotropic: `stem_conv` (16x16/16, no norm), blocks `blocks_{j}_*` and `blocks_{j}`;
 * - head: `head_pool`, `head_norm`, `head_fc`;
 * - with `includePreprocessing: true`: `preprocessing` (an `InputNormalization`) between the
 *   input and the stem.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { IMAGENET_MEAN, IMAGENET_STD } from "../data/transform.ts";
import { OptionError } from "../util/errors.ts";
import {
  GlobalResponseNorm,
  InputNormalization,
  LayerNorm,
  LayerScale,
  StochasticDepth,
  TruncatedNormal,
} from "./layers.ts";
import { ConvNeXtModel } from "../infer/model.ts";
import { architectureOf, CUSTOM_ARCHITECTURE } from "./architecture.ts";
import {
  blockName,
  downsampleName,
  HEAD_FC,
  HEAD_NORM,
  HEAD_POOL,
  INPUT_NAME,
  PREPROCESSING,
  STEM_CONV,
  STEM_NORM,
} from "./names.ts";
import type { ArchitectureName, ArchitectureSpec } from "./variants.ts";

/** Activations accepted for the classifier output. */
export const CLASSIFIER_ACTIVATIONS = ["linear", "softmax", "sigmoid"] as const;

/** Options of {@link createConvNeXt}, named as Keras applications users expect. */
export interface ConvNeXtOptions {
  /** Input shape `[height, width, channels]`; `null` sizes accept any image size. Default `[null, null, 3]`. */
  inputShape?: [number | null, number | null, number];
  /** Include the classification head (pool, norm, dense). Default true. */
  includeTop?: boolean;
  /**
   * With `includeTop: false`: `"avg"` gives the official embedding (global average pool then
   * `head_norm`, as `forward_features`), `"max"` a global max pool, none the last feature map.
   */
  pooling?: "avg" | "max" | null;
  /** Classes of the head. Default 1000 (21841 for the 22k checkpoints). */
  numClasses?: number;
  /** Activation of the head; default none (`"linear"`): logits, like the official code. */
  classifierActivation?: (typeof CLASSIFIER_ACTIVATIONS)[number] | null;
  /** Stochastic depth rate, linear from 0 over all blocks to this value. Default 0. */
  dropPathRate?: number;
  /**
   * Initial layer-scale value; 0 disables layer scale. Default: the architecture's (1e-6;
   * 0 for iso small/base and every ConvNeXt V2).
   */
  layerScaleInit?: number;
  /** Factor on the head's initial weights and biases. Default 1. */
  headInitScale?: number;
  /**
   * Random initialization as the official code (truncated normal std 0.02). Pass false when
   * weights are loaded right after: every kernel then starts at zero, which is much faster
   * for the large models. Default true.
   */
  randomInit?: boolean;
  /** Seed for the random initialization, for reproducible models. */
  seed?: number;
  /** Model name. Default: the architecture name. */
  name?: string;
  /**
   * Take RGB pixels in 0..255, as Keras applications' `include_preprocessing`: the model
   * starts with a `preprocessing` layer that computes `(x / 255 - mean) / std` with
   * ImageNet's mean and std, so `predict` takes resized and cropped pixels as they are.
   * `modelConfig(model).preprocessing.inModel` is then true, and `classify`, `embed` and
   * `evaluate` feed it pixels instead of normalizing twice. Needs 3 input channels.
   * Default false: the model takes normalized input, as the official code.
   */
  includePreprocessing?: boolean;
}

/** A resolved architecture: its name (when official) and its spec. */
export interface ResolvedArchitecture {
  /** Official name, or `"convnext_custom"` for a spec object. */
  name: string;
  /** The architecture's shape. */
  spec: ArchitectureSpec;
}

/** The architecture and the default model name: the official name, `"convnext_custom"` for specs. */
function resolve(architecture: ArchitectureName | ArchitectureSpec | string): ResolvedArchitecture {
  const { name, spec } = architectureOf(architecture, "createConvNeXt");
  return { name: typeof architecture === "string" ? name : CUSTOM_ARCHITECTURE, spec };
}

interface Resolved {
  inputShape: [number | null, number | null, number];
  includeTop: boolean;
  pooling: "avg" | "max" | null;
  numClasses: number;
  classifierActivation: (typeof CLASSIFIER_ACTIVATIONS)[number];
  dropPathRate: number;
  layerScaleInit: number;
  /** GRN in every block (the architecture's: ConvNeXt V2). */
  grn: boolean;
  headInitScale: number;
  randomInit: boolean;
  seed?: number;
  name: string;
  includePreprocessing: boolean;
}

function validateOptions(arch: ResolvedArchitecture, options: ConvNeXtOptions): Resolved {
  const fail = (what: string) => {
    throw new Error(`createConvNeXt(${arch.name}): ${what}`);
  };
  const inputShape = options.inputShape ?? [null, null, 3];
  // Smallest input that survives all strides: 32 (4 * 2 * 2 * 2) or 16 (isotropic patchify).
  const minSize = arch.spec.kind === "hierarchical" ? 32 : 16;
  if (
    !Array.isArray(inputShape) || inputShape.length !== 3 ||
    !inputShape.slice(0, 2).every((s) => s === null || (Number.isInteger(s) && s >= minSize)) ||
    !(Number.isInteger(inputShape[2]) && inputShape[2] > 0)
  ) {
    fail(
      `inputShape must be [height, width, channels] with sizes null or integers >= ${minSize}, got ${
        JSON.stringify(inputShape)
      }`,
    );
  }
  const includeTop = options.includeTop ?? true;
  if (typeof includeTop !== "boolean") fail(`includeTop must be a boolean, got ${includeTop}`);
  const pooling = options.pooling ?? null;
  if (pooling !== null && pooling !== "avg" && pooling !== "max") {
    fail(`pooling must be "avg", "max" or null, got ${JSON.stringify(pooling)}`);
  }
  if (includeTop && pooling !== null) {
    fail(`pooling applies only with includeTop: false (the head pools already)`);
  }
  const numClasses = options.numClasses ?? 1000;
  if (!(Number.isInteger(numClasses) && numClasses > 0)) {
    fail(`numClasses must be a positive integer, got ${numClasses}`);
  }
  const classifierActivation = options.classifierActivation ?? "linear";
  if (!CLASSIFIER_ACTIVATIONS.includes(classifierActivation)) {
    fail(
      `classifierActivation must be one of ${
        CLASSIFIER_ACTIVATIONS.join(", ")
      } or null, got ${classifierActivation}`,
    );
  }
  const dropPathRate = options.dropPathRate ?? 0;
  if (!(dropPathRate >= 0 && dropPathRate < 1)) {
    fail(`dropPathRate must be in [0, 1), got ${dropPathRate}`);
  }
  const layerScaleInit = options.layerScaleInit ?? arch.spec.layerScaleInit;
  if (!(Number.isFinite(layerScaleInit) && layerScaleInit >= 0)) {
    fail(`layerScaleInit must be a number >= 0 (0 disables layer scale), got ${layerScaleInit}`);
  }
  const headInitScale = options.headInitScale ?? 1;
  if (!(Number.isFinite(headInitScale) && headInitScale > 0)) {
    fail(`headInitScale must be a positive number, got ${headInitScale}`);
  }
  const randomInit = options.randomInit ?? true;
  const includePreprocessing = checkIncludePreprocessing(arch, options, inputShape[2]);
  if (options.seed !== undefined && !Number.isInteger(options.seed)) {
    fail(`seed must be an integer, got ${options.seed}`);
  }
  return {
    inputShape,
    includeTop,
    pooling,
    numClasses,
    classifierActivation,
    dropPathRate,
    layerScaleInit,
    grn: arch.spec.grn === true,
    headInitScale,
    randomInit,
    seed: options.seed,
    name: options.name ?? arch.name,
    includePreprocessing,
  };
}

/** `options.includePreprocessing`, checked: a boolean, and RGB input when true. */
function checkIncludePreprocessing(
  arch: ResolvedArchitecture,
  options: ConvNeXtOptions,
  channels: number,
): boolean {
  const value = options.includePreprocessing ?? false;
  if (typeof value !== "boolean") {
    throw new OptionError(
      "includePreprocessing",
      `createConvNeXt(${arch.name}): includePreprocessing must be a boolean, got ${
        JSON.stringify(value) ?? String(value)
      }`,
    );
  }
  if (value && channels !== IMAGENET_MEAN.length) {
    throw new OptionError(
      "includePreprocessing",
      `createConvNeXt(${arch.name}): includePreprocessing normalizes RGB pixels and needs 3 input channels, got ${channels}`,
    );
  }
  return value;
}

type Sym = tf.SymbolicTensor;
const apply = (layer: tf.layers.Layer, x: Sym | Sym[]) => layer.apply(x) as Sym;

/** Builds kernels' initializers: timm's trunc_normal_(std=.02), optionally scaled. */
function kernelInits(opts: Resolved) {
  let counter = 0;
  return (scale = 1) => {
    if (!opts.randomInit) return tf.initializers.zeros();
    const seed = opts.seed === undefined ? undefined : opts.seed + counter++;
    return new TruncatedNormal({
      stddev: 0.02 * scale,
      minval: -2 * scale,
      maxval: 2 * scale,
      seed,
    }) as unknown as ReturnType<typeof tf.initializers.zeros>;
  };
}

function block(
  x: Sym,
  stage: number | undefined,
  index: number,
  dim: number,
  dropRate: number,
  opts: Resolved,
  init: ReturnType<typeof kernelInits>,
): Sym {
  let y = apply(
    tf.layers.depthwiseConv2d({
      kernelSize: 7,
      padding: "same",
      useBias: true,
      depthwiseInitializer: init(),
      name: blockName(stage, index, "dwconv"),
    }),
    x,
  );
  y = apply(new LayerNorm({ epsilon: 1e-6, name: blockName(stage, index, "norm") }), y);
  // Dense on a 4-D tensor acts on the channel axis: the official pointwise nn.Linear.
  y = apply(
    tf.layers.dense({
      units: 4 * dim,
      activation: "gelu", // exact erf GELU, as nn.GELU() (not gelu_new's tanh approximation)
      kernelInitializer: init(),
      name: blockName(stage, index, "pwconv1"),
    }),
    y,
  );
  if (opts.grn) {
    // ConvNeXt V2: GRN on the 4x hidden layer, between the GELU and the second Linear.
    y = apply(new GlobalResponseNorm({ name: blockName(stage, index, "grn") }), y);
  }
  y = apply(
    tf.layers.dense({
      units: dim,
      kernelInitializer: init(),
      name: blockName(stage, index, "pwconv2"),
    }),
    y,
  );
  if (opts.layerScaleInit > 0) {
    y = apply(
      new LayerScale({
        initValue: opts.layerScaleInit,
        name: blockName(stage, index, "layer_scale"),
      }),
      y,
    );
  }
  if (dropRate > 0) {
    y = apply(
      new StochasticDepth({ rate: dropRate, name: blockName(stage, index, "drop_path") }),
      y,
    );
  }
  return apply(tf.layers.add({ name: blockName(stage, index) }), [x, y]);
}

function dropRates(total: number, rate: number): number[] {
  // torch.linspace(0, rate, total)
  return Array.from({ length: total }, (_, i) => total === 1 ? 0 : (rate * i) / (total - 1));
}

/**
 * The stem: with `includePreprocessing` the input normalization, then the patchify conv
 * (4x4 stride 4 hierarchical, 16x16 stride 16 isotropic; "valid", so every tap reads a real
 * pixel, which is what lets the optimized plan fold the normalization into it) and, in
 * hierarchical models, its LayerNorm.
 */
function stem(
  input: Sym,
  spec: ArchitectureSpec,
  opts: Resolved,
  init: ReturnType<typeof kernelInits>,
): Sym {
  const x = opts.includePreprocessing
    ? apply(
      new InputNormalization({ mean: IMAGENET_MEAN, std: IMAGENET_STD, name: PREPROCESSING }),
      input,
    )
    : input;
  const hierarchical = spec.kind === "hierarchical";
  const patch = hierarchical ? 4 : 16;
  const conv = apply(
    tf.layers.conv2d({
      filters: hierarchical ? spec.dims[0] : spec.dim,
      kernelSize: patch,
      strides: patch,
      padding: "valid",
      kernelInitializer: init(),
      name: STEM_CONV,
    }),
    x,
  );
  return hierarchical ? apply(new LayerNorm({ epsilon: 1e-6, name: STEM_NORM }), conv) : conv;
}

/**
 * Throws a clear error when no TF.js backend is ready. TF.js picks the highest-priority
 * registered backend on first use; the kit registers wasm, whose initialization is
 * asynchronous, so a model built before `await selectBackend()` would otherwise fail with
 * TF.js's "has not yet been initialized" from deep inside the first layer.
 */
function requireBackend(caller: string): void {
  if (tf.engine().backendName) return;
  try {
    tf.backend(); // initializes a synchronous backend (e.g. cpu alone) if that is what's there
  } catch (e) {
    throw new Error(
      `${caller}: no TF.js backend is ready yet; call \`await selectBackend()\` first (${
        (e as Error).message.split(".")[0]
      })`,
    );
  }
}

/**
 * Build a ConvNeXt as a `tf.LayersModel`: `summary()`, `fit()`, save/load and any layer's
 * output (`model.getLayer("stages_2_block_5")`) work as for any Layers model.
 *
 * @param architecture an official name (`"convnext_tiny"`, ... `"convnext_iso_large"`,
 *   `"convnext_atto"` .. `"convnext_nano"`, `"convnextv2_atto"` .. `"convnextv2_huge"`) or an
 *   {@link ArchitectureSpec} for custom sizes (`grn: true` for V2 blocks).
 * @param options Keras-applications-style options; see {@link ConvNeXtOptions}.
 * @throws Error with a one-line message for any invalid argument, before building anything.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { createConvNeXt } from "./convnext.ts";
 * await selectBackend("cpu");
 * // An official size: randomInit false skips the random initialization (weights to be loaded).
 * const model = createConvNeXt("convnext_tiny", { randomInit: false });
 * console.log(model.countParams()); // 28589128
 * const backbone = createConvNeXt("convnext_small", {
 *   includeTop: false,
 *   pooling: "avg",
 *   randomInit: false,
 * });
 * console.log(backbone.outputs[0].shape); // [null, 768]: the pooled embedding
 * // ConvNeXt V2 takes the same options (GRN in every block, no layer scale).
 * const v2 = createConvNeXt("convnextv2_atto", { numClasses: 10, dropPathRate: 0.1 });
 * console.log(v2.getLayer("stages_0_block_0_grn").getClassName()); // "GlobalResponseNorm"
 * // Keras' include_preprocessing: predict takes 0..255 RGB pixels and normalizes them itself.
 * const rgb = createConvNeXt("convnext_atto", { includePreprocessing: true, inputShape: [32, 32, 3] });
 * console.log(rgb.getLayer("preprocessing").getClassName()); // "InputNormalization"
 * // A custom size, randomly initialized: small enough to train in a test.
 * const small = createConvNeXt({
 *   kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 8, 16, 16], layerScaleInit: 1e-6,
 * }, { numClasses: 3 });
 * small.summary();
 * ```
 */
export function createConvNeXt(
  architecture: ArchitectureName | ArchitectureSpec | string,
  options: ConvNeXtOptions = {},
): tf.LayersModel {
  const arch = resolve(architecture);
  const opts = validateOptions(arch, options);
  requireBackend("createConvNeXt");
  const init = kernelInits(opts);
  const spec = arch.spec;
  const input = tf.input({ shape: opts.inputShape, name: INPUT_NAME });

  let x = stem(input, spec, opts, init);
  if (spec.kind === "hierarchical") {
    const total = spec.depths.reduce((a, b) => a + b, 0);
    const rates = dropRates(total, opts.dropPathRate);
    let k = 0;
    for (let i = 0; i < 4; i++) {
      if (i > 0) {
        x = apply(new LayerNorm({ epsilon: 1e-6, name: downsampleName(i, "norm") }), x);
        x = apply(
          tf.layers.conv2d({
            filters: spec.dims[i],
            kernelSize: 2,
            strides: 2,
            padding: "valid",
            kernelInitializer: init(),
            name: downsampleName(i, "conv"),
          }),
          x,
        );
      }
      for (let j = 0; j < spec.depths[i]; j++) {
        x = block(x, i, j, spec.dims[i], rates[k++], opts, init);
      }
    }
  } else {
    const rates = dropRates(spec.depth, opts.dropPathRate);
    for (let j = 0; j < spec.depth; j++) {
      x = block(x, undefined, j, spec.dim, rates[j], opts, init);
    }
  }

  if (opts.includeTop || opts.pooling === "avg") {
    x = apply(tf.layers.globalAveragePooling2d({ name: HEAD_POOL }), x);
    x = apply(new LayerNorm({ epsilon: 1e-6, name: HEAD_NORM }), x);
  } else if (opts.pooling === "max") {
    x = apply(tf.layers.globalMaxPooling2d({ name: HEAD_POOL }), x);
  }
  if (opts.includeTop) {
    x = apply(
      tf.layers.dense({
        units: opts.numClasses,
        activation: opts.classifierActivation,
        kernelInitializer: init(opts.headInitScale),
        name: HEAD_FC,
      }),
      x,
    );
  }
  // A LayersModel whose predict takes the optimized path on wasm/cpu (see ../infer/model.ts).
  return new ConvNeXtModel({ inputs: input, outputs: x, name: opts.name });
}
