/**
 * Every command of deno.json's "tasks" explains itself: `--help` exits 0 with the usage line
 * `usage: deno task NAME ...`, a described line for every flag it mentions, and at least two
 * examples of `deno task NAME`; an unknown flag exits 2 with a one-line error naming it
 * (then the usage line). The commands run as subprocesses, a few at a time, all started by
 * the first test (the others wait for theirs).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** The tasks that are commands (tools with `--help`). */
const COMMANDS = [
  "classify",
  "convert",
  "eval",
  "finetune",
  "demo",
  "bench",
  "bench:dispatch",
  "bench:webgpu-kernels",
  "bench:kernels",
  "bench:train",
  "models",
  "accuracy-table",
  "notebooks",
];
/** Tasks that run a tool but are not user commands. */
const NOT_COMMANDS = ["test:docs"];

const TASKS: Record<string, string> =
  JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).tasks;

/** The script of a task `deno run -A tools/X.ts`, or undefined for other tasks. */
function scriptOf(task: string): string | undefined {
  return /^deno run -A (tools\/[\w/]+\.ts)$/.exec(TASKS[task] ?? "")?.[1];
}

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** At most this many subprocesses at once (each loads TF.js). */
const PARALLEL = 4;
let running = 0;
const waiting: (() => void)[] = [];

async function run(task: string, args: string[]): Promise<Output> {
  while (running >= PARALLEL) await new Promise<void>((go) => waiting.push(go));
  running++;
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", scriptOf(task)!, ...args],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** `--help` and an unknown flag of every command, started together on first use. */
let outputs: Promise<Map<string, { help: Output; unknown: Output }>> | undefined;
function outputsOf(task: string) {
  outputs ??= Promise.all(
    COMMANDS.map(async (name) => {
      const [help, unknown] = await Promise.all([
        run(name, ["--help"]),
        run(name, ["--no-such-flag"]),
      ]);
      return [name, { help, unknown }] as const;
    }),
  ).then((entries) => new Map(entries));
  return outputs.then((m) => m.get(task)!);
}

/** The lines of a section (`flags:`, `examples:`...): from its title to the next blank line. */
function section(lines: string[], title: string): string[] {
  const start = lines.indexOf(title);
  if (start < 0) return [];
  const end = lines.findIndex((l, i) => i > start && l.trim() === "");
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** The flags of the `flags:` section, each with its description (same or next line). */
function describedFlags(flagLines: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  flagLines.forEach((line, i) => {
    const m = /^ {2}(?:-\w, )?--([a-z][\w-]*)(?: [^ ]+)?(?: {2,}(.*))?$/.exec(line);
    if (!m) return;
    const next = flagLines[i + 1] ?? "";
    const continued = /^ {4,}\S/.test(next) && !/^ {2}-/.test(next) ? next.trim() : "";
    flags.set(m[1], (m[2] ?? "").trim() || continued);
  });
  return flags;
}

/** The `--flags` a line mentions, leaving out those in `` `deno task OTHER ...` `` spans. */
function mentionedFlags(line: string, task: string): string[] {
  const text = line.replace(
    /`deno task ([^`\s]+)[^`]*`/g,
    (span, name: string) => name === task ? span : "",
  );
  return [...text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1]);
}

Deno.test("cli help: every command task of deno.json is covered", () => {
  const tools = Object.keys(TASKS).filter((t) => scriptOf(t) && !NOT_COMMANDS.includes(t));
  assert.deepEqual(tools.sort(), [...COMMANDS].sort());
});

for (const task of COMMANDS) {
  Deno.test({
    name: `cli help: deno task ${task} --help`,
    // The subprocesses of every command start in the first test and end in later ones.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const { help } = await outputsOf(task);
      assert.equal(help.code, 0, `exit ${help.code}: ${help.stderr}`);
      const lines = help.stdout.trimEnd().split("\n");
      const usage = `usage: deno task ${task}`;
      assert.ok(lines[0] === usage || lines[0].startsWith(`${usage} `), lines[0]);

      const flagLines = section(lines, "flags:");
      assert.ok(flagLines.length > 0, `${task}: no "flags:" section`);
      const flags = describedFlags(flagLines);
      assert.ok(flags.has("help"), `${task}: --help is not listed`);
      for (const [flag, text] of flags) assert.ok(text, `${task}: --${flag} has no description`);

      const examples = section(lines, "examples:").map((l) => l.trim());
      const own = examples.filter((e) =>
        e === `deno task ${task}` || e.startsWith(`deno task ${task} `)
      );
      assert.ok(own.length >= 2, `${task}: ${own.length} examples of "deno task ${task}"`);

      // Every flag the help mentions (usage, text, examples) is one it describes; the
      // environment section describes variables shared by every command.
      const environment = new Set(section(lines, "environment:"));
      for (const line of lines.filter((l) => !environment.has(l))) {
        for (const flag of mentionedFlags(line, task)) {
          assert.ok(flags.has(flag), `${task}: --${flag} is mentioned but not described: ${line}`);
        }
      }
    },
  });

  Deno.test({
    name: `cli help: deno task ${task} --no-such-flag`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const { unknown } = await outputsOf(task);
      assert.equal(unknown.code, 2, `exit ${unknown.code}: ${unknown.stderr}`);
      const lines = unknown.stderr.trimEnd().split("\n");
      assert.ok(lines[0].startsWith(`${task}: `), lines[0]);
      assert.ok(lines[0].includes("--no-such-flag"), lines[0]);
      // One line of error, then at most the usage line.
      assert.ok(lines.length <= 2, `${task}: ${lines.length} lines on stderr`);
      if (lines.length === 2) assert.ok(lines[1].startsWith(`usage: deno task ${task}`), lines[1]);
      assert.equal(unknown.stdout, "");
    },
  });
}
