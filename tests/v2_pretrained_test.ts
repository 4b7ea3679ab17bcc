// ConvNeXt V2 through the public conversion (lib/weights/pretrained.ts): an FCMAE encoder
// converts to the pooled embedding the official fine-tuning starts from (a fresh final
// LayerNorm), within 1e-4 of the official PyTorch code, or to a model with a new head.
// References: tools/fixtures/make_v2_fixtures.py (tests/fixtures/v2/).

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { maxAbsDiff } from "./numeric_helpers.ts";
import { withEnv } from "./env_helpers.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { architectureOf } from "../lib/model/architecture.ts";
import { storedModelConfig } from "../lib/model/config.ts";
import { convertCheckpoint, loadModel } from "../lib/weights/pretrained.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";

await selectBackend("cpu");

const DIR = new URL("./fixtures/v2/", import.meta.url);
const path = (f: string) => new URL(f, DIR).pathname;

async function readF32(file: string): Promise<Float32Array> {
  const bytes = await Deno.readFile(new URL(file, DIR));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

interface Fixture {
  name: string;
  file: string;
  inputs: Record<string, { file: string; shape: number[] }>;
  outputs: Record<string, { file: string; shape: number[] }>;
}

const { models } = JSON.parse(await Deno.readTextFile(new URL("models.json", DIR))) as {
  models: Fixture[];
};

Deno.test("fcmae: convertCheckpoint gives the encoder with a fresh norm, or a new head to fine-tune", async () => {
  const f = models.find((m) => m.name === "fcmae_v2")!;
  const { model, converted } = await convertCheckpoint(path(f.file));
  try {
    assert.equal(converted.layout, "fcmae");
    assert.deepEqual(converted.initialized, ["head_norm/gamma", "head_norm/beta"]);
    assert.deepEqual(model.outputs[0].shape, [null, 64]);
    for (const [key, input] of Object.entries(f.inputs)) {
      const x = tf.tensor(await readF32(input.file), input.shape);
      const y = model.predict(x) as tf.Tensor; // the public path: stock for GRN models
      const diff = maxAbsDiff(await y.data(), await readF32(f.outputs[key].file));
      assert.ok(diff <= 1e-4, `${key}: max abs diff ${diff}`);
      tf.dispose([x, y]);
    }
  } finally {
    model.dispose();
  }
  const tuned = await convertCheckpoint(path(f.file), { dropHead: true, numClasses: 5 });
  try {
    assert.deepEqual(tuned.model.outputs[0].shape, [null, 5]);
    assert.equal(architectureOf(tuned.model).spec.grn, true);
  } finally {
    tuned.model.dispose();
  }
});

Deno.test("loadModel: a V2 checkpoint named _512 gets V2's 512 px warp, a zoo name its licence", async () => {
  const bytes = await Deno.readFile(path("official_v2.pt"));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(bytes),
  );
  const cache = await Deno.makeTempDir();
  try {
    const port = (server.addr as Deno.NetAddr).port;
    const model = await withEnv(
      { CONVNEXT_CACHE: cache },
      () =>
        loadModel(`http://127.0.0.1:${port}/convnextv2_x_22k_512_ema.pt`, {
          download: { quiet: true },
        }),
    );
    const config = storedModelConfig(model)!;
    // ConvNeXt-V2's datasets.py: no crop from 384 px on (the same rule as V1's 384).
    assert.deepEqual([config.preprocessing.size, config.preprocessing.mode], [512, "warp"]);
    assert.equal(config.preprocessing.cropPct, 1);
    assert.equal(config.license, undefined); // not a zoo file: no licence claimed for it
    model.dispose();
  } finally {
    await server.shutdown();
    await Deno.remove(cache, { recursive: true });
  }
  // A zoo entry's licence and origin go into the model's configuration (V2: CC-BY-NC 4.0).
  const entry = getZooEntry("convnextv2_atto_1k_224");
  assert.equal(entry.license, "CC-BY-NC-4.0");
  assert.match(entry.originUrl, /ConvNeXt-V2/);
});
