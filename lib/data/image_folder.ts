/**
 * The ImageFolder layout (`DIR/<class>/<image>`), read as torchvision's `ImageFolder` reads
 * it, for training and evaluation alike:
 *
 * - classes are the sub-folders of `DIR` (symbolic links followed), sorted by code point as
 *   Python's `sorted()` sorts `str`; a class's label is its position in that list, or in
 *   the class list the caller gives (e.g. a synset list);
 * - a class's images are the files under its folder, sub-folders included, walked in the
 *   order of `sorted(os.walk(folder, followlinks=True))` with each folder's files sorted,
 *   whose extension is one of {@link IMAGE_EXTENSIONS} (case-insensitive);
 * - unlike torchvision, entries whose name starts with `.` are skipped (a Jupyter
 *   `.ipynb_checkpoints` folder is no class, a macOS `._photo.jpg` no image).
 *
 * @module
 */
import { join } from "node:path";

/** File extensions of images, as torchvision's `IMG_EXTENSIONS`; matched case-insensitively. */
export const IMAGE_EXTENSIONS: readonly string[] = [
  ".jpg",
  ".jpeg",
  ".png",
  ".ppm",
  ".bmp",
  ".pgm",
  ".tif",
  ".tiff",
  ".webp",
];

/**
 * Python's string order: by code point (not by UTF-16 unit, as `<` on JS strings), the
 * order of `sorted()` on `str` and so of torchvision's class and file lists.
 *
 * @example
 * ```ts
 * import { comparePython } from "./image_folder.ts";
 * // JS's default sort compares UTF-16 units: "😀" (a surrogate pair, 0xD83D...) before "～".
 * const names = ["\u{1F600}", "\uFF5E"].sort(comparePython);
 * console.log(names); // ["～", "😀"]: U+FF5E < U+1F600
 * if (names[0] !== "\uFF5E") throw new Error(`${names}`);
 * ```
 */
