/**
 * Tests of AdamW on the kernel engine (lib/train/engine_adamw.ts, kernels.c `adamw`):
 * against lib/train/optimizer.ts's TF.js update (itself checked against torch.optim.AdamW
 * by the optimizer tests), on the cpu and wasm backends, over several steps with layer decay,
 * no-decay parameters, a weight-decay override, a TF.js step in between (the moments go
 * back and forth) and a checkpoint's state restored.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { installWasmTrainingKernels } from "../lib/backend/wasm_grads.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { EngineGradients } from "../lib/train/engine_grads.ts";
import { AdamW, type AdamWState, modelParams } from "../lib/train/optimizer.ts";

installWasmTrainingKernels();

const SPEC = {
  kind: "hierarchical",
  depths: [1, 2, 1, 1],
  dims: [8, 16, 24, 32],
  layerScaleInit: 0.5,
} as const;

function setup() {
  const model = createConvNeXt(SPEC, { numClasses: 5, dropPathRate: 0.2, seed: 3 });
  const params = modelParams(model, { weightDecay: 0.05, layerDecay: 0.8 });
  return { model, params, optimizer: new AdamW(params) };
}

function assertSameWeights(a: tf.LayersModel, b: tf.LayersModel, what: string) {
  const wa = a.getWeights(), wb = b.getWeights();
  for (let i = 0; i < wa.length; i++) {
    const x = wa[i].dataSync(), y = wb[i].dataSync();
    for (let j = 0; j < x.length; j++) {
      if (x[j] !== y[j]) {
        assert.fail(`${what}: weight ${i} [${j}]: engine ${x[j]}, TF.js ${y[j]}`);
      }
    }
  }
}

function assertSameState(a: AdamWState, b: AdamWState, what: string) {
  assert.equal(a.step, b.step, `${what}: step`);
  assert.equal(a.slots.length, b.slots.length);
  for (const [i, s] of a.slots.entries()) {
    assert.equal(s.name, b.slots[i].name);
    assert.deepEqual(s.m, b.slots[i].m, `${what}: m of ${s.name}`);
    assert.deepEqual(s.v, b.slots[i].v, `${what}: v of ${s.name}`);
  }
}

for (const backend of ["cpu", "wasm"]) {
  Deno.test(`AdamW on the engine gives TF.js's bits, moments kept across hand-overs (${backend})`, async () => {
    await tf.setBackend(backend);
    const a = setup(), b = setup();
    assertSameWeights(a.model, b.model, "before training");
    const engineA = await EngineGradients.start(a.model, a.params, { threads: 2, adamw: true });
    // The same threads on both sides: the same gradients, bit for bit.
    const engineB = await EngineGradients.start(b.model, b.params, { threads: 2 });
    try {
      const x = tf.randomNormal([3, 32, 32, 3], 0, 1, "float32", 7);
      const labels = Int32Array.from([0, 4, 2]);
      // [learning rate, weight-decay override, which update A takes]
      const steps: [number, number | undefined, "engine" | "tfjs"][] = [
        [1e-2, undefined, "engine"],
        [5e-3, 0.1, "engine"],
        [4e-3, undefined, "tfjs"],
        [2e-3, undefined, "engine"],
      ];
      for (const [i, [lr, wd, how]] of steps.entries()) {
        const ga = engineA.gradients(x, labels, { seed: i, smoothing: 0.1 });
        const gb = engineB.gradients(x, labels, { seed: i, smoothing: 0.1 });
        assert.equal(ga.loss, gb.loss, `step ${i + 1}: loss`);
        if (how === "engine") {
          tf.dispose([...ga.grads.values()]);
          const before = tf.memory().numBytes;
          a.optimizer.stepWith(engineA.adamw!, lr, wd);
          if (i === 0) {
            // At hand-over the TF.js copies of the moments are freed (the engine's is the one).
            const floats = a.params.reduce((n, p) => n + p.variable.size, 0);
            assert.equal(before - tf.memory().numBytes, 8 * floats, "moments freed in TF.js");
          }
        } else a.optimizer.step(ga.grads, lr, wd);
        b.optimizer.step(gb.grads, lr, wd);
        tf.dispose([...ga.grads.values(), ...gb.grads.values()]);
        assertSameWeights(a.model, b.model, `after step ${i + 1} (${how})`);
        assertSameState(
          await a.optimizer.getState(),
          await b.optimizer.getState(),
          `step ${i + 1}`,
        );
      }
      // Restoring a checkpoint's state: the engine reloads the moments.
      const saved = await b.optimizer.getState();
      a.optimizer.setState(saved);
      const ga = engineA.gradients(x, labels, { seed: 9 });
      const gb = engineB.gradients(x, labels, { seed: 9 });
      a.optimizer.stepWith(engineA.adamw!, 1e-3);
      b.optimizer.step(gb.grads, 1e-3);
      tf.dispose([...ga.grads.values(), ...gb.grads.values(), x]);
      assertSameWeights(a.model, b.model, "after a restored state");
      // An update consumes the step's gradients: a second one without a step is an error.
      assert.throws(
        () => a.optimizer.stepWith(engineA.adamw!, 1e-3),
        /no gradients to update with \(call gradients\(\)\)/,
      );
      // Closing the engine gives the moments back to the optimizer.
      engineA.close();
      assertSameState(await a.optimizer.getState(), await b.optimizer.getState(), "after close");
    } finally {
      engineA.close();
      engineB.close();
      a.optimizer.dispose();
      b.optimizer.dispose();
    }
  });
}
