/**
 * The public API: every subpath module that deno.json exports loads, the root module stays a
 * deliberate, small surface (what a user of the kit needs), and internals stay in subpaths.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));

Deno.test("deno.json exports: every subpath module loads and exports something", async () => {
  const entries = Object.entries(config.exports as Record<string, string>);
  assert.deepEqual(entries.map(([k]) => k).sort(), [
    ".",
    "./data",
    "./eval",
    "./model",
    "./train",
    "./viz",
    "./weights",
  ]);
  for (const [, path] of entries) {
    const mod = await import(new URL(path, ROOT).href);
    assert.ok(Object.keys(mod).length > 0, `${path} exports nothing`);
  }
});

Deno.test("lib/mod.ts: the user's API, no internals", async () => {
  const root = await import(new URL("lib/mod.ts", ROOT).href);
  const names = Object.keys(root);
  // Values only (types vanish at run time); the whole list, types included, stays under 80.
  assert.ok(names.length <= 50, `lib/mod.ts exports ${names.length} values`);
  for (const user of ["selectBackend", "createConvNeXt", "loadModel", "classify", "finetune"]) {
    assert.ok(names.includes(user), `lib/mod.ts lacks ${user}`);
  }
  for (const internal of ["STREAM", "mulberry32", "comparePython", "partialPath", "LoadPool"]) {
    assert.ok(!names.includes(internal), `lib/mod.ts exports the internal ${internal}`);
  }
});

Deno.test("createConvNeXt from a subpath module before any backend: one line saying to call selectBackend", async () => {
  // lib/mod.ts selects a backend on import (tests/autobackend_test.ts); the subpath modules
  // do not, and building a model there first (with wasm registered, whose initialization
  // is asynchronous) says what to do.
  const code = `import "./lib/backend/select.ts";
import { createConvNeXt } from "./lib/model/mod.ts";
try { createConvNeXt("convnext_tiny"); console.log("built"); }
catch (e) { console.log(e.message); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    cwd: new URL(".", ROOT).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.match(
    text,
    /^createConvNeXt: no TF\.js backend is ready yet; call `await selectBackend\(\)`/,
  );
});
