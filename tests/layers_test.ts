/**
 * The house rule of lib/: each folder is one layer and imports only folders of lower
 * layers (and itself). Read from the import statements of every file, so a new import that
 * runs back up the layers fails here, naming the file and the import.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const LIB = resolve(import.meta.dirname!, "../lib");
const DATA = resolve(import.meta.dirname!, "../data");

/** Layer of each folder of lib/ (files at lib/'s root: the tasks layer). */
const LAYER: Record<string, number> = {
  util: 0,
  backend: 1, // TF.js backends: selection, kernels, WebGPU compatibility and limits
  data: 1,
  viz: 1,
  infer: 2,
  model: 3,
  weights: 4,
  ".": 5, // classify.ts
  eval: 6,
  train: 7,
};

function folderOf(path: string): string {
  const rel = relative(LIB, path);
  const first = rel.split("/")[0];
  return rel.includes("/") ? first : ".";
}

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* tsFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.[^"]+)"|import\(\s*"(\.[^"]+)"\s*\)/g;

Deno.test("lib/: every import stays in its folder or goes down the layers", async () => {
  const violations: string[] = [];
  let files = 0;
  for await (const file of tsFiles(LIB)) {
    files++;
    const from = folderOf(file);
    if (file === join(LIB, "mod.ts")) continue; // the public API re-exports every layer
    assert.ok(from in LAYER, `${relative(LIB, file)}: folder "${from}" has no layer in this test`);
    const text = await Deno.readTextFile(file);
    for (const m of text.matchAll(IMPORT)) {
      const target = resolve(dirname(file), m[1] ?? m[2]);
      if (target.startsWith(DATA)) continue; // the repository's data files (class names)
      assert.ok(target.startsWith(LIB), `${relative(LIB, file)} imports outside lib/: ${m[1]}`);
      const to = folderOf(target);
      if (to === from) continue;
      if (!(to in LAYER) || LAYER[to] >= LAYER[from]) {
        violations.push(`${relative(LIB, file)} (${from}) imports ${m[1] ?? m[2]} (${to})`);
      }
    }
  }
  assert.ok(files > 50, `found only ${files} files under lib/`);
  assert.deepEqual(violations, []);
});
