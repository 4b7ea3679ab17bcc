// Zip reader: stored, deflated and ZIP64 archives written by PyTorch, Python's zipfile
// and a field-by-field ZIP64 writer (tools/fixtures/make_checkpoints.py); reading from
// bytes and from a path must agree; truncated and corrupt archives give clear errors.

import assert from "node:assert/strict";
import { crc32 } from "../lib/weights/crc32.ts";
import { ZipArchive } from "../lib/weights/zip.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);
const path = (f: string) => new URL(f, DIR).pathname;

async function readAll(zip: ZipArchive): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const name of zip.entries.keys()) out.set(name, (await zip.read(name)).slice());
  return out;
}

async function withZip<T>(
  source: string | Uint8Array,
  f: (z: ZipArchive) => Promise<T>,
): Promise<T> {
  const zip = await ZipArchive.open(source);
  try {
    return await f(zip);
  } finally {
    zip.close();
  }
}

Deno.test("crc32 of the standard check string", () => {
  // The CRC-32/ISO-HDLC check value of "123456789" is 0xCBF43926.
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

Deno.test("zip: torch archive lists its entries; path and bytes agree", async () => {
  const file = path("official_tiny.pth");
  const fromPath = await withZip(file, readAll);
  const fromBytes = await withZip(await Deno.readFile(file), readAll);
  assert.ok(fromPath.has("archive/data.pkl"));
  assert.ok(fromPath.has("archive/version"));
  assert.equal(new TextDecoder().decode(fromPath.get("archive/version")).trim(), "3");
  assert.deepEqual([...fromPath.keys()], [...fromBytes.keys()]);
  for (const [name, data] of fromPath) assert.deepEqual(data, fromBytes.get(name), name);
});

Deno.test("zip: deflated entries inflate to their recorded size and CRC", async () => {
  await withZip(path("official_iso_deflated.pth"), async (zip) => {
    const pkl = zip.entries.get("archive/data.pkl")!;
    assert.equal(pkl.method, 8);
    const data = await zip.read("archive/data.pkl");
    assert.equal(data.length, pkl.size);
    assert.equal(data[0], 0x80); // pickle PROTO
    assert.equal(data[data.length - 1], 0x2e); // pickle STOP
  });
});

Deno.test("zip: a ZIP64 archive reads like its plain original", async () => {
  const plain = await withZip(path("views.pth"), readAll);
  const z64 = await withZip(path("views_zip64.pth"), async (zip) => {
    assert.equal(zip.entries.get("archive/data.pkl")!.method, 8);
    return await readAll(zip);
  });
  assert.deepEqual([...z64.keys()], [...plain.keys()]);
  for (const [name, data] of plain) assert.deepEqual(z64.get(name), data, name);
});

Deno.test("zip: truncated archive says so (bytes and path)", async () => {
  const bytes = await Deno.readFile(path("official_tiny.pth"));
  const cut = bytes.subarray(0, bytes.length - 1000);
  await assert.rejects(
    ZipArchive.open(cut),
    /<bytes>: not a complete zip archive \(truncated or corrupt download\?\)/,
  );
  const tmp = await Deno.makeTempFile({ suffix: ".pth" });
  try {
    await Deno.writeFile(tmp, cut);
    await assert.rejects(
      ZipArchive.open(tmp),
      (e: Error) => e.message.startsWith(`${tmp}: not a complete zip archive`),
    );
  } finally {
    await Deno.remove(tmp);
  }
});

Deno.test("zip: a flipped data byte is a CRC error; a missing entry is named", async () => {
  const bytes = (await Deno.readFile(path("official_tiny.pth"))).slice();
  const entry = await withZip(bytes, (z) => Promise.resolve(z.entries.get("archive/data/0")!));
  // Local header is 30 bytes + name + extra; flip the first byte of the data.
  const dv = new DataView(bytes.buffer);
  const dataAt = entry.localHeaderOffset + 30 + dv.getUint16(entry.localHeaderOffset + 26, true) +
    dv.getUint16(entry.localHeaderOffset + 28, true);
  bytes[dataAt] ^= 0xff;
  await withZip(bytes, async (zip) => {
    await assert.rejects(zip.read("archive/data/0"), /CRC-32 mismatch/);
    assert.equal((await zip.read("archive/data/0", { verifyCrc: false })).length, entry.size);
    await assert.rejects(zip.read("nope"), /zip archive has no entry "nope"/);
  });
});

Deno.test("zip: not a zip at all", async () => {
  await assert.rejects(ZipArchive.open(new Uint8Array(100)), /not a complete zip archive/);
  await assert.rejects(ZipArchive.open("/nonexistent/x.pth"), /\/nonexistent\/x.pth: cannot open/);
});
