/**
 * `deno task notebooks [--out DIR] [--offline] [--repeat N] [--timeout S] [--check]
 * [--install-kernel] [NOTEBOOK...]`
 *
 * Executes notebooks headlessly on Deno's Jupyter kernel (default: every
 * notebooks/*.ipynb) and writes the executed copies to DIR (default
 * out/notebooks/). Notebook parameters come from environment variables, which
 * pass through to the kernel. Exits non-zero when a cell fails, printing
 * "<notebook>: cell N failed: <Error>: <message>" (N counts all cells from 1).
 *
 * `--check` type-checks the notebooks' code cells (extracted to a module) instead of running them.
 *
 * `--install-kernel` only writes the kernelspec to .cache/jupyter (put that
 * folder on JUPYTER_PATH to use the project's kernel from JupyterLab).
 *
 * @module
 */

import { join } from "node:path";
import { command, type CommandHelp, type Fail, failer, usageLine } from "./cli.ts";
import { installKernelspec, REPO_ROOT } from "./notebooks/kernelspec.ts";
import { findNotebooks, runNotebooks } from "./notebooks/run.ts";
import { checkNotebooks } from "./notebooks/typecheck.ts";

const HELP: CommandHelp = {
  name: "notebooks",
  synopsis: "[flags] [NOTEBOOK.ipynb...]",
  about: `
Execute notebooks headlessly on Deno's Jupyter kernel (default: every notebooks/*.ipynb, each in a
fresh kernel) and write the executed copies. A failing cell is reported as
"<notebook>: cell N failed: <Error>: <message>" and the exit code is 1. Notebook parameters
(CONVNEXT_MODEL, CONVNEXT_IMAGE, ...: see each notebook's first cell) are environment variables,
passed to the kernel. Needs Debian's python3-jupyter-client and python3-nbformat
(/usr/bin/python3, or $NOTEBOOK_PYTHON).`,
  flags: {
    out: { value: "DIR", help: "folder for the executed copies", default: "out/notebooks" },
    offline: {
      help: "run on the repository's fixtures (notebooks/offline.json): no network needed",
    },
    repeat: { value: "N", help: "executions per notebook, each in a fresh kernel", default: "1" },
    timeout: {
      value: "SECONDS",
      help: "limit per cell",
      default: "$NOTEBOOK_CELL_TIMEOUT or 1800",
    },
    check: { help: "type-check the notebooks' code cells instead of running them" },
    "install-kernel": {
      help: "only write the kernelspec to .cache/jupyter (for JupyterLab: JUPYTER_PATH)",
    },
  },
  env: [
    "CONVNEXT_BACKEND",
    "CONVNEXT_CACHE",
    "CONVNEXT_BASE_URL",
    "CONVNEXT_THREADS",
    "CONVNEXT_TRAIN_THREADS",
    "CONVNEXT_VIZ_FONT",
  ],
  examples: [
    "deno task notebooks --offline --out notebooks     # re-run all on the repository's fixtures",
    "deno task notebooks notebooks/classification.ipynb --timeout 600",
    "deno task notebooks --check                       # type-check only",
  ],
};

const OPTIONS = {
  out: { type: "string" },
  offline: { type: "boolean" },
  repeat: { type: "string" },
  timeout: { type: "string" },
  check: { type: "boolean" },
  "install-kernel": { type: "boolean" },
} as const;

function positiveNumber(
  flag: string,
  raw: string | undefined,
  integer = false,
): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!(value > 0) || (integer && !Number.isInteger(value))) {
    throw new Error(
      `${flag}: expected a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(raw)}`,
    );
  }
  return value;
}

/**
 * The notebook parameters of an offline run (`--offline`): fixture weights and data shipped
 * in the repository, from `notebooks/offline.json` (`{repo}` stands for the repository root),
 * so the notebooks run with no network (CI, and the committed outputs). The ImageNet-22k
 * labels cannot be shipped, so numbered stand-ins are written under `out/` and served as a
 * `file:` download base (`CONVNEXT_BASE_URL`).
 */
export async function offlineEnv(): Promise<Record<string, string>> {
  const path = join(REPO_ROOT, "notebooks", "offline.json");
  const parsed = JSON.parse(await Deno.readTextFile(path));
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${path}: expected an object of environment variables`);
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (typeof value !== "string") throw new Error(`${path}: ${key} must be a string`);
    env[key] = value.replaceAll("{repo}", REPO_ROOT);
  }
  const root = join(REPO_ROOT, "out", "notebooks-offline");
  // Start from an empty cache, so every offline run takes the same (first-use) paths.
  await Deno.remove(root, { recursive: true }).catch(() => {});
  const base = join(root, "base");
  await Deno.mkdir(base, { recursive: true });
  const labels = Object.fromEntries(
    Array.from({ length: 21841 }, (_, i) => [String(i), `offline 22k label ${i}`]),
  );
  await Deno.writeTextFile(join(base, "label_to_words.json"), JSON.stringify(labels));
  env.CONVNEXT_BASE_URL ??= `file://${base}/`;
  env.CONVNEXT_CACHE ??= join(root, "cache");
  return env;
}

async function main(argv: string[]): Promise<number> {
  const fail: Fail = failer("notebooks");
  const { values, positionals } = command(HELP, OPTIONS, fail, argv);
  if (values["install-kernel"]) {
    const path = await installKernelspec();
    console.log(`Deno kernelspec written to ${path}/kernels/deno (use JUPYTER_PATH=${path})`);
    return 0;
  }
  for (const path of positionals) {
    if (!path.endsWith(".ipynb")) throw new Error(`${path}: expected a .ipynb notebook`);
  }
  // Validate every option before deciding there is nothing to do.
  const repeat = positiveNumber("--repeat", values.repeat, true);
  const timeout = positiveNumber("--timeout", values.timeout);
  const notebooks = positionals.length > 0 ? positionals : await findNotebooks();
  if (notebooks.length === 0) {
    console.log("notebooks: no notebooks/*.ipynb yet; nothing to run");
    return 0;
  }
  if (values.check) {
    const { code, report } = await checkNotebooks(notebooks);
    console.log(report.trimEnd());
    return code;
  }
  const result = await runNotebooks({
    notebooks,
    out: values.out,
    repeat,
    timeout,
    env: values.offline ? await offlineEnv() : undefined,
  });
  return result.code;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`notebooks: ${err instanceof Error ? err.message : err}`);
    console.error(usageLine(HELP));
    Deno.exit(2);
  }
}
