/**
 * `deno task accuracy-table RESULT.json... [--out FILE.md]`: the Markdown accuracy table
 * (official top-1 from the zoo registry next to ours) from `deno task eval` results.
 *
 * @module
 */
import { command, type Fail, failer } from "./cli.ts";
import { readEvalResult } from "../lib/eval/merge.ts";
import { accuracyTable } from "../lib/eval/table.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";

const USAGE = "usage: deno task accuracy-table RESULT.json... [--out FILE.md]";

const fail: Fail = failer("accuracy-table");
const { values, positionals } = command(USAGE, { out: { type: "string" } }, fail);
if (positionals.length === 0) fail(`no RESULT.json given\n${USAGE}`);

try {
  const results = [];
  for (const file of positionals) results.push(await readEvalResult(file));
  const table = accuracyTable(results);
  console.log(table.trimEnd());
  if (values.out) await writeFileAtomic(values.out, table);
} catch (e) {
  fail((e as Error).message.split("\n")[0], 1);
}
