// The package as published: `deno publish --dry-run` succeeds with no warning and ships the
// library (every file of lib/, the class names it imports), README, LICENSE and deno.json,
// nothing of tests/, tools/, notebooks/ or the fixtures; and installing the dependencies is
// quiet (no "Ignored build scripts" box). Both run offline: the dry run contacts no registry
// and the install takes the packages from Deno's cache (deno.lock pins them).

import assert from "node:assert/strict";
import { join, relative } from "node:path";

const ROOT = new URL("../", import.meta.url).pathname;

async function deno(args: string[], cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

async function* files(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = join(dir, e.name);
    if (e.isDirectory) yield* files(path);
    else yield relative(ROOT, path);
  }
}

Deno.test("deno publish --dry-run: no warning, exactly the library's files", async () => {
  const r = await deno(["publish", "--dry-run", "--allow-dirty"], ROOT);
  assert.equal(r.code, 0, r.text);
  assert.match(r.text, /Dry run complete/);
  const messages = r.text.split("\n").filter((line) => !/^\s+file:\/\//.test(line));
  assert.deepEqual(messages.filter((line) => /warning|error/i.test(line)), [], r.text);
  const published = [...r.text.matchAll(/^\s+file:\/\/(\S+) \(/gm)]
    .map((m) => relative(ROOT, decodeURIComponent(m[1])))
    .sort();
  const lib: string[] = [];
  for await (const f of files(join(ROOT, "lib"))) lib.push(f);
  const expected = [
    "LICENSE",
    "README.md",
    "data/README.md",
    "data/imagenet_classes.json", // imported by lib/data/imagenet.ts
    "deno.json",
    ...lib, // worker scripts too: they are started by URL, not imported
  ].sort();
  assert.deepEqual(published, expected);
  for (const f of published) {
    assert.doesNotMatch(f, /^(tests|tools|notebooks|out|node_modules|\.cache)\/|\.(pth|ipynb)$/);
  }
});

Deno.test("LICENSE is MIT, and the README says the weights keep their own licences", async () => {
  const license = await Deno.readTextFile(join(ROOT, "LICENSE"));
  assert.match(license, /^MIT License\n\nCopyright \(c\) 2026 the convnext-tfjs authors\n/);
  assert.match(license, /THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND/);
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  assert.match(readme, /CC-BY-NC 4\.0/);
});

Deno.test("deno install of the dependencies prints no 'Ignored build scripts' box", async () => {
  const dir = await Deno.makeTempDir({ prefix: "publish_install_" });
  try {
    for (const f of ["deno.json", "deno.lock"]) {
      await Deno.copyFile(join(ROOT, f), join(dir, f));
    }
    const r = await deno(["install"], dir);
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /Installed \d+ packages/, r.text);
    assert.doesNotMatch(r.text, /Ignored build scripts|approve-scripts/, r.text);
    // sharp's native binary comes as an optional package, without any build script.
    const sharp = await Deno.stat(join(dir, "node_modules", "sharp", "package.json"));
    assert.ok(sharp.isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
