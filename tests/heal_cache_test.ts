/**
 * A cache that heals itself (issue 14): a converted model in the cache whose files are
 * damaged (truncated, altered, missing) is converted again from the cached checkpoint with
 * a one-line notice, and the checkpoint is downloaded again when it is damaged too; loading
 * errors name the damaged file. The checkpoint (tests/fixtures/checkpoints/official_tiny.pth,
 * made by tools/fixtures/make_checkpoints.py) is served by a local HTTP server and cached by
 * URL in a temporary CONVNEXT_CACHE.
 */
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { DamagedModelError, loadSavedModel, saveModel } from "../lib/model/io.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { convertToDirectory, loadModel } from "../lib/weights/pretrained.ts";

await selectBackend("cpu");

const CHECKPOINT = await Deno.readFile(
  new URL("./fixtures/checkpoints/official_tiny.pth", import.meta.url),
);

/** A fixed input; the model's logits on it say whether two models are the same. */
function logits(model: tf.LayersModel): Float32Array {
  return tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from({ length: 2 * 32 * 32 * 3 }, (_, i) => Math.sin(i)), [
      2,
      32,
      32,
      3,
    ]);
    return (model.predict(x) as tf.Tensor).dataSync() as Float32Array;
  });
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A cache, a server of the checkpoint, the URL, and where its converted model lands. */
interface Env {
  cache: string;
  url: string;
  requests: () => number;
  notices: string[];
  load: () => Promise<tf.LayersModel>;
  /** The cached converted model's folder (after the first load). */
  modelDir: () => string;
  /** The cached checkpoint file (after the first load). */
  checkpoint: () => string;
}

async function withCache(fn: (env: Env) => Promise<void>): Promise<void> {
  const cache = await Deno.makeTempDir({ prefix: "heal_cache_" });
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    requests++;
    return new Response(CHECKPOINT.slice());
  });
  const old = Deno.env.get("CONVNEXT_CACHE");
  Deno.env.set("CONVNEXT_CACHE", cache);
  const notices: string[] = [];
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/official_tiny.pth`;
  const only = (dir: string, ext = "") =>
    join(dir, [...Deno.readDirSync(dir)].map((e) => e.name).find((n) => n.endsWith(ext))!);
  try {
    await fn({
      cache,
      url,
      requests: () => requests,
      notices,
      load: () => loadModel(url, { download: { quiet: true }, log: (line) => notices.push(line) }),
      modelDir: () => only(join(cache, "models")),
      checkpoint: () => only(join(cache, "checkpoints"), ".pth"),
    });
  } finally {
    old === undefined ? Deno.env.delete("CONVNEXT_CACHE") : Deno.env.set("CONVNEXT_CACHE", old);
    await server.shutdown();
    await Deno.remove(cache, { recursive: true });
  }
}

/** The files of `dir` (recursively, relative), to show nothing is left over. */
function listFiles(dir: string, prefix = ""): string[] {
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory ? listFiles(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`]
  ).sort();
}

/** Every file convnext.json records has that size and sha256 (hashed here, from disk). */
async function assertRecordsHold(dir: string): Promise<void> {
  const { files } = JSON.parse(await Deno.readTextFile(join(dir, "convnext.json")));
  const others = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== "convnext.json");
  assert.deepEqual(Object.keys(files).sort(), others.sort());
  for (const name of others) {
    const bytes = await Deno.readFile(join(dir, name));
    assert.deepEqual(files[name], { bytes: bytes.length, sha256: sha256(bytes) }, name);
  }
}

const shardOf = (dir: string) => join(dir, "group1-shard1of1.bin");

Deno.test("heal: convnext.json records the size and sha256 of model.json and each shard", async () => {
  await withCache(async (env) => {
    const model = await env.load();
    model.dispose();
    await assertRecordsHold(env.modelDir());
    assert.deepEqual(env.notices, []);
  });
});

