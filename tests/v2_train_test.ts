// ConvNeXt V2 beyond inference: fine-tuning from an FCMAE encoder (full and probe, the
// official route from pre-training) and from a fine-tuned checkpoint, and Grad-CAM and the
// stage feature maps on a V2 model. References: the official V2 fixtures
// (tools/fixtures/make_v2_fixtures.py) and the synthetic image folder of tests/train_helpers.ts.

import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import { join } from "node:path";
import { architectureOf } from "../lib/model/architecture.ts";
import { createFeatureExtractor } from "../lib/model/features.ts";
import { gradCam } from "../lib/model/gradcam.ts";
import { loadSavedModel } from "../lib/model/io.ts";
import { finetune } from "../lib/train/finetune.ts";
import { convertCheckpoint } from "../lib/weights/pretrained.ts";
import { makeSyntheticDataset, SYNTHETIC_CLASSES, useCpu } from "./train_helpers.ts";

await useCpu();

const V2 = new URL("./fixtures/v2/", import.meta.url).pathname;
const tmp = await Deno.makeTempDir({ prefix: "v2_train_" });
const { root: data } = await makeSyntheticDataset(join(tmp, "data"), 6, 3);

for (
  const [label, file] of [["an FCMAE encoder", "fcmae_v2.pt"], [
    "a fine-tuned V2",
    "official_v2.pt",
  ]]
) {
  for (const mode of ["full", "probe"] as const) {
    Deno.test(`finetune (${mode}) from ${label}: a V2 model (GRN kept) with a new head, finite losses`, async () => {
      const out = join(tmp, `${file}_${mode}`);
      const result = await finetune({
        model: join(V2, file),
        data,
        out,
        mode,
        epochs: 2,
        batch: 6,
        lr: mode === "probe" ? 1e-2 : 1e-3,
        size: 48,
        workers: 0,
        quiet: true,
      });
      assert.equal(result.metrics.length, 2);
      for (const epoch of result.metrics) assert.ok(Number.isFinite(epoch.trainLoss));
      assert.deepEqual(result.classes, SYNTHETIC_CLASSES);
      const { model } = await loadSavedModel(result.bestDir);
      // Still a ConvNeXt V2 (GRN blocks), now with one output per class of the data.
      assert.equal(architectureOf(model).spec.kind, "hierarchical");
      assert.ok(model.layers.some((l) => l.name.endsWith("_grn")), "GRN layers kept");
      assert.deepEqual(model.outputs[0].shape, [null, SYNTHETIC_CLASSES.length]);
      model.dispose();
    });
  }
}

Deno.test("Grad-CAM and the stage feature maps on a ConvNeXt V2", async () => {
  const { model } = await convertCheckpoint(join(V2, "official_v2.pt"));
  const x = tf.randomUniform([1, 64, 64, 3], -1, 1, "float32", 7) as tf.Tensor4D;
  const features = createFeatureExtractor(model).predict(x) as tf.Tensor[];
  assert.equal(features.length, 5); // four stages and the pooled embedding
  const strides = [4, 8, 16, 32];
  features.slice(0, 4).forEach((f, i) =>
    assert.deepEqual(f.shape.slice(0, 3), [1, 64 / strides[i], 64 / strides[i]])
  );
  const cam = await gradCam(model, x);
  const logits = await (model.predict(x) as tf.Tensor).data();
  // The class explained by default is the top class.
  assert.equal(cam.classIndex, logits.indexOf(Math.max(...logits)));
  assert.equal(cam.data.length, cam.height * cam.width);
  assert.deepEqual([cam.height, cam.width], [2, 2]); // the last stage's grid at 64 px
  assert.ok(cam.data.every((v) => v >= 0 && v <= 1));
  assert.ok(Math.abs(cam.score - Math.max(...logits)) < 1e-4);
  tf.dispose([x, ...features]);
  model.dispose();
});
