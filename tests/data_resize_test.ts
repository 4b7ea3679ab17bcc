import assert from "node:assert/strict";
import { readImage } from "../lib/data/decode.ts";
import { resizeBicubic } from "../lib/data/resize.ts";
import type { RgbImage } from "../lib/util/image.ts";
import { diffStats, loadExpected, repoPath, sha256 } from "./data_helpers.ts";

const expected = await loadExpected();
const decoded = new Map<string, RgbImage>();
async function source(file: string): Promise<RgbImage> {
  if (!decoded.has(file)) decoded.set(file, await readImage(repoPath(file)));
  return decoded.get(file)!;
}

for (const c of expected.resize) {
  Deno.test(`resize ${c.file} to ${c.width}x${c.height} is bit-identical to PIL BICUBIC`, async () => {
    const src = await source(c.file);
    const out = resizeBicubic(src, c.width, c.height);
    assert.equal(out.width, c.width);
    assert.equal(out.height, c.height);
    assert.equal(out.data.length, c.width * c.height * 3);
    assert.equal(await sha256(out.data), c.sha256);
  });
}

Deno.test("small resize matches PIL's full array (debuggable case)", async () => {
  const { file, input, width, height } = expected.small_resize;
  const ref = await Deno.readFile(repoPath(`tests/fixtures/preprocess/${file}`));
  const out = resizeBicubic(await source(input), width, height);
  assert.deepEqual(diffStats(out.data, ref), { count: 0, max: 0 });
});

Deno.test("resizing a crop region equals cropping the full resize", async () => {
  const src = await source("data/images/rocket.jpg");
  for (
    const [w, h, crop] of [
      [341, 228, { left: 58, top: 2, width: 224, height: 224 }],
      [640, 300, { left: 10, top: 40, width: 300, height: 200 }], // no horizontal pass
      [300, 427, { left: 5, top: 100, width: 200, height: 100 }], // no vertical pass
      [640, 427, { left: 1, top: 2, width: 3, height: 4 }], // no resize at all
      [1000, 700, { left: 0, top: 0, width: 1000, height: 700 }],
    ] as const
  ) {
    const full = resizeBicubic(src, w, h);
    const part = resizeBicubic(src, w, h, { crop });
    assert.equal(part.width, crop.width);
    assert.equal(part.height, crop.height);
    for (let y = 0; y < crop.height; y++) {
      const from = ((crop.top + y) * w + crop.left) * 3;
      const want = full.data.subarray(from, from + crop.width * 3);
      const got = part.data.subarray(y * crop.width * 3, (y + 1) * crop.width * 3);
      assert.deepEqual(got, want, `${w}x${h} crop row ${y}`);
    }
  }
  const crop = { left: 300, top: 0, width: 100, height: 10 };
  assert.throws(() => resizeBicubic(src, 341, 256, { crop }), /not inside 341x256/);
});

Deno.test("resize does not alias its input and rejects bad sizes", () => {
  const img = { width: 2, height: 2, data: new Uint8Array(12).fill(7) };
  const same = resizeBicubic(img, 2, 2);
  assert.notEqual(same.data, img.data);
  assert.deepEqual(same.data, img.data);
  assert.throws(() => resizeBicubic(img, 0, 3), /positive integers/);
  assert.throws(() => resizeBicubic(img, 2.5, 3), /positive integers/);
  assert.throws(() => resizeBicubic({ ...img, data: new Uint8Array(5) }, 3, 3), /expected 2x2x3/);
});
