/**
 * From an official checkpoint to a ready `tf.LayersModel`: read, remap by name, build the
 * architecture, assign the weights, and cache the converted model.
 *
 * @module
 */
import { withFileLock } from "../util/lock.ts";
import { didYouMean } from "../util/suggest.ts";
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { createHash } from "node:crypto";
import { basename, dirname, extname, join } from "node:path";
import { CUSTOM_ARCHITECTURE, numClasses as headClassesOf } from "../model/architecture.ts";
import {
  attachModelConfig,
  labelsFor,
  type ModelConfig,
  modelPreprocessing,
  type ModelSource,
  preprocessingFor,
} from "../model/config.ts";
import { createConvNeXt } from "../model/convnext.ts";
import { HEAD_FC, weightPath } from "../model/names.ts";
import { TruncatedNormal } from "../model/layers.ts";
import {
  DamagedModelError,
  type FileRecord,
  type FileRecords,
  loadSavedModel,
  saveModel,
} from "../model/io.ts";
import type { ArchitectureName, ArchitectureSpec } from "../model/variants.ts";
import { exists, removeIfExists } from "../util/fs.ts";
import { OptionError, type OptionNamer } from "../util/errors.ts";
import { holdsWorkingDirectory, someNames, surveyFolder } from "../util/owned.ts";
import {
  checkpointPath,
  modelDir,
  readSha256Record,
  sha256File,
  sha256RecordPath,
} from "../util/cache.ts";
import { download, type DownloadOptions } from "../util/download.ts";
import { ensureCheckpoint } from "./fetch.ts";
import { assertWeightsMatch, type ConvertedWeights, remapStateDict, type Weight } from "./remap.ts";
import { readStateDict } from "./state_dict.ts";
import type { StateDict } from "./types.ts";
import {
  getZooEntry,
  isZooName,
  ZOO_NAMES,
  type ZooEntry,
  zooPreprocessing,
  zooUrl,
} from "./zoo.ts";

export { type Preprocessing, preprocessingFor } from "../model/config.ts";

/**
 * The configuration stored with a converted model (`model.getUserDefinedMetadata().convnext`,
 * `convnext.json`): a {@link ModelConfig} that says where its weights came from.
 */
export type ModelInfo = ModelConfig & {
  /** Where the weights came from. */
  source: ModelSource;
};

/**
 * Assign converted weights to a model by name. Strict: every model weight must be given
 * with the right shape and nothing else, except names in `allowMissing` (e.g. a new head).
 *
 * @throws Error listing every missing, unexpected and mis-shaped weight.
 */
export function applyWeights(
  model: tf.LayersModel,
  weights: ReadonlyMap<string, Weight>,
  options: { allowMissing?: readonly string[]; label?: string } = {},
): void {
  const skip = new Set(options.allowMissing ?? []);
  const expected = new Map(
    model.weights.filter((w) => !skip.has(w.originalName) || weights.has(w.originalName))
      .map((w) => [w.originalName, w.shape as number[]]),
  );
  assertWeightsMatch(weights, expected, options.label);
  for (const variable of model.weights) {
    const w = weights.get(variable.originalName);
    if (!w) continue;
    const value = tf.tensor(w.data, w.shape, "float32");
    variable.write(value);
    value.dispose();
  }
}

/** Index of the first NaN or infinity in `data`, or -1. */
function firstNonFinite(data: ArrayLike<number>): number {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return i;
  return -1;
}

/**
 * A weight that is NaN or infinite would turn every prediction into NaN (`NaN%` with exit
 * code 0): an error naming the tensor instead.
 */
function assertFiniteStateDict(stateDict: StateDict, label: string): void {
  for (const [key, t] of stateDict) {
    const i = firstNonFinite(t.data);
    if (i >= 0) {
      throw new Error(`${label}: tensor "${key}" holds a non-finite value (${t.data[i]} at ${i})`);
    }
  }
}

/**
 * What `convnext.json` holds: the model's configuration (also in model.json's metadata) and
 * the size and sha256 of model.json and each weight shard as written, which the loading of
 * a cached model checks.
 */
