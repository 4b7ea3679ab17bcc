/**
 * End-to-end tests of lib/train/finetune.ts on generated data with a tiny ConvNeXt, on the
 * wasm backend with lib/backend/wasm_grads.ts's training kernels (the cpu backend is 10x
 * slower; tests/train_resume_test.ts covers the cpu backend): full fine-tuning learns,
 * writes its metrics, checkpoint, best model and report, and skips a corrupt image; the
 * linear probe trains from cached features.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { join } from "node:path";
import { installWasmTrainingKernels } from "../lib/backend/wasm_grads.ts";
import { loadSavedModel } from "../lib/model/io.ts";
import { evalTransform } from "../lib/data/transform.ts";
import { readImage } from "../lib/data/decode.ts";
import { finetune } from "../lib/train/finetune.ts";
import { splitStratified } from "../lib/train/data.ts";
import { listImageFolder } from "../lib/data/image_folder.ts";
import { LoadPool } from "../lib/train/loader.ts";
import { clearFeatureMemoryCache } from "../lib/train/probe.ts";
import { OptionError } from "../lib/util/errors.ts";
import { makeSyntheticDataset, makeTinyModel, SYNTHETIC_CLASSES } from "./train_helpers.ts";

installWasmTrainingKernels();
await tf.setBackend("wasm");
await tf.ready();

const tmp = await Deno.makeTempDir({ prefix: "train_finetune_" });
const { root, bad } = await makeSyntheticDataset(join(tmp, "data"), 24);
const baseDir = await makeTinyModel(join(tmp, "base"));
const SIZE = 48;

/** Accuracy of `model` on the validation split that `finetune` draws with `seed`. */
async function validationAccuracy(model: tf.LayersModel, seed: number): Promise<number> {
  const { val } = splitStratified((await listImageFolder(root)).samples, 0.2, seed);
  let correct = 0, total = 0;
  for (const s of val) {
    const img = await readImage(s.path).catch(() => null);
    if (!img) continue; // the corrupt image, skipped by finetune too
    const x = tf.tensor4d(evalTransform(img, SIZE), [1, SIZE, SIZE, 3]);
    const logits = model.predict(x) as tf.Tensor;
    const top = logits.argMax(-1);
    const pred = (await top.data())[0];
    tf.dispose([x, logits, top]);
    correct += pred === s.label ? 1 : 0;
    total++;
  }
  return correct / total;
}

async function readMetrics(out: string) {
  const text = await Deno.readTextFile(join(out, "metrics.jsonl"));
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

Deno.test("full fine-tuning: loss falls, validation beats chance, outputs are complete", async () => {
  const out = join(tmp, "full");
  const result = await finetune({
    model: baseDir,
    data: root,
    out,
    epochs: 3,
    batch: 8,
    updateFreq: 2,
    lr: 2e-3,
    size: SIZE,
    headInitScale: 1,
    dropPath: 0.1,
    ema: true,
    emaDecay: 0.9,
    seed: 3,
    workers: 1,
    quiet: true,
  });
  const metrics = await readMetrics(out);
  assert.equal(metrics.length, 3);
  assert.deepEqual(metrics, JSON.parse(JSON.stringify(result.metrics)));
  for (const m of metrics) {
    for (const k of ["trainLoss", "trainAccuracy", "valLoss", "valAccuracy", "imagesPerSecond"]) {
      assert.ok(Number.isFinite(m[k]), `epoch ${m.epoch} ${k} = ${m[k]}`);
    }
  }
  assert.deepEqual(metrics.map((m) => m.epoch), [1, 2, 3]);
  assert.ok(
    metrics[2].trainLoss < metrics[0].trainLoss - 0.1,
    `loss falls: ${metrics.map((m) => m.trainLoss)}`,
  );
  const bestAccuracy = Math.max(...metrics.map((m) => Math.max(m.valAccuracy, m.emaValAccuracy)));
  assert.ok(bestAccuracy >= 0.7, `validation accuracy ${bestAccuracy} clearly above chance (1/3)`);
  assert.equal(result.best!.valAccuracy, bestAccuracy);

  // The corrupt image was reported once and skipped.
  assert.deepEqual(result.skipped.map((s) => s.path), [bad]);

  // The best model loads and carries the class names; it predicts what validation measured.
  const { model, metadata } = await loadSavedModel(join(out, "best"));
  assert.deepEqual(metadata?.classes, [...SYNTHETIC_CLASSES].sort());
  assert.equal((metadata?.convnext as { numClasses: number }).numClasses, 3);
  assert.deepEqual(model.outputs[0].shape, [null, 3]);
  const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
  assert.equal(report.accuracy, result.best!.valAccuracy);
  assert.equal(report.confusion.flat().reduce((a: number, b: number) => a + b, 0), report.total);
  // The saved model reproduces the recorded validation accuracy: the same split (the data's
  // listing, valSplit 0.2, the run's seed), the eval transform, the unreadable image left out.
  assert.equal(await validationAccuracy(model, 3), result.best!.valAccuracy);
  model.dispose();

  // The checkpoint holds the last epoch; without resume the directory is refused.
  const state = JSON.parse(await Deno.readTextFile(join(out, "checkpoint", "state.json")));
  assert.equal(state.state.epoch, 3);
  assert.equal(state.state.step, 3 * 3);
  await assert.rejects(
    () => finetune({ model: baseDir, data: root, out, epochs: 3, size: SIZE, quiet: true }),
    (e: Error) =>
      e instanceof OptionError && e.option === "out" &&
      /^finetune: out .* holds a checkpoint of an earlier run; pass resume: true to continue it, overwrite: true to start over, or choose another out$/
        .test(e.message),
  );
  // The command line says the same with its flags.
  const cli = await finetuneCli(["--model", baseDir, "--data", root, "--out", out]);
  assert.equal(cli.code, 1);
  assert.match(
    cli.stderr,
    /^finetune: --out .* holds a checkpoint of an earlier run; pass --resume to continue it, --overwrite to start over, or choose another --out$/m,
  );
});

/** Runs `deno task finetune` with `args` on the cpu backend. */
async function finetuneCli(args: string[]): Promise<{ code: number; stderr: string }> {
  const tool = new URL("../tools/finetune.ts", import.meta.url).pathname;
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", tool, "--backend", "cpu", "--quiet", ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code, stderr: new TextDecoder().decode(stderr) };
}

Deno.test("bad options: the library names the option, the command line its flag", async () => {
  const out = join(tmp, "bad");
  await assert.rejects(
    () => finetune({ model: baseDir, data: root, out, epochs: 0, quiet: true }),
    (e: Error) =>
      e instanceof OptionError && e.option === "epochs" &&
      e.message === "finetune: epochs must be an integer >= 1, got 0",
  );
  await assert.rejects(
    () => finetune({ model: baseDir, data: root, out, minLr: -1, quiet: true }),
    /^OptionError: finetune: minLr must be a number >= 0, got -1$/,
  );
  await assert.rejects(
    () => finetune({ model: baseDir, data: root, out, mode: "probe", dropPath: 0.2, quiet: true }),
    /^OptionError: finetune: dropPath must be 0 in probe mode/,
  );
  const cli = await finetuneCli([
    "--model",
    baseDir,
    "--data",
    root,
    "--out",
    out,
    "--min-lr=-1",
  ]);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /^finetune: --min-lr must be a number >= 0, got -1$/m);
  await assert.rejects(
    () =>
      finetune({
        model: baseDir,
        data: root,
        out,
        layerDecayType: "blocks" as "single",
        quiet: true,
      }),
    /^OptionError: finetune: layerDecayType must be "group" or "single", got "blocks"$/,
  );
  const type = await finetuneCli([
    "--model",
    baseDir,
    "--data",
    root,
    "--out",
    out,
    "--layer-decay-type",
    "blocks",
  ]);
  assert.equal(type.code, 1);
  assert.match(
    type.stderr,
    /^finetune: --layer-decay-type must be "group" or "single", got "blocks"$/m,
  );
});

