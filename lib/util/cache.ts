/**
 * Where downloaded checkpoints and converted models live, and the sha256 records
 * that let later runs notice a corrupted or modified download.
 *
 * Layout under {@link cacheDir}:
 * ```text
 * checkpoints/<file>.pth          downloaded checkpoint
 * checkpoints/<file>.pth.sha256   its sha256, recorded at download ("<hex>  <file>")
 * checkpoints/<file>.pth.part     an unfinished download, resumed by the next run
 * models/<name>/                  converted TF.js layers model (written by the converter;
 *                                 its convnext.json records each file's size and sha256,
 *                                 and a damaged model is converted again on its next load)
 * labels/label_to_words.json      ImageNet-22K class names (fetched on demand)
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { basename, isAbsolute, join, resolve } from "node:path";
import { writeFileAtomic } from "./fs.ts";

/**
 * The cache root: `$CONVNEXT_CACHE`, else `$XDG_CACHE_HOME/convnext-tfjs`, else
 * `~/.cache/convnext-tfjs`. Read on every call so tests can point it elsewhere.
 *
 * @example
 * ```ts
 * import { cacheDir } from "./cache.ts";
 * const before = Deno.env.get("CONVNEXT_CACHE");
 * Deno.env.set("CONVNEXT_CACHE", "/tmp/cnx");
 * console.log(cacheDir()); // "/tmp/cnx"
 * if (before === undefined) Deno.env.delete("CONVNEXT_CACHE");
 * else Deno.env.set("CONVNEXT_CACHE", before);
 * ```
 */
export function cacheDir(): string {
  const explicit = Deno.env.get("CONVNEXT_CACHE");
  if (explicit) return resolve(explicit);
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
  if (xdg && isAbsolute(xdg)) return join(xdg, "convnext-tfjs");
  const home = Deno.env.get("HOME") || Deno.env.get("USERPROFILE") || homedir();
  if (!home) {
    throw new Error(
      "cache: cannot find a cache directory: set CONVNEXT_CACHE, XDG_CACHE_HOME or HOME",
    );
  }
  return join(home, ".cache", "convnext-tfjs");
}

function checkFileName(what: string, name: string): string {
  if (!name || name !== basename(name) || name === "." || name === "..") {
    throw new Error(`cache: ${what} must be a plain file name, got ${JSON.stringify(name)}`);
  }
  return name;
}

/** Directory of downloaded checkpoints: `<cache>/checkpoints`. */
export function checkpointsDir(): string {
  return join(cacheDir(), "checkpoints");
}

/** Path of a downloaded checkpoint file, e.g. `<cache>/checkpoints/convnext_tiny_1k_224_ema.pth`. */
export function checkpointPath(file: string): string {
  return join(checkpointsDir(), checkFileName("checkpoint file", file));
}

/** Directory of a converted TF.js model: `<cache>/models/<name>`. */
export function modelDir(name: string): string {
  return join(cacheDir(), "models", checkFileName("model name", name));
}

/** Path of a label file: `<cache>/labels/<file>`. */
export function labelsPath(file: string): string {
  return join(cacheDir(), "labels", checkFileName("label file", file));
}

/** Path of the sha256 record of `path`: `<path>.sha256`. */
export function sha256RecordPath(path: string): string {
  return `${path}.sha256`;
}

/**
 * The sha256 of a file as lowercase hex, read in chunks so multi-GB checkpoints
 * never sit in memory.
 *
 * @example
 * ```ts
 * import { sha256File } from "./cache.ts";
 * const hex = await sha256File(new URL("../../data/images/chelsea.png", import.meta.url).pathname);
 * if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(hex);
 * ```
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}

/** Writes the sha256 record of `path` (atomically), in `sha256sum` format. */
export async function writeSha256Record(path: string, sha256: string): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(sha256)) {
    throw new Error(`cache: sha256 for ${path} must be 64 lowercase hex digits, got "${sha256}"`);
  }
  await writeFileAtomic(sha256RecordPath(path), `${sha256}  ${basename(path)}\n`);
}

/** The sha256 recorded for `path`, or `null` when there is no record. */
export async function readSha256Record(path: string): Promise<string | null> {
  const recordPath = sha256RecordPath(path);
  let text: string;
  try {
    text = await Deno.readTextFile(recordPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const hex = text.trim().split(/\s+/)[0]?.toLowerCase() ?? "";
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new Error(
      `cache: ${recordPath}: expected a sha256 (64 hex digits), got "${
        text.trim().slice(0, 80)
      }"; ` +
        `delete it and ${path} to download again`,
    );
  }
  return hex;
}

/**
 * Checks `path` against its recorded sha256 and returns the hash. A file without
 * a record (copied into the cache by hand) gets one now. A mismatch is an error
 * telling the user which files to delete.
 *
 * @example
 * ```ts
 * import { sha256File, verifySha256Record, writeSha256Record } from "./cache.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a.pth`, "weights");
 * await writeSha256Record(`${dir}/a.pth`, await sha256File(`${dir}/a.pth`)); // as download does
 * await verifySha256Record(`${dir}/a.pth`); // the file still matches its record
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function verifySha256Record(path: string): Promise<string> {
  const recorded = await readSha256Record(path);
  const actual = await sha256File(path);
  if (recorded === null) {
    await writeSha256Record(path, actual);
    return actual;
  }
  if (recorded !== actual) {
    throw new Error(
      `cache: ${path} is corrupt or was modified: sha256 ${actual} does not match ${recorded} ` +
        `recorded at download; delete ${path} and ${sha256RecordPath(path)} to download it again`,
    );
  }
  return actual;
}
