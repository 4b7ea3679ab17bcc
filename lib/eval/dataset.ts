/**
 * ImageNet validation sets on disk, listed in a deterministic order with the class index
 * the official checkpoints use for each image.
 *
 * Two layouts:
 * - ImageFolder (`DIR/<wnid>/**` images), what the official code reads with torchvision's
 *   `ImageFolder`, listed as it lists them by `listImageFolder` (../data/image_folder.ts):
 *   the class index of a folder is its position among the sorted folder names. That rule
 *   only gives the checkpoints' indices when every class has a folder, so a folder with
 *   fewer class folders than the model has classes needs a synset list (one wnid per line
 *   in class-index order, e.g. `LOC_synset_mapping.txt`), which then numbers the classes.
 *   Empty class folders are allowed (torchvision 0.14 would refuse them).
 * - flat (the Kaggle download): `LOC_val_solution.csv` (`ImageId,PredictionString` whose
 *   first token is the wnid) and `LOC_synset_mapping.txt` in DIR, images
 *   `<ImageId>.JPEG` in `DIR/ILSVRC/Data/CLS-LOC/val/`, `DIR/val/` or DIR itself, listed in
 *   sorted ImageId order.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { OptionError } from "../util/errors.ts";
import { join } from "node:path";
import { comparePython, findClasses, listImageFolder } from "../data/image_folder.ts";

/** One image of an evaluation set. */
export interface EvalSample {
  /** Path to read the image from. */
  path: string;
  /** Path relative to the data directory, with `/` (stable across machines). */
  name: string;
  /** Class index (the checkpoint's logit index). */
  label: number;
}

/** An evaluation set listed by {@link loadEvalDataset}. */
export interface EvalDataset {
  /** The data directory as given. */
  root: string;
  /** Which layout was found. */
  layout: "imagefolder" | "flat";
  /** Class wnids in index order. */
  wnids: string[];
  /** Images in evaluation order (class then file for ImageFolder, ImageId for flat). */
  samples: EvalSample[];
  /**
   * sha256 (hex, first 16) of the class list and every sample's name and label: equal
   * fingerprints mean the same images in the same order with the same labels, wherever
   * the directory is.
   */
  fingerprint: string;
}

/** Options of {@link loadEvalDataset}. */
export interface EvalDatasetOptions {
  /** Synset list: a file path (one wnid per line, index order) or the wnids themselves. */
  synsets?: string | readonly string[];
  /** The model's class count: the class list must have exactly this many classes. */
  numClasses?: number;
  /**
   * The wnids the model's classes are, in index order (the ImageNet-1k list for 1k
   * models): the dataset's class list must be exactly this list.
   */
  expectWnids?: readonly string[];
}

function sorted(names: Iterable<string>): string[] {
  return [...names].sort(comparePython);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * Parse a synset list: one class per line, the wnid first (`n01440764` or
 * `n01440764 tench, Tinca tinca`), blank lines ignored.
 *
 * @param source the file name, for error messages
 * @throws Error naming the file and line for a duplicate or malformed entry
 * @example
 * ```ts
 * import { parseSynsets } from "./dataset.ts";
 * console.log(parseSynsets("n01440764 tench\nn01443537 goldfish\n")); // ["n01440764", "n01443537"]
 * ```
 */
export function parseSynsets(text: string, source = "synsets"): string[] {
  const wnids: string[] = [];
  const seen = new Map<string, number>();
  text.split(/\r?\n/).forEach((line, i) => {
    const wnid = line.trim().split(/\s+/)[0];
    if (!wnid) return;
    if (!/^[A-Za-z0-9_.-]+$/.test(wnid)) {
      throw new Error(`${source}:${i + 1}: expected a wnid such as n01440764, got "${wnid}"`);
    }
    if (seen.has(wnid)) {
      throw new Error(
        `${source}:${i + 1}: "${wnid}" is listed twice (first at line ${seen.get(wnid)})`,
      );
    }
    seen.set(wnid, i + 1);
    wnids.push(wnid);
  });
  if (wnids.length === 0) throw new Error(`${source}: no wnids found`);
  return wnids;
}

/** Read and parse a synset list file ({@link parseSynsets}). */
export async function readSynsets(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new Error(`${file}: cannot read the synset list: ${why}`);
  }
  return parseSynsets(text, file);
}

