/**
 * The files behind the zoo, fetched into the cache: checkpoints (verified against the sha256
 * recorded at download; the license of non-MIT weights is shown first) and the ImageNet-22K
 * class names.
 *
 * @module
 */

import { exists } from "../util/fs.ts";
import { checkpointPath, labelsPath, readSha256Record, verifySha256Record } from "../util/cache.ts";
import { download, DownloadError, type DownloadOptions } from "../util/download.ts";
import {
  BASE_URL_ENV,
  labels22kUrl,
  LABELS_22K_FILE,
  licenseNotice,
  type ZooEntry,
  zooUrl,
} from "./zoo.ts";

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Returns the cached path of a zoo checkpoint, downloading it on first use. On
 * later use the file is checked against the sha256 recorded at download; a
 * mismatch is an error telling the user to delete the file. Before downloading weights that
 * are not MIT-licensed (ConvNeXt V2: CC-BY-NC 4.0), their license is printed on stderr
 * (unless `quiet`; `opts.progress.write` receives it instead when given).
 *
 * @example
 * ```ts
 * import { getZooEntry } from "./zoo.ts";
 * import { ensureCheckpoint } from "./fetch.ts";
 * // An offline mirror (CONVNEXT_BASE_URL) and a fresh cache (CONVNEXT_CACHE) for the example.
 * const mirror = await Deno.makeTempDir();
 * Deno.env.set("CONVNEXT_BASE_URL", `file://${mirror}/`);
 * Deno.env.set("CONVNEXT_CACHE", await Deno.makeTempDir());
 * const entry = getZooEntry("convnext_tiny_1k_224");
 * const tiny = new URL("../../tests/fixtures/download/tiny.pth", import.meta.url);
 * await Deno.copyFile(tiny, `${mirror}/${entry.file}`);
 * const path = await ensureCheckpoint(entry, { quiet: true }); // downloaded once, then verified
 * console.log(path);
 * for (const name of ["CONVNEXT_BASE_URL", "CONVNEXT_CACHE"]) Deno.env.delete(name);
 * ```
 */
export async function ensureCheckpoint(
  entry: ZooEntry,
  opts: DownloadOptions = {},
): Promise<string> {
  const path = checkpointPath(entry.file);
  if (await exists(path)) {
    await verifySha256Record(path);
    return path;
  }
  const notice = licenseNotice(entry);
  if (notice && !opts.quiet) {
    (opts.progress?.write ?? ((t: string) => console.error(t.trimEnd())))(`${notice}\n`);
  }
  // A torch zip (.pth, .pt) or timm's safetensors: checked as such once complete.
  const verify = entry.file.endsWith(".safetensors") ? "safetensors" : "zip";
  await withOfflineHint(download(zooUrl(entry), path, { verify, ...opts }));
  return path;
}

/** What to do without network, added to a download that failed for lack of it. */
export const OFFLINE_HINT = `without network: set ${BASE_URL_ENV} to a mirror of the files ` +
  "(file:///path/ works), or load a local checkpoint file or converted model folder instead of a " +
  "zoo name";

/** Runs a download; an `offline` or `network` failure gets {@link OFFLINE_HINT} appended. */
async function withOfflineHint<T>(pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (e) {
    if (e instanceof DownloadError && (e.kind === "offline" || e.kind === "network")) {
      throw new DownloadError(`${e.message}; ${OFFLINE_HINT}`, e.kind, e.status, { cause: e });
    }
    throw e;
  }
}

/**
 * The ImageNet-22K class names (index -> words) from the official
 * `label_to_words.json`, downloaded once into `<cache>/labels/`.
 *
 * @example
 * ```ts
 * import { fetchLabels22k } from "./fetch.ts";
 * // An offline mirror (CONVNEXT_BASE_URL) and a fresh cache (CONVNEXT_CACHE) for the example.
 * const mirror = await Deno.makeTempDir();
 * Deno.env.set("CONVNEXT_BASE_URL", `file://${mirror}/`);
 * Deno.env.set("CONVNEXT_CACHE", await Deno.makeTempDir());
 * await Deno.writeTextFile(`${mirror}/label_to_words.json`, '{"0": "tench", "1": "goldfish"}');
 * const names = await fetchLabels22k({ quiet: true }); // 21841 names from the official file
 * console.log(names); // ["tench", "goldfish"]
 * for (const name of ["CONVNEXT_BASE_URL", "CONVNEXT_CACHE"]) Deno.env.delete(name);
 * ```
 */
export async function fetchLabels22k(opts: DownloadOptions = {}): Promise<string[]> {
  const path = labelsPath(LABELS_22K_FILE);
  if (await exists(path)) {
    if (await readSha256Record(path) !== null) await verifySha256Record(path);
  } else {
    await withOfflineHint(download(labels22kUrl(), path, {
      ...opts,
      verify: async (p) => void parseLabels(await Deno.readTextFile(p), p),
    }));
  }
  return parseLabels(await Deno.readTextFile(path), path);
}

/**
 * Parses `label_to_words.json` (`{"0": "words", "1": ...}`) into an array indexed
 * by class; the keys must be exactly 0..n-1.
 */
export function parseLabels(text: string, source = LABELS_22K_FILE): string[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: expected JSON, ${errorText(e)}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new Error(`${source}: expected an object mapping class index to words`);
  }
  const entries = Object.entries(data as Record<string, unknown>);
  const out: string[] = new Array(entries.length);
  for (const [key, value] of entries) {
    const i = Number(key);
    // No leading zeros: "01" and "1" would fill one index twice and leave a hole.
    if (!/^(0|[1-9]\d*)$/.test(key) || i >= entries.length || typeof value !== "string") {
      throw new Error(
        `${source}: expected keys "0".."${entries.length - 1}" with string values, ` +
          `got ${JSON.stringify(key)}: ${JSON.stringify(value)}`.slice(0, 300),
      );
    }
    out[i] = value;
  }
  return out;
}
