/**
 * Fine-tuning on the WebGPU backend (full and linear probe), end to end through `finetune`
 * with a tiny ConvNeXt on generated images: every read of a GPU tensor on that path must be
 * asynchronous (Deno has no 2D canvas for tfjs-webgpu's synchronous reads), the loss must
 * be finite and fall, and the outputs must be written. Needs a WebGPU adapter: without a GPU,
 * Debian's mesa-vulkan-drivers gives a software one; with none the tests fail saying so.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { loadSavedModel } from "../lib/model/io.ts";
import { finetune } from "../lib/train/finetune.ts";
import { makeSyntheticDataset, makeTinyModel } from "./train_helpers.ts";

const tmp = await Deno.makeTempDir({ prefix: "webgpu_finetune_" });
await selectBackend("cpu");
const { root } = await makeSyntheticDataset(join(tmp, "data"), 8);
const baseDir = await makeTinyModel(join(tmp, "base"));
const webgpu: Error | null = await selectBackend("webgpu").then(() => null, (e) => e);

function useWebGpu(): void {
  if (webgpu) throw new Error(`${webgpu.message} (the WebGPU tests need an adapter)`);
}

for (const mode of ["full", "probe"] as const) {
  Deno.test(`finetune on webgpu (${mode}): finite, falling loss and a saved best model`, async () => {
    useWebGpu();
    const out = join(tmp, mode);
    const result = await finetune({
      model: baseDir,
      data: root,
      out,
      mode,
      epochs: mode === "full" ? 2 : 6,
      batch: 8,
      lr: mode === "full" ? 2e-3 : 1e-2,
      size: 40,
      headInitScale: 1,
      seed: 3,
      workers: 0,
      quiet: true,
    });
    const losses = result.metrics.map((m) => m.trainLoss);
    assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
    assert.ok(losses.at(-1)! < losses[0], `loss falls: ${losses}`);
    const { model } = await loadSavedModel(join(out, "best"));
    assert.equal(model.outputs[0].shape.at(-1), 3);
    model.dispose();
  });
}

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
