/**
 * The model zoo: every checkpoint released by facebookresearch/ConvNeXt and by
 * facebookresearch/ConvNeXt-V2, and timm's weights of its small V1 sizes (atto..nano).
 * Each entry carries the license of its weights: MIT (ConvNeXt), CC-BY-NC 4.0 (ConvNeXt V2;
 * non-commercial), Apache-2.0 (timm).
 *
 * Source of every V1 file name, URL, accuracy, parameter count and FLOPs below: the
 * official README (https://github.com/facebookresearch/ConvNeXt/blob/main/README.md,
 * "Results and Pre-trained Models", read at commit 048efcea897d999aed302f2639b6270aedf8d4c8).
 * The URLs agree with timm's `timm/models/convnext.py` `default_cfgs`. V2 and timm: see
 * their tables below.
 *
 * Notes on reading the README tables:
 * - In the "ImageNet-22K trained models" table, acc@1, #params and FLOPs belong to
 *   the ImageNet-1K fine-tuned model (acc@1 is ImageNet-1K accuracy). The
 *   22K-pretrained checkpoints (21841-class heads) have no published accuracy, and
 *   their head is larger, so their accuracy, parameters and FLOPs are `null` here.
 * - The README gives top-5 only once, in its evaluation example
 *   (`convnext_base_22k_1k_224.pth`: "Acc@1 85.820 Acc@5 97.868"); every other
 *   top-5 is `null`.
 * - Some files carry an `_ema` suffix (weights of the exponential moving average);
 *   our names drop it (`convnext_tiny_1k_224`): which weights a name means is the zoo's
 *   business, not the user's.
 *
 * @module
 */

import { type Preprocessing, preprocessingFor } from "../model/config.ts";
import { type ArchitectureName, ARCHITECTURES } from "../model/variants.ts";
import { didYouMean } from "../util/suggest.ts";

/**
 * License of the official checkpoints: facebookresearch/ConvNeXt is released under the MIT
 * license (its README, "License"; the `LICENSE` file).
 */
export const ZOO_LICENSE = "MIT";

/** Where the official checkpoints are published (timm's `origin_url`). */
export const ZOO_ORIGIN_URL = "https://github.com/facebookresearch/ConvNeXt";

/** Default download location of the official checkpoints. */
export const DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/convnext/";

/** Environment variable that replaces {@link DEFAULT_BASE_URL} (mirrors, offline tests). */
export const BASE_URL_ENV = "CONVNEXT_BASE_URL";

/**
 * File name of the ImageNet-22K class names, `{"0": "words", ...}`. It lives next
 * to the checkpoints: the official web demo linked from the README fetches
 * `https://dl.fbaipublicfiles.com/convnext/label_to_words.json`.
 */
export const LABELS_22K_FILE = "label_to_words.json";

/** ConvNeXt V2's checkpoints (weights CC-BY-NC 4.0, code MIT; its README, "License"). */
export const V2_LICENSE = "CC-BY-NC-4.0";

/** Where the ConvNeXt V2 checkpoints are published. */
export const V2_ORIGIN_URL = "https://github.com/facebookresearch/ConvNeXt-V2";

/** timm's weights of its small V1 sizes: Apache-2.0 (timm's `pretrained_cfg` `license`). */
export const TIMM_LICENSE = "Apache-2.0";

/** Where timm's weights are published (timm's repository; files on the Hugging Face Hub). */
export const TIMM_ORIGIN_URL = "https://github.com/huggingface/pytorch-image-models";

/**
 * Which data a checkpoint was trained on: ImageNet-1k, ImageNet-22k (22k head), 22k (or
 * timm's ImageNet-12k) pre-trained then 1k fine-tuned, or FCMAE self-supervised on 1k images
 * (an encoder without head).
 */
export type Pretraining = "1k" | "22k" | "22k->1k" | "12k->1k" | "fcmae";