async function synsetList(
  synsets: string | readonly string[] | undefined,
): Promise<string[] | undefined> {
  if (synsets === undefined) return undefined;
  return typeof synsets === "string" ? await readSynsets(synsets) : [...synsets];
}

/** The class list must fit the model: its size and, for ImageNet models, its order. */
function checkClasses(
  wnids: readonly string[],
  what: string,
  options: EvalDatasetOptions,
): void {
  if (options.numClasses !== undefined && wnids.length !== options.numClasses) {
    throw new Error(
      `${what} has ${wnids.length} classes but the model has ${options.numClasses}`,
    );
  }
  const expect = options.expectWnids;
  if (expect) {
    const i = wnids.findIndex((w, k) => w !== expect[k]);
    if (i >= 0 || wnids.length !== expect.length) {
      const k = i >= 0 ? i : Math.min(wnids.length, expect.length);
      throw new Error(
        `${what}: class ${k} is "${wnids[k] ?? "(none)"}" but the model's class ${k} is "${
          expect[k] ?? "(none)"
        }"; the classes must be the model's, in its index order`,
      );
    }
  }
}

async function loadImageFolder(
  root: string,
  classDirs: string[],
  options: EvalDatasetOptions,
): Promise<Omit<EvalDataset, "fingerprint">> {
  const folders = sorted(classDirs);
  const synsets = await synsetList(options.synsets);
  let wnids: string[];
  if (synsets) {
    const where = typeof options.synsets === "string" ? options.synsets : "the synset list";
    const unknown = folders.filter((f) => !synsets.includes(f));
    if (unknown.length > 0) {
      throw new Error(
        `${root}: ${unknown.length} class folder(s) not in ${where}: ${
          unknown.slice(0, 5).join(", ")
        }${unknown.length > 5 ? ", ..." : ""}`,
      );
    }
    checkClasses(synsets, where, options);
    wnids = synsets;
  } else {
    if (options.numClasses !== undefined && folders.length !== options.numClasses) {
      throw new OptionError(
        "synsets",
        (name) =>
          `${root}: found ${folders.length} class folders but the model has ${options.numClasses} classes; ` +
          `class indices are positions among the folders, so missing classes would shift every label after them. ` +
          `Pass a synset list (${
            name("synsets")
          }: a file with one wnid per line in class-index order, e.g. LOC_synset_mapping.txt)`,
      );
    }
    checkClasses(folders, `${root} (class folders)`, options);
    wnids = folders;
  }
  const { samples } = await listImageFolder(root, { classes: wnids });
  return { root, layout: "imagefolder", wnids, samples };
}

/** Parse `LOC_val_solution.csv`: ImageId -> wnid (first token of PredictionString). */
export function parseSolution(text: string, source = "LOC_val_solution.csv"): Map<string, string> {
  const lines = text.split(/\r?\n/);
  const header = lines[0]?.trim().replace(/^\uFEFF/, "");
  if (header !== "ImageId,PredictionString") {
    throw new Error(`${source}:1: expected the header "ImageId,PredictionString", got "${header}"`);
  }
  const out = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const comma = line.indexOf(",");
    const id = comma < 0 ? "" : line.slice(0, comma).trim();
    const wnid = comma < 0 ? "" : line.slice(comma + 1).trim().split(/\s+/)[0];
    if (!id || !wnid) {
      throw new Error(`${source}:${i + 1}: expected "ImageId,<wnid> x y x y ...", got "${line}"`);
    }
    if (out.has(id)) throw new Error(`${source}:${i + 1}: ImageId "${id}" appears twice`);
    out.set(id, wnid);
  }
  if (out.size === 0) throw new Error(`${source}: no rows`);
  return out;
}

