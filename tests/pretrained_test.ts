// The whole user path of loading original weights, offline: a local HTTP server plays the
// official download site, CONVNEXT_BASE_URL points at it, CONVNEXT_CACHE is a temp dir.
// References: tests/fixtures/zoo/ (a convnext_tiny-shaped checkpoint and PyTorch's logits,
// made by tools/fixtures/make_zoo_fixture.py) and tests/fixtures/checkpoints/.
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { convertCheckpoint, loadModel } from "../lib/weights/pretrained.ts";
import { storedModelConfig } from "../lib/model/config.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";
import { withEnv } from "./env_helpers.ts";

await selectBackend("wasm");

const fixture = (p: string) => new URL(`./fixtures/${p}`, import.meta.url);
const tinyBytes = await Deno.readFile(fixture("zoo/convnext_tiny_1k_224_ema.pth"));
const reference = new Float32Array((await Deno.readFile(fixture("zoo/logits_224.bin"))).buffer);
const hostile = await Deno.readFile(fixture("checkpoints/hostile.pth"));

/** The formula input of make_zoo_fixture.py, NHWC. */
function formulaInput(): tf.Tensor4D {
  const data = new Float32Array(224 * 224 * 3);
  for (let h = 0; h < 224; h++) {
    for (let w = 0; w < 224; w++) {
      for (let c = 0; c < 3; c++) {
        data[(h * 224 + w) * 3 + c] = Math.sin(0.07 * h + 0.11 * w + 1.3 * c) +
          0.5 * Math.cos(0.023 * h * w + c);
      }
    }
  }
  return tf.tensor4d(data, [1, 224, 224, 3]);
}

function maxDiffToReference(model: tf.LayersModel): number {
  return tf.tidy(() => {
    const logits = (model.predict(formulaInput()) as tf.Tensor).dataSync();
    let max = 0;
    for (let i = 0; i < reference.length; i++) {
      max = Math.max(max, Math.abs(logits[i] - reference[i]));
    }
    return max;
  });
}

interface Route {
  body?: Uint8Array<ArrayBuffer>;
  status?: number;
  /** Cut the connection after this many bytes, on the first request only. */
  cutAfter?: number;
}

/** A tiny file server with Range support that records what it was asked. */
function serve(routes: Record<string, Route>) {
  const requests: { path: string; range: string | null }[] = [];
  const cut = new Set<string>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname.slice(1);
    const range = req.headers.get("range");
    requests.push({ path, range });
    const route = routes[path];
    if (!route || route.status === 404 || !route.body) {
      return new Response("not found", { status: 404 });
    }
    const start = range ? Number(/bytes=(\d+)-/.exec(range)![1]) : 0;
    const body = route.body.subarray(start);
    const headers = new Headers({ "content-length": String(body.length) });
    if (range) {
      headers.set("content-range", `bytes ${start}-${route.body.length - 1}/${route.body.length}`);
    }
    if (route.cutAfter !== undefined && !cut.has(path)) {
      cut.add(path);
      const first = body.subarray(0, route.cutAfter);
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(first);
          controller.close(); // fewer bytes than content-length: the client sees a cut
        },
      });
      return new Response(stream, { status: range ? 206 : 200, headers });
    }
    return new Response(body.slice(), { status: range ? 206 : 200, headers });
  });
  const port = (server.addr as Deno.NetAddr).port;
  return { server, requests, base: `http://127.0.0.1:${port}/` };
}

