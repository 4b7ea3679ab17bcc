/**
 * Training data on top of an ImageFolder listing (`listImageFolder`, ../data/image_folder.ts):
 * a seeded, stratified train/validation split, and a class-balanced subset for quick runs.
 *
 * @module
 */
import { hashSeed, mulberry32, permutation, STREAM } from "./rng.ts";

/** One labelled image (the samples of `listImageFolder` are). */
export interface Sample {
  /** Path of the image file. */
  path: string;
  /** Class index (into the dataset's class list). */
  label: number;
}

/**
 * At most `limit` samples, taken class by class in turn (first files of each class), so a
 * quick run still sees every class. Keeps the input order within each class.
 *
 * @example
 * ```ts
 * import { limitSamples } from "./data.ts";
 * const samples = Array.from({ length: 100 }, (_, i) => ({ path: `${i}.jpg`, label: i % 5 }));
 * const few = limitSamples(samples, 50); // 10 per class with 5 classes
 * console.log(few.length, few.filter((s) => s.label === 0).length); // 50 10
 * ```
 */
export function limitSamples(samples: readonly Sample[], limit: number): Sample[] {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be an integer >= 1, got ${limit}`);
  }
  if (limit >= samples.length) return [...samples];
  const perClass = new Map<number, Sample[]>();
  for (const s of samples) {
    if (!perClass.has(s.label)) perClass.set(s.label, []);
    perClass.get(s.label)!.push(s);
  }
  const picked = new Set<Sample>();
  for (let round = 0; picked.size < limit; round++) {
    for (const list of perClass.values()) {
      if (round < list.length && picked.size < limit) picked.add(list[round]);
    }
  }
  return samples.filter((s) => picked.has(s));
}

/** A train/validation split. */
export interface Split {
  /** Training samples (dataset order). */
  train: Sample[];
  /** Validation samples (dataset order). */
  val: Sample[];
}

/**
 * Seeded, stratified split: in each class, `round(n * fraction)` images (at least one
 * when the class has two or more and `fraction > 0`) go to validation, chosen by a
 * permutation seeded with (`seed`, class). The same seed always gives the same split.
 *
 * @example
 * ```ts
 * import { splitStratified } from "./data.ts";
 * const samples = Array.from({ length: 100 }, (_, i) => ({ path: `${i}.jpg`, label: i % 5 }));
 * const { train, val } = splitStratified(samples, 0.2, 0);
 * console.log(train.length, val.length); // 80 20: 4 of each class's 20 go to validation
 * ```
 */
export function splitStratified(samples: readonly Sample[], fraction: number, seed: number): Split {
  if (!(fraction >= 0 && fraction < 1)) {
    throw new RangeError(`valSplit must be in [0, 1), got ${fraction}`);
  }
  const perClass = new Map<number, number[]>();
  samples.forEach((s, i) => {
    if (!perClass.has(s.label)) perClass.set(s.label, []);
    perClass.get(s.label)!.push(i);
  });
  const isVal = new Set<number>();
  for (const [label, indices] of perClass) {
    let k = Math.round(indices.length * fraction);
    if (fraction > 0 && k === 0 && indices.length >= 2) k = 1;
    if (k >= indices.length) k = indices.length - 1; // keep one training image per class
    const order = permutation(indices.length, mulberry32(hashSeed(seed, STREAM.split, label)));
    for (const j of order.slice(0, k)) isVal.add(indices[j]);
  }
  return {
    train: samples.filter((_, i) => !isVal.has(i)),
    val: samples.filter((_, i) => isVal.has(i)),
  };
}