export function comparePython(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Whether a file name has one of the {@link IMAGE_EXTENSIONS}. */
export function isImageFile(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

/** One image of an {@link ImageFolder}. */
export interface ImageFolderSample {
  /** Path to read the image from (`root` joined with {@link ImageFolderSample.name}). */
  path: string;
  /** Path relative to the root, with `/` (`<class>/<file>`; stable across machines). */
  name: string;
  /** Class index: the class's position in {@link ImageFolder.classes}. */
  label: number;
}

/** A dataset in the ImageFolder layout, listed by {@link listImageFolder}. */
export interface ImageFolder {
  /** The root directory as given. */
  root: string;
  /** Class names in label order. */
  classes: string[];
  /** Every image: classes in sorted-name order, then files in walk order. */
  samples: ImageFolderSample[];
}

/** Options of {@link listImageFolder}. */
export interface ImageFolderOptions {
  /**
   * The class names in label order (e.g. a synset list), as torchvision's
   * `class_to_idx`: only these folders are read, and a class without a folder has no
   * images. Default: {@link findClasses}.
   */
  classes?: readonly string[];
}

function isHidden(name: string): boolean {
  return name.startsWith(".");
}

/**
 * Entries of a directory, symbolic links resolved as `os.walk(followlinks=True)` does;
 * a dangling link counts as a file (listed, failing when read). Hidden entries are skipped.
 */
async function listDir(dir: string): Promise<{ dirs: string[]; files: string[] }> {
  const dirs: string[] = [];
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (isHidden(e.name)) continue;
    let isDir = e.isDirectory;
    let isFile = e.isFile;
    if (e.isSymlink) {
      try {
        const s = await Deno.stat(join(dir, e.name));
        isDir = s.isDirectory;
        isFile = s.isFile;
      } catch {
        isFile = true;
      }
    }
    if (isDir) dirs.push(e.name);
    else if (isFile) files.push(e.name);
  }
  return { dirs, files };
}

function firstLine(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such directory";
  return ((e as Error)?.message ?? String(e)).split("\n")[0];
}

/**
 * The class names of an ImageFolder: the sub-folders of `root`, sorted by
 * {@link comparePython} (torchvision's `find_classes`, hidden folders skipped); empty when
 * there is none.
 *
 * @throws Error naming `data` and `root` when it is not a readable directory.
 * @example
 * ```ts
 * import { findClasses } from "./image_folder.ts";
 * // The tests' small ImageFolder (ImageNet wnids as class folders); a flower dataset gives
 * // ["daisy", "dandelion", "roses", "sunflowers", "tulips"].
 * const root = new URL("../../tests/fixtures/eval/imagefolder", import.meta.url).pathname;
 * const classes = await findClasses(root);
 * console.log(classes); // ["n01443537", "n02123045", "n03063599", "n04266014", "n07920052"]
 * if (classes.length !== 5) throw new Error(`${classes}`);
 * ```
 */
export async function findClasses(root: string): Promise<string[]> {
  try {
    return (await listDir(root)).dirs.sort(comparePython);
  } catch (e) {
    throw new Error(`data ${root}: cannot read the directory (${firstLine(e)})`);
  }
}

/** Images under a class folder, in the order of `sorted(os.walk(dir))` + `sorted(files)`. */
async function walkImages(dir: string, rel: string): Promise<{ path: string; name: string }[]> {
  // sorted(os.walk()) orders the (root, dirs, files) tuples by their root path string.
  const roots: { path: string; name: string; files: string[] }[] = [];
  const visit = async (path: string, name: string) => {
    const { dirs, files } = await listDir(path);
    roots.push({ path, name, files });
    for (const d of dirs) await visit(join(path, d), `${name}/${d}`);
  };
  await visit(dir, rel);
  roots.sort((a, b) => comparePython(a.name, b.name));
  const out: { path: string; name: string }[] = [];
  for (const r of roots) {
    for (const f of r.files.sort(comparePython)) {
      if (isImageFile(f)) out.push({ path: join(r.path, f), name: `${r.name}/${f}` });
    }
  }
  return out;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/**
 * List a dataset in the ImageFolder layout (`root/<class>/<image>`, see the module doc)
 * with each image's class index, as torchvision's `ImageFolder` does.
 *
 * @throws Error naming `data` and `root` when it is not a readable directory, has no class
 *   folder, or no image in its class folders.
 * @example
 * ```ts
 * import { listImageFolder } from "./image_folder.ts";
 * const root = new URL("../../tests/fixtures/eval/imagefolder", import.meta.url).pathname;
 * const { classes, samples } = await listImageFolder(root);
 * console.log(classes.length, samples.length, samples[0]);
 * // samples[0]: { path: ".../n01443537/img_0.JPEG", name: "n01443537/img_0.JPEG", label: 0 }
 * if (samples[0].label !== 0) throw new Error("the first class's images come first");
 * ```
 */
export async function listImageFolder(
  root: string,
  options: ImageFolderOptions = {},
): Promise<ImageFolder> {
  const classes = options.classes ? [...options.classes] : await findClasses(root);
  if (classes.length === 0) {
    throw new Error(
      `data ${root}: expected one sub-folder per class (DIR/<class>/<image>), found none`,
    );
  }
  const index = new Map(classes.map((c, i) => [c, i]));
  const samples: ImageFolderSample[] = [];
  // torchvision walks the classes in sorted-name order, whatever order gives the labels.
  for (const name of [...index.keys()].sort(comparePython)) {
    const dir = join(root, name);
    if (options.classes && !await isDirectory(dir)) continue;
    const label = index.get(name)!;
    for (const f of await walkImages(dir, name)) samples.push({ ...f, label });
  }
  if (samples.length === 0) {
    const shown = classes.slice(0, 5).join(", ") + (classes.length > 5 ? ", ..." : "");
    throw new Error(
      `data ${root}: no ${IMAGE_EXTENSIONS.join("/")} images in the class folders ${shown}`,
    );
  }
  return { root, classes, samples };
}
