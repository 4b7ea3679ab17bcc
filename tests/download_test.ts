/**
 * Tests of lib/util/download.ts, cache.ts, integrity.ts and lib/weights/fetch.ts against a local
 * HTTP server (127.0.0.1, no network). The checkpoint fixture and its sha256 come
 * from tools/fixtures/download_fixtures.py (torch.save and Python's hashlib).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  checkSafetensorsFile,
  checkZipFile,
  download,
  DownloadError,
} from "../lib/util/download.ts";
import { ensureCheckpoint, fetchLabels22k, parseLabels } from "../lib/weights/fetch.ts";
import {
  cacheDir,
  checkpointPath,
  labelsPath,
  modelDir,
  readSha256Record,
  sha256File,
  verifySha256Record,
} from "../lib/util/cache.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";
import { withTempDir, writeFileAtomic } from "../lib/util/fs.ts";

const FIXTURES = new URL("./fixtures/download/", import.meta.url);
const TINY = await Deno.readFile(new URL("tiny.pth", FIXTURES));
const TINY_ZIP64 = await Deno.readFile(new URL("tiny_zip64.pth", FIXTURES));
const TINY_SHA = (await Deno.readTextFile(new URL("tiny.sha256", FIXTURES))).split(/\s+/)[0];
const TINY_ENTRY = getZooEntry("convnext_tiny_1k_224");

/** What the server does with one request, decided by a test. */
interface Plan {
  /** Send only this many body bytes of this response, then end it early. */
  cutAfter?: number;
  /** Answer with this status and no body. */
  status?: number;
  /** Answer 200 with the whole file even if a Range was asked for. */
  ignoreRange?: boolean;
  /** Answer 206 with the file from this byte (and its Content-Range), whatever was asked. */
  rangeStart?: number;
}

