/**
 * `deno task accuracy-table RESULT.json... [--out FILE.md]`: the Markdown accuracy table
 * (official top-1 from the zoo registry next to ours) from `deno task eval` results.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { readEvalResult } from "../lib/eval/merge.ts";
import { accuracyTable } from "../lib/eval/table.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";

const USAGE = "usage: deno task accuracy-table RESULT.json... [--out FILE.md]";

function fail(message: string, code = 2): never {
  console.error(`accuracy-table: ${message}`);
  Deno.exit(code);
}

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { out: { type: "string" }, help: { type: "boolean", default: false } },
  });
} catch (e) {
  fail(`${(e as Error).message}\n${USAGE}`);
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
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
