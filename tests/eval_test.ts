// The ImageNet evaluation on a small fixture (tests/fixtures/eval/, made by
// tools/fixtures/make_eval_fixture.py with PIL, torchvision and PyTorch): the listing must
// be torchvision's ImageFolder order with the synset list's labels, and every prediction
// must be exactly what PyTorch computed (top-5 indices equal, logits within 1e-4), in
// both layouts, sharded and merged, and across an interrupted and resumed run.

import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../lib/backend/select.ts";
import { loadEvalDataset } from "../lib/eval/dataset.ts";
import {
  EvalAbortedError,
  type EvalResult,
  evaluate,
  type EvaluateOptions,
  parseShard,
  partialPath,
  selectIndices,
} from "../lib/eval/evaluate.ts";
import { mergeResults, readEvalResult } from "../lib/eval/merge.ts";
import { accuracyTable, IMAGENET_VAL_SIZE } from "../lib/eval/table.ts";
import { loadModel } from "../lib/weights/pretrained.ts";
import { getZooEntry } from "../lib/weights/zoo.ts";
import { OptionError } from "../lib/util/errors.ts";

const FIX = new URL("./fixtures/eval/", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

interface Sample {
  path: string;
  flat: string;
  label: number;
  logits?: number[];
  top5?: number[];
  error?: string;
}
const expected = JSON.parse(await Deno.readTextFile(join(FIX, "expected.json"))) as {
  synsets: string[];
  missingClasses: number[];
  emptyClass: number;
  count: number;
  errors: number;
  top1: number;
  top5: number;
  samples: Sample[];
};
const byPath = new Map(expected.samples.map((s) => [s.path, s]));
const byFlat = new Map(expected.samples.map((s) => [s.flat, s]));

await selectBackend("wasm");
const model = await loadModel(join(FIX, "tiny10.pth"));
const SYNSETS = join(FIX, "synsets.txt");
const quiet: EvaluateOptions = { progress: { quiet: true }, onError: () => {}, batch: 4 };

/** Evaluate and keep every image's logits (by dataset position). */
async function run(
  dir: string,
  options: EvaluateOptions = {},
  synsets: string | undefined = SYNSETS,
) {
  const data = await loadEvalDataset(dir, { synsets, numClasses: 10 });
  const logits = new Map<number, Float32Array>();
  const result = await evaluate(model, data, {
    ...quiet,
    predictions: true,
    ...options,
    onBatch: (b) => {
      b.indices.forEach((k, r) => logits.set(k, b.logits.slice(r * 10, (r + 1) * 10)));
      options.onBatch?.(b);
    },
  });
  return { data, result, logits };
}

/** Every prediction equals PyTorch's; `ref` maps a dataset name to the fixture sample. */
function checkAgainstPyTorch(
  r: Awaited<ReturnType<typeof run>>,
  ref: (name: string) => Sample | undefined,
): void {
  assert.equal(r.result.predictions!.length, expected.count);
  for (const p of r.result.predictions!) {
    const s = ref(p.image);
    assert.ok(s && s.top5 && s.logits, `unexpected image ${p.image}`);
    assert.equal(p.label, s.label, `label of ${p.image}`);
    assert.deepEqual(p.top5, s.top5, `top-5 of ${p.image}`);
    const got = r.logits.get(p.index)!;
    s.logits.forEach((v, c) => {
      assert.ok(Math.abs(got[c] - v) < 1e-4, `${p.image} logit ${c}: ${got[c]} vs ${v}`);
    });
  }
  assert.equal(r.result.count, expected.count);
  assert.equal(r.result.errors.length, expected.errors);
  assert.ok(Math.abs(r.result.top1 - expected.top1) < 1e-9, `top1 ${r.result.top1}`);
  assert.ok(Math.abs(r.result.top5 - expected.top5) < 1e-9, `top5 ${r.result.top5}`);
}

/** A copy of the ImageFolder fixture in a temporary directory. */
async function copyFolder(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "eval_test_" });
  const cmd = new Deno.Command("cp", { args: ["-r", join(FIX, "imagefolder"), dir] });
  assert.equal((await cmd.output()).code, 0);
  return join(dir, "imagefolder");
}

const full = await run(join(FIX, "imagefolder"));

Deno.test("ImageFolder listing is torchvision's order with the synset list's labels", () => {
  assert.deepEqual(full.data.samples.map((s) => s.name), expected.samples.map((s) => s.path));
  assert.deepEqual(full.data.samples.map((s) => s.label), expected.samples.map((s) => s.label));
  assert.deepEqual(full.data.wnids, expected.synsets);
  assert.equal(full.data.layout, "imagefolder");
});

Deno.test("ImageFolder evaluation reproduces PyTorch's predictions and accuracy", () => {
  checkAgainstPyTorch(full, (name) => byPath.get(name));
  const broken = expected.samples.filter((s) => s.error).map((s) => s.path);
  assert.deepEqual(full.result.errors.map((e) => e.image), broken);
  assert.match(full.result.errors[0].message, /broken\.JPEG/);
  assert.equal(full.result.total, expected.samples.length);
  assert.equal(full.result.correct1, Math.round(expected.top1 * expected.count / 100));
});

