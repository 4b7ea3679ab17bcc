/**
 * The user's folders (issue 14): `finetune` writes only into a new or empty `out`, or one it
 * made (its marker file); `--overwrite` starts a run over there and removes that run's
 * results and nothing else; `convert --overwrite` replaces a converted model's folder and no
 * other; the current folder is refused. Refusals are one-line errors naming the option (the
 * library) or the flag (the commands), and leave the folder as it was.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { finetune, type FinetuneOptions } from "../lib/train/finetune.ts";
import { OptionError } from "../lib/util/errors.ts";
import { FOLDER_MARKER } from "../lib/util/owned.ts";
import { convertToDirectory } from "../lib/weights/pretrained.ts";
import { makeSyntheticDataset, makeTinyModel, useCpu } from "./train_helpers.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const CHECKPOINT = fileURLToPath(
  new URL("./fixtures/checkpoints/official_tiny.pth", import.meta.url),
);
await useCpu();
const tmp = await Deno.makeTempDir({ prefix: "out_folders_" });
const { root: data } = await makeSyntheticDataset(join(tmp, "data"), 4, 2);
const baseDir = await makeTinyModel(join(tmp, "base"));

/** A quick run: a linear probe, one epoch, small images. */
const run = (out: string, extra: Partial<FinetuneOptions> = {}) =>
  finetune({
    model: baseDir,
    data,
    out,
    mode: "probe",
    epochs: 1,
    batch: 4,
    size: 40,
    valSplit: 0.34,
    workers: 0,
    quiet: true,
    ...extra,
  });

/** Every file under `dir` with its content, to show a folder was left as it was. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, prefix: string) => {
    for (const e of Deno.readDirSync(d)) {
      if (e.isDirectory) walk(join(d, e.name), `${prefix}${e.name}/`);
      else out[`${prefix}${e.name}`] = Deno.readTextFileSync(join(d, e.name));
    }
  };
  walk(dir, "");
  return out;
}

/** Runs a command of tools/ with `args`; its exit code and error lines. */
async function tool(
  name: string,
  args: string[],
  cwd = ROOT,
): Promise<{ code: number; stderr: string }> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", join(ROOT, "tools", `${name}.ts`), ...args],
    cwd,
    env: { CONVNEXT_BACKEND: "cpu" },
    stdout: "null",
    stderr: "piped",
  }).output();
  // finetune first says which backend it uses: the error is the line after.
  const lines = new TextDecoder().decode(stderr).trim().split("\n");
  return { code, stderr: lines.filter((l) => !/^finetune: backend /.test(l)).join("\n") };
}

/** A folder of the user's: their notes and a file named like one finetune writes. */
async function usersFolder(name: string): Promise<string> {
  const dir = join(tmp, name);
  await Deno.mkdir(join(dir, "photos"), { recursive: true });
  await Deno.writeTextFile(join(dir, "notes.txt"), "my notes");
  await Deno.writeTextFile(join(dir, "metrics.jsonl"), "my own metrics\n");
  await Deno.writeTextFile(join(dir, "photos", "a.txt"), "a");
  return dir;
}

Deno.test("finetune: a user's non-empty folder is refused, with or without overwrite or resume", async () => {
  const dir = await usersFolder("users");
  const before = snapshot(dir);
  for (const flags of [{}, { overwrite: true }, { resume: true }]) {
    await assert.rejects(
      () => run(dir, flags),
      (e: Error) =>
        e instanceof OptionError && e.option === "out" &&
        e.message ===
          `finetune: out ${dir} is not empty and finetune did not create it (it holds notes.txt, photos/); choose a new or empty folder for out`,
    );
  }
  const cli = await tool("finetune", [
    "--model",
    baseDir,
    "--data",
    data,
    "--out",
    dir,
    "--overwrite",
  ]);
  assert.equal(cli.code, 1);
  assert.equal(
    cli.stderr,
    `finetune: --out ${dir} is not empty and finetune did not create it (it holds notes.txt, photos/); choose a new or empty folder for --out`,
  );
  assert.deepEqual(snapshot(dir), before, "the folder is left as it was");
});

Deno.test("finetune: resume and overwrite together are refused, naming both", async () => {
  const out = join(tmp, "both");
  await assert.rejects(
    () => run(out, { resume: true, overwrite: true }),
    (e: Error) => e instanceof OptionError && e.option === "overwrite",
  );
  const cli = await tool("finetune", [
    "--model",
    baseDir,
    "--data",
    data,
    "--out",
    out,
    "--resume",
    "--overwrite",
  ]);
  assert.equal(cli.code, 1);
  assert.equal(
    cli.stderr,
    `finetune: --resume continues the run in ${out}, --overwrite starts it over: pass one of them`,
  );
});

