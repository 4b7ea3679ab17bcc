/**
 * `deno task finetune` as a user runs it: Ctrl-C during an epoch exits 130 with the
 * `--resume` hint and keeps the last complete epoch's checkpoint; the same command with
 * `--resume` then finishes the run and ends exactly as an uninterrupted run of the command
 * (metrics.jsonl line for line). Argument errors are tested in train_finetune_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadCheckpoint } from "../lib/train/checkpoint.ts";
import { makeSyntheticDataset, makeTinyModel, useCpu } from "./train_helpers.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
await useCpu();
const tmp = await Deno.makeTempDir({ prefix: "finetune_cli_" });
const { root } = await makeSyntheticDataset(join(tmp, "data"), 6, 2);
const baseDir = await makeTinyModel(join(tmp, "base"));

function command(out: string, extra: string[] = []): Deno.Command {
  const args = ["--model", baseDir, "--data", root, "--out", out, "--epochs", "3", "--batch", "4"];
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tools/finetune.ts", ...args, "--size", "40", "--seed", "5", ...extra],
    cwd: ROOT,
    env: { CONVNEXT_BACKEND: "cpu" },
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs the command, sends Ctrl-C once its stderr shows `epoch 1/3:` (epoch 1 is saved). */
async function interruptAfterEpoch1(out: string): Promise<{ code: number; stderr: string }> {
  const child = command(out).spawn();
  let stderr = "";
  let sent = false;
  const dec = new TextDecoder();
  for await (const chunk of child.stderr) {
    stderr += dec.decode(chunk);
    if (!sent && /\bepoch 1\/3:/.test(stderr)) {
      child.kill("SIGINT");
      sent = true;
    }
  }
  await child.stdout.cancel();
  const { code } = await child.status;
  assert.ok(sent, `the run ended before epoch 1 was logged: ${stderr}`);
  return { code, stderr };
}

async function metrics(out: string): Promise<unknown[]> {
  const text = await Deno.readTextFile(join(out, "metrics.jsonl"));
  return text.trim().split("\n").map((line) => {
    const m = JSON.parse(line);
    delete m.imagesPerSecond; // timing
    delete m.seconds;
    return m;
  });
}

Deno.test("finetune command: Ctrl-C keeps the checkpoint and exits 130; --resume ends as a straight run", async () => {
  const out = join(tmp, "interrupted");
  const stopped = await interruptAfterEpoch1(out);
  assert.equal(stopped.code, 130, stopped.stderr);
  assert.match(
    stopped.stderr,
    /finetune: interrupted; continue with the same arguments plus --resume/,
  );
  const saved = await loadCheckpoint<{ epoch: number }>(join(out, "checkpoint"));
  assert.ok(saved && saved.state.epoch >= 1, "the last complete epoch is checkpointed");

  const resumed = await command(out, ["--resume"]).output();
  assert.equal(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
  const straight = await command(join(tmp, "straight")).output();
  assert.equal(straight.code, 0, new TextDecoder().decode(straight.stderr));
  assert.deepEqual(await metrics(out), await metrics(join(tmp, "straight")));
});

globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));
