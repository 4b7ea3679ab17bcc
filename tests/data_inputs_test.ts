import assert from "node:assert/strict";
import { join } from "node:path";
import { expandImagePaths } from "../lib/data/inputs.ts";

/** A temp folder with `files` (relative paths) created empty; returns its path. */
async function tree(files: string[]): Promise<string> {
  const root = await Deno.makeTempDir();
  for (const f of files) {
    await Deno.mkdir(join(root, f, ".."), { recursive: true });
    await Deno.writeFile(join(root, f), new Uint8Array());
  }
  return root;
}

const FILES = [
  "b/2.png",
  "b/10.JPG",
  "a.jpg",
  "notes.txt",
  ".hidden.jpg",
  ".cache/x.png",
  "c/d/e.webp",
  "c/d/f.jpeg",
];

Deno.test("expandImagePaths: files stay, folders give their images sorted, hidden skipped", async () => {
  const root = await tree(FILES);
  try {
    const got = await expandImagePaths([join(root, "notes.txt"), root]);
    // Python's sorted order per folder ("10.JPG" < "2.png"), non-images and hidden entries out.
    assert.deepEqual(got.map((p) => p.slice(root.length + 1)), [
      "notes.txt",
      "a.jpg",
      "b/10.JPG",
      "b/2.png",
      "c/d/e.webp",
      "c/d/f.jpeg",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("expandImagePaths: *, ?, [...] and ** as a shell with globstar would", async () => {
  const root = await tree(FILES);
  const rel = async (pattern: string) =>
    (await expandImagePaths([join(root, pattern)])).map((p) => p.slice(root.length + 1));
  try {
    assert.deepEqual(await rel("*.jpg"), ["a.jpg"]); // a shell's * skips dotfiles too
    assert.deepEqual(await rel("b/?.png"), ["b/2.png"]);
    assert.deepEqual(await rel("b/[0-9]*"), ["b/10.JPG", "b/2.png"]);
    assert.deepEqual(await rel("b/[!1]*"), ["b/2.png"]);
    assert.deepEqual(await rel("**/*.png"), ["b/2.png"]); // not into .cache/
    assert.deepEqual(await rel("c/**/f.*"), ["c/d/f.jpeg"]);
    assert.deepEqual(await rel(".*.jpg"), [".hidden.jpg"]); // explicit dot: matched
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("expandImagePaths: a one-line error naming the argument", async () => {
  const root = await tree(["empty/readme.txt", "x.png"]);
  try {
    const cases: [string, RegExp][] = [
      [join(root, "nope.png"), /nope\.png: no such file or folder$/],
      [join(root, "empty"), /empty: no image files in this folder$/],
      [join(root, "*.gif"), /\*\.gif: no file matches this pattern$/],
      [join(root, "missing/*.png"), /missing\/\*\.png: no file matches this pattern$/],
    ];
    for (const [arg, message] of cases) {
      await assert.rejects(expandImagePaths([join(root, "x.png"), arg]), message);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