Deno.test("finetune: its own folder is marked; overwrite removes the earlier results and nothing else", async () => {
  const out = join(tmp, "run");
  await run(out);
  const marker = JSON.parse(await Deno.readTextFile(join(out, FOLDER_MARKER)));
  assert.equal(marker.writtenBy, "convnext-tfjs");
  assert.equal(marker.what, "finetune");
  assert.ok((await Deno.stat(join(out, "report.json"))).isFile);
  // The user adds a file to the run's folder: a later run must keep it.
  await Deno.writeTextFile(join(out, "notes.txt"), "what I saw");
  await assert.rejects(
    () => run(out),
    /holds a checkpoint of an earlier run; pass resume: true to continue it, overwrite: true to start over/,
  );
  // Without validation images the new run writes no report: the old one must be gone.
  const again = await run(out, { overwrite: true, valSplit: 0 });
  assert.equal(again.startEpoch, 0);
  assert.equal(again.report, null);
  assert.equal(await Deno.readTextFile(join(out, "notes.txt")), "what I saw");
  await assert.rejects(() => Deno.stat(join(out, "report.json")), Deno.errors.NotFound);
  const lines = (await Deno.readTextFile(join(out, "metrics.jsonl"))).trim().split("\n");
  assert.equal(lines.length, 1);
  assert.equal(JSON.parse(lines[0]).valAccuracy, null, "the new run's metrics, not the old ones");
  // The marker keeps the folder's: a folder holding the user's notes is still the run's.
  assert.deepEqual(JSON.parse(await Deno.readTextFile(join(out, FOLDER_MARKER))), marker);
});

Deno.test("finetune: an empty folder, and one an earlier version left (only a run's files), are used", async () => {
  const empty = join(tmp, "empty");
  await Deno.mkdir(empty);
  await run(empty);
  const older = join(tmp, "older");
  await Deno.mkdir(join(older, "features-cache"), { recursive: true });
  await Deno.writeTextFile(join(older, "metrics.jsonl"), "{}\n");
  await run(older);
  for (const dir of [empty, older]) {
    assert.equal(JSON.parse(await Deno.readTextFile(join(dir, FOLDER_MARKER))).what, "finetune");
  }
  const file = join(tmp, "a-file");
  await Deno.writeTextFile(file, "x");
  await assert.rejects(() => run(file), /^OptionError: finetune: out .*a-file is a file; /);
});

/** The names in `dir` that are temporary copies (`.<name>.tmp-…`, `.<name>.old-…`). */
const temps = (dir: string) =>
  [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => /\.(tmp|old)-/.test(n));

Deno.test("convert: a new or empty folder; overwrite replaces a converted model, nothing else", async () => {
  const base = join(tmp, "convert");
  await Deno.mkdir(base);
  const out = join(base, "model");
  await convertToDirectory(CHECKPOINT, out);
  await assert.rejects(
    () => convertToDirectory(CHECKPOINT, out),
    (e: Error) =>
      e instanceof OptionError && e.option === "out" &&
      e.message ===
        `convert: out ${out} already holds a converted model; pass overwrite: true to replace it`,
  );
  const before = await Deno.readTextFile(join(out, "convnext.json"));
  await convertToDirectory(CHECKPOINT, out, { overwrite: true });
  assert.equal(await Deno.readTextFile(join(out, "convnext.json")), before);
  const empty = join(base, "empty");
  await Deno.mkdir(empty);
  await convertToDirectory(CHECKPOINT, empty);
  assert.ok((await Deno.stat(join(empty, "model.json"))).isFile);

  // A converted model plus the user's file, a user's folder, a model.json alone: refused.
  await Deno.writeTextFile(join(out, "notes.txt"), "mine");
  const users = await usersFolder("convert-users");
  const half = join(base, "half");
  await Deno.mkdir(half);
  await Deno.writeTextFile(join(half, "model.json"), "{}");
  for (
    const [dir, what] of [
      [out, "files convert did not write (notes.txt)"],
      [users, "files convert did not write (metrics.jsonl, notes.txt, photos/)"],
      [half, "no converted model (model.json and convnext.json)"],
    ]
  ) {
    const kept = snapshot(dir);
    await assert.rejects(
      () => convertToDirectory(CHECKPOINT, dir, { overwrite: true }),
      (e: Error) =>
        e instanceof OptionError && e.option === "out" &&
        e.message ===
          `convert: out ${dir} holds ${what}; overwrite only replaces a folder that holds a converted model and nothing else: choose another out`,
    );
    assert.deepEqual(snapshot(dir), kept);
    assert.deepEqual(temps(dirname(dir)), []);
  }
});

Deno.test("convert command: --out . is refused clearly; a user's folder names the flags", async () => {
  const cwd = join(tmp, "cwd-model");
  await convertToDirectory(CHECKPOINT, cwd);
  const kept = snapshot(cwd);
  const here = await tool("convert", [CHECKPOINT, "--out", ".", "--overwrite"], cwd);
  assert.equal(here.code, 1);
  assert.equal(
    here.stderr,
    "convert: --out . is the current folder (or holds it), which cannot be replaced: the model " +
      "is written under a new name and renamed into place; choose a new folder",
  );
  assert.deepEqual(snapshot(cwd), kept);
  assert.deepEqual(temps(cwd), []);
  assert.deepEqual(temps(tmp), []);
  const users = await usersFolder("convert-cli-users");
  const cli = await tool("convert", [CHECKPOINT, "--out", users, "--overwrite"]);
  assert.equal(cli.code, 1);
  assert.equal(
    cli.stderr,
    `convert: --out ${users} holds files convert did not write (metrics.jsonl, notes.txt, photos/); ` +
      "--overwrite only replaces a folder that holds a converted model and nothing else: choose another --out",
  );
});

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
