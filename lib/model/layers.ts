/**
 * Custom TF.js layers and initializers that ConvNeXt needs and TF.js lacks (or
 * implements in a way that costs too much): a channels-last LayerNorm without
 * `tf.tile`, per-channel layer scale, ConvNeXt V2's Global Response Normalization,
 * stochastic depth, the input normalization of models that take 0..255 pixels, and timm's
 * truncated normal initializer.
 *
 * Every class is registered with `tf.serialization.registerClass`, so a saved
 * model lists them in `summary()` and loads back once this module is imported.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { webGpuLayerNorm } from "../backend/webgpu_kernels.ts";

/** Options every TF.js layer takes (name, trainable, ...). */
export type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;
/** Keyword arguments of a layer call (e.g. `training`). */
export type Kwargs = Record<string, unknown>;

function single(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
  return Array.isArray(inputs) ? inputs[0] : inputs;
}

/** Options of {@link LayerNorm}. */
export interface LayerNormArgs extends LayerArgs {
  /** Added to the variance; the official ConvNeXt uses 1e-6 everywhere (TF.js defaults to 1e-3). */
  epsilon?: number;
}

/**
 * Layer normalization over the last (channel) axis, as PyTorch's `nn.LayerNorm(C)`
 * on channels-last tensors: biased variance, `(x - mean) / sqrt(var + eps) * gamma + beta`.
 *
 * Why not `tf.layers.layerNormalization`: it tiles mean, variance, gamma and beta to
 * the input's shape, and the gradient of those tiles ran about 18,000 Slice and Add
 * kernels per step on a small ConvNeXt. Broadcasting does the same job for free.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { LayerNorm } from "./layers.ts";
 * await selectBackend("cpu");
 * const x = tf.tensor4d([1, 2, 3, 4], [1, 1, 1, 4]);
 * const y = new LayerNorm({ epsilon: 1e-6 }).apply(x) as tf.Tensor;
 * console.log(y.dataSync()); // about [-1.342, -0.447, 0.447, 1.342]: zero mean, unit variance
 * if (Math.abs(y.sum().dataSync()[0]) > 1e-5) throw new Error("not centered");
 * ```
 */
export class LayerNorm extends tf.layers.Layer {
  /** Serialization name. */
  static className = "ConvNeXtLayerNorm";
  /** Variance epsilon. */
  readonly epsilon: number;
  private gamma?: tf.LayerVariable;
  private beta?: tf.LayerVariable;

  /**
   * A LayerNorm over the last axis (channels last), as ConvNeXt's `LayerNorm`.
   *
   * @param args layer options; `epsilon` defaults to 1e-6.
   */
  constructor(args: LayerNormArgs = {}) {
    super(args);
    this.epsilon = args.epsilon ?? 1e-6;
    this.supportsMasking = true;
  }

  /** Creates the per-channel weights for the input's last dimension. */
  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const channels = shape[shape.length - 1];
    if (channels == null) {
      throw new Error(`${this.name}: the channel (last) dimension must be known, got ${shape}`);
    }
    this.gamma = this.addWeight("gamma", [channels], "float32", tf.initializers.ones());
    this.beta = this.addWeight("beta", [channels], "float32", tf.initializers.zeros());
    this.built = true;
  }

  /** Same shape as the input. */
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  /** Applies the layer to a tensor. */
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const x = single(inputs);
      if (tf.getBackend() === "webgpu") {
        // One dispatch (and about five backward) instead of nine TF.js ops (and ~20).
        return webGpuLayerNorm(x, this.gamma!.read(), this.beta!.read(), this.epsilon);
      }
      const { mean, variance } = tf.moments(x, -1, true);
      const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.epsilon)));
      return tf.add(tf.mul(normed, this.gamma!.read()), this.beta!.read());
    });
  }

  /** Serializable configuration (for save/load). */
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), epsilon: this.epsilon };
  }
}

/** Options of {@link LayerScale}. */
export interface LayerScaleArgs extends LayerArgs {
  /** Initial value of every channel's scale (official default 1e-6). */
  initValue: number;
}

/**
 * Per-channel learnable scale (`x * gamma`), the official blocks' `gamma` parameter.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { LayerScale } from "./layers.ts";
 * await selectBackend("cpu");
 * const scale = new LayerScale({ initValue: 1e-6, name: "stages_0_block_0_layer_scale" });
 * const y = scale.apply(tf.ones([1, 2, 2, 4])) as tf.Tensor;
 * console.log(scale.getWeights()[0].shape, y.max().dataSync()[0]); // [4] ~1e-6: gamma per channel
 * ```
 */
