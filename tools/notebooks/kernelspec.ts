/**
 * The Deno Jupyter kernelspec, installed into a project-local JUPYTER_PATH
 * (`.cache/jupyter`) so headless runs need neither `jupyter` on PATH (which
 * `deno jupyter --install` wants) nor a write to the user's Jupyter folders.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileAtomic } from "../../lib/util/fs.ts";

/** Repository root (this file is tools/notebooks/kernelspec.ts). */
export const REPO_ROOT: string = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

/** The project-local Jupyter data folder that goes on JUPYTER_PATH. */
export function jupyterPath(root = REPO_ROOT): string {
  return join(root, ".cache", "jupyter");
}

/** What `deno jupyter --install` writes, with the running deno's absolute path. */
export interface KernelSpec {
  /** Command line; Jupyter substitutes `{connection_file}`. */
  argv: string[];
  /** Name shown in Jupyter's kernel picker. */
  display_name: string;
  /** Language of the cells. */
  language: string;
}

/**
 * The kernelspec JSON. The absolute deno path (rather than "deno") keeps the
 * kernel on the same Deno as the task even when PATH differs (CI, IDEs).
 */
export function kernelSpec(denoPath = Deno.execPath()): KernelSpec {
  return {
    argv: [denoPath, "jupyter", "--kernel", "--conn", "{connection_file}"],
    display_name: "Deno",
    language: "typescript",
  };
}

/**
 * Writes `<root>/.cache/jupyter/kernels/<name>/kernel.json` (atomically) and
 * returns the folder to put on JUPYTER_PATH.
 *
 * @example
 * ```ts
 * const path = await installKernelspec();
 * // spawn with env JUPYTER_PATH=path; the kernel name is "deno"
 * ```
 */
export async function installKernelspec(root = REPO_ROOT, name = "deno"): Promise<string> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new Error(
      `tools/notebooks: kernel name ${JSON.stringify(name)}: use letters, digits, . _ -`,
    );
  }
  const base = jupyterPath(root);
  const dir = join(base, "kernels", name);
  await Deno.mkdir(dir, { recursive: true });
  const target = join(dir, "kernel.json");
  await writeFileAtomic(target, JSON.stringify(kernelSpec(), null, 2) + "\n");
  return base;
}
