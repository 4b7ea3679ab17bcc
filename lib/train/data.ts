/**
 * Image classification data in the ImageFolder layout (`DIR/<class>/<image>`), a seeded,
 * stratified train/validation split, and a class-balanced subset for quick runs.
 *
 * @module
 */
import { join } from "node:path";
import { hashSeed, mulberry32, permutation, STREAM } from "./rng.ts";
import { IMAGE_EXTENSIONS } from "../eval/dataset.ts";

/** One labelled image. */
export interface Sample {
  /** Path of the image file. */
  path: string;
  /** Class index into {@link ImageFolder.classes}. */
  label: number;
}

/** An ImageFolder dataset. */
export interface ImageFolder {
  /** Root directory. */
  root: string;
  /** Class names: the sub-folder names, sorted (as torchvision's ImageFolder). */
  classes: string[];
  /** Every image, class by class, files sorted by name. */
  samples: Sample[];
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * List an ImageFolder dataset: every sub-folder of `root` is a class (sorted by name, as
 * torchvision), and its `.jpg`/`.jpeg`/`.png` files are its images. Hidden entries are
 * ignored; other files are skipped silently.
 *
 * @throws Error naming `root` when it is not a readable directory, has no class folders,
 *   or has no images.
 * @example
 * ```ts
 * const { classes, samples } = await listImageFolder("../shared/datasets/flowers-mini");
 * // classes: ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
 * ```
 */
export async function listImageFolder(root: string): Promise<ImageFolder> {
  const dirs: string[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (e.name.startsWith(".")) continue;
      let isDir = e.isDirectory;
      if (e.isSymlink) {
        isDir = (await Deno.stat(join(root, e.name)).catch(() => null))?.isDirectory ?? false;
      }
      if (isDir) dirs.push(e.name);
    }
  } catch (e) {
    throw new Error(
      `--data ${root}: cannot read the directory (${(e as Error).message.split("\n")[0]})`,
    );
  }
  if (dirs.length === 0) {
    throw new Error(
      `--data ${root}: expected one sub-folder per class (DIR/<class>/*.jpg), found none`,
    );
  }
  const classes = dirs.sort(byCodePoint);
  const samples: Sample[] = [];
  for (const [label, name] of classes.entries()) {
    const files: string[] = [];
    for await (const e of Deno.readDir(join(root, name))) {
      const lower = e.name.toLowerCase();
      if (e.name.startsWith(".") || e.isDirectory) continue;
      if (IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext))) files.push(e.name);
    }
    for (const f of files.sort(byCodePoint)) samples.push({ path: join(root, name, f), label });
  }
  if (samples.length === 0) {
    throw new Error(
      `--data ${root}: no ${IMAGE_EXTENSIONS.join("/")} images in the class folders ${
        classes.join(", ")
      }`,
    );
  }
  return { root, classes, samples };
}

/**
 * At most `limit` samples, taken class by class in turn (first files of each class), so a
 * quick run still sees every class. Keeps the input order within each class.
 *
 * @example
 * ```ts
 * const few = limitSamples(samples, 50); // 10 per class with 5 classes
 * ```
 */
export function limitSamples(samples: readonly Sample[], limit: number): Sample[] {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`--limit must be an integer >= 1, got ${limit}`);
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
 * const { train, val } = splitStratified(samples, 0.2, 0);
 * ```
 */
export function splitStratified(samples: readonly Sample[], fraction: number, seed: number): Split {
  if (!(fraction >= 0 && fraction < 1)) {
    throw new RangeError(`--val-split must be in [0, 1), got ${fraction}`);
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