function listFiles(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      const rel = prefix + e.name;
      if (e.isDirectory) out.push(...listFiles(join(dir, e.name), rel + "/"));
      else out.push(rel);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

const quiet = { download: { quiet: true, backoffMs: 5, retries: 3 } };

Deno.test("zoo name: download (resumed after a cut), convert, cache; then offline from the cache", async () => {
  const cache = await Deno.makeTempDir();
  const tiny = getZooEntry("convnext_tiny_1k_224");
  const { server, requests, base } = serve({ [tiny.file]: { body: tinyBytes, cutAfter: 100_000 } });
  try {
    await withEnv({ CONVNEXT_BASE_URL: base, CONVNEXT_CACHE: cache }, async () => {
      const model = await loadModel("convnext_tiny_1k_224", quiet);
      // The interrupted transfer resumed where it stopped instead of starting over.
      assert.deepEqual(requests.map((r) => r.range), [null, "bytes=100000-"]);
      const diff = maxDiffToReference(model);
      assert.ok(diff <= 1e-4, `max |logits - PyTorch| = ${diff}`);
      const info = storedModelConfig(model)!;
      assert.equal(info.architecture, "convnext_tiny");
      assert.equal(info.numClasses, 1000);
      assert.equal(info.labels, "imagenet-1k");
      assert.equal(info.source?.layout, "official");
      assert.equal(info.preprocessing.mode, "resize-crop");
      assert.equal(info.preprocessing.cropPct, 0.875);
      model.dispose();
      assert.deepEqual(listFiles(cache), [
        `checkpoints/${tiny.file}`,
        `checkpoints/${tiny.file}.sha256`,
        "models/convnext_tiny_1k_224/convnext.json",
        "models/convnext_tiny_1k_224/group1-shard1of2.bin",
        "models/convnext_tiny_1k_224/group1-shard2of2.bin",
        "models/convnext_tiny_1k_224/model.json",
      ]);
      const recorded = (await Deno.readTextFile(join(cache, "checkpoints", `${tiny.file}.sha256`)))
        .trim().split(/\s+/)[0];
      assert.equal(info.source?.sha256, recorded);
    });
  } finally {
    await server.shutdown();
  }
  // The server is gone: the converted model comes from the cache.
  await withEnv({ CONVNEXT_BASE_URL: base, CONVNEXT_CACHE: cache }, async () => {
    const again = await loadModel("convnext_tiny_1k_224", quiet);
    assert.ok(maxDiffToReference(again) <= 1e-4);
    assert.equal(storedModelConfig(again)!.architecture, "convnext_tiny");
    again.dispose();
  });
  await Deno.remove(cache, { recursive: true });
});

Deno.test("404, truncated file and hostile pickle: clear errors, no partial files left", async () => {
  const cache = await Deno.makeTempDir();
  const missing = getZooEntry("convnext_small_1k_224");
  const truncated = getZooEntry("convnext_base_1k_224");
  const evil = getZooEntry("convnext_large_1k_224");
  const { server, base } = serve({
    [missing.file]: { status: 404 },
    [truncated.file]: { body: tinyBytes.subarray(0, 150_000) },
    [evil.file]: { body: hostile },
  });
  try {
    await withEnv({ CONVNEXT_BASE_URL: base, CONVNEXT_CACHE: cache }, async () => {
      await assert.rejects(() => loadModel(missing.name, quiet), (e: Error) => {
        assert.match(e.message, new RegExp(`${missing.file}: HTTP 404`));
        return true;
      });
      await assert.rejects(() => loadModel(truncated.name, quiet), (e: Error) => {
        assert.match(e.message, /truncated|corrupt|not a complete zip/i);
        return true;
      });
      await assert.rejects(() => loadModel(evil.name, quiet), (e: Error) => {
        assert.match(e.message, /os\.system|os system/);
        return true;
      });
    });
    assert.deepEqual(listFiles(cache), []);
  } finally {
    await server.shutdown();
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("loadModel: a checkpoint path converts on the fly; bad names list the zoo", async () => {
  const model = await loadModel(fromFixture("checkpoints/torchvision_mini.pth"));
  const info = storedModelConfig(model)!;
  assert.equal(info.source?.layout, "torchvision");
  assert.equal(info.architecture, "convnext_custom");
  model.dispose();
  await assert.rejects(
    () => loadModel("convnext_tinyy"),
    /"convnext_tinyy" is not a zoo name, an http\(s\) URL or an existing path; zoo names: convnext_tiny_1k_224, /,
  );
});

Deno.test("convertCheckpoint: dropHead gives a new head of the requested size", async () => {
  const { model, converted } = await convertCheckpoint(
    fromFixture("checkpoints/official_tiny.pth"),
    {
      dropHead: true,
      numClasses: 3,
    },
  );
  assert.equal(converted.checkpointClasses, 10);
  assert.deepEqual(model.outputs[0].shape, [null, 3]);
  const kernel = model.getLayer("head_fc").getWeights()[0];
  assert.ok(tf.tidy(() => tf.max(tf.abs(kernel)).dataSync()[0]) > 0, "the new head is initialized");
  model.dispose();
  await assert.rejects(
    () => convertCheckpoint(fromFixture("checkpoints/official_tiny.pth"), { numClasses: 3 }),
    /head has 10 classes, not 3 \(pass dropHead/,
  );
});

function fromFixture(p: string): string {
  return fixture(p).pathname;
}

Deno.test("deno task convert: writes a loadable model directory with its metadata", async () => {
  const out = join(await Deno.makeTempDir(), "converted");
  const tool = new URL("../tools/convert.ts", import.meta.url).pathname;
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", tool, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const ok = await run([fromFixture("checkpoints/torchvision_mini.pth"), "--out", out]);
  assert.equal(ok.code, 0, new TextDecoder().decode(ok.stderr));
  const { files, ...meta } = JSON.parse(await Deno.readTextFile(join(out, "convnext.json")));
  assert.equal(meta.source.layout, "torchvision");
  assert.equal(meta.source.file, "torchvision_mini.pth");
  assert.match(meta.source.sha256, /^[0-9a-f]{64}$/);
  // convnext.json also records every other file of the folder, as written.
  const written = [...Deno.readDirSync(out)].map((e) => e.name).filter((n) =>
    n !== "convnext.json"
  );
  assert.deepEqual(Object.keys(files).sort(), written.sort());
  const model = await loadModel(out);
  assert.deepEqual(storedModelConfig(model), meta);
  model.dispose();
  // An existing directory is kept unless --overwrite; errors are one line, exit code 1.
  const again = await run([fromFixture("checkpoints/torchvision_mini.pth"), "--out", out]);
  assert.equal(again.code, 1);
  const err = new TextDecoder().decode(again.stderr).trim();
  assert.match(
    err,
    /^convert: --out .* already holds a converted model; pass --overwrite to replace it$/,
  );
  assert.equal(err.split("\n").length, 1);
  // --json: one line, the configuration convnext.json holds (and where it went).
  const json = await run([
    fromFixture("checkpoints/torchvision_mini.pth"),
    "--out",
    out,
    "--overwrite",
    "--json",
  ]);
  assert.equal(json.code, 0, new TextDecoder().decode(json.stderr));
  const line = new TextDecoder().decode(json.stdout).trim();
  assert.equal(line.split("\n").length, 1);
  const { files: _files, ...stored } = JSON.parse(
    await Deno.readTextFile(join(out, "convnext.json")),
  );
  assert.deepEqual(JSON.parse(line), { out, ...stored });
  await Deno.remove(join(out, ".."), { recursive: true });
});
