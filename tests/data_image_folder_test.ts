/**
 * Tests of the ImageFolder reader (lib/data/image_folder.ts) that training and evaluation
 * share: torchvision's order (classes and files by code point, sub-folders walked as
 * `sorted(os.walk())`), the extension set, hidden entries, a given class list.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  comparePython,
  findClasses,
  IMAGE_EXTENSIONS,
  isImageFile,
  listImageFolder,
} from "../lib/data/image_folder.ts";

async function touch(path: string): Promise<void> {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeFile(path, new Uint8Array());
}

Deno.test("comparePython orders by code point, not by UTF-16 unit", () => {
  // U+FF5E is one unit 0xFF5E; U+1F600 is the surrogate pair 0xD83D 0xDE00.
  const names = ["\u{1F600}", "\uFF5E", "b", "B", "a", "ab"];
  assert.deepEqual([...names].sort(comparePython), ["B", "a", "ab", "b", "\uFF5E", "\u{1F600}"]);
  assert.deepEqual([...names].sort(), ["B", "a", "ab", "b", "\u{1F600}", "\uFF5E"]);
});

Deno.test("the extension set is torchvision's, matched case-insensitively", () => {
  assert.deepEqual(IMAGE_EXTENSIONS, [
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
  ]);
  assert.ok(isImageFile("a.JPEG") && isImageFile("b.WebP") && isImageFile("c.tif"));
  assert.ok(!isImageFile("notes.txt") && !isImageFile("jpg") && !isImageFile("x.gif"));
});

Deno.test("listImageFolder: torchvision's order and labels, hidden entries skipped", async () => {
  const root = await Deno.makeTempDir({ prefix: "image_folder_" });
  try {
    for (
      const f of [
        "\u{1F600}/a.png",
        "\uFF5E/b.png",
        "cat/z.jpg",
        "cat/B.PNG",
        "cat/a.txt",
        "cat/sub/c.jpg",
        "cat/sub-2/d.jpg",
        "cat/sub/deeper/e.jpg",
        "cat/.hidden.jpg",
        "cat/._a.jpg",
        "cat/.cache/f.jpg",
        ".ipynb_checkpoints/g.jpg",
        "dog/x.webp",
      ]
    ) await touch(join(root, f));
    await Deno.mkdir(join(root, "empty"));
    await Deno.writeFile(join(root, "loose.jpg"), new Uint8Array());
    const ds = await listImageFolder(root);
    assert.deepEqual(ds.classes, ["cat", "dog", "empty", "\uFF5E", "\u{1F600}"]);
    assert.deepEqual(await findClasses(root), ds.classes);
    assert.deepEqual(ds.samples.map((s) => [s.name, s.label]), [
      ["cat/B.PNG", 0],
      ["cat/z.jpg", 0],
      // sorted(os.walk()): "cat/sub" < "cat/sub-2" < "cat/sub/deeper" ("-" < "/").
      ["cat/sub/c.jpg", 0],
      ["cat/sub-2/d.jpg", 0],
      ["cat/sub/deeper/e.jpg", 0],
      ["dog/x.webp", 1],
      ["\uFF5E/b.png", 3],
      ["\u{1F600}/a.png", 4],
    ]);
    assert.ok(ds.samples.every((s) => s.path === join(root, s.name)));

    // A class list (e.g. synsets) gives the labels; classes without a folder are allowed.
    const given = await listImageFolder(root, { classes: ["dog", "missing", "cat"] });
    assert.deepEqual(given.classes, ["dog", "missing", "cat"]);
    assert.deepEqual(given.samples.map((s) => s.label), [2, 2, 2, 2, 2, 0]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("listImageFolder: errors name the data option and the directory", async () => {
  const root = await Deno.makeTempDir({ prefix: "image_folder_" });
  try {
    const message = (re: RegExp) => (e: Error) => re.test(e.message);
    await assert.rejects(
      listImageFolder(join(root, "missing")),
      message(/^data .*missing: cannot read the directory \(no such directory\)$/),
    );
    await assert.rejects(listImageFolder(root), message(/^data .*: expected one sub-folder/));
    await touch(join(root, "a", "notes.txt"));
    await assert.rejects(
      listImageFolder(root),
      message(/^data .*: no \.jpg\/\.jpeg\/\.png\/.* images in the class folders a$/),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