/** One published checkpoint. */
export interface ZooEntry {
  /** Our name: the file stem without `_ema`, e.g. `"convnext_tiny_1k_224"`. */
  readonly name: string;
  /**
   * File name in the cache, unique in the zoo: the official file name (e.g.
   * `"convnext_tiny_1k_224_ema.pth"`, `"convnextv2_tiny_1k_224_ema.pt"`), or for timm's
   * weights `<timm name>.safetensors` (the Hub calls every file `model.safetensors`).
   */
  readonly file: string;
  /**
   * Where the file is: a path under the base URL ({@link zooBaseUrl}; the official V1 and V2
   * files, e.g. `"convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt"`), or an absolute URL (timm's
   * weights on the Hugging Face Hub, which `CONVNEXT_BASE_URL` does not replace).
   */
  readonly path: string;
  /** Architecture in `lib/model/variants.ts`. */
  readonly architecture: ArchitectureName;
  /** Input resolution it was trained (or fine-tuned) at. */
  readonly resolution: 224 | 384 | 512;
  /**
   * Crop fraction of its evaluation below 384 px (0.875 for the official checkpoints,
   * timm's `crop_pct` for timm's); 1 at 384 and 512, where the evaluation warps.
   */
  readonly cropPct: number;
  /** Classes of its head: 1000 (ImageNet-1K), 21841 (ImageNet-22K), 0 (FCMAE: none). */
  readonly numClasses: 0 | 1000 | 21841;
  /** What it was trained on; see {@link Pretraining}. */
  readonly pretraining: Pretraining;
  /** Whether the file holds EMA weights (its name ends in `_ema.pth` / `_ema.pt`). */
  readonly ema: boolean;
  /** Published ImageNet-1K top-1 accuracy in percent, or `null` if none is published. */
  readonly top1: number | null;
  /** Published ImageNet-1K top-5 accuracy in percent, or `null` if none is published. */
  readonly top5: number | null;
  /** Published parameter count in millions, as its source rounds it, or `null`. */
  readonly paramsM: number | null;
  /** Published FLOPs in GFLOPs at {@link resolution}, or `null`. */
  readonly gflops: number | null;
  /** License of the weights (`"MIT"`, `"CC-BY-NC-4.0"`, `"Apache-2.0"`). */
  readonly license: string;
  /** Where the weights were published (timm's `origin_url`). */
  readonly originUrl: string;
}

type Row = [
  file: string,
  architecture: ArchitectureName,
  resolution: 224 | 384,
  pretraining: Pretraining,
  top1: number | null,
  paramsM: number | null,
  gflops: number | null,
];

// Transcribed from the README tables (see the module comment), in README order.
const ROWS: readonly Row[] = [
  // ImageNet-1K trained models.
  ["convnext_tiny_1k_224_ema.pth", "convnext_tiny", 224, "1k", 82.1, 28, 4.5],
  ["convnext_small_1k_224_ema.pth", "convnext_small", 224, "1k", 83.1, 50, 8.7],
  ["convnext_base_1k_224_ema.pth", "convnext_base", 224, "1k", 83.8, 89, 15.4],
  ["convnext_base_1k_384.pth", "convnext_base", 384, "1k", 85.1, 89, 45.0],
  ["convnext_large_1k_224_ema.pth", "convnext_large", 224, "1k", 84.3, 198, 34.4],
  ["convnext_large_1k_384.pth", "convnext_large", 384, "1k", 85.5, 198, 101.0],
  // ImageNet-22K trained models: the "22k model" column (21841-class heads).
  ["convnext_tiny_22k_224.pth", "convnext_tiny", 224, "22k", null, null, null],
  ["convnext_small_22k_224.pth", "convnext_small", 224, "22k", null, null, null],
  ["convnext_base_22k_224.pth", "convnext_base", 224, "22k", null, null, null],
  ["convnext_large_22k_224.pth", "convnext_large", 224, "22k", null, null, null],
  ["convnext_xlarge_22k_224.pth", "convnext_xlarge", 224, "22k", null, null, null],
  // ImageNet-22K trained models: the "1k model" column (fine-tuned on ImageNet-1K).
  ["convnext_tiny_22k_1k_224.pth", "convnext_tiny", 224, "22k->1k", 82.9, 29, 4.5],
  ["convnext_tiny_22k_1k_384.pth", "convnext_tiny", 384, "22k->1k", 84.1, 29, 13.1],
  ["convnext_small_22k_1k_224.pth", "convnext_small", 224, "22k->1k", 84.6, 50, 8.7],
  ["convnext_small_22k_1k_384.pth", "convnext_small", 384, "22k->1k", 85.8, 50, 25.5],
  ["convnext_base_22k_1k_224.pth", "convnext_base", 224, "22k->1k", 85.8, 89, 15.4],
  ["convnext_base_22k_1k_384.pth", "convnext_base", 384, "22k->1k", 86.8, 89, 47.0],
  ["convnext_large_22k_1k_224.pth", "convnext_large", 224, "22k->1k", 86.6, 198, 34.4],
  ["convnext_large_22k_1k_384.pth", "convnext_large", 384, "22k->1k", 87.5, 198, 101.0],
  ["convnext_xlarge_22k_1k_224_ema.pth", "convnext_xlarge", 224, "22k->1k", 87.0, 350, 60.9],
  ["convnext_xlarge_22k_1k_384_ema.pth", "convnext_xlarge", 384, "22k->1k", 87.8, 350, 179.0],
  // ImageNet-1K trained models (isotropic).
  ["convnext_iso_small_1k_224_ema.pth", "convnext_iso_small", 224, "1k", 78.7, 22, 4.3],
  ["convnext_iso_base_1k_224_ema.pth", "convnext_iso_base", 224, "1k", 82.0, 87, 16.9],
  ["convnext_iso_large_1k_224_ema.pth", "convnext_iso_large", 224, "1k", 82.6, 306, 59.7],
];

