/**
 * Seeded randomness for training runs that resume exactly.
 *
 * Every random choice of a run (the epoch's sample order, each sample's augmentation, the
 * drop-path masks of a step) is drawn from a generator seeded by a hash of (run seed,
 * purpose, epoch or step, index). Nothing depends on how many numbers were drawn before,
 * so a run resumed at epoch k makes exactly the choices the uninterrupted run made,
 * whatever the worker scheduling.
 *
 * @module
 */

/** A generator of floats uniform in [0, 1). */
export type Uniform = () => number;

/** 32-bit mix of integers (murmur3's finalizer over a running hash). */
export function hashSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    // Split into two 32-bit halves so seeds up to 2^53 stay distinct.
    for (const v of [p >>> 0, Math.floor(p / 2 ** 32) >>> 0]) {
      h = Math.imul(h ^ v, 0x85ebca6b);
      h ^= h >>> 13;
      h = Math.imul(h, 0xc2b2ae35);
      h ^= h >>> 16;
    }
  }
  return h >>> 0;
}

/**
 * mulberry32: a small, fast, well-mixed 32-bit generator; returns floats in [0, 1).
 *
 * @example
 * ```ts
 * import { hashSeed, mulberry32 } from "./rng.ts";
 * const x = mulberry32(hashSeed(42, 1))();
 * if (!(x >= 0 && x < 1) || x !== mulberry32(hashSeed(42, 1))()) throw new Error("not seeded");
 * ```
 */
export function mulberry32(seed: number): Uniform {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Purposes of the random streams, so that streams of different jobs never coincide. */
export const STREAM = { split: 1, order: 2, augment: 3, dropPath: 4, init: 5 } as const;

/**
 * A Fisher-Yates shuffle of `0..n-1` drawn from `uniform`.
 *
 * @example
 * ```ts
 * import { mulberry32, permutation } from "./rng.ts";
 * const order = permutation(10, mulberry32(7));
 * if (order.toSorted((a, b) => a - b).join() !== "0,1,2,3,4,5,6,7,8,9") throw new Error("lost one");
 * ```
 */
export function permutation(n: number, uniform: Uniform): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(uniform() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Runs `fn` with `Math.random` replaced by a seeded generator, then restores it.
 *
 * Why: TF.js ops without a seed (e.g. `tf.randomUniform` in the StochasticDepth layer)
 * seed themselves from `Math.random()`. A training step's forward pass is synchronous,
 * so swapping the source for its duration makes drop-path masks reproducible without
 * touching the layer.
 *
 * @example
 * ```ts
 * import { hashSeed, withSeededMathRandom } from "./rng.ts";
 * const draw = () => [Math.random(), Math.random()];
 * const a = withSeededMathRandom(hashSeed(1, 0), draw);
 * const b = withSeededMathRandom(hashSeed(1, 0), draw);
 * if (a.join() !== b.join()) throw new Error("not reproducible");
 * ```
 */
export function withSeededMathRandom<T>(seed: number, fn: () => T): T {
  const original = Math.random;
  Math.random = mulberry32(seed);
  try {
    return fn();
  } finally {
    Math.random = original;
  }
}