type ConvnextJson = ModelInfo & { files?: FileRecords };

/** The file records of `convnext.json` in `dir`, if it has valid ones (older versions: none). */
async function fileRecords(dir: string): Promise<FileRecords | undefined> {
  const json = JSON.parse(await Deno.readTextFile(join(dir, "convnext.json"))) as ConvnextJson;
  const files = json?.files;
  const valid = (r: FileRecord) =>
    Number.isSafeInteger(r?.bytes) && typeof r?.sha256 === "string" &&
    /^[0-9a-f]{64}$/.test(r.sha256);
  if (typeof files !== "object" || files === null || !Object.values(files).every(valid)) return;
  return files;
}

/**
 * A saved model whose weights are all finite (a damaged or diverged one is an error); with
 * `expect`, every recorded file must have its recorded size and sha256.
 *
 * Sizes are checked first (a stat per file), then sha256 on every load: the bytes are
 * hashed in memory as they are loaded (no second read), at about 1.3 GB/s, 85 ms for
 * convnext_tiny's 110 MB against 0.5 to 1.3 s for the load itself (measured on a busy
 * 2-core machine; within its noise). Sizes alone would miss a bit flip or an overwritten
 * range, which load fine and answer wrong.
 */
async function loadChecked(path: string, expect?: FileRecords): Promise<tf.LayersModel> {
  const { model } = await loadSavedModel(path, { expect });
  for (const w of model.weights) {
    const data = await w.read().data();
    const i = firstNonFinite(data);
    if (i >= 0) {
      model.dispose();
      throw new Error(
        `${path}: weight "${w.originalName}" holds a non-finite value (${data[i]} at ${i})`,
      );
    }
  }
  return model;
}

/** Options of {@link convertCheckpoint}. */
export interface ConvertOptions {
  /** The architecture; default: inferred from the checkpoint's shapes. */
  architecture?: ArchitectureName | ArchitectureSpec;
  /** Replace the checkpoint's classifier by a new, randomly initialized one. */
  dropHead?: boolean;
  /** Classes of the new head with `dropHead` (default: the checkpoint's, else 1000). */
  numClasses?: number;
  /** Initial-weight factor of the new head (official fine-tuning uses e.g. 0.001). */
  headInitScale?: number;
  /** Name used in error messages (default: the file name). */
  label?: string;
  /**
   * Build the model with its input normalization inside (`createConvNeXt`'s
   * `includePreprocessing`): it then takes 0..255 RGB pixels. The layer has no weights, so
   * the checkpoint converts as usual. Default false.
   */
  includePreprocessing?: boolean;
}

/** A converted checkpoint: the model and what conversion learned. */
export interface Converted {
  /** The model with the checkpoint's weights. */
  model: tf.LayersModel;
  /** Conversion details (layout, inferred architecture, classes). */
  converted: ConvertedWeights;
}

/**
 * Convert a PyTorch (`.pth`, zip) or safetensors checkpoint to a ConvNeXt `tf.LayersModel`,
 * detecting the key layout (official, torchvision, timm, Hugging Face) and the architecture.
 *
 * @example
 * ```ts
 * import { convertCheckpoint } from "./pretrained.ts";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * // An official checkpoint file (here a small one shaped like them, from the tests).
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const { model, converted } = await convertCheckpoint(file.pathname);
 * console.log(converted.layout, model.outputs[0].shape); // "official" [null, classes]
 * model.dispose();
 * ```
 */