export class LayerScale extends tf.layers.Layer {
  /** Serialization name. */
  static className = "LayerScale";
  /** Initial value of gamma. */
  readonly initValue: number;
  private gamma?: tf.LayerVariable;

  /**
   * A learnable per-channel scale (ConvNeXt's `gamma`), starting at `args.initValue`.
   *
   * @param args layer options with the initial scale.
   */
  constructor(args: LayerScaleArgs) {
    super(args);
    this.initValue = args.initValue;
  }

  /** Creates the per-channel weights for the input's last dimension. */
  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const channels = shape[shape.length - 1];
    if (channels == null) {
      throw new Error(`${this.name}: the channel (last) dimension must be known, got ${shape}`);
    }
    this.gamma = this.addWeight(
      "gamma",
      [channels],
      "float32",
      tf.initializers.constant({ value: this.initValue }),
    );
    this.built = true;
  }

  /** Same shape as the input. */
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  /** Applies the layer to a tensor. */
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => tf.mul(single(inputs), this.gamma!.read()));
  }

  /** Serializable configuration (for save/load). */
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), initValue: this.initValue };
  }
}

/** Options of {@link GlobalResponseNorm}. */
export interface GlobalResponseNormArgs extends LayerArgs {
  /** Added to the channel mean of the norms; the official GRN uses 1e-6. */
  epsilon?: number;
}

/**
 * The L2 norm over the two spatial axes (`[N, H, W, C]` -> `[N, 1, 1, C]`) with PyTorch's
 * gradient at zero: `torch.norm`'s backward is 0 for an all-zero map, while the chain rule
 * through `sqrt` gives 0 * inf = NaN. An all-zero channel is no corner case here: TF.js's
 * GELU is exactly 0 below about -5.5 in float32, so a dead channel would poison every
 * weight of a training step.
 */
const spatialL2Norm = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  const save = args[1] as tf.GradSaveFunc;
  const norm = tf.sqrt(tf.sum(tf.square(x), [1, 2], true));
  save([x, norm]);
  return {
    value: norm,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, tf.divNoNan(saved[0], saved[1])),
  };
}) as (x: tf.Tensor) => tf.Tensor;

/**
 * Global Response Normalization (ConvNeXt V2, facebookresearch/ConvNeXt-V2
 * `models/utils.py` `GRN`), channels last: `Gx = ||x||_2` over (H, W) per image and
 * channel, `Nx = Gx / (mean over channels of Gx + 1e-6)`, `y = gamma * (x * Nx) + beta + x`
 * with per-channel `gamma` and `beta` that start at zero (so a new GRN is the identity).
 *
 * The statistics are per image over the whole map, so any input size works; only
 * broadcasting element-wise ops and reductions are used (no `tf.tile`), which every backend
 * (webgpu included) runs.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { GlobalResponseNorm } from "./layers.ts";
 * await selectBackend("cpu");
 * const grn = new GlobalResponseNorm({ name: "stages_0_block_0_grn" });
 * const x = tf.tensor4d([3, 4, 0, 0, 1, 2, 2, 1], [1, 2, 2, 2]);
 * console.log(tf.equal(grn.apply(x) as tf.Tensor, x).all().dataSync()[0]); // 1: zero init
 * grn.setWeights([tf.ones([2]), tf.zeros([2])]);
 * // ||x|| over the map: sqrt(14) for channel 0, sqrt(21) for channel 1, mean 4.162;
 * // with gamma 1 and beta 0, y = x * (1 + ||x|| / mean).
 * const y = (grn.apply(x) as tf.Tensor).dataSync();
 * console.log(y); // about [5.697, 8.404, 0, 0, 1.899, 4.202, 3.798, 2.101]
 * if (Math.abs(y[0] - 5.6969) > 1e-3 || Math.abs(y[1] - 8.4041) > 1e-3) throw new Error(`${y}`);
 * ```
 */
export class GlobalResponseNorm extends tf.layers.Layer {
  /** Serialization name. */
  static className = "GlobalResponseNorm";
  /** Added to the channel mean of the spatial norms. */
  readonly epsilon: number;
  private gamma?: tf.LayerVariable;
  private beta?: tf.LayerVariable;

