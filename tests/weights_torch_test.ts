// PyTorch checkpoint reader against tensors PyTorch itself summarised
// (tests/fixtures/checkpoints/reference.json, from tools/fixtures/make_checkpoints.py):
// keys, shapes, dtypes, first values, and two checksums (a plain and a position-weighted
// sum, so a permuted tensor fails), plus the error paths.

import assert from "node:assert/strict";
import { decodeToFloat32, halfToFloat } from "../lib/weights/dtype.ts";
import { readTorchCheckpoint, sniffFormat } from "../lib/weights/torch.ts";
import type { StateDict } from "../lib/weights/types.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);
const path = (f: string) => new URL(f, DIR).pathname;

interface TensorSummary {
  dtype: string;
  shape: number[];
  first: number[];
  sum: number;
  wsum: number;
}
type Reference = Record<string, {
  tensors: Record<string, TensorSummary>;
  values?: Record<string, number[]>;
  ema?: Record<string, TensorSummary>;
}>;
const REF = JSON.parse(await Deno.readTextFile(new URL("reference.json", DIR))) as Reference;

/** Checks a state dict against PyTorch's summaries, key order included. */
function assertMatches(sd: StateDict, ref: Record<string, TensorSummary>, what: string): void {
  assert.deepEqual([...sd.keys()], Object.keys(ref), `${what}: keys`);
  for (const [name, r] of Object.entries(ref)) {
    const t = sd.get(name)!;
    assert.equal(t.dtype, r.dtype, `${what} ${name}: dtype`);
    assert.deepEqual(t.shape, r.shape, `${what} ${name}: shape`);
    assert.equal(t.data.length, r.shape.reduce((a, b) => a * b, 1), `${what} ${name}: size`);
    // float32 values are exact; PyTorch printed them as float64.
    r.first.forEach((v, i) => assert.equal(t.data[i], Math.fround(v), `${what} ${name}[${i}]`));
    let sum = 0, wsum = 0;
    t.data.forEach((v, i) => {
      sum += v;
      wsum += v * ((i % 7) + 1);
    });
    const tol = 1e-6 * (1 + Math.abs(r.wsum));
    assert.ok(Math.abs(sum - r.sum) <= tol, `${what} ${name}: sum ${sum} vs ${r.sum}`);
    assert.ok(Math.abs(wsum - r.wsum) <= tol, `${what} ${name}: weighted sum ${wsum} vs ${r.wsum}`);
  }
}

for (const file of Object.keys(REF).filter((f) => f.endsWith(".pth"))) {
  Deno.test(`torch: ${file} matches PyTorch's tensors`, async () => {
    assertMatches(await readTorchCheckpoint(path(file)), REF[file].tensors, file);
  });
}

Deno.test("torch: bytes and path give the same state dict", async () => {
  const a = await readTorchCheckpoint(path("official_tiny.pth"));
  const b = await readTorchCheckpoint(await Deno.readFile(path("official_tiny.pth")));
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) assert.deepEqual(b.get(k)!.data, t.data, k);
});

Deno.test("torch: non-contiguous views, shared storages, dtypes, scalar: exact values", async () => {
  const values = REF["views.pth"].values!;
  for (const file of ["views.pth", "views_p4.pth", "views_zip64.pth"]) {
    const sd = await readTorchCheckpoint(path(file));
    for (const [name, want] of Object.entries(values)) {
      assert.deepEqual([...sd.get(name)!.data], want.map(Math.fround), `${file} ${name}`);
    }
    assert.deepEqual(sd.get("transposed")!.shape, [5, 3]);
    assert.deepEqual(sd.get("permuted4d")!.shape, [4, 5, 3, 2]);
    assert.deepEqual(sd.get("scalar")!.shape, []);
    assert.equal(sd.get("float64")!.dtype, "float64");
    assert.equal(sd.get("int64")!.dtype, "int64");
  }
});

Deno.test("torch: training checkpoint: model by default, model_ema on request, args skipped", async () => {
  const file = path("training.pth");
  assertMatches(await readTorchCheckpoint(file), REF["training.pth"].tensors, "model");
  assertMatches(
    await readTorchCheckpoint(file, { key: "model_ema" }),
    REF["training.pth"].ema!,
    "model_ema",
  );
  await assert.rejects(
    readTorchCheckpoint(file, { key: "nope" }),
    /no dict under key "nope" \(top-level keys: model, model_ema, optimizer, epoch, args\)/,
  );
  // The optimizer's state has tensors only under nested dicts: not a state dict.
  await assert.rejects(
    readTorchCheckpoint(file, { key: "optimizer" }),
    /no tensors found in the checkpoint/,
  );
});

Deno.test("torch: legacy checkpoint says how to re-save", async () => {
  await assert.rejects(
    readTorchCheckpoint(path("legacy.pth")),
    /legacy\.pth: legacy PyTorch checkpoint \(pre-1\.6 raw pickle format\).*torch\.save\(torch\.load\(path\), new_path\).*_use_new_zipfile_serialization=True/,
  );
  const tar = new Uint8Array(512);
  tar.set(new TextEncoder().encode("ustar"), 257);
  assert.equal(sniffFormat(tar), "legacy-tar");
  await assert.rejects(readTorchCheckpoint(tar), /pre-1\.6 tar format/);
});

Deno.test("torch: hostile pickle names os system and runs nothing", async () => {
  await assert.rejects(
    readTorchCheckpoint(path("hostile.pth")),
    /hostile\.pth: hostile\/data\.pkl: refusing to load global os\.system \("os system"\)/,
  );
});

Deno.test("torch: truncated checkpoint and non-checkpoints", async () => {
  const bytes = await Deno.readFile(path("official_tiny.pth"));
  await assert.rejects(
    readTorchCheckpoint(bytes.subarray(0, bytes.length >> 1)),
    /<bytes>: not a complete zip archive \(truncated or corrupt download\?\)/,
  );
  await assert.rejects(
    readTorchCheckpoint(new TextEncoder().encode("<html>404</html>")),
    /not a PyTorch checkpoint/,
  );
  await assert.rejects(
    readTorchCheckpoint(path("timm_mini.safetensors")),
    /safetensors file, not a PyTorch checkpoint/,
  );
});

Deno.test("dtype decoding: big-endian storages and half/bfloat16 bit patterns", () => {
  // float32 1.0 is 0x3f800000; -2.5 is 0xc0200000.
  assert.deepEqual(
    [...decodeToFloat32(new Uint8Array([0x3f, 0x80, 0, 0, 0xc0, 0x20, 0, 0]), "float32", 2, true)],
    [1, -2.5],
  );
  // int64 little-endian -1 and 2^40.
  assert.deepEqual(
    [...decodeToFloat32(
      new Uint8Array([255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 1, 0, 0]),
      "int64",
      2,
    )],
    [-1, 2 ** 40],
  );
  // bfloat16 0x3fc0 = 1.5 (the top half of float32 0x3fc00000); half 0xfc00 = -Infinity.
  assert.deepEqual([...decodeToFloat32(new Uint8Array([0xc0, 0x3f]), "bfloat16", 1)], [1.5]);
  assert.equal(halfToFloat(0xfc00), -Infinity);
  assert.equal(halfToFloat(0x3555), 0.333251953125); // 1365/4096
});