export async function convertCheckpoint(
  source: string | Uint8Array,
  options: ConvertOptions = {},
): Promise<Converted> {
  const label = options.label ?? (typeof source === "string" ? basename(source) : "checkpoint");
  const stateDict = await readStateDict(source);
  assertFiniteStateDict(stateDict, label);
  const converted = remapStateDict(stateDict, {
    architecture: options.architecture,
    dropHead: options.dropHead,
    label,
  });
  stateDict.clear(); // the float32 copies in `converted` are all that is needed now
  const numClasses = options.dropHead
    ? options.numClasses ?? (converted.checkpointClasses || 1000)
    : converted.numClasses;
  if (options.numClasses !== undefined && !options.dropHead && options.numClasses !== numClasses) {
    throw new Error(
      `${label}: the checkpoint's head has ${numClasses} classes, not ${options.numClasses} (pass dropHead to replace it)`,
    );
  }
  const withHead = numClasses > 0;
  const model = createConvNeXt(converted.architecture ?? converted.spec, {
    numClasses: withHead ? numClasses : undefined,
    includeTop: withHead,
    pooling: withHead ? null : "avg",
    randomInit: false, // every weight is overwritten below, except a new head
    includePreprocessing: options.includePreprocessing,
  });
  const newHead = options.dropHead && withHead
    ? [weightPath(HEAD_FC, "kernel"), weightPath(HEAD_FC, "bias")]
    : [];
  applyWeights(model, converted.weights, { allowMissing: newHead, label });
  if (newHead.length) {
    const scale = options.headInitScale ?? 1;
    const kernel = model.getLayer(HEAD_FC).weights[0];
    kernel.write(
      new TruncatedNormal({ stddev: 0.02 * scale, minval: -2 * scale, maxval: 2 * scale })
        .apply(kernel.shape),
    );
  }
  return { model, converted };
}

function infoFor(
  converted: ConvertedWeights,
  numClasses: number,
  source: ModelInfo["source"],
  resolution: number,
  zoo?: ZooEntry,
): ModelInfo {
  return {
    architecture: converted.architecture ?? CUSTOM_ARCHITECTURE,
    spec: converted.spec,
    numClasses,
    labels: labelsFor(numClasses),
    // A zoo entry knows its evaluation crop (timm's differ); other files get the official one.
    preprocessing: zoo ? zooPreprocessing(zoo) : preprocessingFor(resolution),
    source,
    ...(zoo ? { officialTop1: zoo.top1, license: zoo.license, originUrl: zoo.originUrl } : {}),
  };
}

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** Download options (progress, retries, ...). */
  download?: DownloadOptions;
  /** Convert again even when a converted copy is cached. */
  refresh?: boolean;
  /** Where notices go (a damaged cached model being converted again); default: stderr. */
  log?: (line: string) => void;
}

/**
 * Runs `convert`; if it fails, removes a checkpoint downloaded just now (and its sha256
 * record), so that a file we cannot or must not load (e.g. a hostile pickle) does not stay
 * in the cache looking valid.
 */
async function discardOnFailure<T>(
  downloaded: string | undefined,
  convert: () => Promise<T>,
): Promise<T> {
  try {
    return await convert();
  } catch (e) {
    if (downloaded) {
      await removeIfExists(downloaded);
      await removeIfExists(sha256RecordPath(downloaded));
    }
    throw e;
  }
}

/** 384 or 512 for checkpoints named like the official ones (`..._384...`, `..._512...`), else 224. */
function resolutionFromName(file: string): number {
  const match = /_(384|512)(?:[_.]|$)/.exec(basename(file));
  return match ? Number(match[1]) : 224;
}

/** A checkpoint file on disk and where it came from. */
interface LocalCheckpoint {
  path: string;
  /** Downloaded by this call (removed again if it cannot be converted). */
  fresh: boolean;
  source: Omit<ModelInfo["source"], "sha256" | "layout">;
  zoo?: ZooEntry;
  /** Cache directory for the converted model (zoo names and URLs only). */
  cacheDir?: string;
}

function urlCacheName(url: URL): { file: string; stem: string; ext: string } {
  const file = basename(url.pathname) || "checkpoint.pth";
  const ext = extname(file);
  const tag = createHash("sha256").update(url.href).digest("hex").slice(0, 12);
  return { file, stem: `${file.slice(0, file.length - ext.length)}-${tag}`, ext };
}

