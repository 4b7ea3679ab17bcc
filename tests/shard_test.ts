// Shards from job schedulers: SLURM job arrays and Kubernetes Indexed Jobs
// (lib/eval/shard.ts), and `deno task eval` taking its shard from them: two env-sharded runs
// merged equal the PyTorch reference of the evaluation fixture (tests/fixtures/eval/).

import assert from "node:assert/strict";
import { join } from "node:path";
import { readEvalResult } from "../lib/eval/merge.ts";
import { type EnvReader, parseShard, resolveShard, shardFromEnv } from "../lib/eval/shard.ts";
import { OptionError } from "../lib/util/errors.ts";

const FIX = new URL("./fixtures/eval/", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

const env = (vars: Record<string, string>): EnvReader => (name) => vars[name];
const SLURM = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT";
const KUBERNETES = "JOB_COMPLETION_INDEX/CONVNEXT_SHARD_COUNT";

Deno.test("SLURM arrays: index = (ID - MIN) / STEP of COUNT", () => {
  // sbatch --array=0-3: tasks 0..3.
  for (let id = 0; id < 4; id++) {
    const r = shardFromEnv(
      env({ SLURM_ARRAY_TASK_ID: `${id}`, SLURM_ARRAY_TASK_COUNT: "4" }),
    );
    assert.deepEqual(r, { shard: { index: id, count: 4 }, source: SLURM });
  }
  // --array=1-8 (MIN 1, MAX 8): task 8 is the last shard.
  const oneBased = {
    SLURM_ARRAY_TASK_ID: "8",
    SLURM_ARRAY_TASK_COUNT: "8",
    SLURM_ARRAY_TASK_MIN: "1",
    SLURM_ARRAY_TASK_MAX: "8",
  };
  assert.deepEqual(shardFromEnv(env(oneBased)).shard, { index: 7, count: 8 });
  // --array=10-16:2: tasks 10, 12, 14, 16 are shards 0..3.
  const stepped = {
    SLURM_ARRAY_TASK_ID: "14",
    SLURM_ARRAY_TASK_COUNT: "4",
    SLURM_ARRAY_TASK_MIN: "10",
    SLURM_ARRAY_TASK_MAX: "16",
    SLURM_ARRAY_TASK_STEP: "2",
  };
  assert.deepEqual(shardFromEnv(env(stepped)).shard, { index: 2, count: 4 });
});

Deno.test("Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX of CONVNEXT_SHARD_COUNT", () => {
  const r = shardFromEnv(env({ JOB_COMPLETION_INDEX: "5", CONVNEXT_SHARD_COUNT: "6" }));
  assert.deepEqual(r, { shard: { index: 5, count: 6 }, source: KUBERNETES });
  assert.deepEqual(shardFromEnv(env({})), {});
  // Empty values count as unset (a template that exports an empty variable).
  assert.deepEqual(shardFromEnv(env({ JOB_COMPLETION_INDEX: "", SLURM_ARRAY_TASK_ID: "" })), {});
});

Deno.test("bad, incomplete or contradicting variables: one line naming the variable", () => {
  const cases: [Record<string, string>, RegExp][] = [
    [
      { SLURM_ARRAY_TASK_ID: "x", SLURM_ARRAY_TASK_COUNT: "4" },
      /^SLURM_ARRAY_TASK_ID: expected an integer >= 0, got "x"$/,
    ],
    [
      { SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "0" },
      /^SLURM_ARRAY_TASK_COUNT: expected an integer >= 1, got "0"$/,
    ],
    [
      { SLURM_ARRAY_TASK_ID: "1" },
      /^SLURM_ARRAY_TASK_ID is set \(1\) but SLURM_ARRAY_TASK_COUNT is not/,
    ],
    [
      { SLURM_ARRAY_TASK_ID: "4", SLURM_ARRAY_TASK_COUNT: "4" },
      /^SLURM_ARRAY_TASK_ID: task 4 .* not one of SLURM_ARRAY_TASK_COUNT=4 shards \(use a range such as --array=0-3\)$/,
    ],
    [
      { SLURM_ARRAY_TASK_ID: "0", SLURM_ARRAY_TASK_COUNT: "4", SLURM_ARRAY_TASK_MIN: "1" },
      /^SLURM_ARRAY_TASK_ID: task 0 of an array from 1/,
    ],
    [{
      SLURM_ARRAY_TASK_ID: "3",
      SLURM_ARRAY_TASK_COUNT: "3",
      SLURM_ARRAY_TASK_MIN: "1",
      SLURM_ARRAY_TASK_MAX: "7",
    }, /^SLURM_ARRAY_TASK_COUNT: 3 tasks but the array runs from 1 to 7 with step 1/],
    [
      { SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "4", SLURM_ARRAY_TASK_STEP: "2" },
      /^SLURM_ARRAY_TASK_ID: task 1 of an array from 0 with step 2/,
    ],
    [
      { JOB_COMPLETION_INDEX: "2" },
      /^JOB_COMPLETION_INDEX is set \(2\) but CONVNEXT_SHARD_COUNT is not/,
    ],
    [
      { CONVNEXT_SHARD_COUNT: "2" },
      /^CONVNEXT_SHARD_COUNT is set \(2\) but JOB_COMPLETION_INDEX is not/,
    ],
    [
      { JOB_COMPLETION_INDEX: "2", CONVNEXT_SHARD_COUNT: "2" },
      /^JOB_COMPLETION_INDEX: 2 is not below CONVNEXT_SHARD_COUNT=2/,
    ],
    [
      { JOB_COMPLETION_INDEX: "-1", CONVNEXT_SHARD_COUNT: "2" },
      /^JOB_COMPLETION_INDEX: expected an integer >= 0, got "-1"$/,
    ],
    [
      { JOB_COMPLETION_INDEX: "1", CONVNEXT_SHARD_COUNT: "2.5" },
      /^CONVNEXT_SHARD_COUNT: expected an integer >= 1, got "2.5"$/,
    ],
    [
      {
        JOB_COMPLETION_INDEX: "0",
        CONVNEXT_SHARD_COUNT: "2",
        SLURM_ARRAY_TASK_ID: "0",
        SLURM_ARRAY_TASK_COUNT: "2",
      },
      /^JOB_COMPLETION_INDEX: both a SLURM array task .* and a Kubernetes Indexed Job .* are set: pass --shard I\/N$/,
    ],
  ];
  for (const [vars, message] of cases) {
    assert.throws(() => shardFromEnv(env(vars)), (e: Error) => {
      assert.match(e.message, message, JSON.stringify(vars));
      assert.equal(e.message.split("\n").length, 1);
      return true;
    });
  }
});

Deno.test("resolveShard: an explicit shard wins and says what it replaced", () => {
  const slurm = env({ SLURM_ARRAY_TASK_ID: "2", SLURM_ARRAY_TASK_COUNT: "4" });
  assert.deepEqual(resolveShard(undefined, slurm), {
    shard: { index: 2, count: 4 },
    source: SLURM,
  });
  assert.deepEqual(resolveShard("0/1", slurm), {
    shard: { index: 0, count: 1 },
    source: "option",
    overridden: { shard: { index: 2, count: 4 }, source: SLURM },
  });
  assert.deepEqual(resolveShard("2/4", slurm), { shard: { index: 2, count: 4 }, source: "option" });
  // A broken environment does not matter once the option decides.
  assert.deepEqual(resolveShard("1/3", env({ SLURM_ARRAY_TASK_ID: "oops" })).shard, {
    index: 1,
    count: 3,
  });
  assert.throws(
    () => resolveShard("3/3", slurm),
    (e: Error) => e instanceof OptionError && e.option === "shard",
  );
  assert.deepEqual(parseShard(" 1/2 "), { index: 1, count: 2 });
});

/** The scheduler variables, all cleared unless set: the test may itself run in an array job. */
const CLEAR = {
  SLURM_ARRAY_TASK_ID: "",
  SLURM_ARRAY_TASK_COUNT: "",
  SLURM_ARRAY_TASK_MIN: "",
  SLURM_ARRAY_TASK_MAX: "",
  SLURM_ARRAY_TASK_STEP: "",
  JOB_COMPLETION_INDEX: "",
  CONVNEXT_SHARD_COUNT: "",
};

async function evalCli(args: string[], vars: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "tools", "eval.ts"), ...args],
    env: { CONVNEXT_BACKEND: "wasm", ...CLEAR, ...vars },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno task eval: shards from SLURM and Kubernetes variables merge to the full run", async () => {
  const expected = JSON.parse(await Deno.readTextFile(join(FIX, "expected.json"))) as {
    count: number;
    top1: number;
  };
  const dir = await Deno.makeTempDir({ prefix: "shard_cli_" });
  try {
    const base = ["--model", join(FIX, "tiny10.pth"), "--data", join(FIX, "flat")];
    const runs: Record<string, string>[] = [
      { SLURM_ARRAY_TASK_ID: "1", SLURM_ARRAY_TASK_COUNT: "2", SLURM_ARRAY_TASK_MIN: "1" },
      { JOB_COMPLETION_INDEX: "1", CONVNEXT_SHARD_COUNT: "2" },
    ];
    const outs = runs.map((_, i) => join(dir, `s${i}.json`));
    for (const [i, vars] of runs.entries()) {
      const r = await evalCli([...base, "--out", outs[i], "--batch", "4"], vars);
      assert.equal(r.code, 0, r.stderr);
      const source = i === 0 ? SLURM : KUBERNETES;
      assert.match(r.stderr, new RegExp(`shard ${i}/2 from ${source}`));
      assert.deepEqual((await readEvalResult(outs[i])).shard, { index: i, count: 2 });
    }
    const all = join(dir, "all.json");
    const merged = await evalCli(["--merge", ...outs, "--out", all], {});
    assert.equal(merged.code, 0, merged.stderr);
    const result = await readEvalResult(all);
    assert.equal(result.count, expected.count);
    assert.ok(Math.abs(result.top1 - expected.top1) < 1e-9, `top1 ${result.top1}`);

    const bad = await evalCli([...base], { JOB_COMPLETION_INDEX: "3" });
    assert.equal(bad.code, 2);
    assert.deepEqual(bad.stderr.trim().split("\n"), [
      "eval: JOB_COMPLETION_INDEX is set (3) but CONVNEXT_SHARD_COUNT is not: set it to the Job's completions, or pass --shard I/N",
    ]);
    const explicit = await evalCli([...base, "--shard", "0/1", "--limit", "1"], {
      SLURM_ARRAY_TASK_ID: "1",
      SLURM_ARRAY_TASK_COUNT: "2",
    });
    assert.equal(explicit.code, 0, explicit.stderr);
    assert.match(explicit.stderr, /eval: --shard 0\/1 replaces shard 1\/2 of SLURM_ARRAY_TASK_ID/);
    assert.match(explicit.stderr, /shard 0\/1, limit 1/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
