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

/** Temporary siblings: `.<name>.tmp-<pid>-<8 hex>` (being written), `.<name>.old-…` (replaced). */
const TEMP_SIBLING = /^\.(.+)\.(?:tmp|old)-(\d+)-[0-9a-f]{8}$/;

/**
 * The name a temporary sibling written by {@link writeFileAtomic} or {@link withTempDir}
 * stands for (`.model.tmp-123-0a1b2c3d` -> `model`), or undefined for any other name: a
 * folder's owner can tell such copies from files someone else put there.
 */
export function tempSiblingOf(name: string): string | undefined {
  return TEMP_SIBLING.exec(name)?.[1];
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
      const m = e.name.startsWith(prefix) && TEMP_SIBLING.exec(e.name);
      if (m && m[1] === basename(path) && await processGone(Number(m[2]))) {
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
  let old: string | undefined;
  try {
    // rename(2) cannot replace a non-empty directory, so move the old one aside.
    if (await exists(finalDir)) {
      const aside = join(parent, `.${basename(finalDir)}.old-${tempSuffix()}`);
      await Deno.rename(finalDir, aside);
      old = aside;
    }
    await Deno.rename(tmp, finalDir);
  } catch (e) {
    if (old) await Deno.rename(old, finalDir).catch(() => {});
    // The complete copy must not stay behind as a hidden folder.
    await removeIfExists(tmp).catch(() => {});
    if (e instanceof Deno.errors.Busy || (e as { code?: string }).code === "EBUSY") {
      // The current folder of a process, or a mount point: it cannot be renamed.
      throw new Error(
        `cannot replace ${finalDir}: it is in use (a process's current folder or a mount point)`,
        { cause: e },
      );
    }
    throw e;
  }
  if (old) await removeIfExists(old);
  return result;
}