/** Where a SOURCE (zoo name, URL or path) is, downloading it into the cache if needed. */
async function locate(
  source: string,
  options: DownloadOptions | undefined,
  fetchFile = true,
): Promise<LocalCheckpoint> {
  if (isZooName(source)) {
    const zoo = getZooEntry(source);
    const path = checkpointPath(zoo.file);
    const fresh = fetchFile && !await exists(path);
    if (fetchFile) await ensureCheckpoint(zoo, options);
    return {
      path,
      fresh,
      zoo,
      source: { zoo: zoo.name, url: zooUrl(zoo), file: zoo.file },
      cacheDir: modelDir(zoo.name),
    };
  }
  if (/^https?:\/\//i.test(source)) {
    const url = new URL(source);
    const { file, stem, ext } = urlCacheName(url);
    const path = checkpointPath(stem + ext);
    const fresh = fetchFile && !await exists(path);
    if (fresh) await download(url.href, path, options);
    return { path, fresh, source: { url: url.href, file }, cacheDir: modelDir(stem) };
  }
  try {
    await Deno.stat(source);
  } catch {
    // Something path-like is a missing file; a name gets the nearest zoo names.
    const pathLike = /[\\/]|\.(pth?|safetensors|json)$/i.test(source);
    throw new Error(
      pathLike
        ? `"${source}": no such file or folder`
        : `"${source}" is not a zoo name, an http(s) URL or an existing path${
          didYouMean(source, ZOO_NAMES) || `; zoo names: ${ZOO_NAMES.join(", ")}`
        } (deno task models lists the zoo)`,
    );
  }
  return { path: source, fresh: false, source: { file: basename(source) } };
}

/** Options of {@link convertToDirectory}. */
export interface ConvertToDirectoryOptions extends ConvertOptions {
  /** Replace an existing output directory. */
  overwrite?: boolean;
  /** Download options for zoo names and URLs. */
  download?: DownloadOptions;
}

async function convertLocal(
  local: LocalCheckpoint,
  out: string,
  options: ConvertToDirectoryOptions,
): Promise<{ model: tf.LayersModel; info: ModelInfo }> {
  return await discardOnFailure(local.fresh ? local.path : undefined, async () => {
    const sha256 = await readSha256Record(local.path) ?? await sha256File(local.path);
    const { model, converted } = await convertCheckpoint(local.path, {
      dropHead: options.dropHead,
      numClasses: options.numClasses,
      headInitScale: options.headInitScale,
      architecture: options.architecture ?? local.zoo?.architecture,
      label: options.label ?? local.source.file,
      includePreprocessing: options.includePreprocessing,
    });
    const numClasses = headClassesOf(model);
    if (local.zoo && !options.dropHead && converted.numClasses !== local.zoo.numClasses) {
      model.dispose();
      throw new Error(
        `${local.source.file}: expected a ${local.zoo.numClasses}-class head for ${local.zoo.name}, found ${converted.numClasses}`,
      );
    }
    const info = infoFor(
      converted,
      numClasses,
      { ...local.source, sha256, layout: converted.layout },
      local.zoo?.resolution ?? resolutionFromName(local.source.file),
      options.dropHead ? undefined : local.zoo,
    );
    // convnext.json says, as the model's metadata does, whether the model normalizes itself.
    info.preprocessing = modelPreprocessing(model, info.preprocessing);
    attachModelConfig(model, info);
    await saveModel(model, out, {
      overwrite: options.overwrite,
      // The records of what was written, for the checks of later loads.
      files: (written) => ({
        "convnext.json": JSON.stringify({ ...info, files: written } as ConvnextJson, null, 2) +
          "\n",
      }),
    });
    return { model, info };
  });
}

/** The names a converted model's folder holds: what {@link convertToDirectory} writes. */
function convertedEntry(name: string): boolean {
  return name === "model.json" || name === "convnext.json" ||
    /^group\d+-shard\d+of\d+\.bin$/.test(name);
}

/**
 * `out` may receive a converted model: it does not exist, is an empty folder, or (with
 * `overwrite`) holds a converted model and nothing else, since replacing it deletes what is
 * there. The current folder cannot be replaced (renaming it fails: "Device or resource
 * busy").
 *
 * @throws OptionError naming `out` otherwise.
 */
