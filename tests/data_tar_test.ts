// Tar extraction against archives written by Python's tarfile (tools/fixtures/make_tar_fixture.py),
// and the flowers dataset download through a local server.
import assert from "node:assert/strict";
import { join } from "node:path";
import { extractTar } from "../lib/data/tar.ts";
import { ensureFlowerPhotos } from "../lib/data/datasets.ts";

const dir = new URL("./fixtures/tar/", import.meta.url).pathname;
const expected: Record<string, number[]> = JSON.parse(
  await Deno.readTextFile(join(dir, "expected.json")),
);

async function checkTree(root: string) {
  for (const [name, head] of Object.entries(expected)) {
    const bytes = await Deno.readFile(join(root, name));
    assert.equal(bytes.length, head.at(-1), name);
    assert.deepEqual(Array.from(bytes.subarray(0, 16)), head.slice(0, -1), name);
  }
  assert.ok((await Deno.stat(join(root, "flower_photos/dandelion"))).isDirectory);
}

for (const archive of ["gnu.tgz", "pax.tar"]) {
  Deno.test(`extractTar: ${archive} (long and non-ASCII names, directories)`, async () => {
    const out = await Deno.makeTempDir();
    try {
      const files = await extractTar(join(dir, archive), out);
      assert.deepEqual(files.sort(), Object.keys(expected).sort());
      await checkTree(out);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  });
}

Deno.test("extractTar refuses paths outside the target", async () => {
  const out = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => extractTar(join(dir, "evil.tar"), out),
      /refusing to extract "\.\.\/evil\.txt"/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("ensureFlowerPhotos downloads and extracts once into the cache", async () => {
  const cache = await Deno.makeTempDir();
  const body = await Deno.readFile(join(dir, "gnu.tgz"));
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    requests++;
    return new Response(body.slice());
  });
  const old = Deno.env.get("CONVNEXT_CACHE");
  Deno.env.set("CONVNEXT_CACHE", cache);
  try {
    const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/flower_photos.tgz`;
    const folder = await ensureFlowerPhotos({ url, quiet: true });
    assert.equal(folder, join(cache, "datasets", "flower_photos", "flower_photos"));
    await checkTree(join(folder, ".."));
    assert.equal(await ensureFlowerPhotos({ url, quiet: true }), folder);
    assert.equal(requests, 1);
  } finally {
    old === undefined ? Deno.env.delete("CONVNEXT_CACHE") : Deno.env.set("CONVNEXT_CACHE", old);
    await server.shutdown();
    await Deno.remove(cache, { recursive: true });
  }
});
