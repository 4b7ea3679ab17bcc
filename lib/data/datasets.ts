/**
 * Small public datasets, downloaded once into the cache.
 *
 * @module
 */
import { join } from "node:path";
import { exists, withTempDir } from "../util/fs.ts";
import { cacheDir } from "../util/cache.ts";
import { download, type DownloadOptions } from "../util/download.ts";
import { extractTar } from "./tar.ts";

/** The flower photos of TensorFlow's image-classification tutorials (3,670 photos, 5 classes, CC-BY). */
export const FLOWER_PHOTOS_URL =
  "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz";

/**
 * The flower photos dataset as an image folder (`<dir>/<class>/*.jpg`): downloaded from
 * {@link FLOWER_PHOTOS_URL} (or `url`) into `<cache>/datasets/` and extracted once. The
 * extracted folder appears atomically, so an interrupted run starts over cleanly.
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
  await withTempDir(extracted, async (tmp) => {
    const files = await extractTar(archive, tmp);
    if (!files.some((f) => f.startsWith("flower_photos/"))) {
      throw new Error(`${archive}: expected a flower_photos/ folder in the archive`);
    }
  });
  return folder;
}
