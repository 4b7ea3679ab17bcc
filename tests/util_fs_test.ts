/** Atomic directories leave nothing behind: temporary copies of dead processes are removed, a
 * folder that cannot be replaced gets a clear error. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempSiblingOf, withTempDir } from "../lib/util/fs.ts";

Deno.test("withTempDir removes the temporary copies left by killed processes, not live ones", async () => {
  const root = await Deno.makeTempDir({ prefix: "util_fs_" });
  try {
    // A process that has ended: its pid has no /proc entry any more.
    const child = new Deno.Command("true").spawn();
    const deadPid = child.pid;
    await child.status;
    const stale = join(root, `.model.tmp-${deadPid}-0123abcd`);
    const staleOld = join(root, `.model.old-${deadPid}-89abcdef`);
    const live = join(root, `.model.tmp-${Deno.pid}-fedcba98`);
    const other = join(root, `.other.tmp-${deadPid}-0123abcd`);
    for (const d of [stale, staleOld, live, other]) await Deno.mkdir(d);
    await withTempDir(join(root, "model"), (dir) => Deno.writeTextFile(join(dir, "a"), "x"));
    const left = [...Deno.readDirSync(root)].map((e) => e.name).sort();
    assert.deepEqual(left, [
      `.model.tmp-${Deno.pid}-fedcba98`,
      `.other.tmp-${deadPid}-0123abcd`,
      "model",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("withTempDir over the current folder: a clear error, and no hidden copy left behind", async () => {
  const root = await Deno.makeTempDir({ prefix: "util_fs_busy_" });
  const before = Deno.cwd();
  try {
    await Deno.writeTextFile(join(root, "mine.txt"), "the user's");
    Deno.chdir(root);
    // rename(2) of "." fails (EBUSY): the complete new copy used to stay as a hidden folder.
    await assert.rejects(
      () => withTempDir(".", (dir) => Deno.writeTextFile(join(dir, "model.json"), "{}")),
      (e: Error) =>
        e.message ===
          "cannot replace .: it is in use (a process's current folder or a mount point)",
    );
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["mine.txt"]);
  } finally {
    Deno.chdir(before);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("tempSiblingOf: the temporary copies of a name, and nothing else", () => {
  assert.equal(tempSiblingOf(".metrics.jsonl.tmp-123-0a1b2c3d"), "metrics.jsonl");
  assert.equal(tempSiblingOf(".best.old-9-ffffffff"), "best");
  for (const name of ["metrics.jsonl", ".hidden", ".best.tmp-x-0a1b2c3d", ".best.tmp-1-0A1B2C3D"]) {
    assert.equal(tempSiblingOf(name), undefined, name);
  }
});
