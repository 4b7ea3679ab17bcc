/**
 * Runs the JSDoc `@example` blocks of lib/ as tests (`deno test --doc`): each is type-checked
 * and executed, offline, on the repository's small fixtures (a download from the zoo is shown
 * on a local copy). Every module takes part except worker entry points, which start serving
 * when imported.
 *
 * Usage: `deno run -A tools/doc_tests.ts`
 *
 * @module
 */
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Worker entry points (`worker.ts`, `*_worker.ts`): importing one starts a worker loop. */
function isWorker(path: string): boolean {
  return /(^|[/_])worker\.ts$/.test(path);
}

async function* modules(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = join(dir, e.name);
    if (e.isDirectory) yield* modules(path);
    else if (e.name.endsWith(".ts")) yield relative(ROOT, path);
  }
}

if (import.meta.main) {
  const files: string[] = [];
  for await (const f of modules(join(ROOT, "lib"))) if (!isWorker(f)) files.push(f);
  files.sort();
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--doc", ...files],
    cwd: ROOT,
  }).spawn().status;
  Deno.exit(code);
}