// The only top-5 in the README: its evaluation example for this checkpoint.
const TOP5: Readonly<Record<string, number>> = { "convnext_base_22k_1k_224.pth": 97.868 };

/** The crop of the official evaluation: 0.875 below 384 px, a warp (no crop) from 384 on. */
function officialCrop(resolution: number): number {
  return resolution < 384 ? 0.875 : 1;
}

function entryFromRow(
  [file, architecture, resolution, pretraining, top1, paramsM, gflops]: Row,
): ZooEntry {
  const stem = file.replace(/\.pth$/, "");
  const ema = stem.endsWith("_ema");
  return Object.freeze({
    name: ema ? stem.slice(0, -"_ema".length) : stem,
    file,
    path: file,
    architecture,
    resolution,
    cropPct: officialCrop(resolution),
    numClasses: pretraining === "22k" ? 21841 : 1000,
    pretraining,
    ema,
    top1,
    top5: TOP5[file] ?? null,
    paramsM,
    gflops,
    license: ZOO_LICENSE,
    originUrl: ZOO_ORIGIN_URL,
  });
}

type V2Row = [
  size: string,
  folder: "im1k" | "im22k" | "pt_only",
  resolution: 224 | 384 | 512,
  top1: number | null,
  paramsM: number,
  gflops: number | null,
];

// ConvNeXt V2 (https://github.com/facebookresearch/ConvNeXt-V2/blob/main/README.md,
// "Results and Pre-trained Models", read at commit 2553895): the ImageNet-1K fine-tuned
// models, the ImageNet-22K fine-tuned models (22k pre-trained, then fine-tuned on 1k: acc@1
// is ImageNet-1K accuracy, 1000-class heads) and the FCMAE pre-trained encoders, in README
// order. The README gives no top-5.
const V2_ROWS: readonly V2Row[] = [
  ["atto", "im1k", 224, 76.7, 3.7, 0.55],
  ["femto", "im1k", 224, 78.5, 5.2, 0.78],
  ["pico", "im1k", 224, 80.3, 9.1, 1.37],
  ["nano", "im1k", 224, 81.9, 15.6, 2.45],
  ["tiny", "im1k", 224, 83.0, 28.6, 4.47],
  ["base", "im1k", 224, 84.9, 89, 15.4],
  ["large", "im1k", 224, 85.8, 198, 34.4],
  ["huge", "im1k", 224, 86.3, 660, 115],
  ["nano", "im22k", 224, 82.1, 15.6, 2.45],
  ["nano", "im22k", 384, 83.4, 15.6, 7.21],
  ["tiny", "im22k", 224, 83.9, 28.6, 4.47],
  ["tiny", "im22k", 384, 85.1, 28.6, 13.1],
  ["base", "im22k", 224, 86.8, 89, 15.4],
  ["base", "im22k", 384, 87.7, 89, 45.2],
  ["large", "im22k", 224, 87.3, 198, 34.4],
  ["large", "im22k", 384, 88.2, 198, 101.1],
  ["huge", "im22k", 384, 88.7, 660, 337.9],
  ["huge", "im22k", 512, 88.9, 660, 600.8],
  ["atto", "pt_only", 224, null, 3.7, null],
  ["femto", "pt_only", 224, null, 5.2, null],
  ["pico", "pt_only", 224, null, 9.1, null],
  ["nano", "pt_only", 224, null, 15.6, null],
  ["tiny", "pt_only", 224, null, 28.6, null],
  ["base", "pt_only", 224, null, 89, null],
  ["large", "pt_only", 224, null, 198, null],
  ["huge", "pt_only", 224, null, 660, null],
];

