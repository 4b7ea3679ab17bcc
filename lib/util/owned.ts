/**
 * Folders the kit writes its results into, and the user's folders it must not touch. A
 * command given `--out DIR` may write into DIR and, when asked to, replace what it wrote
 * there before; it never deletes or overwrites files it did not write. To tell the two
 * apart, the kit leaves a marker file in a folder it creates ({@link markFolder}), and every
 * kind of output knows the names of its own entries ({@link surveyFolder}).
 *
 * @module
 */
import { isAbsolute, join, relative, resolve } from "node:path";
import { exists, tempSiblingOf, writeFileAtomic } from "./fs.ts";

/** The marker's file name: hidden, so that listings of the results stay as they were. */
export const FOLDER_MARKER = ".convnext-tfjs.json";

/** What the marker says. */
export interface FolderMarker {
  /** Always `"convnext-tfjs"`. */
  writtenBy: "convnext-tfjs";
  /** Which job made the folder, e.g. `"finetune"`. */
  what: string;
  /** When (ISO 8601). */
  created: string;
}

/** What a folder holds, as far as writing into it or replacing it goes. */
export type FolderSurvey =
  | { kind: "absent" }
  | { kind: "not-a-folder" }
  | {
    kind: "folder";
    /** Every entry but the marker (directories end with `/`), sorted. */
    entries: string[];
    /** The entries the kit did not write: neither its own names nor their temporary copies. */
    foreign: string[];
    /** The folder's marker, if the kit made it. */
    marker: FolderMarker | null;
  };

/** The marker of `dir`, or null when it has none (or one that is not the kit's). */
async function readMarker(dir: string): Promise<FolderMarker | null> {
  try {
    const m = JSON.parse(await Deno.readTextFile(join(dir, FOLDER_MARKER)));
    return m?.writtenBy === "convnext-tfjs" && typeof m.what === "string" ? m : null;
  } catch {
    return null; // absent, unreadable or not JSON: not a marker of ours
  }
}

/**
 * What `dir` holds. `ownEntry` says which names the kit writes there (e.g. `metrics.jsonl`);
 * their temporary copies (`.<name>.tmp-…`, left by an interrupted write) count as the kit's
 * too.
 *
 * @example
 * ```ts
 * import { surveyFolder } from "./owned.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
 * await Deno.writeTextFile(`${dir}/metrics.jsonl`, "{}\n");
 * const survey = await surveyFolder(dir, (name) => name === "metrics.jsonl");
 * console.log(survey.kind === "folder" && survey.foreign); // ["notes.txt"]
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function surveyFolder(
  dir: string,
  ownEntry: (name: string) => boolean,
): Promise<FolderSurvey> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { kind: "absent" };
    throw e;
  }
  if (!stat.isDirectory) return { kind: "not-a-folder" };
  const entries: string[] = [];
  const foreign: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name === FOLDER_MARKER) continue;
    const shown = e.isDirectory ? `${e.name}/` : e.name;
    entries.push(shown);
    const own = ownEntry(e.name) || ownEntry(tempSiblingOf(e.name) ?? "");
    if (!own) foreign.push(shown);
  }
  return {
    kind: "folder",
    entries: entries.sort(),
    foreign: foreign.sort(),
    marker: await readMarker(dir),
  };
}

/**
 * Creates `dir` if needed and marks it as made by the kit for `what` (once: an existing
 * marker is kept, with its date).
 */
export async function markFolder(dir: string, what: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  if (await exists(join(dir, FOLDER_MARKER))) return;
  const marker: FolderMarker = {
    writtenBy: "convnext-tfjs",
    what,
    created: new Date().toISOString(),
  };
  await writeFileAtomic(join(dir, FOLDER_MARKER), JSON.stringify(marker) + "\n");
}

/** A few names for an error message: `a.txt, data/ and 3 more`. */
export function someNames(names: readonly string[], shown = 3): string {
  const head = names.slice(0, shown).join(", ");
  return names.length > shown ? `${head} and ${names.length - shown} more` : head;
}

/**
 * Whether `dir` is the current working directory or one of the folders above it: such a
 * folder cannot be replaced by renaming (the kernel answers "Device or resource busy"), and
 * replacing it would pull the ground from under the process.
 */
export async function holdsWorkingDirectory(dir: string): Promise<boolean> {
  const real = async (p: string) => await Deno.realPath(p).catch(() => resolve(p));
  const rel = relative(await real(dir), await real(Deno.cwd()));
  return rel === "" || !(rel === ".." || rel.startsWith("../") || isAbsolute(rel));
}
