/**
 * Runs notebooks headlessly: installs the kernelspec, then hands the work to
 * run_notebooks.py (Debian's jupyter_client/nbformat), which keeps reading
 * the Deno kernel's outputs that arrive after `idle`.
 *
 * @module
 */

import { join, relative } from "node:path";
import { installKernelspec, REPO_ROOT } from "./kernelspec.ts";

/** The Python with Debian's python3-jupyter-client/python3-nbformat (not a pyenv shim). */
export function pythonPath(): string {
  return Deno.env.get("NOTEBOOK_PYTHON") ?? "/usr/bin/python3";
}

/** Options for {@link runNotebooks}. */
export interface RunOptions {
  /** Notebook paths. */
  notebooks: string[];
  /** Folder for executed copies (default out/notebooks under the repo). */
  out?: string;
  /** Executions per notebook, each in a fresh kernel (default 1). */
  repeat?: number;
  /** Seconds per cell (default: $NOTEBOOK_CELL_TIMEOUT or 1800). */
  timeout?: number;
  /** Seconds of IOPub quiet that end a notebook's final drain (default 0.5). */
  grace?: number;
  /** Extra environment for the kernel (notebook parameters). */
  env?: Record<string, string>;
  /** Capture stdout/stderr instead of inheriting them (for tests). */
  capture?: boolean;
}

/** Outcome of {@link runNotebooks}. */
export interface RunResult {
  /** Exit code of the runner: 0 ok, 1 a cell failed, 2 bad usage. */
  code: number;
  /** Captured stderr (empty unless `capture`). */
  stderr: string;
  /** The one-line failure reports ("<notebook>: cell N failed: Ename: message"). */
  failures: string[];
}

/**
 * Executes notebooks on the Deno kernel and writes the executed copies.
 *
 * @example
 * ```ts
 * const { code } = await runNotebooks({ notebooks: ["notebooks/classification.ipynb"] });
 * ```
 */
export async function runNotebooks(options: RunOptions): Promise<RunResult> {
  await checkPython();
  const jupyterPath = await installKernelspec();
  const args = [join(REPO_ROOT, "tools", "notebooks", "run_notebooks.py")];
  args.push("--out", options.out ?? join(REPO_ROOT, "out", "notebooks"));
  if (options.repeat !== undefined) args.push("--repeat", String(options.repeat));
  if (options.timeout !== undefined) args.push("--timeout", String(options.timeout));
  if (options.grace !== undefined) args.push("--grace", String(options.grace));
  args.push(...options.notebooks);
  const inherited = Deno.env.get("JUPYTER_PATH");
  const env: Record<string, string> = {
    ...options.env,
    // Ours first so a user-level "deno" kernelspec pointing at another deno doesn't win.
    JUPYTER_PATH: inherited ? `${jupyterPath}:${inherited}` : jupyterPath,
    JUPYTER_RUNTIME_DIR: Deno.env.get("JUPYTER_RUNTIME_DIR") ?? join(jupyterPath, "runtime"),
  };
  const command = new Deno.Command(pythonPath(), {
    args,
    env,
    stdout: options.capture ? "piped" : "inherit",
    stderr: options.capture ? "piped" : "inherit",
  });
  // output() reads both pipes while waiting, so a chatty run cannot block on a full pipe.
  const result = await command.output();
  const stderr = options.capture ? new TextDecoder().decode(result.stderr) : "";
  const code = result.code;
  const failures = stderr.split("\n").filter((l) => / cell \d+ (failed|timed out): /.test(l));
  return { code, stderr, failures };
}

async function checkPython(): Promise<void> {
  const python = pythonPath();
  let ok = false;
  try {
    const { code } = await new Deno.Command(python, {
      args: ["-c", "import jupyter_client, nbformat"],
      stdout: "null",
      stderr: "null",
    }).output();
    ok = code === 0;
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new Error(
      `tools/notebooks: ${python} cannot import jupyter_client and nbformat; ` +
        "install them with `apt-get install python3-jupyter-client python3-nbformat` " +
        "(or point NOTEBOOK_PYTHON at a Python that has them)",
    );
  }
}

/** The notebooks under `<root>/notebooks/`, sorted, as repo-relative paths. */
export async function findNotebooks(root = REPO_ROOT): Promise<string[]> {
  const dir = join(root, "notebooks");
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.endsWith(".ipynb")) found.push(join(dir, entry.name));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return found.sort().map((p) => relative(Deno.cwd(), p) || p);
}
