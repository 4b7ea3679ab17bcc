/**
 * The command lines on the WebGPU backend (`--backend webgpu`): `classify` gives the
 * probabilities of the cpu backend, and `eval` reproduces the accuracy PyTorch measured on
 * the evaluation fixture (tools/fixtures/make_eval_fixture.py). Needs a WebGPU adapter
 * (without a GPU, Debian's mesa-vulkan-drivers gives a software one).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const CHECKPOINT = "tests/fixtures/checkpoints/official_tiny.pth";
const EVAL = "tests/fixtures/eval";

async function task(tool: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `tools/${tool}.ts`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("classify --backend webgpu: the cpu backend's classes and probabilities", async () => {
  const args = ["--model", CHECKPOINT, "--json", "--top", "5", "data/images/chelsea.png"];
  const gpu = await task("classify", [...args, "--backend", "webgpu"]);
  assert.equal(gpu.code, 0, gpu.stderr);
  const cpu = await task("classify", [...args, "--backend", "cpu"]);
  assert.equal(cpu.code, 0, cpu.stderr);
  const a = JSON.parse(gpu.stdout).top, b = JSON.parse(cpu.stdout).top;
  assert.deepEqual(
    a.map((p: { index: number }) => p.index),
    b.map((p: { index: number }) => p.index),
  );
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i].probability - b[i].probability) < 1e-5, `rank ${i + 1}`);
  }
});

Deno.test("eval --backend webgpu: PyTorch's top-1 and top-5 on the fixture", async () => {
  const expected = JSON.parse(await Deno.readTextFile(`${ROOT}${EVAL}/expected.json`));
  const r = await task("eval", [
    "--model",
    `${EVAL}/tiny10.pth`,
    "--data",
    `${EVAL}/flat`,
    "--backend",
    "webgpu",
    "--batch",
    "4",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\(webgpu\)/);
  assert.match(
    r.stdout,
    new RegExp(`Acc@1 ${expected.top1.toFixed(3)} Acc@5 ${expected.top5.toFixed(3)}`),
  );
});