/** Each way of damaging a cached model file, and what the notice says about it. */
const DAMAGES: [string, (dir: string) => Promise<string>, RegExp][] = [
  ["a truncated shard", async (dir) => {
    const bytes = await Deno.readFile(shardOf(dir));
    await Deno.writeFile(shardOf(dir), bytes.subarray(0, 1000));
    return shardOf(dir);
  }, /\(1000 bytes, expected \d+\)/],
  ["a shard altered in place (same size)", async (dir) => {
    const bytes = await Deno.readFile(shardOf(dir));
    bytes.fill(0x7f, 200, 260); // NaN-free garbage: would load fine and answer wrong
    await Deno.writeFile(shardOf(dir), bytes);
    return shardOf(dir);
  }, /\(sha256 differs from the one recorded when it was written/],
  ["a missing model.json", async (dir) => {
    await Deno.remove(join(dir, "model.json"));
    return join(dir, "model.json");
  }, /\(missing\)/],
  ["an unreadable convnext.json", async (dir) => {
    await Deno.writeTextFile(join(dir, "convnext.json"), "{ not json");
    return join(dir, "convnext.json");
  }, /\(not valid JSON\)/],
];

for (const [what, damage, reason] of DAMAGES) {
  Deno.test(`heal: ${what} is converted again from the cached checkpoint, with one notice`, async () => {
    await withCache(async (env) => {
      const first = await env.load();
      const expected = logits(first);
      first.dispose();
      const path = await damage(env.modelDir());
      const healed = await env.load();
      assert.deepEqual(logits(healed), expected);
      healed.dispose();
      assert.equal(env.notices.length, 1, env.notices.join("\n"));
      const notice = env.notices[0];
      assert.ok(
        notice.startsWith(`${path}: damaged (`) &&
          notice.endsWith(`); reconverting from ${env.checkpoint()}`),
        notice,
      );
      assert.match(notice, reason);
      assert.equal(env.requests(), 1, "the intact checkpoint was not downloaded again");
      await assertRecordsHold(env.modelDir());
      // Healed for good: the next load is quiet, and no temporary copies are left.
      (await env.load()).dispose();
      assert.equal(env.notices.length, 1);
      assert.deepEqual(listFiles(env.cache).filter((f) => /\.(tmp|old)-/.test(f)), []);
    });
  });
}

Deno.test("heal: a damaged checkpoint under a damaged model is downloaded again", async () => {
  await withCache(async (env) => {
    const first = await env.load();
    const expected = logits(first);
    first.dispose();
    await Deno.writeFile(shardOf(env.modelDir()), new Uint8Array(10));
    const bytes = await Deno.readFile(env.checkpoint());
    bytes[bytes.length >> 1] ^= 0xff;
    await Deno.writeFile(env.checkpoint(), bytes);
    const healed = await env.load();
    assert.deepEqual(logits(healed), expected);
    healed.dispose();
    assert.equal(env.notices.length, 2, env.notices.join("\n"));
    assert.match(env.notices[0], /group1-shard1of1\.bin: damaged \(10 bytes, expected \d+\)/);
    assert.equal(
      env.notices[1],
      `${env.checkpoint()}: damaged (sha256 differs from the one recorded at download); downloading it again`,
    );
    assert.equal(env.requests(), 2);
    assert.deepEqual(await Deno.readFile(env.checkpoint()), CHECKPOINT);
  });
});

Deno.test("heal: a cache from before the records is used as it is, and healed when it fails to load", async () => {
  await withCache(async (env) => {
    const first = await env.load();
    const expected = logits(first);
    first.dispose();
    const info = join(env.modelDir(), "convnext.json");
    const { files: _, ...older } = JSON.parse(await Deno.readTextFile(info));
    await Deno.writeTextFile(info, JSON.stringify(older, null, 2) + "\n");
    const shardMtime = (await Deno.stat(shardOf(env.modelDir()))).mtime;
    // Intact: loaded without converting (the files are not rewritten).
    const again = await env.load();
    assert.deepEqual(logits(again), expected);
    again.dispose();
    assert.deepEqual((await Deno.stat(shardOf(env.modelDir()))).mtime, shardMtime);
    assert.deepEqual(env.notices, []);
    // Truncated: the load fails, naming the shard, and it is converted again (with records).
    const bytes = await Deno.readFile(shardOf(env.modelDir()));
    await Deno.writeFile(shardOf(env.modelDir()), bytes.subarray(0, bytes.length - 4096));
    const healed = await env.load();
    assert.deepEqual(logits(healed), expected);
    healed.dispose();
    assert.equal(env.notices.length, 1);
    assert.match(
      env.notices[0],
      new RegExp(
        `^${shardOf(env.modelDir())}: damaged \\(truncated: ${
          bytes.length - 4096
        } bytes, expected ${bytes.length} .*\\); reconverting from `,
      ),
    );
    await assertRecordsHold(env.modelDir());
  });
});

Deno.test("loadModel on a converted folder: a damaged file is an error naming it (no healing outside the cache)", async () => {
  const dir = join(await Deno.makeTempDir({ prefix: "heal_dir_" }), "model");
  try {
    const checkpoint = join(dir, "..", "official_tiny.pth");
    await Deno.writeFile(checkpoint, CHECKPOINT);
    await convertToDirectory(checkpoint, dir);
    const bytes = await Deno.readFile(shardOf(dir));
    bytes[100] ^= 1;
    await Deno.writeFile(shardOf(dir), bytes);
    await assert.rejects(
      () => loadModel(dir),
      (e: Error) =>
        e instanceof DamagedModelError && e.path === shardOf(dir) &&
        e.message.startsWith(`loadSavedModel: ${shardOf(dir)}: sha256 differs`),
    );
  } finally {
    await Deno.remove(join(dir, ".."), { recursive: true });
  }
});

/** A small model saved with its weights split over three shards, as other writers do. */
async function threeShards(dir: string): Promise<{ sizes: number[] }> {
  const model = createConvNeXt({
    kind: "hierarchical",
    depths: [1, 1, 1, 1],
    dims: [8, 8, 16, 16],
    layerScaleInit: 1e-6,
  }, { numClasses: 3 });
  await saveModel(model, dir);
  model.dispose();
  const whole = await Deno.readFile(join(dir, "group1-shard1of1.bin"));
  const part = Math.ceil(whole.length / 3 / 4) * 4;
  const sizes = [part, part, whole.length - 2 * part];
  for (let i = 0; i < 3; i++) {
    await Deno.writeFile(
      join(dir, `group1-shard${i + 1}of3.bin`),
      whole.subarray(i * part, i * part + sizes[i]),
    );
  }
  await Deno.remove(join(dir, "group1-shard1of1.bin"));
  const json = JSON.parse(await Deno.readTextFile(join(dir, "model.json")));
  json.weightsManifest[0].paths = [1, 2, 3].map((i) => `group1-shard${i}of3.bin`);
  await Deno.writeTextFile(join(dir, "model.json"), JSON.stringify(json));
  (await loadSavedModel(dir)).model.dispose(); // the split itself is a valid model
  return { sizes };
}

Deno.test("loadSavedModel: a short shard among several is named; TF.js errors name model.json", async () => {
  const root = await Deno.makeTempDir({ prefix: "heal_io_" });
  try {
    const dir = join(root, "m");
    const { sizes } = await threeShards(dir);
    const middle = join(dir, "group1-shard2of3.bin");
    await Deno.writeFile(middle, (await Deno.readFile(middle)).subarray(0, sizes[1] - 40));
    await assert.rejects(
      () => loadSavedModel(dir),
      (e: Error) =>
        e instanceof DamagedModelError && e.path === middle &&
        e.reason.startsWith(`truncated: ${sizes[1] - 40} bytes, expected ${sizes[1]}`),
    );
    // Weights that need fewer bytes than a layer's variables: TF.js's error, with the file.
    const other = join(root, "n");
    const model = createConvNeXt({
      kind: "hierarchical",
      depths: [1, 1, 1, 1],
      dims: [8, 8, 16, 16],
      layerScaleInit: 1e-6,
    }, { numClasses: 3 });
    await saveModel(model, other);
    model.dispose();
    const json = JSON.parse(await Deno.readTextFile(join(other, "model.json")));
    const last = json.weightsManifest[0].weights.at(-1);
    last.shape = [1];
    await Deno.writeTextFile(join(other, "model.json"), JSON.stringify(json));
    await assert.rejects(
      () => loadSavedModel(other),
      (e: Error) => e.message.startsWith(`loadSavedModel: ${join(other, "model.json")}: `),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
