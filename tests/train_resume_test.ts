/**
 * Exact resume of lib/train/finetune.ts on the cpu backend: a run interrupted during its
 * third epoch and resumed from its checkpoint ends exactly like the uninterrupted run
 * (same losses, accuracies and weights), with drop path, EMA and label smoothing on, with
 * gradient accumulation (AdamW on TF.js) and without (AdamW on the kernel engine, which holds
 * the moments between checkpoints).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { finetune, type FinetuneOptions } from "../lib/train/finetune.ts";
import { loadCheckpoint } from "../lib/train/checkpoint.ts";
import { makeSyntheticDataset, makeTinyModel, useCpu } from "./train_helpers.ts";

await useCpu();
const tmp = await Deno.makeTempDir({ prefix: "train_resume_" });
const { root } = await makeSyntheticDataset(join(tmp, "data"), 8, 2);
// Layer scale 0.5 instead of 1e-6: the residual branches, and so drop path, matter at once.
const baseDir = await makeTinyModel(join(tmp, "base"), 2, 0.5);

const settingsFor = (out: string, updateFreq: number): FinetuneOptions => ({
  model: baseDir,
  data: root,
  out: join(tmp, out),
  epochs: 3,
  batch: 4,
  updateFreq,
  lr: 2e-3,
  warmupEpochs: 1,
  size: 48,
  dropPath: 0.2,
  labelSmoothing: 0.1,
  ema: true,
  emaDecay: 0.8,
  headInitScale: 1,
  seed: 11,
  workers: 1,
  quiet: true,
});

for (const updateFreq of [2, 1]) {
  const how = updateFreq === 1 ? "AdamW on the engine" : "accumulated gradients";
  Deno.test(`2 epochs + interruption + resume == 3 epochs uninterrupted (${how})`, async () => {
    await exactResume(updateFreq);
  });
}

async function exactResume(updateFreq: number) {
  const settings = (out: string) => settingsFor(`${out}-${updateFreq}`, updateFreq);
  const full = await finetune(settings("straight"));
  assert.equal(full.metrics.length, 3);

  // Interrupt during epoch 3, after its first micro-batch.
  const controller = new AbortController();
  await assert.rejects(
    () =>
      finetune({
        ...settings("interrupted"),
        signal: controller.signal,
        onBatch: ({ epoch, batch }) => {
          if (epoch === 3 && batch === 1) controller.abort(new Error("simulated interruption"));
        },
      }),
    /simulated interruption/,
  );
  const saved = await loadCheckpoint<{ epoch: number }>(
    join(tmp, `interrupted-${updateFreq}`, "checkpoint"),
  );
  assert.equal(saved!.state.epoch, 2, "the last complete epoch is checkpointed");

  const resumed = await finetune({ ...settings("interrupted"), resume: true });
  assert.equal(resumed.startEpoch, 2);
  assert.equal(resumed.metrics.length, 3);
  for (const [i, m] of full.metrics.entries()) {
    const r = resumed.metrics[i];
    for (
      const k of [
        "trainLoss",
        "trainAccuracy",
        "valLoss",
        "valAccuracy",
        "emaValLoss",
        "lr",
      ] as const
    ) {
      assert.ok(
        Math.abs((r[k] as number) - (m[k] as number)) <= 1e-5,
        `epoch ${i + 1} ${k}: resumed ${r[k]} vs uninterrupted ${m[k]}`,
      );
    }
  }
  // Weights, optimizer moments and EMA are the same too.
  const a = await loadCheckpoint(join(tmp, `straight-${updateFreq}`, "checkpoint"));
  const b = await loadCheckpoint(join(tmp, `interrupted-${updateFreq}`, "checkpoint"));
  assert.equal(a!.tensors.length, b!.tensors.length);
  for (const [i, t] of a!.tensors.entries()) {
    const u = b!.tensors[i];
    assert.equal(`${u.group}/${u.name}`, `${t.group}/${t.name}`);
    let maxErr = 0;
    for (let j = 0; j < t.data.length; j++) {
      maxErr = Math.max(maxErr, Math.abs(t.data[j] - u.data[j]));
    }
    // The cpu backend is deterministic: the resumed run computes the very same numbers.
    assert.equal(maxErr, 0, `${t.group}/${t.name} differs by ${maxErr}`);
  }
  const metrics = join(tmp, `interrupted-${updateFreq}`, "metrics.jsonl");
  const lines = (await Deno.readTextFile(metrics)).trim().split("\n");
  assert.equal(lines.length, 3);

  // A resume with other settings is refused with the difference named.
  await assert.rejects(
    () => finetune({ ...settings("interrupted"), lr: 1e-3, resume: true }),
    /other settings: lr 0\.002 \(now 0\.001\)/,
  );
}

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