  /**
   * A GRN over channels-last `[N, H, W, C]` tensors, gamma and beta zero at init.
   *
   * @param args layer options; `epsilon` defaults to 1e-6 (the official value).
   */
  constructor(args: GlobalResponseNormArgs = {}) {
    super(args);
    this.epsilon = args.epsilon ?? 1e-6;
  }

  /** Creates the per-channel weights for the input's last dimension. */
  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const channels = shape[shape.length - 1];
    if (shape.length !== 4 || channels == null) {
      throw new Error(
        `${this.name}: GRN needs [batch, height, width, channels] with known channels, got ${shape}`,
      );
    }
    this.gamma = this.addWeight("gamma", [channels], "float32", tf.initializers.zeros());
    this.beta = this.addWeight("beta", [channels], "float32", tf.initializers.zeros());
    this.built = true;
  }

  /** Same shape as the input. */
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  /** Applies the layer to a tensor. */
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const x = single(inputs);
      const gx = spatialL2Norm(x);
      const nx = tf.div(gx, tf.add(tf.mean(gx, -1, true), this.epsilon));
      const scaled = tf.mul(tf.mul(x, nx), this.gamma!.read());
      return tf.add(tf.add(scaled, this.beta!.read()), x);
    });
  }

  /** Serializable configuration (for save/load). */
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), epsilon: this.epsilon };
  }
}

/** Options of {@link StochasticDepth}. */
export interface StochasticDepthArgs extends LayerArgs {
  /** Probability of dropping the whole residual branch of a sample during training. */
  rate: number;
}

/**
 * Stochastic depth ("drop path", timm's `DropPath`): in training, zeroes the residual
 * branch of each sample with probability `rate` and scales survivors by `1 / (1 - rate)`;
 * identity at inference.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { StochasticDepth } from "./layers.ts";
 * await selectBackend("cpu");
 * const dropPath = new StochasticDepth({ rate: 0.5 });
 * const x = tf.ones([8, 2, 2, 3]);
 * const inference = dropPath.apply(x) as tf.Tensor; // identity
 * const training = dropPath.apply(x, { training: true }) as tf.Tensor; // each sample 0 or 2
 * console.log(inference.sum().dataSync()[0], training.mean([1, 2, 3]).dataSync());
 * if (inference.sum().dataSync()[0] !== 96) throw new Error("not the identity at inference");
 * ```
 */
export class StochasticDepth extends tf.layers.Layer {
  /** Serialization name. */
  static className = "StochasticDepth";
  /** Drop probability. */
  readonly rate: number;

  /**
   * Drop path: in training, zeroes a whole residual branch per sample with probability
   * `args.rate` (and rescales the kept ones); the identity at inference.
   *
   * @param args layer options with the drop rate, in [0, 1).
   */
  constructor(args: StochasticDepthArgs) {
    super(args);
    if (!(args.rate >= 0 && args.rate < 1)) {
      throw new Error(`StochasticDepth: rate must be in [0, 1), got ${args.rate}`);
    }
    this.rate = args.rate;
  }

  /** Same shape as the input. */
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  /** Applies the layer; drops samples only when `kwargs.training` is set. */
  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    const x = single(inputs);
    if (!kwargs["training"] || this.rate === 0) return tf.clone(x);
    return tf.tidy(() => {
      const keep = 1 - this.rate;
      const maskShape = [x.shape[0], ...x.shape.slice(1).map(() => 1)];
      // floor(keep + U[0,1)) is 1 with probability `keep`, as in timm's drop_path.
      const mask = tf.floor(tf.add(tf.randomUniform(maskShape, 0, 1), keep));
      return tf.mul(tf.div(x, keep), mask);
    });
  }

  /** Serializable configuration (for save/load). */
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate };
  }
}

/** Options of {@link InputNormalization}. */
export interface InputNormalizationArgs extends LayerArgs {
  /** Per-channel mean, after scaling pixels to [0, 1] (e.g. ImageNet's 0.485, 0.456, 0.406). */
  mean: readonly number[];
  /** Per-channel standard deviation, after scaling pixels to [0, 1] (all > 0). */
  std: readonly number[];
}

