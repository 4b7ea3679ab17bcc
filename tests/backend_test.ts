// Backend selection: the backend that runs is the one asked for, or an error.
// Each case runs in a subprocess so that TF.js's global backend state starts fresh.
import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";

const probe = fromFileUrl(new URL("./fixtures/backend/probe.ts", import.meta.url));
const fakeNativeMap = fromFileUrl(
  new URL("./fixtures/backend/import_map.json", import.meta.url),
);

async function run(
  args: string[],
  options: { env?: Record<string, string>; importMap?: string } = {},
): Promise<{ code: number; out: string; err: string }> {
  const flags = ["run", "-A", "--no-check"];
  if (options.importMap) flags.push(`--import-map=${options.importMap}`);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [...flags, probe, ...args],
    env: { CONVNEXT_BACKEND: "", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code, out: decode(stdout), err: decode(stderr) };
}

function selected(out: string): { selected: string; active: string } {
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

Deno.test("wasm and cpu are selected and really active", async () => {
  for (const name of ["wasm", "cpu"]) {
    const r = await run([name]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(selected(r.out), { selected: name, active: name });
  }
});

Deno.test("auto picks wasm when no native TensorFlow binding is mapped", async () => {
  const r = await run(["auto"]);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(selected(r.out), { selected: "wasm", active: "wasm" });
});

Deno.test("auto and tensorflow load a mapped native binding", async () => {
  for (const name of ["auto", "tensorflow"]) {
    const r = await run([name], { importMap: fakeNativeMap });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(selected(r.out), { selected: "tensorflow", active: "tensorflow" });
  }
});

Deno.test("tensorflow without tfjs-node is a clear error, not a fallback", async () => {
  const r = await run(["tensorflow"]);
  assert.notEqual(r.code, 0);
  assert.match(
    r.err,
    /the "tensorflow" backend needs @tensorflow\/tfjs-node-gpu or @tensorflow\/tfjs-node/,
  );
});

Deno.test("CONVNEXT_BACKEND overrides the argument and is validated", async () => {
  const r = await run(["wasm"], { env: { CONVNEXT_BACKEND: "cpu" } });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(selected(r.out), { selected: "cpu", active: "cpu" });
  const bad = await run(["wasm"], { env: { CONVNEXT_BACKEND: "webgl" } });
  assert.notEqual(bad.code, 0);
  assert.match(
    bad.err,
    /CONVNEXT_BACKEND: unknown backend "webgl"; expected one of: auto, tensorflow, webgpu, wasm, cpu/,
  );
});

Deno.test("a wasm backend that fails to initialize is an error, never a silent cpu fallback", async () => {
  const r = await run(["wasm", "break-wasm"]);
  assert.notEqual(r.code, 0);
  assert.match(
    r.err,
    /backend "wasm" failed to initialize \(TF\.js is on "cpu"\); refusing to fall back silently/,
  );
});
