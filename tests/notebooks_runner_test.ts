/**
 * Headless notebook runner: every output of the fixture notebook must survive
 * every one of 10 runs (stock nbclient loses outputs the Deno kernel sends
 * after `idle`), and a failing cell fails the run with the cell named.
 *
 * Needs /usr/bin/python3 with python3-jupyter-client and python3-nbformat.
 */

import assert from "node:assert/strict";
import { join, relative, resolve } from "node:path";
import { installKernelspec, kernelSpec } from "../tools/notebooks/kernelspec.ts";
import { findNotebooks, runNotebooks } from "../tools/notebooks/run.ts";
import { absolutiseImports, checkNotebooks, extractModule } from "../tools/notebooks/typecheck.ts";

const FIXTURES = join(import.meta.dirname!, "fixtures", "notebooks");
const RUNS = 10;
// The 1x1 PNG the fixture's display cell shows (copied from the cell source).
const PNG_B64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[] | object>;
  execution_count?: number | null;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: string;
  source: string | string[];
  outputs?: Output[];
  execution_count?: number | null;
}

function joined(x: string | string[] | undefined): string {
  return Array.isArray(x) ? x.join("") : x ?? "";
}

async function readCells(path: string): Promise<Cell[]> {
  return JSON.parse(await Deno.readTextFile(path)).cells as Cell[];
}

/** Checks every expected output of the executed fixture; the values follow from each cell's code. */
function checkFixture(cells: Cell[], run: string, param: string): void {
  const code = cells.filter((c) => c.cell_type === "code");
  assert.equal(code.length, 10, `${run}: fixture has 10 code cells`);
  code.forEach((c, i) => {
    assert.ok(c.execution_count, `${run}: code cell ${i + 1} has an execution count`);
    for (const o of c.outputs ?? []) {
      assert.notEqual(
        o.output_type,
        "error",
        `${run}: code cell ${i + 1}: ${o.ename}: ${o.evalue}`,
      );
    }
  });
  const only = (i: number, type: string) => {
    const outs = code[i].outputs ?? [];
    assert.deepEqual(outs.map((o) => o.output_type), [type], `${run}: code cell ${i + 1} outputs`);
    return outs[0];
  };
  const stream = (i: number) => joined(only(i, "stream").text);
  const result = (i: number) => {
    const o = only(i, "execute_result");
    assert.equal(o.execution_count, code[i].execution_count, `${run}: cell ${i + 1} result count`);
    return joined(o.data?.["text/plain"] as string);
  };
  assert.equal(stream(0), "stream: hello from cell 1\n", run);
  assert.equal(result(1), "42", run);
  assert.equal(result(2), '"a string result"', run);
  assert.equal(result(3), "{ answer: 42, list: [ 1, 2, 3 ] }", run);
  const mixed = code[4].outputs ?? [];
  assert.deepEqual(
    mixed.map((
      o,
    ) => [o.output_type, o.name ?? "", joined(o.text) || joined(o.data?.["text/plain"] as string)]),
    [
      ["stream", "stdout", "stream: before the value\n"],
      ["stream", "stderr", "stderr: a warning\n"],
      ["execute_result", "", "[ 2, 4, 6 ]"],
    ],
    `${run}: cell 5 (stdout, stderr, value)`,
  );
  assert.equal(joined(only(5, "display_data").data?.["image/png"] as string), PNG_B64, run);
  assert.equal(stream(6), "stream: after await\n", run);
  assert.equal(stream(7), `param=${param}\n`, `${run}: env var reaches the kernel`);
  const chart = joined(only(8, "display_data").data?.["image/svg+xml"] as string);
  assert.match(chart, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/, `${run}: lib/viz chart SVG`);
  const bars = chart.match(/<g[^>]*aria-label="bar"[^>]*>([\s\S]*?)<\/g>/);
  assert.ok(bars, `${run}: chart has a bar mark`);
  assert.equal(bars[1].match(/<rect\b/g)?.length, 3, `${run}: 3 bars`);
  // The progress bar is one display updated in place; the runner applies the updates.
  assert.equal(
    joined(only(9, "display_data").data?.["text/plain"] as string),
    "fixture work: 100% finished",
    `${run}: progress display shows its final update`,
  );
}