Deno.test("missing class folders without a synset list are an error, not shifted labels", async () => {
  await assert.rejects(
    loadEvalDataset(join(FIX, "imagefolder"), { numClasses: 10 }),
    /found 5 class folders but the model has 10 classes.*synset list \(synsets: /,
  );
});

Deno.test("a class folder not in the synset list is an error naming it", async () => {
  const synsets = [...expected.synsets];
  const folderClass = expected.samples[0].label;
  const gone = synsets[folderClass];
  synsets[folderClass] = "n00000000";
  await assert.rejects(
    loadEvalDataset(join(FIX, "imagefolder"), { synsets, numClasses: 10 }),
    new RegExp(`not in the synset list: ${gone}`),
  );
  await assert.rejects(
    loadEvalDataset(join(FIX, "imagefolder"), { synsets: SYNSETS, numClasses: 12 }),
    /has 10 classes but the model has 12/,
  );
  await assert.rejects(
    loadEvalDataset(join(FIX, "imagefolder"), { expectWnids: synsets, synsets: SYNSETS }),
    /class \d+ is "n\d+" but the model's class \d+ is/,
  );
});

Deno.test("with every class folder present, folder positions give the same labels", async () => {
  const dir = await copyFolder();
  try {
    for (const c of expected.missingClasses) await Deno.mkdir(join(dir, expected.synsets[c]));
    const r = await run(dir, {}, undefined);
    assert.equal(r.data.fingerprint, full.data.fingerprint);
    checkAgainstPyTorch(r, (name) => byPath.get(name));
  } finally {
    await Deno.remove(join(dir, ".."), { recursive: true });
  }
});

Deno.test("flat LOC layout gives the same predictions, in sorted ImageId order", async () => {
  const r = await run(join(FIX, "flat"), {}, undefined);
  assert.equal(r.data.layout, "flat");
  const names = r.data.samples.map((s) => s.name.split("/").pop()!);
  assert.deepEqual(names, [...names].sort());
  assert.deepEqual(r.data.samples.map((s) => s.label), names.map((n) => byFlat.get(n)!.label));
  checkAgainstPyTorch(r, (name) => byFlat.get(name.split("/").pop()!));
  assert.match(r.data.samples[0].name, /^ILSVRC\/Data\/CLS-LOC\/val\//);
});

Deno.test("shards (k mod N) merged equal the full run; bad merges are refused", async () => {
  const shards: EvalResult[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await run(join(FIX, "imagefolder"), { shard: { index: i, count: 3 } });
    assert.deepEqual(
      r.result.predictions!.map((p) => p.index % 3),
      r.result.predictions!.map(() => i),
    );
    shards.push(r.result);
  }
  const merged = mergeResults([shards[2], shards[0], shards[1]]);
  assert.deepEqual(merged.predictions, full.result.predictions);
  // libvips appends its detail ("VipsJpeg: premature end of JPEG image") from a per-thread
  // error buffer, so under concurrency the detail can be missing: compare the stable part.
  const stable = (errors: EvalResult["errors"]) =>
    errors.map((e) => ({ ...e, message: e.message.replace(/(corrupt header:).*/, "$1") }));
  assert.deepEqual(stable(merged.errors), stable(full.result.errors));
  for (const k of ["count", "top1", "top5", "correct1", "correct5", "total"] as const) {
    assert.equal(merged[k], full.result[k], k);
  }
  assert.equal(merged.shard, null);
  assert.throws(() => mergeResults([shards[0], shards[1]]), /shard\(s\) 2\/3 missing/);
  assert.throws(() => mergeResults([shards[0], shards[0], shards[1]]), /both shard 0\/3/);
  assert.throws(() => mergeResults([full.result]), /not a shard/);
  assert.throws(
    () => mergeResults([shards[0], { ...shards[1], model: "other" }, shards[2]]),
    /model "other"/,
  );
  assert.throws(
    () => mergeResults([shards[0], shards[1], { ...shards[2], datasetFingerprint: "x" }]),
    /dataset fingerprint/,
  );
  const limited = await run(join(FIX, "imagefolder"), { shard: { index: 2, count: 3 }, limit: 2 });
  assert.throws(() => mergeResults([shards[0], shards[1], limited.result]), /limited to 2/);
});

Deno.test("limit takes the first images of the shard", async () => {
  const r = await run(join(FIX, "imagefolder"), { limit: 5, shard: { index: 1, count: 2 } });
  assert.equal(r.result.total, 5);
  const indices = [
    ...r.result.predictions!.map((p) => p.index),
    ...r.result.errors.map((e) => e.index),
  ];
  assert.deepEqual(indices.sort((a, b) => a - b), [1, 3, 5, 7, 9]);
});

Deno.test("an interrupted run saves its progress and the rerun resumes from it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eval_resume_" });
  try {
    const out = join(dir, "result.json");
    const controller = new AbortController();
    let seen = 0;
    const err = await run(join(FIX, "imagefolder"), {
      out,
      saveEvery: 100, // only the save on abort
      signal: controller.signal,
      onBatch: (b) => {
        seen += b.indices.length;
        if (seen >= 4) controller.abort();
      },
    }).catch((e) => e);
    assert.ok(err instanceof EvalAbortedError, String(err));
    const partial = JSON.parse(await Deno.readTextFile(partialPath(out)));
    const done = partial.predictions.length + partial.errors.length;
    assert.ok(done >= 4 && done < expected.samples.length, `done ${done}`);
    await assert.rejects(Deno.stat(out));

    // A different run must not take over this progress.
    await assert.rejects(run(join(FIX, "imagefolder"), { out, limit: 3 }), /different run/);

    const evaluated: number[] = [];
    const resumed = await run(join(FIX, "imagefolder"), {
      out,
      onBatch: (b) => evaluated.push(...b.indices),
    });
    assert.equal(resumed.result.resumed, done);
    assert.equal(evaluated.length + done, expected.samples.length - expected.errors);
    assert.deepEqual(resumed.result.predictions, full.result.predictions);
    assert.equal(resumed.result.top1, full.result.top1);
    await assert.rejects(Deno.stat(partialPath(out)), Deno.errors.NotFound);
    const written = await readEvalResult(out);
    assert.equal(written.top5, full.result.top5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("selectIndices and parseShard", () => {
  assert.deepEqual(selectIndices(7, { index: 1, count: 3 }), [1, 4]);
  assert.deepEqual(selectIndices(7, undefined, 3), [0, 1, 2]);
  assert.deepEqual(parseShard("2/4"), { index: 2, count: 4 });
  assert.throws(() => parseShard("4/4"), /^OptionError: shard: expected I\/N/);
  assert.throws(
    () => parseShard("a"),
    (e: Error) => e instanceof OptionError && e.option === "shard",
  );
});

Deno.test("accuracy table: official top-1 from the zoo, partial runs flagged", () => {
  const entry = getZooEntry("convnext_tiny_1k_224");
  const complete: EvalResult = {
    ...full.result,
    model: entry.name,
    errors: [],
    count: IMAGENET_VAL_SIZE,
    datasetSize: IMAGENET_VAL_SIZE,
  };
  const table = accuracyTable([full.result, complete]);
  const lines = table.trim().split("\n");
  assert.equal(lines[0], "| name | original acc@1 | ours acc@1 | ours acc@5 | images |");
  assert.equal(
    lines[2],
    `| ${entry.name} | ${entry.top1} | ${full.result.top1.toFixed(2)} | ${
      full.result.top5.toFixed(2)
    } | ${IMAGENET_VAL_SIZE} |`,
  );
  assert.match(lines[3], /tiny10\.pth \| - \| .* \| 12 \(partial: 1 unreadable\) \|$/);
  assert.match(table, /Rows marked partial/);
});

/** Run a task script; returns exit code, stdout and stderr. */
async function cli(script: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "tools", script), ...args],
    env: { CONVNEXT_BACKEND: "wasm" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno task eval / --merge / accuracy-table command lines", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eval_cli_" });
  try {
    const m = join(FIX, "tiny10.pth");
    const bad = await cli("eval.ts", ["--model", m, "--data", join(FIX, "imagefolder")]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    assert.match(bad.stderr, /^eval: .*found 5 class folders.*synset list \(--synsets: /);

    const shards = [0, 1].map((i) => join(dir, `s${i}.json`));
    for (const [i, out] of shards.entries()) {
      const r = await cli("eval.ts", [
        "--model",
        m,
        "--data",
        join(FIX, "flat"),
        "--shard",
        `${i}/2`,
        "--out",
        out,
        "--batch",
        "3",
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    const all = join(dir, "all.json");
    const merged = await cli("eval.ts", ["--merge", ...shards, "--out", all]);
    assert.equal(merged.code, 0, merged.stderr);
    // --json: the result itself, one line, what --out wrote.
    const json = await cli("eval.ts", ["--merge", ...shards, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stdout.trim().split("\n").length, 1);
    assert.deepEqual(JSON.parse(json.stdout), JSON.parse(await Deno.readTextFile(all)));
    const result = await readEvalResult(all);
    assert.equal(result.count, expected.count);
    assert.ok(Math.abs(result.top1 - expected.top1) < 1e-9);
    assert.match(
      merged.stdout,
      new RegExp(`Acc@1 ${expected.top1.toFixed(3)} Acc@5 ${expected.top5.toFixed(3)}`),
    );

    const md = join(dir, "table.md");
    const table = await cli("accuracy_table.ts", [all, "--out", md]);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(await Deno.readTextFile(md), accuracyTable([result]));
    const missing = await cli("accuracy_table.ts", [join(dir, "nope.json")]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope\.json: cannot read the evaluation result: file not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
