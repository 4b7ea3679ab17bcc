/**
 * Small public datasets, downloaded once into the cache.
 *
 * @module
 */
import { join } from "node:path";
import { exists, removeIfExists, withTempDir } from "../util/fs.ts";
import { cacheDir, sha256RecordPath } from "../util/cache.ts";
import { download, type DownloadOptions } from "../util/download.ts";
import { extractTar, TarError } from "./tar.ts";

/** The flower photos of TensorFlow's image-classification tutorials (3,670 photos, 5 classes, CC-BY). */
export const FLOWER_PHOTOS_URL =
  "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz";

/**
 * What a file that is not the expected archive looks like, for the error: a web page (a
 * login wall, an error page served with 200) is the usual case.
 */
async function sniff(path: string): Promise<string> {
  using file = await Deno.open(path, { read: true });
  const head = new Uint8Array(256);
  const n = (await file.read(head)) ?? 0;
  const start = new TextDecoder().decode(head.subarray(0, n)).trimStart().toLowerCase();
  return /^<(!doctype html|html|head|body|\?xml)/.test(start) ? "an HTML page, not a .tgz" : "";
}

/**
 * Extracts `archive` into `extracted` (atomically). An archive that is not what it should
 * be is removed with its sha256 record, so the next run downloads it again instead of
 * failing the same way forever; the error says so in one line.
 */
async function extractOrDiscard(archive: string, extracted: string, top: string): Promise<void> {
  try {
    await withTempDir(extracted, async (tmp) => {
      const files = await extractTar(archive, tmp);
      if (!files.some((f) => f.startsWith(`${top}/`))) {
        throw new TarError(`${archive}: expected a ${top}/ folder in the archive`);
      }
    });
  } catch (e) {
    // Only a bad archive is removed: a full disk, say, is not the download's fault.
    if (!(e instanceof TarError)) throw e;
    const what = await sniff(archive).catch(() => "") ||
      e.message.replace(`${archive}: `, "").split("\n")[0];
    await removeIfExists(archive);
    await removeIfExists(sha256RecordPath(archive));
    throw new Error(`${archive}: ${what}; removed; the next run downloads it again`, {
      cause: e,
    });
  }
}

/**
 * The flower photos dataset as an image folder (`<dir>/<class>/*.jpg`): downloaded from
 * {@link FLOWER_PHOTOS_URL} (or `url`) into `<cache>/datasets/` and extracted once. The
 * extracted folder appears atomically, so an interrupted run starts over cleanly; an
 * archive that cannot be extracted (a web page, a truncated file) is removed with a one-line
 * error, and the next run downloads it again.
 *
 * @returns the folder whose subfolders are the classes (daisy, dandelion, roses, sunflowers, tulips).
 * For example, `await ensureFlowerPhotos()` returns `<cache>/datasets/flower_photos/flower_photos`,
 * ready for `finetune({ data: dir, ... })` (220 MB, downloaded on first use).
 */
export async function ensureFlowerPhotos(
  options: DownloadOptions & { url?: string } = {},
): Promise<string> {
  const root = join(cacheDir(), "datasets");
  const extracted = join(root, "flower_photos");
  const folder = join(extracted, "flower_photos");
  if (await exists(folder)) return folder;
  const archive = join(root, "flower_photos.tgz");
  if (!await exists(archive)) {
    await download(options.url ?? FLOWER_PHOTOS_URL, archive, { verify: "none", ...options });
  }
  await extractOrDiscard(archive, extracted, "flower_photos");
  return folder;
}