/**
 * The normalization of a model that takes RGB pixels in 0..255, as Keras applications'
 * `include_preprocessing` (Keras ConvNeXt: a Normalization layer with ImageNet's mean and
 * variance after rescaling to [0, 1]): `y = (x / 255 - mean) / std` per channel, in that
 * order, in float32 (the order of torchvision's ToTensor + Normalize, so that pixels fed
 * here give the values the kit's own transform gives, bit for bit on cpu and wasm).
 *
 * No weights: mean and std are configuration (saved with the model), so loading weights or
 * fine-tuning never changes them. Only broadcasting `sub`/`div` by `[C]` constants, which
 * every backend (webgpu included) runs. The optimized inference plan (lib/infer/plan.ts)
 * folds it into the stem convolution's weights.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { InputNormalization } from "./layers.ts";
 * await selectBackend("cpu");
 * const norm = new InputNormalization({ mean: [0.5, 0.5, 0.5], std: [0.25, 0.5, 1] });
 * const y = norm.apply(tf.tensor4d([255, 255, 255, 0, 0, 0], [1, 1, 2, 3])) as tf.Tensor;
 * console.log(y.dataSync()); // [2, 1, 0.5, -2, -1, -0.5]
 * if (y.dataSync()[0] !== 2) throw new Error(`${y.dataSync()}`);
 * ```
 */
export class InputNormalization extends tf.layers.Layer {
  /** Serialization name. */
  static className = "InputNormalization";
  /** Per-channel mean (pixels scaled to [0, 1]). */
  readonly mean: readonly number[];
  /** Per-channel standard deviation (pixels scaled to [0, 1]). */
  readonly std: readonly number[];

  /**
   * `(x / 255 - mean) / std` over the last (channel) axis.
   *
   * @param args layer options with the per-channel mean and std (same length, std > 0).
   * @throws Error when mean and std are not finite numbers of one length, or a std is <= 0.
   */
  constructor(args: InputNormalizationArgs) {
    super(args);
    const numbers = (v: unknown) =>
      Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number" && isFinite(x));
    if (
      !numbers(args.mean) || !numbers(args.std) || args.mean.length !== args.std.length ||
      !args.std.every((s) => s > 0)
    ) {
      throw new Error(
        `InputNormalization: mean and std must be finite numbers of one length (std > 0), got ${
          JSON.stringify(args.mean)
        } and ${JSON.stringify(args.std)}`,
      );
    }
    this.mean = [...args.mean];
    this.std = [...args.std];
  }

  /** Checks that the input has one channel per mean/std value. */
  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const channels = shape[shape.length - 1];
    if (channels !== this.mean.length) {
      throw new Error(
        `${this.name}: expected ${this.mean.length} channels (one per mean/std value), got input shape [${shape}]`,
      );
    }
    this.built = true;
  }

  /** Same shape as the input. */
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  /** Applies the layer to a tensor (integer pixels are cast to float32 first). */
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return tf.tidy(() => {
      const x = single(inputs);
      // An int32 tensor would make `div` an integer division.
      const pixels = x.dtype === "float32" ? x : tf.cast(x, "float32");
      const scaled = tf.div(pixels, tf.scalar(255));
      return tf.div(
        tf.sub(scaled, tf.tensor1d(this.mean as number[])),
        tf.tensor1d(this.std as number[]),
      );
    });
  }

  /** Serializable configuration (for save/load): mean and std. */
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), mean: [...this.mean], std: [...this.std] };
  }
}

/** Options of {@link TruncatedNormal}. */
export interface TruncatedNormalArgs {
  /** Mean of the normal distribution. */
  mean?: number;
  /** Standard deviation of the normal distribution. */
  stddev?: number;
  /** Lower bound, absolute (not in standard deviations). */
  minval?: number;
  /** Upper bound, absolute. */
  maxval?: number;
  /** Random seed. */
  seed?: number;
}

type InitializerLike = ReturnType<typeof tf.initializers.zeros>;
// TF.js does not export its Initializer base class; take it from an instance.
const InitializerBase = Object.getPrototypeOf(
  Object.getPrototypeOf(tf.initializers.zeros()),
).constructor as new () => InitializerLike;

/**
 * A seed as TF.js's random ops take it: they treat 0 as no seed (`seed ? seed :
 * Math.random()` in tfjs-core 4.22's rand_util), so seed 0 becomes a fixed other value.
 */
function tfSeed(seed: number | undefined): number | undefined {
  return seed === 0 ? 0x9e3779b9 : seed;
}

/**
 * timm's `trunc_normal_(std=0.02)`: a normal distribution cut at ABSOLUTE bounds
 * (default -2 and 2), i.e. practically untruncated at std 0.02. TF.js's
 * `truncatedNormal` cuts at two standard deviations, which is a different distribution.
 *
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { TruncatedNormal } from "./layers.ts";
 * await selectBackend("cpu");
 * const init = new TruncatedNormal({ stddev: 0.02 });
 * const w = init.apply([64, 64]);
 * console.log(w.shape, w.abs().max().dataSync()[0]); // [64, 64], well inside the bounds +-2
 * ```
 */