/** A tiny file server with Range support and scripted failures. */
class TestServer {
  readonly files = new Map<string, Uint8Array>();
  /** Every request: path and Range header. */
  readonly requests: { path: string; range: string | null }[] = [];
  /** Per-request plans, consumed in order (a missing plan means: serve normally). */
  readonly plans: Plan[] = [];
  /** The file on the server ends at this absolute byte, but announces its full length. */
  truncateAt?: number;
  /** An ETag sent with every file (then clients send If-Range with their Range). */
  etag?: string;
  readonly #ac = new AbortController();
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: this.#ac.signal, onListen() {} },
      (req) => this.#handle(req),
    );
  }

  get base(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/mirror/`;
  }

  url(name: string): string {
    return this.base + name;
  }

  #handle(req: Request): Response {
    const path = decodeURIComponent(new URL(req.url).pathname).replace(/^\/mirror\//, "");
    const range = req.headers.get("range");
    this.requests.push({ path, range });
    const plan = this.plans.shift() ?? {};
    if (plan.status) return new Response(null, { status: plan.status });
    const file = this.files.get(path);
    if (!file) return new Response("no such file", { status: 404 });
    const total = file.length;
    let start = 0;
    const m = range?.match(/^bytes=(\d+)-$/);
    if (m && !plan.ignoreRange) {
      start = Number(m[1]);
      if (start >= total) {
        return new Response(null, {
          status: 416,
          headers: { "content-range": `bytes */${total}` },
        });
      }
    }
    if (plan.rangeStart !== undefined) start = plan.rangeStart;
    // Bytes this response really sends (absolute end), after scripted cuts.
    let end = total;
    if (this.truncateAt !== undefined) end = Math.min(end, this.truncateAt);
    if (plan.cutAfter !== undefined) end = Math.min(end, start + plan.cutAfter);
    const body = file.slice(start, Math.max(start, end));
    let sent = false;
    // Announced length stays the full remainder; ending the stream early makes
    // the connection close short of it, as a dropped connection would.
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (!sent && body.length > 0) {
          sent = true;
          c.enqueue(body);
        } else {
          c.close();
        }
      },
    });
    const headers: Record<string, string> = { "content-length": String(total - start) };
    if (start > 0) headers["content-range"] = `bytes ${start}-${total - 1}/${total}`;
    headers["accept-ranges"] = "bytes";
    if (this.etag) headers["etag"] = this.etag;
    if (plan.rangeStart !== undefined) {
      headers["content-range"] = `bytes ${start}-${total - 1}/${total}`;
    }
    const partial = start > 0 || plan.rangeStart !== undefined;
    return new Response(stream, { status: partial ? 206 : 200, headers });
  }

  async close(): Promise<void> {
    this.#ac.abort();
    await this.#server.finished;
  }
}

/** Runs `fn` with a fresh server and a temporary CONVNEXT_CACHE, cleaning up after. */
async function withEnv(fn: (server: TestServer, cache: string) => Promise<void>): Promise<void> {
  const cache = await Deno.makeTempDir({ prefix: "convnext-cache-" });
  const saved = {
    cache: Deno.env.get("CONVNEXT_CACHE"),
    base: Deno.env.get("CONVNEXT_BASE_URL"),
  };
  const server = new TestServer();
  Deno.env.set("CONVNEXT_CACHE", cache);
  Deno.env.set("CONVNEXT_BASE_URL", server.base);
  try {
    await fn(server, cache);
  } finally {
    await server.close();
    for (
      const [key, value] of [["CONVNEXT_CACHE", saved.cache], ["CONVNEXT_BASE_URL", saved.base]]
    ) {
      if (value === undefined) Deno.env.delete(key!);
      else Deno.env.set(key!, value);
    }
    await Deno.remove(cache, { recursive: true });
  }
}

/** Every file under `dir`, relative. */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const rel = prefix + e.name;
    if (e.isDirectory) out.push(...await listFiles(join(dir, e.name), rel + "/"));
    else out.push(rel);
  }
  return out.sort();
}

const FAST = { quiet: true, backoffMs: 1 } as const;

async function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Error, `expected an Error, got ${e}`);
    assert.match(e.message, re);
    assert.ok(!e.message.includes("\n"), `error should be one line: ${e.message}`);
    return e;
  }
  throw new assert.AssertionError({ message: `expected a rejection matching ${re}` });
}

Deno.test("download: streams a file, records its sha256, leaves no .part", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    const dest = join(cache, "dl", "tiny.pth");
    const seen: number[] = [];
    const result = await download(server.url("tiny.pth"), dest, {
      ...FAST,
      onProgress: (p) => {
        assert.equal(p.total, TINY.length);
        seen.push(p.received);
      },
    });
    assert.deepEqual(await Deno.readFile(dest), TINY);
    assert.equal(result.sha256, TINY_SHA); // reference: Python hashlib
    assert.equal(result.size, TINY.length);
    assert.equal(result.attempts, 1);
    assert.equal(await readSha256Record(dest), TINY_SHA);
    assert.equal(seen.at(-1), TINY.length);
    assert.deepEqual(await listFiles(join(cache, "dl")), ["tiny.pth", "tiny.pth.sha256"]);
    assert.equal(server.requests[0].range, null);
  });
});

Deno.test("download: progress bar on a non-terminal prints plain lines", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    const lines: string[] = [];
    await download(server.url("tiny.pth"), join(cache, "tiny.pth"), {
      backoffMs: 1,
      progress: { write: (t) => lines.push(t), isTTY: false },
    });
    const last = lines.at(-1)!;
    assert.ok(lines.every((l) => l.endsWith("\n") && !l.includes("\r")), JSON.stringify(lines));
    assert.match(last, /^tiny\.pth {2}999 B\/999 B {2}100\.0%/);
    assert.match(last, / in \d+:\d\d/);
  });
});

Deno.test("ensureCheckpoint: downloads once via CONVNEXT_BASE_URL, then works offline", async () => {
  await withEnv(async (server, cache) => {
    server.files.set(TINY_ENTRY.file, TINY);
    const path = await ensureCheckpoint(TINY_ENTRY, FAST);
    assert.equal(path, join(cache, "checkpoints", "convnext_tiny_1k_224_ema.pth"));
    assert.equal(path, checkpointPath(TINY_ENTRY.file));
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0].path, "convnext_tiny_1k_224_ema.pth");
    assert.equal(await sha256File(path), TINY_SHA);
    await server.close();
    // Server gone: the cached, verified file is used without any request.
    assert.equal(await ensureCheckpoint(TINY_ENTRY, FAST), path);
    assert.equal(server.requests.length, 1);
  });
});

Deno.test("download: an interrupted download resumes with Range and gives identical bytes", async () => {
  await withEnv(async (server, cache) => {
    server.files.set(TINY_ENTRY.file, TINY);
    server.plans.push({ cutAfter: 400 }, { cutAfter: 300 });
    const path = await ensureCheckpoint(TINY_ENTRY, FAST);
    assert.deepEqual(server.requests.map((r) => r.range), [null, "bytes=400-", "bytes=700-"]);
    assert.equal(await sha256File(path), TINY_SHA);
    assert.deepEqual(await Deno.readFile(path), TINY);
    assert.deepEqual(await listFiles(cache), [
      "checkpoints/convnext_tiny_1k_224_ema.pth",
      "checkpoints/convnext_tiny_1k_224_ema.pth.sha256",
    ]);
  });
});

Deno.test("download: a fetch that throws mid-stream is resumed too", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    let calls = 0;
    // The first response's body errors after 123 bytes, like a reset connection.
    const flakyFetch: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (calls++ > 0) return res;
      const reader = res.body!.getReader();
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (sent >= 123) {
            await reader.cancel();
            c.error(new TypeError("connection reset"));
            return;
          }
          const { value, done } = await reader.read();
          if (done) return c.close();
          const piece = value.subarray(0, 123 - sent);
          sent += piece.length;
          c.enqueue(piece);
        },
      });
      return new Response(body, { status: res.status, headers: res.headers });
    };
    const dest = join(cache, "tiny.pth");
    const result = await download(server.url("tiny.pth"), dest, { ...FAST, fetch: flakyFetch });
    assert.equal(result.attempts, 2);
    assert.deepEqual(server.requests.map((r) => r.range), [null, "bytes=123-"]);
    assert.equal(result.sha256, TINY_SHA);
  });
});

Deno.test("download: a stalled connection is aborted and resumed", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    let calls = 0;
    // The first response sends 200 bytes, then nothing until the request is aborted.
    const stallingFetch: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (calls++ > 0) return res;
      const bytes = new Uint8Array(await res.arrayBuffer()).slice(0, 200);
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (!sent) {
            sent = true;
            c.enqueue(bytes);
            return;
          }
          return new Promise<void>((resolve) => {
            init!.signal!.addEventListener("abort", () => {
              c.error(init!.signal!.reason);
              resolve();
            }, { once: true });
          });
        },
      });
      return new Response(body, { status: res.status, headers: res.headers });
    };
    const notices: string[] = [];
    const result = await download(server.url("tiny.pth"), join(cache, "tiny.pth"), {
      backoffMs: 1,
      stallTimeoutMs: 100,
      fetch: stallingFetch,
      progress: { write: (t) => notices.push(t), isTTY: false },
    });
    assert.deepEqual(server.requests.map((r) => r.range), [null, "bytes=200-"]);
    assert.equal(result.sha256, TINY_SHA);
    assert.ok(
      notices.some((n) =>
        /connection lost after 200 of 999 bytes: stalled \(no data for 0\.1 s\); retrying/.test(n)
      ),
      notices.join(""),
    );
  });
});

Deno.test("download: a server that ignores Range restarts from byte 0", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    server.plans.push({ cutAfter: 500 }, { ignoreRange: true });
    const result = await download(server.url("tiny.pth"), join(cache, "tiny.pth"), FAST);
    assert.deepEqual(server.requests.map((r) => r.range), [null, "bytes=500-"]);
    assert.equal(result.sha256, TINY_SHA);
  });
});

Deno.test("download: a stale .part and a server that ignores Range: rewritten from byte 0, not appended", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    for (const stale of [new Uint8Array(500).fill(7), new Uint8Array(TINY.length + 300).fill(9)]) {
      const dest = join(cache, `tiny-${stale.length}.pth`);
      server.files.set(`tiny-${stale.length}.pth`, TINY);
      await Deno.writeFile(`${dest}.part`, stale);
      server.requests.length = 0;
      server.plans.push({ ignoreRange: true });
      // No retries: starting over is part of the one attempt, not a failure.
      const result = await download(server.url(`tiny-${stale.length}.pth`), dest, {
        ...FAST,
        retries: 0,
      });
      assert.deepEqual(server.requests.map((r) => r.range), [`bytes=${stale.length}-`]);
      assert.equal(result.sha256, TINY_SHA);
      assert.deepEqual(await Deno.readFile(dest), TINY);
    }
  });
});

Deno.test("download: a 206 that does not start where asked starts over, within one attempt", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    // From byte 0: the whole file, written over the .part.
    const dest = join(cache, "tiny.pth");
    await Deno.writeFile(`${dest}.part`, new Uint8Array(400).fill(1));
    server.plans.push({ rangeStart: 0 });
    assert.equal(
      (await download(server.url("tiny.pth"), dest, { ...FAST, retries: 0 })).sha256,
      TINY_SHA,
    );
    assert.deepEqual(server.requests.map((r) => r.range), ["bytes=400-"]);
    // From elsewhere: the .part is dropped and the whole file asked for.
    const other = join(cache, "other.pth");
    server.files.set("other.pth", TINY);
    await Deno.writeFile(`${other}.part`, TINY.subarray(0, 400));
    server.requests.length = 0;
    server.plans.push({ rangeStart: 100 });
    const notices: string[] = [];
    const result = await download(server.url("other.pth"), other, {
      backoffMs: 1,
      retries: 0,
      progress: { write: (t) => notices.push(t), isTTY: false },
    });
    assert.equal(result.sha256, TINY_SHA);
    assert.deepEqual(server.requests.map((r) => r.range), ["bytes=400-", null]);
    assert.ok(
      notices.some((n) =>
        /asked for bytes from 400, the server sent "bytes 100-\d+\/\d+"; starting over/.test(n)
      ),
      notices.join(""),
    );
  });
});

for (const etag of [undefined, '"v1"']) {
  Deno.test(`download: a server that ignores Range and keeps cutting (${etag ? "with" : "no"} ETag): no .part kept, no resume promised`, async () => {
    await withEnv(async (server, cache) => {
      server.files.set("tiny.pth", TINY);
      server.etag = etag;
      server.plans.push({ cutAfter: 500 }, { ignoreRange: true, cutAfter: 700 }, {
        ignoreRange: true,
        cutAfter: 800,
      });
      const dest = join(cache, "tiny.pth");
      const e = await rejectsWith(
        download(server.url("tiny.pth"), dest, { ...FAST, retries: 2 }),
        /connection lost after 800 of 999 bytes: .*\(after 3 attempts\); the server cannot resume downloads \(it ignores Range\), so the partial file was removed and the next run starts over$/,
      );
      assert.ok(!/resumes it/.test(e.message), e.message);
      assert.deepEqual(server.requests.map((r) => r.range), [null, "bytes=500-", "bytes=700-"]);
      assert.deepEqual(await listFiles(cache), []);
    });
  });
}

Deno.test("download: a complete .part is finished from a 416 answer", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    const dest = join(cache, "tiny.pth");
    await Deno.writeFile(`${dest}.part`, TINY);
    const result = await download(server.url("tiny.pth"), dest, FAST);
    assert.deepEqual(server.requests.map((r) => r.range), [`bytes=${TINY.length}-`]);
    assert.equal(result.sha256, TINY_SHA);
  });
});

Deno.test("download: a .part longer than the file (416) starts over", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    const dest = join(cache, "tiny.pth");
    await Deno.writeFile(`${dest}.part`, new Uint8Array(TINY.length + 10));
    const result = await download(server.url("tiny.pth"), dest, FAST);
    assert.deepEqual(server.requests.map((r) => r.range), [`bytes=${TINY.length + 10}-`, null]);
    assert.equal(result.sha256, TINY_SHA);
  });
});

Deno.test("download: HTTP 503 is retried with backoff", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    server.plans.push({ status: 503 }, { status: 503 });
    const result = await download(server.url("tiny.pth"), join(cache, "tiny.pth"), FAST);
    assert.equal(result.attempts, 3);
    assert.equal(result.sha256, TINY_SHA);
  });
});

Deno.test("download: persistent HTTP 503 fails after the retries", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    server.plans.push({ status: 503 }, { status: 503 }, { status: 503 });
    const url = server.url("tiny.pth");
    await rejectsWith(
      download(url, join(cache, "tiny.pth"), { ...FAST, retries: 2 }),
      new RegExp(`^download ${url}: HTTP 503 Service Unavailable \\(after 3 attempts\\)$`),
    );
    assert.equal(server.requests.length, 3);
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("ensureCheckpoint: 404 is a clear error and leaves no file", async () => {
  await withEnv(async (server, cache) => {
    const url = server.url(TINY_ENTRY.file);
    const e = await rejectsWith(
      ensureCheckpoint(TINY_ENTRY, FAST),
      new RegExp(`^download ${url}: HTTP 404 Not Found$`),
    );
    assert.ok(e instanceof DownloadError && e.kind === "http" && e.status === 404);
    assert.equal(server.requests.length, 1, "a 404 is not retried");
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("ensureCheckpoint: a file shorter than its Content-Length is a corrupt error, no file left", async () => {
  await withEnv(async (server, cache) => {
    server.files.set(TINY_ENTRY.file, TINY);
    server.truncateAt = 600;
    const e = await rejectsWith(
      ensureCheckpoint(TINY_ENTRY, FAST),
      /: connection lost after 600 of 999 bytes: .*truncated or corrupt\)$/,
    );
    assert.ok(e instanceof DownloadError && e.kind === "corrupt");
    // First request, then resumes that got nothing new.
    assert.deepEqual(server.requests.map((r) => r.range), [
      null,
      "bytes=600-",
      "bytes=600-",
      "bytes=600-",
    ]);
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("ensureCheckpoint: a zip without its central directory is corrupt, no file left", async () => {
  await withEnv(async (server, cache) => {
    // Served with a Content-Length matching what is sent: only the zip check can tell.
    server.files.set(TINY_ENTRY.file, TINY.slice(0, 600));
    await rejectsWith(
      ensureCheckpoint(TINY_ENTRY, FAST),
      /: corrupt: .*convnext_tiny_1k_224_ema\.pth\.part: not a complete zip archive: no end-of-central-directory record/,
    );
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("ensureCheckpoint: an HTML error page served with 200 is corrupt", async () => {
  await withEnv(async (server, cache) => {
    server.files.set(TINY_ENTRY.file, new TextEncoder().encode("<html>login required</html>"));
    await rejectsWith(ensureCheckpoint(TINY_ENTRY, FAST), /does not start with a zip entry/);
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("ensureCheckpoint: a modified cached file fails its sha256 check", async () => {
  await withEnv(async (server) => {
    server.files.set(TINY_ENTRY.file, TINY);
    const path = await ensureCheckpoint(TINY_ENTRY, FAST);
    const bytes = await Deno.readFile(path);
    bytes[100] ^= 0xff;
    await Deno.writeFile(path, bytes);
    await rejectsWith(
      ensureCheckpoint(TINY_ENTRY, FAST),
      /is corrupt or was modified: sha256 [0-9a-f]{64} does not match [0-9a-f]{64} .*delete .*convnext_tiny_1k_224_ema\.pth and .*\.sha256/,
    );
    assert.equal(server.requests.length, 1);
  });
});

Deno.test("download: an expected sha256 that does not match is corrupt", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    await rejectsWith(
      download(server.url("tiny.pth"), join(cache, "tiny.pth"), {
        ...FAST,
        sha256: "0".repeat(64),
      }),
      /corrupt: sha256 [0-9a-f]{64} does not match the expected 0{64}$/,
    );
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("download: abort keeps the .part for a later resume", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("tiny.pth", TINY);
    server.plans.push({ cutAfter: 250 });
    const ac = new AbortController();
    const dest = join(cache, "tiny.pth");
    // Abort during the backoff that follows the cut.
    await rejectsWith(
      download(server.url("tiny.pth"), dest, {
        quiet: true,
        backoffMs: 60_000,
        onProgress: (p) => p.received === 250 && setTimeout(() => ac.abort(), 10),
        signal: ac.signal,
      }),
      /: aborted$/,
    );
    assert.equal((await Deno.stat(`${dest}.part`)).size, 250);
    const result = await download(server.url("tiny.pth"), dest, FAST);
    assert.equal(server.requests.at(-1)!.range, "bytes=250-");
    assert.equal(result.sha256, TINY_SHA);
  });
});

Deno.test("fetchLabels22k: downloads label_to_words.json once into the cache", async () => {
  await withEnv(async (server) => {
    const json = JSON.stringify({ "1": "dog", "0": "cat, tabby", "2": "fish" });
    server.files.set("label_to_words.json", new TextEncoder().encode(json));
    assert.deepEqual(await fetchLabels22k(FAST), ["cat, tabby", "dog", "fish"]);
    assert.equal(await Deno.readTextFile(labelsPath("label_to_words.json")), json);
    await server.close();
    assert.deepEqual(await fetchLabels22k(FAST), ["cat, tabby", "dog", "fish"]);
    assert.equal(server.requests.length, 1);
  });
});

Deno.test("fetchLabels22k: a malformed label file is an error and is not kept", async () => {
  await withEnv(async (server, cache) => {
    server.files.set("label_to_words.json", new TextEncoder().encode(`{"0": "a", "2": "b"}`));
    await rejectsWith(fetchLabels22k(FAST), /corrupt: .*expected keys "0".."1"/);
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("parseLabels: rejects non-objects, holes and leading zeros", () => {
  assert.deepEqual(parseLabels(`{"0":"a"}`), ["a"]);
  assert.throws(() => parseLabels(`[1]`), /expected an object/);
  assert.throws(() => parseLabels(`{"1":"a","01":"b"}`), /expected keys/);
  assert.throws(() => parseLabels(`{"0":3}`), /expected keys/);
  assert.throws(() => parseLabels(`{`), /expected JSON/);
});

Deno.test("checkZipFile: accepts torch.save output (classic and ZIP64 end records)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const write = async (name: string, bytes: Uint8Array) => {
      const p = join(dir, name);
      await Deno.writeFile(p, bytes);
      return p;
    };
    await checkZipFile(await write("a.pth", TINY));
    await checkZipFile(await write("b.pth", TINY_ZIP64));
    // Every truncation of the file must fail the check.
    for (const cut of [1, 10, 21, 22, 100, 500]) {
      for (const bytes of [TINY, TINY_ZIP64]) {
        const p = await write("cut.pth", bytes.slice(0, bytes.length - cut));
        await assert.rejects(checkZipFile(p), /not a complete zip archive/, `cut ${cut}`);
      }
    }
    // A central directory offset that points at the wrong place.
    const moved = TINY.slice();
    const view = new DataView(moved.buffer);
    const eocd = moved.length - 22;
    assert.equal(view.getUint32(eocd, true), 0x06054b50);
    view.setUint32(eocd + 16, view.getUint32(eocd + 16, true) - 1, true);
    await assert.rejects(checkZipFile(await write("m.pth", moved)), /no central directory header/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkSafetensorsFile: size must match the header's offsets", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const header = new TextEncoder().encode(
      JSON.stringify({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }),
    );
    const bytes = new Uint8Array(8 + header.length + 8);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
    bytes.set(header, 8);
    const p = join(dir, "a.safetensors");
    await Deno.writeFile(p, bytes);
    await checkSafetensorsFile(p);
    await Deno.writeFile(p, bytes.slice(0, -1));
    await assert.rejects(checkSafetensorsFile(p), /expected \d+ bytes, got \d+/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("download: a legacy (non-zip) .pth passes through to the checkpoint reader", async () => {
  await withEnv(async (server, cache) => {
    const legacy = new Uint8Array([0x80, 0x02, 0x8a, 0x0a, 1, 2, 3]); // pickle protocol 2
    server.files.set("old.pth", legacy);
    const result = await download(server.url("old.pth"), join(cache, "old.pth"), FAST);
    assert.equal(result.sha256, createHash("sha256").update(legacy).digest("hex"));
  });
});

Deno.test("cacheDir: CONVNEXT_CACHE, then XDG_CACHE_HOME, then ~/.cache", () => {
  const saved = ["CONVNEXT_CACHE", "XDG_CACHE_HOME", "HOME"].map((k) => [k, Deno.env.get(k)]);
  try {
    Deno.env.set("CONVNEXT_CACHE", "/tmp/a");
    Deno.env.set("XDG_CACHE_HOME", "/tmp/xdg");
    Deno.env.set("HOME", "/tmp/home");
    assert.equal(cacheDir(), "/tmp/a");
    assert.equal(modelDir("convnext_tiny_1k_224"), "/tmp/a/models/convnext_tiny_1k_224");
    Deno.env.delete("CONVNEXT_CACHE");
    assert.equal(cacheDir(), "/tmp/xdg/convnext-tfjs");
    Deno.env.set("XDG_CACHE_HOME", "relative/ignored");
    assert.equal(cacheDir(), "/tmp/home/.cache/convnext-tfjs");
    Deno.env.delete("XDG_CACHE_HOME");
    assert.equal(cacheDir(), "/tmp/home/.cache/convnext-tfjs");
    assert.throws(() => checkpointPath("../x.pth"), /must be a plain file name/);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k!) : Deno.env.set(k!, v);
  }
});

Deno.test("verifySha256Record: records a hash for a file placed by hand", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const p = join(dir, "tiny.pth");
    await writeFileAtomic(p, TINY);
    assert.equal(await readSha256Record(p), null);
    assert.equal(await verifySha256Record(p), TINY_SHA);
    assert.equal(await readSha256Record(p), TINY_SHA);
    await Deno.writeTextFile(`${p}.sha256`, "garbage\n");
    await assert.rejects(verifySha256Record(p), /expected a sha256 \(64 hex digits\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("withTempDir: renames into place, replaces, and cleans up on failure", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const target = join(dir, "models", "m");
    await withTempDir(target, (tmp) => Deno.writeTextFile(join(tmp, "a.txt"), "1"));
    await withTempDir(target, (tmp) => Deno.writeTextFile(join(tmp, "b.txt"), "2"));
    assert.deepEqual(await listFiles(target), ["b.txt"]);
    await assert.rejects(
      withTempDir(target, async (tmp) => {
        await Deno.writeTextFile(join(tmp, "c.txt"), "3");
        throw new Error("conversion failed");
      }),
      /conversion failed/,
    );
    assert.deepEqual(await listFiles(join(dir, "models")), ["m/b.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("download: an unresolvable host fails at once (no retries), the .part is kept", async () => {
  await withEnv(async (_server, cache) => {
    const dest = join(cache, "tiny.pth");
    await Deno.writeFile(`${dest}.part`, TINY.slice(0, 100));
    let calls = 0;
    // What Deno's fetch throws when the resolver has no answer (offline, or a mistyped host).
    const offlineFetch: typeof fetch = () => {
      calls++;
      return Promise.reject(
        new TypeError("fetch failed", {
          cause: new Error(
            "error sending request for url (http://example.invalid/tiny.pth): client error " +
              "(Connect): dns error: failed to lookup address information: Name or service not known",
          ),
        }),
      );
    };
    const e = await rejectsWith(
      download("http://example.invalid/tiny.pth", dest, { ...FAST, fetch: offlineFetch }),
      /^download http:\/\/example\.invalid\/tiny\.pth: cannot reach example\.invalid \(dns error\): offline\?$/,
    );
    assert.equal((e as DownloadError).kind, "offline");
    assert.equal(calls, 1);
    assert.equal((await Deno.stat(`${dest}.part`)).size, 100); // resumable once online
  });
});

Deno.test("ensureCheckpoint offline: one line saying what to do without network", async () => {
  await withEnv(async () => {
    // A .invalid host never resolves (RFC 2606), with or without network.
    Deno.env.set("CONVNEXT_BASE_URL", "http://convnext-mirror.invalid/");
    const e = await rejectsWith(
      ensureCheckpoint(getZooEntry("convnext_tiny_1k_224"), FAST),
      /cannot reach convnext-mirror\.invalid .*; without network: set CONVNEXT_BASE_URL to a mirror/,
    );
    assert.equal((e as DownloadError).kind, "offline");
  });
});