async function checkConvertOut(out: string, overwrite: boolean): Promise<void> {
  const refuse = (why: (name: OptionNamer) => string): never => {
    throw new OptionError("out", (name) => `convert: ${name("out")} ${out} ${why(name)}`);
  };
  if (await holdsWorkingDirectory(out)) {
    refuse(() =>
      "is the current folder (or holds it), which cannot be replaced: the model is written " +
      "under a new name and renamed into place; choose a new folder"
    );
  }
  const survey = await surveyFolder(out, convertedEntry);
  if (survey.kind === "absent") return;
  if (survey.kind === "not-a-folder") refuse(() => "is a file, not a folder");
  if (survey.kind !== "folder" || survey.entries.length === 0) return;
  const model = survey.entries.includes("model.json") && survey.entries.includes("convnext.json");
  if (!model || survey.foreign.length > 0) {
    const what = survey.foreign.length > 0
      ? `files convert did not write (${someNames(survey.foreign)})`
      : "no converted model (model.json and convnext.json)";
    refuse((name) =>
      `holds ${what}; ${name("overwrite")} only replaces a folder that holds a converted ` +
      `model and nothing else: choose another ${name("out")}`
    );
  }
  if (!overwrite) {
    refuse((name) =>
      `already holds a converted model; pass ${name("overwrite", true)} to replace it`
    );
  }
}

/**
 * Convert SOURCE (a zoo name, a `.pth`/`.safetensors` path or a URL) into a TF.js layers
 * model directory `out` (`model.json`, weight shards and `convnext.json` with the
 * architecture, classes, resolution, preprocessing, source and its sha256, and the size
 * and sha256 of each file). The directory appears atomically: it is written under a
 * temporary name and renamed. `out` must be new or an empty folder; `overwrite` replaces a
 * converted model, never a folder holding anything else (the user's files stay untouched).
 *
 * @example
 * ```ts
 * import { convertToDirectory } from "./pretrained.ts";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * // A zoo name ("convnext_tiny_1k_224") downloads first; here a local checkpoint file.
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const out = `${await Deno.makeTempDir()}/tiny`;
 * const info = await convertToDirectory(file.pathname, out);
 * console.log(info.architecture, info.source.sha256); // what convnext.json records
 * await Deno.remove(out, { recursive: true });
 * ```
 */
export async function convertToDirectory(
  source: string,
  out: string,
  options: ConvertToDirectoryOptions = {},
): Promise<ModelInfo> {
  await checkConvertOut(out, options.overwrite ?? false);
  const local = await locate(source, options.download);
  // checkConvertOut allowed what is there: nothing, an empty folder, or a converted model.
  const { model, info } = await convertLocal(local, out, { ...options, overwrite: true });
  model.dispose();
  return info;
}

/**
 * Load a ConvNeXt with its original weights.
 *
 * - a zoo name (`"convnext_tiny_1k_224"`, see `deno task models`): downloads the official
 *   checkpoint once into the cache (`$CONVNEXT_CACHE`), converts it once, and later loads
 *   the converted model from the cache;
 * - an `http(s)://` URL of a checkpoint: the same, cached by URL;
 * - a directory (or `model.json`) written by `deno task convert` / `saveModel`;
 * - a `.pth` / `.safetensors` file: converted on the fly (not cached).
 *
 * The model's configuration (`modelConfig(model)`, lib/model/config.ts; stored in
 * `getUserDefinedMetadata().convnext`) says its classes, labels, resolution and preprocessing.
 *
 * @example
 * ```ts
 * import { loadModel } from "./pretrained.ts";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * // loadModel("convnext_tiny_1k_224") downloads, converts and caches; a file converts directly.
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const model = await loadModel(file.pathname);
 * model.dispose();
 * ```
 */
