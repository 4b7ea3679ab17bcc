/**
 * Learning-rate (and weight-decay) schedules as the official ConvNeXt code computes them:
 * one value per optimizer step (`utils.cosine_scheduler`).
 *
 * @module
 */

/** Options of {@link cosineSchedule}, named as the official function's arguments. */
export interface CosineScheduleOptions {
  /** Value at the end of the warmup (the peak), `base_value`. */
  base: number;
  /** Value at the last step, `final_value`. */
  final: number;
  /** Epochs. */
  epochs: number;
  /** Optimizer steps per epoch, `niter_per_ep`. */
  stepsPerEpoch: number;
  /** Warmup epochs (default 0). */
  warmupEpochs?: number;
  /** Warmup steps; when > 0 it replaces `warmupEpochs * stepsPerEpoch`. */
  warmupSteps?: number;
  /** Value at the first warmup step (default 0). */
  startWarmup?: number;
}

/** numpy.linspace(start, stop, n): n values including both ends. */
function linspace(start: number, stop: number, n: number): number[] {
  if (n === 1) return [start];
  const step = (stop - start) / (n - 1);
  const out = Array.from({ length: n }, (_, i) => start + i * step);
  out[n - 1] = stop; // numpy sets the end point exactly
  return out;
}

/**
 * The official `cosine_scheduler`: a linear warmup from `startWarmup` to `base`
 * (numpy `linspace`, both ends included), then a half cosine from `base` down to `final`
 * over the remaining steps. Returns `epochs * stepsPerEpoch` values, one per step.
 *
 * Unlike the official code, `warmupSteps > 0` also warms up when `warmupEpochs` is 0
 * (the original then fails its length assertion).
 *
 * @throws RangeError when the warmup is longer than the run or an argument is invalid.
 * @example
 * ```ts
 * const lr = cosineSchedule({ base: 4e-3, final: 1e-6, epochs: 30, stepsPerEpoch: 100, warmupEpochs: 5 });
 * lr[0]; // 0, then up to 4e-3 at step 499, then down to ~1e-6
 * ```
 */
export function cosineSchedule(options: CosineScheduleOptions): Float64Array {
  const { base, final, epochs, stepsPerEpoch } = options;
  const startWarmup = options.startWarmup ?? 0;
  for (const [name, v] of Object.entries({ epochs, stepsPerEpoch })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`cosineSchedule: ${name} must be an integer >= 1, got ${v}`);
    }
  }
  if (![base, final, startWarmup].every(Number.isFinite)) {
    throw new RangeError(`cosineSchedule: base, final and startWarmup must be finite numbers`);
  }
  const warmupEpochs = options.warmupEpochs ?? 0;
  const warmupSteps = (options.warmupSteps ?? -1) > 0
    ? options.warmupSteps!
    : Math.round(warmupEpochs * stepsPerEpoch);
  const total = epochs * stepsPerEpoch;
  if (!(Number.isInteger(warmupSteps) && warmupSteps >= 0 && warmupSteps <= total)) {
    throw new RangeError(
      `cosineSchedule: warmup of ${warmupSteps} steps does not fit in ${total} steps`,
    );
  }
  const out = new Float64Array(total);
  if (warmupSteps > 0) out.set(linspace(startWarmup, base, warmupSteps));
  const rest = total - warmupSteps;
  for (let i = 0; i < rest; i++) {
    out[warmupSteps + i] = final + 0.5 * (base - final) * (1 + Math.cos(Math.PI * i / rest));
  }
  return out;
}
