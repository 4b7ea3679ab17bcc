/**
 * File-system helpers that never leave a half-written file or directory behind:
 * content is written under a temporary name in the same directory and renamed
 * into place, which is atomic on POSIX file systems.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";

function tempSuffix(): string {
  return `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
}

/** True when `path` exists (file, directory or anything else). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Removes `path` (recursively for a directory) if it exists; a missing path is fine. */
export async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/**
 * Writes `data` to `path` atomically: a temporary file next to it, then a rename,
 * so readers see either the old content or the complete new content.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./fs.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/out/meta.json`, JSON.stringify({ ok: true }));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${tempSuffix()}`);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    await removeIfExists(tmp).catch(() => {});
    throw e;
  }
}

/** Whether process `pid` is gone (Linux: no /proc entry; elsewhere it cannot tell: false). */
async function processGone(pid: number): Promise<boolean> {
  if (Deno.build.os !== "linux" || pid === Deno.pid) return false;
  return !(await exists(`/proc/${pid}`));
}

/**
 * Removes the temporary siblings of `path` (`.<name>.tmp-<pid>-…`, `.<name>.old-<pid>-…`)
 * left by processes that no longer run: a Ctrl-C during a conversion kills the process before
 * it can clean up, and its partial copy (87 MB for convnext_tiny) would stay forever.
 */
export async function removeStaleTemps(path: string): Promise<string[]> {
  const prefix = `.${basename(path)}.`;
  const removed: string[] = [];
  try {
    for await (const e of Deno.readDir(dirname(path))) {
      const m = e.name.startsWith(prefix) &&
        /^(?:tmp|old)-(\d+)-[0-9a-f]{8}$/.exec(e.name.slice(prefix.length));
      if (m && await processGone(Number(m[1]))) {
        await removeIfExists(join(dirname(path), e.name));
        removed.push(e.name);
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return removed;
}

/**
 * Builds a directory atomically: `fn` fills a fresh temporary directory next to
 * `finalDir`, which is then renamed to `finalDir`. If `fn` throws, the temporary
 * directory is removed and `finalDir` is untouched. An existing `finalDir` is
 * replaced (moved aside first, removed after the rename).
 *
 * @example
 * ```ts
 * import { withTempDir } from "./fs.ts";
 * const cache = await Deno.makeTempDir();
 * await withTempDir(`${cache}/models/convnext_tiny_1k_224`, async (dir) => {
 *   await Deno.writeTextFile(`${dir}/model.json`, "{}");
 * });
 * await Deno.remove(cache, { recursive: true });
 * ```
 */
export async function withTempDir<T>(
  finalDir: string,
  fn: (tmpDir: string) => Promise<T>,
): Promise<T> {
  const parent = dirname(finalDir);
  await Deno.mkdir(parent, { recursive: true });
  await removeStaleTemps(finalDir);
  const tmp = join(parent, `.${basename(finalDir)}.tmp-${tempSuffix()}`);
  await Deno.mkdir(tmp);
  let result: T;
  try {
    result = await fn(tmp);
  } catch (e) {
    await removeIfExists(tmp).catch(() => {});
    throw e;
  }
  // rename(2) cannot replace a non-empty directory, so move the old one aside.
  let old: string | undefined;
  if (await exists(finalDir)) {
    old = join(parent, `.${basename(finalDir)}.old-${tempSuffix()}`);
    await Deno.rename(finalDir, old);
  }
  try {
    await Deno.rename(tmp, finalDir);
  } catch (e) {
    if (old) await Deno.rename(old, finalDir).catch(() => {});
    await removeIfExists(tmp).catch(() => {});
    throw e;
  }
  if (old) await removeIfExists(old);
  return result;
}