function entryFromV2Row([size, folder, resolution, top1, paramsM, gflops]: V2Row): ZooEntry {
  const architecture = `convnextv2_${size}` as ArchitectureName;
  const fcmae = folder === "pt_only";
  const data = folder === "im22k" ? "22k" : "1k";
  const file = fcmae
    ? `${architecture}_1k_224_fcmae.pt`
    : `${architecture}_${data}_${resolution}_ema.pt`;
  return Object.freeze({
    name: fcmae ? `${architecture}_fcmae` : `${architecture}_${data}_${resolution}`,
    file,
    path: `convnextv2/${folder}/${file}`,
    architecture,
    resolution,
    cropPct: officialCrop(resolution),
    numClasses: fcmae ? 0 : 1000,
    pretraining: fcmae ? "fcmae" : folder === "im22k" ? "22k->1k" : "1k",
    ema: !fcmae,
    top1,
    top5: null,
    paramsM,
    gflops,
    license: V2_LICENSE,
    originUrl: V2_ORIGIN_URL,
  });
}

type TimmRow = [
  timmName: string,
  name: string,
  architecture: ArchitectureName,
  pretraining: Pretraining,
  cropPct: number,
  top1: number,
  top5: number,
  paramsM: number,
];

// timm's weights of its small V1 sizes at 224 px: names and crop from timm's `default_cfgs`
// (timm/models/convnext.py), top-1, top-5, crop and parameters from timm's
// results/results-imagenet.csv (the rows at 224; read at commit aa4b585). timm publishes no
// FLOPs there. Not listed: `convnext_nano.r384_in12k_ft_in1k`, evaluated with a resize and
// center crop at 384 px, which the official evaluation transform (a warp at 384) is not.
// deno-fmt-ignore
const TIMM_ROWS: readonly TimmRow[] = [
  ["convnext_atto.d2_in1k", "convnext_atto_1k_224", "convnext_atto", "1k", 0.875, 75.672, 92.914, 3.70],
  ["convnext_femto.d1_in1k", "convnext_femto_1k_224", "convnext_femto", "1k", 0.875, 77.498, 93.678, 5.22],
  ["convnext_pico.d1_in1k", "convnext_pico_1k_224", "convnext_pico", "1k", 0.875, 79.516, 94.554, 9.05],
  ["convnext_nano.d1h_in1k", "convnext_nano_1k_224", "convnext_nano", "1k", 0.95, 80.762, 95.332, 15.59],
  ["convnext_nano.in12k_ft_in1k", "convnext_nano_12k_1k_224", "convnext_nano", "12k->1k", 0.95, 82.306,
    96.338, 15.59],
];

function entryFromTimmRow(
  [timmName, name, architecture, pretraining, cropPct, top1, top5, paramsM]: TimmRow,
): ZooEntry {
  return Object.freeze({
    name,
    file: `${timmName}.safetensors`,
    path: `https://huggingface.co/timm/${timmName}/resolve/main/model.safetensors`,
    architecture,
    resolution: 224,
    cropPct,
    numClasses: 1000,
    pretraining,
    ema: false,
    top1,
    top5,
    paramsM,
    gflops: null,
    license: TIMM_LICENSE,
    originUrl: TIMM_ORIGIN_URL,
  });
}

