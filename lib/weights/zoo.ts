/**
 * The model zoo: every checkpoint released by facebookresearch/ConvNeXt.
 *
 * Source of every file name, URL, accuracy, parameter count and FLOPs below: the
 * official README (https://github.com/facebookresearch/ConvNeXt/blob/main/README.md,
 * "Results and Pre-trained Models", read at commit 048efcea897d999aed302f2639b6270aedf8d4c8).
 * The URLs agree with timm's `timm/models/convnext.py` `default_cfgs`.
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

import { type ArchitectureName, ARCHITECTURES } from "../model/variants.ts";

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

/** Which data a checkpoint was trained on. */
export type Pretraining = "1k" | "22k" | "22k->1k";

/** One official checkpoint. */
export interface ZooEntry {
  /** Our name: the file stem without `_ema`, e.g. `"convnext_tiny_1k_224"`. */
  readonly name: string;
  /** Official file name, e.g. `"convnext_tiny_1k_224_ema.pth"`. */
  readonly file: string;
  /** Architecture in `lib/model/variants.ts`. */
  readonly architecture: ArchitectureName;
  /** Input resolution it was trained (or fine-tuned) at. */
  readonly resolution: 224 | 384;
  /** Classes of its head: 1000 (ImageNet-1K) or 21841 (ImageNet-22K). */
  readonly numClasses: 1000 | 21841;
  /** `"1k"`, `"22k"` (22K head) or `"22k->1k"` (22K pretrained, 1K fine-tuned). */
  readonly pretraining: Pretraining;
  /** Whether the file holds EMA weights (its name ends in `_ema.pth`). */
  readonly ema: boolean;
  /** Official ImageNet-1K top-1 accuracy in percent, or `null` if none is published. */
  readonly top1: number | null;
  /** Official ImageNet-1K top-5 accuracy in percent, or `null` if none is published. */
  readonly top5: number | null;
  /** Official parameter count in millions, as the README rounds it, or `null`. */
  readonly paramsM: number | null;
  /** Official FLOPs in GFLOPs at {@link resolution}, or `null`. */
  readonly gflops: number | null;
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

function entryFromRow([file, architecture, resolution, pretraining, top1, paramsM, gflops]: Row) {
  const stem = file.replace(/\.pth$/, "");
  const ema = stem.endsWith("_ema");
  return Object.freeze(
    {
      name: ema ? stem.slice(0, -"_ema".length) : stem,
      file,
      architecture,
      resolution,
      numClasses: pretraining === "22k" ? 21841 : 1000,
      pretraining,
      ema,
      top1,
      top5: TOP5[file] ?? null,
      paramsM,
      gflops,
    } satisfies ZooEntry,
  );
}

/**
 * Every official checkpoint, in the README's order.
 *
 * @example
 * ```ts
 * import { ZOO } from "./zoo.ts";
 * for (const e of ZOO.slice(0, 3)) console.log(e.name, e.top1);
 * if (!ZOO.some((e) => e.name === "convnext_tiny_1k_224")) throw new Error("no convnext_tiny");
 * ```
 */
export const ZOO: readonly ZooEntry[] = Object.freeze(ROWS.map(entryFromRow));

/** The names of all {@link ZOO} entries, in order. */
export const ZOO_NAMES: readonly string[] = Object.freeze(ZOO.map((e) => e.name));

// Sanity checks at load time: a typo in the table must fail loudly, not at download.
for (const e of ZOO) {
  if (!Object.hasOwn(ARCHITECTURES, e.architecture)) {
    throw new Error(`zoo: ${e.name}: unknown architecture "${e.architecture}"`);
  }
}

/**
 * Looks up a checkpoint by our name (`convnext_tiny_1k_224`), by the official
 * file stem (`convnext_tiny_1k_224_ema`) or by the file name
 * (`convnext_tiny_1k_224_ema.pth`). Unknown names are an error listing all names.
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
  const found = ZOO.find((e) => e.name === key || e.file === key || e.file === `${key}.pth`);
  if (found) return found;
  throw new Error(
    `zoo: unknown model ${JSON.stringify(name)}; expected one of: ${ZOO_NAMES.join(", ")}`,
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
 * Download URL of a checkpoint, under {@link zooBaseUrl}.
 *
 * @example
 * ```ts
 * import { getZooEntry, zooUrl } from "./zoo.ts";
 * console.log(zooUrl(getZooEntry("convnext_tiny_1k_224")));
 * // "https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth" ($CONVNEXT_BASE_URL unset)
 * const mirror = zooUrl(getZooEntry("convnext_tiny_1k_224"), "file:///mirror");
 * if (mirror !== "file:///mirror/convnext_tiny_1k_224_ema.pth") throw new Error(mirror);
 * ```
 */
export function zooUrl(entry: ZooEntry, base?: string): string {
  return zooBaseUrl(base) + entry.file;
}

/** URL of the ImageNet-22K class names ({@link LABELS_22K_FILE}) under {@link zooBaseUrl}. */
export function labels22kUrl(base?: string): string {
  return zooBaseUrl(base) + LABELS_22K_FILE;
}

/**
 * The zoo as an aligned text table: name, architecture, resolution, classes,
 * pretraining, top-1, parameters, FLOPs and URL.
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
    zooUrl(e, base),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}
