/**
 * Never a wrong answer with exit code 0 from broken weights: a checkpoint without a head
 * converts as a feature extractor, which `classify` refuses instead of naming classes from an
 * embedding; a NaN in a checkpoint is an error naming the tensor at conversion, a saved model
 * holding one is an error naming the weight when loaded, and fine-tuning stops at the first
 * non-finite loss naming the step.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../lib/backend/select.ts";
import { saveModel } from "../lib/model/io.ts";
import { finetune } from "../lib/train/finetune.ts";
import { convertCheckpoint, loadModel } from "../lib/weights/pretrained.ts";
import { classify } from "../lib/classify.ts";
import { makeSyntheticDataset, TINY_SPEC } from "./train_helpers.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";

await selectBackend("cpu");
const tmp = await Deno.makeTempDir({ prefix: "nonfinite_" });
const FIXTURE = new URL("./fixtures/checkpoints/timm_mini.safetensors", import.meta.url);

Deno.test("a NaN in a checkpoint: conversion names the tensor", async () => {
  const bytes = await Deno.readFile(FIXTURE);
  const view = new DataView(bytes.buffer);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const [begin] = header["stem.1.weight"].data_offsets as number[];
  view.setFloat32(8 + headerLength + begin + 4, NaN, true); // its second value
  const path = join(tmp, "nan.safetensors");
  await Deno.writeFile(path, bytes);
  await assert.rejects(
    () => convertCheckpoint(path),
    /^Error: nan\.safetensors: tensor "stem\.1\.weight" holds a non-finite value \(NaN at 1\)$/,
  );
});

/** The fixture rewritten without the tensors whose key starts with `drop`. */
async function withoutKeys(drop: string, path: string): Promise<void> {
  const bytes = await Deno.readFile(FIXTURE);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const data = bytes.subarray(8 + headerLength);
  const out: Record<string, unknown> = {};
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [key, t] of Object.entries(header) as [string, { data_offsets: number[] }][]) {
    if (key === "__metadata__" || key.startsWith(drop)) continue;
    const [a, b] = t.data_offsets;
    parts.push(data.subarray(a, b));
    out[key] = { ...t, data_offsets: [offset, offset + b - a] };
    offset += b - a;
  }
  const json = new TextEncoder().encode(JSON.stringify(out));
  const file = new Uint8Array(8 + json.length + offset);
  new DataView(file.buffer).setBigUint64(0, BigInt(json.length), true);
  file.set(json, 8);
  let at = 8 + json.length;
  for (const p of parts) {
    file.set(p, at);
    at += p.length;
  }
  await Deno.writeFile(path, file);
}

Deno.test("a checkpoint without a head: classify refuses, the command exits 1", async () => {
  const path = join(tmp, "headless.safetensors");
  await withoutKeys("head.fc.", path);
  const model = await loadModel(path);
  await assert.rejects(
    () => classify(model, ["data/images/chelsea.png"]),
    /output has shape \[batch, \d+\], expected \[batch, classes\]: it has no classification head/,
  );
  model.dispose();
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tools/classify.ts", "--model", path, "data/images/chelsea.png"],
    cwd: new URL("../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(run.code, 1);
  assert.equal(new TextDecoder().decode(run.stdout), "", "no classes printed");
  assert.match(new TextDecoder().decode(run.stderr), /no classification head/);
});

/** A tiny model whose first weight holds `value` at index 0. */
function brokenModel(value: number): tf.LayersModel {
  const model = createConvNeXt(TINY_SPEC, { numClasses: 3, seed: 1 });
  const w = model.weights[0];
  const data = w.read().dataSync().slice();
  data[0] = value;
  w.write(tf.tensor(data, w.shape as number[]));
  return model;
}

Deno.test("a saved model holding an infinity: loading names the weight", async () => {
  const model = brokenModel(Infinity);
  const dir = join(tmp, "saved");
  await saveModel(model, dir);
  const name = model.weights[0].originalName;
  model.dispose();
  await assert.rejects(
    () => loadModel(dir),
    (e: Error) => e.message === `${dir}: weight "${name}" holds a non-finite value (Infinity at 0)`,
  );
});

Deno.test("fine-tuning stops at the first non-finite loss, naming the step", async () => {
  const { root } = await makeSyntheticDataset(join(tmp, "data"), 4);
  const model = brokenModel(NaN);
  try {
    await assert.rejects(
      () =>
        finetune({
          model,
          data: root,
          out: join(tmp, "run"),
          epochs: 2,
          batch: 4,
          size: 40,
          workers: 0,
          quiet: true,
        }),
      /^Error: finetune: the loss is NaN at epoch 1, step 1 \(micro-batch 1\)/,
    );
  } finally {
    model.dispose();
  }
});

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