Deno.test("linear probe: trains a head on features computed once, then from the cache", async () => {
  const cache = join(tmp, "features-cache");
  const run = (name: string) =>
    finetune({
      model: baseDir,
      data: root,
      out: join(tmp, name),
      mode: "probe",
      epochs: 15,
      batch: 16,
      lr: 1e-2,
      size: SIZE,
      seed: 1,
      workers: 1,
      featuresCache: cache,
      quiet: true,
    });
  const first = await run("probe1");
  const images = 3 * 24 + 1;
  assert.equal(first.featureStats!.decoded, images);
  assert.ok(first.featureStats!.forwardBatches > 0);
  const metrics = first.metrics;
  assert.ok(metrics.at(-1)!.trainLoss < metrics[0].trainLoss, "probe loss falls");
  assert.ok(first.best!.valAccuracy! >= 0.7, `probe accuracy ${first.best!.valAccuracy}`);
  const files = [...Deno.readDirSync(cache)].flatMap((
    d,
  ) => [...Deno.readDirSync(join(cache, d.name))]);
  assert.equal(files.length, images - 1, "one cached feature file per readable image");

  // Second run in a fresh process state: only the disk cache is left.
  clearFeatureMemoryCache();
  const loadsBefore = LoadPool.totalLoads;
  const second = await run("probe2");
  assert.equal(LoadPool.totalLoads - loadsBefore, 1, "only the unreadable image is tried again");
  assert.equal(second.featureStats!.diskHits, images - 1);
  assert.equal(second.featureStats!.forwardBatches, 0, "no forward pass of the backbone");
  const withoutSpeed = (ms: typeof first.metrics) => ms.map(({ imagesPerSecond: _, ...m }) => m);
  assert.deepEqual(
    withoutSpeed(second.metrics),
    withoutSpeed(first.metrics),
    "same features: same run",
  );

  // Third run: the in-memory cache answers.
  const third = await run("probe3");
  assert.equal(third.featureStats!.memoryHits, images - 1);
  assert.equal(third.featureStats!.forwardBatches, 0);

  // The saved probe model is a full ConvNeXt with the trained head.
  const { model, metadata } = await loadSavedModel(join(tmp, "probe1", "best"));
  assert.equal((metadata?.finetune as { mode: string }).mode, "probe");
  assert.ok(model.layers.some((l) => l.name === "stem_conv"));
  assert.deepEqual(model.outputs[0].shape, [null, 3]);
  // ... that reproduces the probe's recorded validation accuracy (its features were cached,
  // the saved model recomputes them from the pixels).
  assert.equal(await validationAccuracy(model, 1), first.best!.valAccuracy);
  model.dispose();
});

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
