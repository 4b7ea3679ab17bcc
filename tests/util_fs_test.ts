/** Atomic directories leave nothing behind: temporary copies of dead processes are removed. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { withTempDir } from "../lib/util/fs.ts";

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
