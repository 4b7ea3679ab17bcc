// Tar extraction against archives written by Python's tarfile (tools/fixtures/make_tar_fixture.py),
// and the flowers dataset download through a local server.
import assert from "node:assert/strict";
import { join } from "node:path";
import { extractTar, TarError } from "../lib/data/tar.ts";
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

/** `n` pseudo-random bytes (xorshift32): incompressible, so gzip keeps the entry large. */
function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Runs the system's tar (GNU or bsdtar): the archives are made independently of tar.ts. */
async function systemTar(args: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command("tar", { args, stderr: "piped" }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
}

Deno.test("extractTar: a multi-MB entry (tar and tgz made by the tar command) comes out byte for byte", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "data_tar_big_" });
  try {
    // Sizes off the 512-byte blocks and the stream's chunks, so that reads cross both.
    const big = noise(6 * 1024 * 1024 + 123, 7);
    const small = new TextEncoder().encode("after the big entry\n");
    await Deno.mkdir(join(tmp, "src", "set", "inner"), { recursive: true });
    await Deno.writeFile(join(tmp, "src", "set", "big.bin"), big);
    await Deno.writeFile(join(tmp, "src", "set", "inner", "small.txt"), small);
    await systemTar(["-cf", join(tmp, "set.tar"), "-C", join(tmp, "src"), "set"]);
    await systemTar(["-czf", join(tmp, "set.tgz"), "-C", join(tmp, "src"), "set"]);
    for (const archive of ["set.tar", "set.tgz"]) {
      const out = join(tmp, `out-${archive}`);
      await Deno.mkdir(out);
      const files = await extractTar(join(tmp, archive), out);
      assert.deepEqual(files.sort(), ["set/big.bin", "set/inner/small.txt"], archive);
      const got = await Deno.readFile(join(out, "set", "big.bin"));
      assert.equal(got.length, big.length, archive);
      assert.ok(got.every((b, i) => b === big[i]), `${archive}: big.bin differs`);
      assert.deepEqual(await Deno.readFile(join(out, "set", "inner", "small.txt")), small);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("extractTar: an HTML page or a truncated .tgz is a TarError naming the archive", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "data_tar_bad_" });
  try {
    const html = join(tmp, "page.tgz");
    await Deno.writeTextFile(html, `<!DOCTYPE html><html>${"<p>sign in</p>".repeat(100)}</html>`);
    await assert.rejects(
      () => extractTar(html, tmp),
      (e: Error) =>
        e instanceof TarError &&
        e.message === `${html}: not a tar archive (bad header checksum at byte 0)`,
    );
    const whole = await Deno.readFile(join(dir, "gnu.tgz"));
    const cut = join(tmp, "cut.tgz");
    await Deno.writeFile(cut, whole.subarray(0, Math.floor(whole.length / 2)));
    await assert.rejects(
      () => extractTar(cut, join(tmp, "out")),
      (e: Error) => e instanceof TarError && e.message.startsWith(`${cut}: `),
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

/** A server answering each request with the next body of `bodies` (the last one repeats). */
function serveBodies(bodies: Uint8Array[]) {
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const body = bodies[Math.min(requests++, bodies.length - 1)];
    return new Response(body.slice());
  });
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/flower_photos.tgz`;
  return { server, url, requests: () => requests };
}

for (
  const [what, bad, expected] of [
    [
      "an HTML page",
      new TextEncoder().encode("<!doctype html>\n<html><body>quota exceeded</body></html>\n"),
      /: an HTML page, not a \.tgz; removed; the next run downloads it again$/,
    ],
    ["a truncated .tgz", "half", /: .+; removed; the next run downloads it again$/],
  ] as const
) {
  Deno.test(`ensureFlowerPhotos: ${what} is removed with a clear error; the next run downloads again`, async () => {
    const cache = await Deno.makeTempDir();
    const good = await Deno.readFile(join(dir, "gnu.tgz"));
    const first = bad === "half" ? good.subarray(0, Math.floor(good.length / 2)) : bad;
    const { server, url, requests } = serveBodies([first, good]);
    const old = Deno.env.get("CONVNEXT_CACHE");
    Deno.env.set("CONVNEXT_CACHE", cache);
    const archive = join(cache, "datasets", "flower_photos.tgz");
    try {
      await assert.rejects(() => ensureFlowerPhotos({ url, quiet: true }), (e: Error) => {
        assert.ok(e.message.startsWith(`${archive}: `), e.message);
        assert.match(e.message, expected);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      });
      // Nothing of the bad download is left: no archive, no record, no half-extracted folder.
      assert.deepEqual([...Deno.readDirSync(join(cache, "datasets"))], []);
      const folder = await ensureFlowerPhotos({ url, quiet: true });
      await checkTree(join(folder, ".."));
      assert.equal(requests(), 2);
    } finally {
      old === undefined ? Deno.env.delete("CONVNEXT_CACHE") : Deno.env.set("CONVNEXT_CACHE", old);
      await server.shutdown();
      await Deno.remove(cache, { recursive: true });
    }
  });
}
