/**
 * The kit from another Deno project, with nothing copied: every package lib/ imports is a
 * pinned `npm:` specifier (the same versions as deno.json's import map, which the tests,
 * tools and notebooks use), and a project with an empty deno.json imports lib/mod.ts by
 * path, builds a model, loads a checkpoint and classifies a photo.
 */
import assert from "node:assert/strict";
import { join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname!, "..");
const LIB = join(ROOT, "lib");

/** Packages lib/ may import by bare name: optional native bindings the user maps, if any. */
const OPTIONAL = new Set(["@tensorflow/tfjs-node", "@tensorflow/tfjs-node-gpu"]);

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* tsFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

// Import statements and dynamic imports, not JSDoc examples (lines starting with "*").
const SPECIFIER =
  /^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"|^\s*import\s+"([^"]+)"|\bimport\(\s*"([^"]+)"\s*\)/gm;

Deno.test("lib/ imports packages only by pinned npm: specifiers, deno.json's versions", async () => {
  const pinned = new Set(
    Object.values(JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).imports),
  );
  const bad: string[] = [];
  let npm = 0;
  for await (const file of tsFiles(LIB)) {
    const text = (await Deno.readTextFile(file)).split("\n").filter((l) => !/^\s*(\*|\/\/)/.test(l))
      .join("\n");
    for (const m of text.matchAll(SPECIFIER)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec.startsWith(".") || spec.startsWith("node:") || OPTIONAL.has(spec)) continue;
      if (spec.startsWith("npm:") && pinned.has(spec)) npm++;
      else bad.push(`${relative(ROOT, file)}: "${spec}"`);
    }
  }
  assert.deepEqual(bad, [], "bare or unpinned package imports (use deno.json's npm: specifier)");
  assert.ok(npm > 50, `only ${npm} npm: imports found`);
});

Deno.test("a project with an empty deno.json imports lib/mod.ts and classifies", async () => {
  const project = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(project, "deno.json"), "{}\n");
    const mod = join(LIB, "mod.ts");
    // A photo with PyTorch's top-5 (tests/fixtures/eval/, tools/fixtures/make_eval_fixture.py).
    const fixture = join(ROOT, "tests/fixtures/eval");
    const { samples } = JSON.parse(await Deno.readTextFile(join(fixture, "expected.json"))) as {
      samples: { path: string; top5?: number[] }[];
    };
    const sample = samples.find((s) => s.top5)!;
    await Deno.writeTextFile(
      join(project, "main.ts"),
      `import { classify, createConvNeXt, loadModel } from ${JSON.stringify(mod)};
const scratch = createConvNeXt("convnext_atto", { numClasses: 3, inputShape: [32, 32, 3] });
const model = await loadModel(${JSON.stringify(join(fixture, "tiny10.pth"))});
const [result] = await classify(model, [${
        JSON.stringify(join(fixture, "imagefolder", sample.path))
      }], { topK: 3 });
console.log(JSON.stringify({ params: scratch.countParams(), top: result.top.map((t) => t.index) }));
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", "main.ts"],
      cwd: project,
      env: { CONVNEXT_BACKEND: "wasm", CONVNEXT_CACHE: join(project, "cache") },
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const result = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    // convnext_atto with a 3-class head: timm's 3,695,520 parameters less the 1000-class
    // head's 320 * 997 weights and 997 biases.
    assert.equal(result.params, 3_695_520 - 321 * 997);
    assert.deepEqual(result.top, sample.top5!.slice(0, 3)); // PyTorch's top-3
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});
