/**
 * Type-checks notebooks' TypeScript: `deno check` cannot read .ipynb, so the
 * code cells of each notebook are joined into one module under
 * .cache/notebook-check/ (inside the repo, so deno.json and its import map
 * apply), relative imports are made absolute (the module no longer sits next
 * to the notebook), and error locations are mapped back to notebook cells.
 *
 * @module
 */

import { basename, dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO_ROOT } from "./kernelspec.ts";
import { writeFileAtomic } from "../../lib/util/fs.ts";

/** One extracted module with the cell each of its lines came from. */
export interface ExtractedModule {
  /** Module source. */
  code: string;
  /** For each 1-based module line: [1-based cell index, 1-based line in that cell], or undefined for glue lines. */
  lines: ([number, number] | undefined)[];
}

/** The parts of .ipynb JSON the extractor reads. */
export type NotebookJson = { cells?: { cell_type?: string; source?: string | string[] }[] };

/** Makes `./x` and `../x` import specifiers absolute file URLs relative to `fromDir`. */
export function absolutiseImports(code: string, fromDir: string): string {
  const fix = (spec: string) => pathToFileURL(resolve(fromDir, spec)).href;
  return code
    .replace(
      /(\bfrom\s*)(["'])(\.{1,2}\/[^"']*)\2/g,
      (_m, pre, q, spec) => `${pre}${q}${fix(spec)}${q}`,
    )
    .replace(
      /(\bimport\s*)(["'])(\.{1,2}\/[^"']*)\2/g,
      (_m, pre, q, spec) => `${pre}${q}${fix(spec)}${q}`,
    )
    .replace(
      /(\bimport\s*\(\s*)(["'])(\.{1,2}\/[^"']*)\2/g,
      (_m, pre, q, spec) => `${pre}${q}${fix(spec)}${q}`,
    );
}

/**
 * Joins a notebook's code cells into one TypeScript module.
 *
 * @example
 * ```ts
 * const { code } = extractModule(JSON.parse(text), "notebooks");
 * ```
 */
export function extractModule(notebook: NotebookJson, notebookDir: string): ExtractedModule {
  if (!Array.isArray(notebook.cells)) {
    throw new Error("tools/notebooks: not a notebook (no cells array)");
  }
  const out: string[] = [];
  const lines: ([number, number] | undefined)[] = [];
  const push = (text: string, origin?: [number, number]) => {
    out.push(text);
    lines.push(origin);
  };
  push("// Generated from a notebook by tools/notebooks/typecheck.ts; do not edit.");
  notebook.cells.forEach((cell, i) => {
    if (cell.cell_type !== "code") return;
    const source = Array.isArray(cell.source) ? cell.source.join("") : cell.source ?? "";
    push(`// --- cell ${i + 1} ---`);
    absolutiseImports(source, notebookDir).split("\n").forEach((text, j) =>
      push(text, [i + 1, j + 1])
    );
    // A cell's last expression may lack a semicolon; keep cells from running together.
    push(";");
  });
  push("export {};");
  return { code: out.join("\n") + "\n", lines };
}

/** Result of {@link checkNotebooks}. */
export interface CheckResult {
  /** deno check's exit code (0 = all notebooks type-check). */
  code: number;
  /** deno check's diagnostics with module locations rewritten to `<notebook> cell N line M`. */
  report: string;
}

/**
 * Extracts and type-checks the given notebooks with `deno check`.
 *
 * @example
 * ```ts
 * const { code, report } = await checkNotebooks(["notebooks/classification.ipynb"]);
 * ```
 */
export async function checkNotebooks(notebooks: string[]): Promise<CheckResult> {
  const dir = join(REPO_ROOT, ".cache", "notebook-check");
  await Deno.mkdir(dir, { recursive: true });
  const modules = new Map<string, { notebook: string; lines: ExtractedModule["lines"] }>();
  for (const [k, notebook] of notebooks.entries()) {
    let json: NotebookJson;
    try {
      json = JSON.parse(await Deno.readTextFile(notebook));
    } catch (err) {
      throw new Error(`${notebook}: cannot read notebook JSON (${(err as Error).message})`);
    }
    const extracted = extractModule(json, dirname(resolve(notebook)));
    // Index prefix: two notebooks with one base name must not overwrite each other.
    const file = join(dir, `${k}_${basename(notebook, ".ipynb")}.ts`);
    await writeFileAtomic(file, extracted.code);
    modules.set(pathToFileURL(file).href, { notebook, lines: extracted.lines });
  }
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["check", ...[...modules.keys()].map((u) => new URL(u).pathname)],
    cwd: REPO_ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const raw = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  const report = raw.replace(/(file:\/\/\S+?\.ts):(\d+):(\d+)/g, (match, url, line, col) => {
    const entry = modules.get(url);
    const origin = entry?.lines[Number(line) - 1];
    return entry && origin ? `${entry.notebook} cell ${origin[0]} line ${origin[1]}:${col}` : match;
  });
  return { code, report };
}