/**
 * Every published checkpoint: the official V1 ones in the README's order, then ConvNeXt V2's
 * in its README's order, then timm's small V1 sizes.
 *
 * @example
 * ```ts
 * import { ZOO } from "./zoo.ts";
 * for (const e of ZOO.slice(0, 3)) console.log(e.name, e.top1, e.license);
 * if (!ZOO.some((e) => e.name === "convnext_tiny_1k_224")) throw new Error("no convnext_tiny");
 * if (!ZOO.some((e) => e.name === "convnextv2_tiny_fcmae")) throw new Error("no FCMAE tiny");
 * ```
 */
export const ZOO: readonly ZooEntry[] = Object.freeze([
  ...ROWS.map(entryFromRow),
  ...V2_ROWS.map(entryFromV2Row),
  ...TIMM_ROWS.map(entryFromTimmRow),
]);

/** The names of all {@link ZOO} entries, in order. */
export const ZOO_NAMES: readonly string[] = Object.freeze(ZOO.map((e) => e.name));

// Sanity checks at load time: a typo in the table must fail loudly, not at download.
for (const e of ZOO) {
  if (!Object.hasOwn(ARCHITECTURES, e.architecture)) {
    throw new Error(`zoo: ${e.name}: unknown architecture "${e.architecture}"`);
  }
}

/** A file name without its checkpoint extension (`.pth`, `.pt`, `.safetensors`). */
function fileStem(file: string): string {
  return file.replace(/\.(pth|pt|safetensors)$/, "");
}

/**
 * Looks up a checkpoint by our name (`convnext_tiny_1k_224`), by the file stem
 * (`convnext_tiny_1k_224_ema`, `convnextv2_tiny_1k_224_fcmae`, timm's
 * `convnext_atto.d2_in1k`) or by the file name (`convnext_tiny_1k_224_ema.pth`). Unknown
 * names are an error listing all names.
 *
 * @example
 * ```ts
 * import { getZooEntry } from "./zoo.ts";
 * const entry = getZooEntry("convnext_xlarge_22k_1k_384");
 * console.log(entry.file); // "convnext_xlarge_22k_1k_384_ema.pth"
 * ```
 */
export function getZooEntry(name: string): ZooEntry {
  const key = name.trim().toLowerCase();
  const found = ZOO.find((e) => e.name === key || e.file === key || fileStem(e.file) === key);
  if (found) return found;
  throw new Error(
    `zoo: unknown model ${JSON.stringify(name)}${
      didYouMean(name, ZOO_NAMES) || `; expected one of: ${ZOO_NAMES.join(", ")}`
    }`,
  );
}

