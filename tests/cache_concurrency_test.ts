/**
 * Two processes, one cache: two runs that need the same checkpoint at once (an empty cache)
 * both succeed with one download between them (the second waits for the first and takes its
 * file), and leave only the checkpoint and its sha256 record behind.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { sha256File } from "../lib/util/cache.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const FIXTURES = new URL("./fixtures/download/", import.meta.url);
const TINY = await Deno.readFile(new URL("tiny.pth", FIXTURES));
const TINY_SHA = (await Deno.readTextFile(new URL("tiny.sha256", FIXTURES))).split(/\s+/)[0];
const ENTRY = getZooEntry("convnext_tiny_1k_224");

const CHILD = `import { ensureCheckpoint } from "./lib/weights/fetch.ts";
import { getZooEntry } from "./lib/weights/zoo.ts";
console.log(await ensureCheckpoint(getZooEntry("convnext_tiny_1k_224"), { quiet: true }));`;

Deno.test("two processes on an empty cache: one download, both get the file", async () => {
  const cache = await Deno.makeTempDir({ prefix: "cache_concurrency_" });
  const requests: string[] = [];
  const ac = new AbortController();
  // Serves the file slowly, in four parts, so that the two downloads overlap.
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => {
      requests.push(`${req.method} ${new URL(req.url).pathname}`);
      const quarter = Math.ceil(TINY.length / 4);
      let i = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          await new Promise((res) => setTimeout(res, 150));
          if (i >= TINY.length) return c.close();
          c.enqueue(TINY.slice(i, i + quarter));
          i += quarter;
        },
      });
      return new Response(body, { headers: { "content-length": String(TINY.length) } });
    },
  );
  try {
    const env = {
      CONVNEXT_CACHE: cache,
      CONVNEXT_BASE_URL: `http://127.0.0.1:${server.addr.port}/`,
    };
    const run = () =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", CHILD],
        cwd: ROOT,
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
    const results = await Promise.all([run(), run()]);
    const dec = new TextDecoder();
    const paths = results.map((r) => {
      assert.equal(r.code, 0, dec.decode(r.stderr));
      return dec.decode(r.stdout).trim();
    });
    const path = join(cache, "checkpoints", ENTRY.file);
    assert.deepEqual(paths, [path, path]);
    assert.equal(await sha256File(path), TINY_SHA);
    assert.deepEqual(requests, [`GET /${ENTRY.file}`], "one download between the two");
    const left = [...Deno.readDirSync(join(cache, "checkpoints"))].map((e) => e.name).sort();
    assert.deepEqual(left, [ENTRY.file, `${ENTRY.file}.sha256`]);
  } finally {
    ac.abort();
    await server.finished;
    await Deno.remove(cache, { recursive: true });
  }
});
