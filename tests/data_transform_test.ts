import assert from "node:assert/strict";
import { readImage } from "../lib/data/decode.ts";
import {
  evalResizeCrop,
  evalTransform,
  IMAGENET_MEAN,
  IMAGENET_STD,
  normalize,
  shorterSideSize,
} from "../lib/data/transform.ts";
import { loadExpected, repoPath, sha256 } from "./data_helpers.ts";

const expected = await loadExpected();

for (const c of expected.transform) {
  Deno.test(
    `eval transform of ${c.file} at ${c.size} (crop_pct ${c.crop_pct}) matches torchvision`,
    async () => {
      const rgb = await readImage(repoPath(c.file));
      // The uint8 image before ToTensor: resize + crop must be bit-identical.
      const crop = evalResizeCrop(rgb, c.size, { cropPct: c.crop_pct });
      assert.equal(await sha256(crop.data), c.crop_sha256);
      const x = evalTransform(rgb, c.size, { cropPct: c.crop_pct });
      assert.equal(x.length, c.shape.reduce((a, b) => a * b, 1));
      let maxErr = 0;
      c.samples.forEach((v, k) => {
        maxErr = Math.max(maxErr, Math.abs(x[k * c.sample_stride] - v));
      });
      assert.ok(maxErr <= 1e-6, `sampled max |diff| ${maxErr} > 1e-6`);
      let sum = 0;
      for (const v of x) sum += v;
      assert.ok(Math.abs(sum - c.sum) <= 1e-6 * x.length, `sum ${sum} vs ${c.sum}`);
      // Float32 ops in torch's order make the whole tensor bit-identical.
      assert.equal(await sha256(x), c.float_sha256);
    },
  );
}

Deno.test("normalization equals torchvision ToTensor+Normalize for every uint8 value", async () => {
  const t = expected.normalize_table;
  assert.deepEqual(t.mean, [...IMAGENET_MEAN]);
  assert.deepEqual(t.std, [...IMAGENET_STD]);
  const bytes = await Deno.readFile(repoPath(`tests/fixtures/preprocess/${t.file}`));
  const ref = new Float32Array(bytes.buffer, bytes.byteOffset, 3 * 256);
  const ramp = new Uint8Array(256 * 3);
  for (let v = 0; v < 256; v++) ramp[v * 3] = ramp[v * 3 + 1] = ramp[v * 3 + 2] = v;
  const x = normalize({ width: 256, height: 1, data: ramp });
  for (let c = 0; c < 3; c++) {
    for (let v = 0; v < 256; v++) {
      // Bit-exact, which is stricter than the 1e-6 target.
      assert.equal(x[v * 3 + c], ref[c * 256 + v], `channel ${c} value ${v}`);
    }
  }
});

Deno.test("shorter-side sizes follow torchvision's int(size * long / short)", () => {
  assert.deepEqual(shorterSideSize(500, 375, 256), [341, 256]);
  assert.deepEqual(shorterSideSize(375, 500, 256), [256, 341]);
  assert.deepEqual(shorterSideSize(300, 300, 256), [256, 256]);
  assert.deepEqual(shorterSideSize(181, 411, 256), [256, 581]);
});

Deno.test("eval transform output shapes and argument errors", () => {
  const img = { width: 40, height: 30, data: new Uint8Array(40 * 30 * 3) };
  assert.equal(evalTransform(img, 224).length, 224 * 224 * 3);
  assert.equal(evalTransform(img, 384).length, 384 * 384 * 3);
  assert.throws(() => evalTransform(img, 32), /size must be an integer > 32/);
  assert.throws(() => evalTransform(img, 224, { cropPct: 0 }), /cropPct must be > 0/);
});