/** True when `name` is a zoo name, file stem or file name ({@link getZooEntry} accepts it). */
export function isZooName(name: string): boolean {
  try {
    getZooEntry(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * The base URL in effect: `$CONVNEXT_BASE_URL` if set, else {@link DEFAULT_BASE_URL},
 * always ending in exactly one `/`.
 */
export function zooBaseUrl(base: string | undefined = Deno.env.get(BASE_URL_ENV)): string {
  const raw = base && base.trim() !== "" ? base.trim() : DEFAULT_BASE_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${BASE_URL_ENV}: expected an http(s) or file URL, got ${JSON.stringify(raw)}`);
  }
  if (!["http:", "https:", "file:"].includes(url.protocol)) {
    throw new Error(`${BASE_URL_ENV}: expected an http(s) or file URL, got ${JSON.stringify(raw)}`);
  }
  return raw.replace(/\/+$/, "") + "/";
}

/**
 * Download URL of a checkpoint: its path under {@link zooBaseUrl}, or its own absolute URL
 * (timm's weights on the Hugging Face Hub).
 *
 * @example
 * ```ts
 * import { getZooEntry, zooUrl } from "./zoo.ts";
 * console.log(zooUrl(getZooEntry("convnext_tiny_1k_224")));
 * // "https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth" ($CONVNEXT_BASE_URL unset)
 * const mirror = zooUrl(getZooEntry("convnext_tiny_1k_224"), "file:///mirror");
 * if (mirror !== "file:///mirror/convnext_tiny_1k_224_ema.pth") throw new Error(mirror);
 * console.log(zooUrl(getZooEntry("convnextv2_tiny_1k_224"), "file:///mirror"));
 * // "file:///mirror/convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt"
 * ```
 */
export function zooUrl(entry: ZooEntry, base?: string): string {
  return /^https?:\/\//.test(entry.path) ? entry.path : zooBaseUrl(base) + entry.path;
}

/**
 * The evaluation preprocessing of a checkpoint: its resolution and crop (resize + center
 * crop below 384 px, a warp at 384 and 512, as the V1 and V2 evaluations do), bicubic,
 * ImageNet mean and std.
 *
 * @example
 * ```ts
 * import { getZooEntry, zooPreprocessing } from "./zoo.ts";
 * console.log(zooPreprocessing(getZooEntry("convnextv2_huge_22k_512")).mode); // "warp"
 * console.log(zooPreprocessing(getZooEntry("convnext_nano_1k_224")).cropPct); // 0.95 (timm's)
 * ```
 */
export function zooPreprocessing(entry: ZooEntry): Preprocessing {
  return preprocessingFor(entry.resolution, entry.cropPct);
}

/** URL of the ImageNet-22K class names ({@link LABELS_22K_FILE}) under {@link zooBaseUrl}. */
export function labels22kUrl(base?: string): string {
  return zooBaseUrl(base) + LABELS_22K_FILE;
}

/** What each non-MIT license of the zoo asks of a user, in a few words. */
const LICENSE_TERMS: Readonly<Record<string, string>> = {
  [V2_LICENSE]: "non-commercial use only, with attribution",
  [TIMM_LICENSE]: "keep the license and notices when redistributing",
};

/**
 * The notice to show before downloading a checkpoint whose weights are not MIT-licensed
 * (ConvNeXt V2: CC-BY-NC 4.0, non-commercial), or undefined for MIT weights.
 *
 * @example
 * ```ts
 * import { getZooEntry, licenseNotice } from "./zoo.ts";
 * console.log(licenseNotice(getZooEntry("convnextv2_tiny_1k_224")));
 * // "convnextv2_tiny_1k_224: the weights are licensed CC-BY-NC-4.0 (non-commercial use only, ..."
 * if (licenseNotice(getZooEntry("convnext_tiny_1k_224")) !== undefined) throw new Error("MIT");
 * ```
 */
export function licenseNotice(entry: ZooEntry): string | undefined {
  if (entry.license === ZOO_LICENSE) return undefined;
  const terms = LICENSE_TERMS[entry.license];
  return `${entry.name}: the weights are licensed ${entry.license}${
    terms ? ` (${terms})` : ""
  }, not MIT; see ${entry.originUrl}`;
}

/**
 * The zoo as an aligned text table: name, architecture, resolution, classes,
 * pretraining, top-1, parameters, FLOPs, license and URL.
 *
 * @example
 * ```ts
 * import { formatZooTable } from "./zoo.ts";
 * console.log(formatZooTable()); // one row per checkpoint: name, resolution, top-1, params, URL
 * ```
 */
export function formatZooTable(entries: readonly ZooEntry[] = ZOO, base?: string): string {
  const header = [
    "name",
    "architecture",
    "res",
    "classes",
    "pretrain",
    "top-1",
    "params",
    "FLOPs",
    "license",
    "url",
  ];
  const rows = entries.map((e) => [
    e.name,
    e.architecture,
    String(e.resolution),
    String(e.numClasses),
    e.pretraining,
    e.top1 === null ? "-" : e.top1.toFixed(1),
    e.paramsM === null ? "-" : `${e.paramsM}M`,
    e.gflops === null ? "-" : `${e.gflops.toFixed(1)}G`,
    e.license,
    zooUrl(e, base),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}