Deno.test("runner keeps every output in each of 10 runs of the fixture notebook", async () => {
  const out = await Deno.makeTempDir({ prefix: "nb-runner-" });
  try {
    const param = `p${crypto.randomUUID().slice(0, 6)}`;
    const result = await runNotebooks({
      notebooks: [join(FIXTURES, "runner_fixture.ipynb")],
      out,
      repeat: RUNS,
      env: { FIXTURE_PARAM: param },
      capture: true,
    });
    assert.equal(result.code, 0, `runner failed:\n${result.stderr}`);
    for (let run = 1; run <= RUNS; run++) {
      const path = join(out, `runner_fixture.run${run}.ipynb`);
      checkFixture(await readCells(path), `run ${run}`, param);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("a failing cell fails the run, naming notebook, cell and error", async () => {
  const out = await Deno.makeTempDir({ prefix: "nb-runner-" });
  try {
    const notebook = join(FIXTURES, "error_fixture.ipynb");
    const result = await runNotebooks({ notebooks: [notebook], out, capture: true });
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.failures, [
      `${notebook}: cell 2 failed: TypeError: notAFunction is not a function`,
    ]);
    // The executed copy is still written, with the error shown and later cells not run.
    const cells = await readCells(join(out, "error_fixture.ipynb"));
    assert.equal(joined(cells[0].outputs?.[0]?.text), "before the error\n");
    assert.equal(cells[1].outputs?.at(-1)?.output_type, "error");
    assert.equal(cells[1].outputs?.at(-1)?.ename, "TypeError");
    assert.deepEqual(cells[2].outputs, []);
    assert.equal(cells[2].execution_count, null);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("a cell over NOTEBOOK_CELL_TIMEOUT fails the run, naming the cell", async () => {
  const out = await Deno.makeTempDir({ prefix: "nb-runner-" });
  try {
    const notebook = join(FIXTURES, "timeout_fixture.ipynb");
    const started = performance.now();
    const result = await runNotebooks({
      notebooks: [notebook],
      out,
      env: { NOTEBOOK_CELL_TIMEOUT: "2" },
      capture: true,
    });
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(result.failures, [
      `${notebook}: cell 2 timed out: no result after 2 s (NOTEBOOK_CELL_TIMEOUT sets the limit)`,
    ]);
    // The cell sleeps 60 s; the run must end long before that.
    assert.ok(performance.now() - started < 30_000);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("kernelspec is written into the project-local JUPYTER_PATH", async () => {
  const root = await Deno.makeTempDir({ prefix: "nb-kernelspec-" });
  try {
    const path = await installKernelspec(root);
    assert.equal(path, join(root, ".cache", "jupyter"));
    const spec = JSON.parse(await Deno.readTextFile(join(path, "kernels", "deno", "kernel.json")));
    assert.deepEqual(spec, kernelSpec());
    assert.deepEqual(spec.argv, [
      Deno.execPath(),
      "jupyter",
      "--kernel",
      "--conn",
      "{connection_file}",
    ]);
    assert.equal(spec.language, "typescript");
    await assert.rejects(installKernelspec(root, "bad name"), /kernel name/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("findNotebooks lists notebooks/*.ipynb sorted, and nothing when absent", async () => {
  const root = await Deno.makeTempDir({ prefix: "nb-find-" });
  try {
    assert.deepEqual(await findNotebooks(root), []);
    await Deno.mkdir(join(root, "notebooks"));
    for (const name of ["b.ipynb", "a.ipynb", "notes.md"]) {
      await Deno.writeTextFile(join(root, "notebooks", name), "{}");
    }
    const found = await findNotebooks(root);
    assert.deepEqual(found.map((p) => p.split(/[\\/]/).at(-1)), ["a.ipynb", "b.ipynb"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("the notebooks task rejects bad arguments with a one-line reason", async () => {
  const script = join(import.meta.dirname!, "..", "tools", "notebooks.ts");
  for (
    const [args, reason] of [[["--repeat", "0"], /--repeat: expected a positive integer/], [[
      "x.txt",
    ], /x\.txt: expected a \.ipynb notebook/]] as const
  ) {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 2);
    assert.match(new TextDecoder().decode(stderr), reason);
  }
});

Deno.test("absolutiseImports rewrites relative specifiers only", () => {
  const code = [
    'import { a } from "../lib/mod.ts";',
    "import './side.ts';",
    'const m = await import("./dyn.ts");',
    'import * as tf from "@tensorflow/tfjs";',
  ].join("\n");
  assert.equal(
    absolutiseImports(code, "/repo/notebooks"),
    [
      'import { a } from "file:///repo/lib/mod.ts";',
      "import 'file:///repo/notebooks/side.ts';",
      'const m = await import("file:///repo/notebooks/dyn.ts");',
      'import * as tf from "@tensorflow/tfjs";',
    ].join("\n"),
  );
});

Deno.test("extractModule keeps code cells in order and maps lines back to cells", () => {
  const { code, lines } = extractModule({
    cells: [
      { cell_type: "markdown", source: "# title" },
      { cell_type: "code", source: ["const a = 1;\n", "a"] },
      { cell_type: "code", source: "console.log(a);" },
    ],
  }, "/nb");
  const body = code.split("\n");
  const at = (text: string) => lines[body.indexOf(text)];
  assert.deepEqual(at("const a = 1;"), [2, 1]);
  assert.deepEqual(at("a"), [2, 2]);
  assert.deepEqual(at("console.log(a);"), [3, 1]);
  assert.ok(body.indexOf("a") < body.indexOf("console.log(a);"));
  assert.throws(() => extractModule({}, "/nb"), /not a notebook/);
});

Deno.test("notebook code type-checks; a type error is reported at its notebook cell", async () => {
  const good = join(FIXTURES, "runner_fixture.ipynb");
  const bad = join(FIXTURES, "type_error_fixture.ipynb");
  const { code, report } = await checkNotebooks([good, bad]);
  assert.equal(code, 1, report);
  // deno check reports every error of every module: exactly one, in the bad notebook.
  assert.equal(report.match(/\[ERROR\]/g)?.length, 1, report);
  assert.match(report, /Type 'string' is not assignable to type 'number'/);
  assert.ok(report.includes(`${bad} cell 3 line 2:7`), report);
});

Deno.test("offline parameters use only files inside the repository (no ../shared)", async () => {
  const root = join(import.meta.dirname!, "..");
  const notebooksDir = join(root, "notebooks");
  const raw = JSON.parse(await Deno.readTextFile(join(notebooksDir, "offline.json"))) as Record<
    string,
    string
  >;
  // Folders the notebooks write to: under out/, which the repository ignores.
  const OUTPUTS = new Set(["CONVNEXT_OUT", "CONVNEXT_EVAL_OUT", "CONVNEXT_FT_OUT"]);
  let inputs = 0;
  // Outside a git checkout (an unpacked archive) only the existence of the files is checked.
  const inGit = (await new Deno.Command("git", {
    args: ["rev-parse", "--is-inside-work-tree"],
    cwd: root,
    stdout: "null",
    stderr: "null",
  }).output().catch(() => ({ success: false }))).success;
  for (const [key, value] of Object.entries(raw)) {
    for (const part of value.split(",")) {
      if (!part.includes("/")) continue; // a number, a mode, a backend name
      // The kernel runs in notebooks/: relative paths resolve from there.
      const path = resolve(notebooksDir, part.replaceAll("{repo}", root));
      assert.ok(
        path.startsWith(root + "/") && !relative(root, path).startsWith(".."),
        `${key}: ${part} is outside the repository`,
      );
      if (OUTPUTS.has(key)) {
        assert.ok(relative(root, path).startsWith("out/"), `${key}: ${part} is not under out/`);
        continue;
      }
      await Deno.stat(path); // throws NotFound: an input the repository does not hold
      if (!inGit) {
        inputs++;
        continue;
      }
      const tracked = await new Deno.Command("git", {
        args: ["ls-files", "--error-unmatch", "--others", "--cached", "--exclude-standard", path],
        cwd: root,
        stdout: "null",
        stderr: "null",
      }).output();
      assert.ok(tracked.success, `${key}: ${part} is ignored by git, so a clone would lack it`);
      inputs++;
    }
  }
  assert.ok(inputs >= 10, `only ${inputs} input paths checked`);
});
