/**
 * `deno task accuracy-table RESULT.json... [--out FILE.md]`: the Markdown accuracy table
 * (official top-1 from the zoo registry next to ours) from `deno task eval` results.
 *
 * @module
 */
import { command, type CommandHelp, type Fail, failer, usageLine } from "./cli.ts";
import { readEvalResult } from "../lib/eval/merge.ts";
import { accuracyTable } from "../lib/eval/table.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";

const HELP: CommandHelp = {
  name: "accuracy-table",
  synopsis: "[--out FILE.md] RESULT.json...",
  about: `
The Markdown table | name | original acc@1 | ours acc@1 | ours acc@5 | images | from the result
files that \`deno task eval\` writes (one run, or shards merged): the official top-1 of each zoo
model next to the measured one, in zoo order. Results that did not cover the whole 50,000-image
validation set (a shard, a limit, unreadable images) are marked partial. The table is printed, and written to
--out when given.`,
  flags: {
    out: { value: "FILE.md", help: "also write the table to this file (atomically)" },
  },
  env: [],
  examples: [
    "deno task accuracy-table out/eval/*.json",
    "deno task accuracy-table out/eval/tiny.json out/eval/small.json --out out/accuracy.md",
  ],
};

const fail: Fail = failer("accuracy-table");
const { values, positionals } = command(HELP, { out: { type: "string" } }, fail);
if (positionals.length === 0) fail(`no RESULT.json given\n${usageLine(HELP)}`);

try {
  const results = [];
  for (const file of positionals) results.push(await readEvalResult(file));
  const table = accuracyTable(results);
  console.log(table.trimEnd());
  if (values.out) await writeFileAtomic(values.out, table);
} catch (e) {
  fail((e as Error).message.split("\n")[0], 1);
}
