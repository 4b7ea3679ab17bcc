// safetensors reader and the readStateDict dispatcher, against PyTorch's summaries
// (tests/fixtures/checkpoints/reference.json), plus malformed files.

import assert from "node:assert/strict";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { readStateDict } from "../lib/weights/state_dict.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);
const path = (f: string) => new URL(f, DIR).pathname;

type Summary = { dtype: string; shape: number[]; first: number[]; sum: number; wsum: number };
const REF = JSON.parse(await Deno.readTextFile(new URL("reference.json", DIR))) as Record<
  string,
  { tensors: Record<string, Summary> }
>;

function checksum(data: Float32Array): [number, number] {
  let sum = 0, wsum = 0;
  data.forEach((v, i) => {
    sum += v;
    wsum += v * ((i % 7) + 1);
  });
  return [sum, wsum];
}

for (const file of ["timm_mini.safetensors", "hf_mini_bf16.safetensors"]) {
  Deno.test(`safetensors: ${file} matches PyTorch's tensors (path and bytes)`, async () => {
    const ref = REF[file].tensors;
    for (const source of [path(file), await Deno.readFile(path(file))]) {
      const sd = await readSafetensors(source);
      assert.deepEqual([...sd.keys()], Object.keys(ref));
      for (const [name, r] of Object.entries(ref)) {
        const t = sd.get(name)!;
        assert.equal(t.dtype, r.dtype, name);
        assert.deepEqual(t.shape, r.shape, name);
        r.first.forEach((v, i) => assert.equal(t.data[i], Math.fround(v), `${name}[${i}]`));
        const [sum, wsum] = checksum(t.data);
        const tol = 1e-6 * (1 + Math.abs(r.wsum));
        assert.ok(
          Math.abs(sum - r.sum) <= tol && Math.abs(wsum - r.wsum) <= tol,
          `${name}: checksums`,
        );
      }
    }
  });
}

Deno.test("readStateDict dispatches by content, not by name", async () => {
  const bytes = await Deno.readFile(path("timm_mini.safetensors"));
  const tmp = await Deno.makeTempFile({ suffix: ".pth" }); // misleading extension
  try {
    await Deno.writeFile(tmp, bytes);
    const sd = await readStateDict(tmp);
    assert.deepEqual([...sd.keys()], Object.keys(REF["timm_mini.safetensors"].tensors));
  } finally {
    await Deno.remove(tmp);
  }
  const pth = await readStateDict(path("official_tiny.pth"));
  assert.deepEqual([...pth.keys()], Object.keys(REF["official_tiny.pth"].tensors));
  await assert.rejects(readStateDict(path("legacy.pth")), /legacy PyTorch checkpoint/);
  await assert.rejects(
    readStateDict(new Uint8Array(16)),
    /<bytes>: not a PyTorch checkpoint or safetensors file/,
  );
});

/** A safetensors file from a header object and data bytes. */
function build(header: unknown, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

Deno.test("safetensors: F16 values and malformed headers", async () => {
  // 1.0 = 0x3c00, -2.0 = 0xc000, 65504 (max half) = 0x7bff, smallest subnormal 2^-24 = 0x0001
  const data = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00]);
  const sd = await readSafetensors(
    build({ x: { dtype: "F16", shape: [2, 2], data_offsets: [0, 8] } }, data),
  );
  assert.deepEqual([...sd.get("x")!.data], [1, -2, 65504, 2 ** -24]);
  await assert.rejects(
    readSafetensors(build({ x: { dtype: "F16", shape: [3], data_offsets: [0, 8] } }, data)),
    /tensor "x" spans 8 bytes, expected 6/,
  );
  await assert.rejects(
    readSafetensors(build({ x: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, data)),
    /bad data_offsets \[0,16\] \(data is 8 bytes; truncated\?\)/,
  );
  await assert.rejects(
    readSafetensors(build({ x: { dtype: "C64", shape: [1], data_offsets: [0, 8] } }, data)),
    /unsupported dtype "C64"/,
  );
  const full = build({ x: { dtype: "F16", shape: [4], data_offsets: [0, 8] } }, data);
  await assert.rejects(
    readSafetensors(full.subarray(0, 20)),
    /header length \d+ exceeds the file size 20/,
  );
});
