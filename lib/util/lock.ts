/**
 * Exclusive locks between processes that share the cache: two `classify` runs on an empty
 * cache must not write the same `.part` or rename over each other. The lock is the
 * operating system's advisory file lock (`flock`), so a process that dies, even killed,
 * releases it: no stale lock to clean up.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** Options of {@link withFileLock}. */
export interface FileLockOptions {
  /** Called once when another process holds the lock and this one starts waiting. */
  onWait?: () => void;
}

/**
 * Runs `fn` while holding the exclusive lock of `path`. The lock file lives in a per-user
 * folder of the temp dir, named by a hash of the absolute path, so that the user's and the
 * cache's folders get no extra files; it stays there (removing it could let a third process
 * lock a fresh file while a waiter still holds the old one).
 *
 * @example
 * ```ts
 * import { withFileLock } from "./lock.ts";
 * const dir = await Deno.makeTempDir();
 * const value = await withFileLock(`${dir}/model.pth`, () => Promise.resolve(42));
 * if (value !== 42) throw new Error("the result of fn is returned");
 * ```
 */
export async function withFileLock<T>(
  path: string,
  fn: () => Promise<T>,
  options: FileLockOptions = {},
): Promise<T> {
  const dir = join(tmpdir(), `convnext-locks-${Deno.uid() ?? "user"}`);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const key = createHash("sha256").update(resolve(path)).digest("hex").slice(0, 32);
  using file = await Deno.open(join(dir, `${key}.lock`), { create: true, write: true });
  // Not acquired within a moment: another process holds it; say so once.
  const notice = setTimeout(() => options.onWait?.(), 200);
  try {
    await file.lock(true);
  } finally {
    clearTimeout(notice);
  }
  try {
    return await fn();
  } finally {
    await file.unlock();
  }
}