async function loadFlat(
  root: string,
  options: EvalDatasetOptions,
): Promise<Omit<EvalDataset, "fingerprint">> {
  const csv = join(root, "LOC_val_solution.csv");
  const solution = parseSolution(await Deno.readTextFile(csv), csv);
  const mapping = join(root, "LOC_synset_mapping.txt");
  if (options.synsets === undefined && !await isFile(mapping)) {
    throw new Error(
      `${root}: LOC_val_solution.csv needs LOC_synset_mapping.txt next to it or a synset list (synsets)`,
    );
  }
  const where = typeof options.synsets === "string"
    ? options.synsets
    : options.synsets
    ? "the synset list"
    : mapping;
  const wnids = (await synsetList(options.synsets)) ?? await readSynsets(mapping);
  checkClasses(wnids, where, options);
  const index = new Map(wnids.map((w, i) => [w, i]));
  const ids = sorted(solution.keys());
  for (const id of ids) {
    if (!index.has(solution.get(id)!)) {
      throw new Error(`${csv}: ${id} is labelled "${solution.get(id)}", which is not in ${where}`);
    }
  }
  const candidates = [join("ILSVRC", "Data", "CLS-LOC", "val"), "val", "."];
  let dir: string | undefined;
  for (const c of candidates) {
    if (await isFile(join(root, c, `${ids[0]}.JPEG`))) {
      dir = c;
      break;
    }
  }
  if (dir === undefined) {
    throw new Error(
      `${root}: cannot find ${ids[0]}.JPEG in ${candidates.map((c) => join(root, c)).join(", ")}`,
    );
  }
  const samples = ids.map((id) => {
    const file = `${id}.JPEG`;
    const name = dir === "." ? file : `${dir.replaceAll("\\", "/")}/${file}`;
    return { path: join(root, dir!, file), name, label: index.get(solution.get(id)!)! };
  });
  return { root, layout: "flat", wnids, samples };
}

/** {@link EvalDataset.fingerprint} of a class list and samples. */
export function datasetFingerprint(
  wnids: readonly string[],
  samples: readonly EvalSample[],
): string {
  const h = createHash("sha256");
  h.update(wnids.join("\n") + "\n\n");
  for (const s of samples) h.update(`${s.name}\t${s.label}\n`);
  return h.digest("hex").slice(0, 16);
}

/**
 * List an ImageNet validation set (ImageFolder or flat layout, see the module doc) with
 * class indices. With `numClasses` (the model's) a missing class folder without a synset
 * list is an error, never a silently shifted label.
 *
 * @throws Error with one line naming the directory or file and what was expected
 * @example
 * ```ts
 * import { loadEvalDataset } from "./dataset.ts";
 * // loadEvalDataset("/data/imagenet/val", { numClasses: 1000 }) for ImageNet; here the tests'
 * // small copy of the flat (Kaggle LOC) layout.
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * const ds = await loadEvalDataset(`${fix}flat`, { synsets: `${fix}synsets.txt`, numClasses: 10 });
 * console.log(ds.layout, ds.samples.length, ds.samples[0]);
 * ```
 */
export async function loadEvalDataset(
  root: string,
  options: EvalDatasetOptions = {},
): Promise<EvalDataset> {
  try {
    if (!(await Deno.stat(root)).isDirectory) throw new Error("not a directory");
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such directory" : (e as Error).message;
    throw new Error(`${root}: cannot read the data directory: ${why}`);
  }
  let listed: Omit<EvalDataset, "fingerprint">;
  if (await isFile(join(root, "LOC_val_solution.csv"))) {
    listed = await loadFlat(root, options);
  } else {
    const folders = await findClasses(root);
    if (folders.length === 0) {
      throw new Error(
        `${root}: no class folders (ImageFolder layout DIR/<wnid>/*.JPEG) and no LOC_val_solution.csv (flat layout)`,
      );
    }
    listed = await loadImageFolder(root, folders, options);
  }
  if (listed.samples.length === 0) throw new Error(`${root}: no images found`);
  return { ...listed, fingerprint: datasetFingerprint(listed.wnids, listed.samples) };
}