export class TruncatedNormal extends InitializerBase {
  /** Serialization name. */
  static className = "TimmTruncatedNormal";
  /** Mean. */
  readonly mean: number;
  /** Standard deviation. */
  readonly stddev: number;
  /** Absolute lower bound. */
  readonly minval: number;
  /** Absolute upper bound. */
  readonly maxval: number;
  /** Seed, if any. */
  readonly seed?: number;

  /**
   * A normal distribution redrawn outside [a, b], as timm's `trunc_normal_`.
   *
   * @param args distribution parameters (timm's defaults: mean 0, std 0.02, bounds +-2).
   */
  constructor(args: TruncatedNormalArgs = {}) {
    super();
    this.mean = args.mean ?? 0;
    this.stddev = args.stddev ?? 0.02;
    this.minval = args.minval ?? -2;
    this.maxval = args.maxval ?? 2;
    this.seed = args.seed;
    if (!(this.minval < this.maxval)) {
      throw new Error(`TruncatedNormal: minval ${this.minval} must be below maxval ${this.maxval}`);
    }
  }

  /**
   * How many redraw rounds make it unlikely (below 1e-6 expected samples) that any of `size`
   * samples is still outside the bounds, at most 8 (then the rest is clipped). Computed
   * instead of checked so that no value is read back: initializers are synchronous, and
   * the webgpu backend cannot read synchronously under Deno. With timm's defaults (bounds at
   * 100 standard deviations) it is 0.
   */
  redrawRounds(size: number): number {
    // Upper bound of the probability outside: each tail P(z > a) <= phi(a) / a for a > 0.
    const logTail = (a: number) =>
      a <= 0 ? 0 : Math.min(Math.log(0.5), -a * a / 2 - Math.log(a * Math.sqrt(2 * Math.PI)));
    const lo = logTail((this.mean - this.minval) / this.stddev);
    const hi = logTail((this.maxval - this.mean) / this.stddev);
    const logP = Math.max(lo, hi) + Math.log1p(Math.exp(-Math.abs(lo - hi)));
    if (logP >= 0) return 8;
    // Expected samples left after r rounds: size * p^(r + 1) < 1e-6.
    const rounds = Math.ceil((Math.log(1e-6) - Math.log(Math.max(1, size))) / logP) - 1;
    return Math.min(8, Math.max(0, rounds));
  }

  /** A tensor of `shape` drawn from the distribution. */
  override apply(shape: tf.Shape, dtype?: tf.DataType): tf.Tensor {
    return tf.tidy(() => {
      const dims = shape as number[];
      let x = tf.randomNormal(dims, this.mean, this.stddev, "float32", tfSeed(this.seed));
      // Redraw the samples outside the bounds (a round where none is outside changes
      // nothing); after the rounds, clip what is left.
      const rounds = this.redrawRounds(dims.reduce((a, b) => a * b, 1));
      for (let round = 0; round < rounds; round++) {
        const outside = tf.logicalOr(tf.less(x, this.minval), tf.greater(x, this.maxval));
        const seed = this.seed === undefined ? undefined : this.seed + round + 1;
        x = tf.where(
          outside,
          tf.randomNormal(dims, this.mean, this.stddev, "float32", tfSeed(seed)),
          x,
        );
      }
      return tf.cast(tf.clipByValue(x, this.minval, this.maxval), dtype ?? "float32");
    });
  }

  /** Serializable configuration (for save/load). */
  override getConfig(): tf.serialization.ConfigDict {
    const config: tf.serialization.ConfigDict = {
      mean: this.mean,
      stddev: this.stddev,
      minval: this.minval,
      maxval: this.maxval,
    };
    if (this.seed !== undefined) config.seed = this.seed;
    return config;
  }
}

tf.serialization.registerClass(LayerNorm);
tf.serialization.registerClass(LayerScale);
tf.serialization.registerClass(GlobalResponseNorm);
tf.serialization.registerClass(StochasticDepth);
tf.serialization.registerClass(InputNormalization);
tf.serialization.registerClass(
  TruncatedNormal as unknown as tf.serialization.SerializableConstructor<
    tf.serialization.Serializable
  >,
);
