import assert from "node:assert/strict";
import { cmykToRgb, decodeImage, readImage } from "../lib/data/decode.ts";
import { loadExpected, repoPath, sha256 } from "./data_helpers.ts";

const expected = await loadExpected();

for (const c of expected.decode) {
  Deno.test(`decode ${c.file} (PIL mode ${c.pil_mode}) is bit-identical to PIL convert("RGB")`, async () => {
    const img = await readImage(repoPath(c.file));
    assert.equal(img.width, c.width);
    assert.equal(img.height, c.height);
    assert.equal(img.data.length, c.width * c.height * 3);
    assert.equal(await sha256(img.data), c.sha256);
  });
}

Deno.test("decodeImage on bytes equals readImage on the path", async () => {
  const path = repoPath("tests/fixtures/preprocess/inputs/cmyk_200x150.jpg");
  const a = await readImage(path);
  const b = await decodeImage(await Deno.readFile(path), "cmyk");
  assert.deepEqual(a, b);
});

Deno.test("cmykToRgb matches PIL's CMYK→RGB for every (ink, black) pair", async () => {
  const grid = new Uint8Array(256 * 256 * 4);
  for (let y = 0; y < 256; y++) {
    for (let x = 0; x < 256; x++) {
      const p = (y * 256 + x) * 4;
      grid[p] = grid[p + 1] = grid[p + 2] = x;
      grid[p + 3] = y;
    }
  }
  assert.equal(await sha256(cmykToRgb(grid)), expected.cmyk.sha256);
  assert.deepEqual(Array.from(cmykToRgb(new Uint8Array([0, 0, 0, 0, 255, 0, 0, 0]))), [
    255,
    255,
    255,
    0,
    255,
    255,
  ]);
});

Deno.test("a missing file is a one-line error naming it", async () => {
  const path = "/nonexistent/dir/missing.jpg";
  await assert.rejects(readImage(path), (err: Error) => {
    assert.match(err.message, /missing\.jpg/);
    assert.match(err.message, /not found/);
    assert.ok(!err.message.includes("\n"));
    return true;
  });
});

Deno.test("a non-image file is a one-line error naming it", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jpg" });
  try {
    await Deno.writeTextFile(path, "this is not an image\n");
    await assert.rejects(readImage(path), (err: Error) => {
      assert.ok(err.message.startsWith(`cannot decode image '${path}'`), err.message);
      assert.ok(!err.message.includes("\n"));
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("a truncated JPEG is an error, not silently grey pixels", async () => {
  const bytes = await Deno.readFile(repoPath("data/images/coffee.jpg"));
  await assert.rejects(
    decodeImage(bytes.subarray(0, bytes.length >> 1), "half.jpg"),
    /cannot decode image 'half\.jpg'/,
  );
});