export async function loadModel(
  nameOrPath: string,
  options: LoadOptions = {},
): Promise<tf.LayersModel> {
  let local: LocalCheckpoint;
  try {
    local = await locate(nameOrPath, options.download, false);
  } catch (e) {
    throw new Error(`loadModel: ${(e as Error).message}`);
  }
  if (local.cacheDir) return await loadFromCache(nameOrPath, local, options);
  const stat = await Deno.stat(nameOrPath);
  if (stat.isDirectory || nameOrPath.endsWith(".json")) {
    // A folder written by convert: its records, when it has them, are checked too.
    const dir = nameOrPath.endsWith(".json") ? dirname(nameOrPath) : nameOrPath;
    return await loadChecked(nameOrPath, await fileRecords(dir).catch(() => undefined));
  }
  const { model, converted } = await convertCheckpoint(nameOrPath);
  attachModelConfig(
    model,
    infoFor(converted, converted.numClasses, {
      file: basename(nameOrPath),
      sha256: await sha256File(nameOrPath),
      layout: converted.layout,
    }, resolutionFromName(nameOrPath)),
  );
  return model;
}

/** What is wrong with a cached converted model: the file at fault and why. */
interface Damage {
  path: string;
  reason: string;
}

/**
 * The converted model cached in `dir`, checked against the records of its convnext.json;
 * `null` when nothing is cached; else what is damaged. A cache written before the records
 * existed has none: it counts as intact unless loading it fails.
 */
async function loadCached(dir: string): Promise<{ model: tf.LayersModel } | Damage | null> {
  if (!await exists(dir)) return null;
  const info = join(dir, "convnext.json");
  let records: FileRecords | undefined;
  try {
    records = await fileRecords(dir);
  } catch (e) {
    return { path: info, reason: e instanceof Deno.errors.NotFound ? "missing" : "not valid JSON" };
  }
  try {
    return { model: await loadChecked(dir, records) };
  } catch (e) {
    if (e instanceof DamagedModelError) return { path: e.path, reason: e.reason };
    // Other errors start with the file they are about, when they name one.
    const message = (e as Error).message.split("\n")[0].replace(/^loadSavedModel: /, "");
    const at = /^(\S+): /.exec(message);
    return at && at[1].startsWith(dir)
      ? { path: at[1], reason: message.slice(at[0].length) }
      : { path: dir, reason: message };
  }
}

/**
 * Loads a zoo or URL model from the cache, converting it first when it is not there, or
 * again, with a one-line notice, when a file of it is damaged (then the checkpoint is
 * checked against its download record too, and downloaded again if it is damaged as well).
 * One process converts while others wait for its result (a file lock).
 */
async function loadFromCache(
  source: string,
  local: LocalCheckpoint,
  options: LoadOptions,
): Promise<tf.LayersModel> {
  const dir = local.cacheDir!;
  const log = options.log ?? ((line: string) => console.error(line));
  const first = options.refresh ? null : await loadCached(dir);
  if (first && "model" in first) return first.model;
  return await withFileLock(dir, async () => {
    let damage = first;
    if (!options.refresh) {
      // Another process may have converted (or healed) it while this one waited.
      const again = await loadCached(dir);
      if (again && "model" in again) return again.model;
      damage = again;
    }
    if (damage) {
      log(`${damage.path}: damaged (${damage.reason}); reconverting from ${local.path}`);
      await dropDamagedCheckpoint(local.path, log);
    }
    const found = await locate(source, options.download);
    return (await convertLocal(found, dir, { overwrite: true })).model;
  });
}

/**
 * Removes a cached checkpoint (and its record) whose sha256 no longer matches the one
 * recorded at download, so that {@link locate} downloads it again instead of failing on it.
 * Hashed only here, when its converted model was found damaged: the same disk may have
 * damaged it too.
 */
async function dropDamagedCheckpoint(path: string, log: (line: string) => void): Promise<void> {
  if (!await exists(path)) return;
  const recorded = await readSha256Record(path).catch(() => "unreadable");
  if (recorded === null || recorded === await sha256File(path)) return;
  log(`${path}: damaged (sha256 differs from the one recorded at download); downloading it again`);
  await removeIfExists(path);
  await removeIfExists(sha256RecordPath(path));
}
