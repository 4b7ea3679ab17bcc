// Importing lib/mod.ts selects a backend, so that a model can be built right away; an
// explicit selectBackend still switches. Each case runs in a fresh process (TF.js's backend
// state is global), started in the repository so that its deno.json maps the packages.
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

/** Run `code` (ES module source) with `deno eval` in the repository; the last line is JSON. */
async function evalIn(code: string, env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: ROOT,
    env: { CONVNEXT_BACKEND: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const stdout = dec.decode(out.stdout).trim();
  return {
    code: out.code,
    stderr: dec.decode(out.stderr),
    // deno-lint-ignore no-explicit-any
    json: () => JSON.parse(stdout.split("\n").at(-1) ?? "null") as any,
  };
}

/** What selectBackend() picks on this machine, in a process that imports only select.ts. */
async function autoChoice(env: Record<string, string> = {}): Promise<string> {
  const r = await evalIn(
    `import { selectBackend } from "./lib/backend/select.ts";
console.log(JSON.stringify(await selectBackend()));`,
    env,
  );
  assert.equal(r.code, 0, r.stderr);
  return r.json();
}

// Built with the same seed before and after the switch: the second model lives on cpu from
// the start (moving a webgpu model's weights to cpu would need synchronous reads, which
// Deno's WebGPU does not have).
const BUILD_AND_PREDICT = `import * as tf from "@tensorflow/tfjs";
import { activeBackend, createConvNeXt, selectBackend } from "./lib/mod.ts";
const imported = activeBackend();
const x = tf.randomUniform([1, 64, 64, 3], -1, 1, "float32", 7);
const first = Array.from(await createConvNeXt("convnext_tiny", { seed: 1 }).predict(x).data());
const switched = await selectBackend("cpu");
const model = createConvNeXt("convnext_tiny", { seed: 1 });
const kernel = model.getLayer("stem_conv").getWeights()[0];
const again = Array.from(await model.predict(x).data());
const weightsOn = tf.engine().state.tensorInfo.get(kernel.dataId).backend === tf.engine().findBackend("cpu");
console.log(JSON.stringify({ imported, switched, active: activeBackend(), weightsOn, first, again }));`;

Deno.test("a fresh process imports lib/mod.ts, builds convnext_tiny and predicts; selectBackend('cpu') then switches", async () => {
  const r = await evalIn(BUILD_AND_PREDICT);
  assert.equal(r.code, 0, r.stderr);
  const got = r.json();
  assert.equal(got.imported, await autoChoice(), "import picks what selectBackend() picks");
  assert.equal(got.switched, "cpu");
  assert.equal(got.active, "cpu");
  assert.equal(got.weightsOn, true, "the model built after the switch lives on cpu");
  assert.equal(got.first.length, 1000);
  assert.ok(got.first.every(Number.isFinite), "finite logits");
  assert.ok(got.first.some((v: number) => v !== 0), "random weights give non-zero logits");
  // The same seeded weights on the cpu backend give the same logits.
  const diff = Math.max(...got.first.map((v: number, i: number) => Math.abs(v - got.again[i])));
  assert.ok(diff < 1e-3, `${got.imported} vs cpu logits differ by ${diff}`);
});

Deno.test("CONVNEXT_BACKEND decides the backend chosen on import", async () => {
  const code = `import { activeBackend } from "./lib/mod.ts";
console.log(JSON.stringify(activeBackend()));`;
  for (const name of ["cpu", "wasm"]) {
    const r = await evalIn(code, { CONVNEXT_BACKEND: name });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.json(), name);
  }
});

Deno.test("a backend selected before importing lib/mod.ts is kept", async () => {
  const r = await evalIn(`import { selectBackend } from "./lib/backend/select.ts";
await selectBackend("cpu");
const { activeBackend } = await import("./lib/mod.ts");
console.log(JSON.stringify(activeBackend()));`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.json(), "cpu");
});

Deno.test("a backend that cannot start: the import succeeds, one line says why, building says what to do", async () => {
  const r = await evalIn(
    `import { createConvNeXt } from "./lib/mod.ts";
try { createConvNeXt("convnext_tiny"); console.log(JSON.stringify("built")); }
catch (e) { console.log(JSON.stringify(e.message)); }`,
    { CONVNEXT_BACKEND: "webgl" },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stderr.trim(),
    'convnext-tfjs: no backend selected on import (CONVNEXT_BACKEND: unknown backend "webgl"; expected one of: auto, tensorflow, webgpu, wasm, cpu)',
  );
  assert.match(
    r.json(),
    /^createConvNeXt: no TF\.js backend is ready yet; call `await selectBackend\(\)`/,
  );
});
