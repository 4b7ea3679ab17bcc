/**
 * Image arguments as users type them: files, folders (every image inside, recursively) and
 * glob patterns (`photos/*.jpg`, `data/**\/*.png`), checked before any work starts.
 *
 * @module
 */
import { join, sep } from "node:path";
import { comparePython, isImageFile } from "./image_folder.ts";

const GLOB_CHARS = /[*?[]/;

/** A glob segment as a regular expression: `*`, `?` and `[...]` within one path segment. */
function segmentRegExp(segment: string): RegExp {
  let source = "";
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i];
    if (c === "*") source += "[^/]*";
    else if (c === "?") source += "[^/]";
    else if (c === "[") {
      const end = segment.indexOf("]", i + 2);
      if (end < 0) source += "\\[";
      else {
        const body = segment.slice(i + 1, end).replace(/^!/, "^").replace(/\\/g, "\\\\");
        source += `[${body}]`;
        i = end;
      }
    } else source += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}

/** Whether the `/`-separated `parts` match the pattern `segments` (`**`: any number of folders). */
function matches(parts: readonly string[], segments: readonly string[]): boolean {
  if (segments.length === 0) return parts.length === 0;
  const [first, ...rest] = segments;
  if (first === "**") {
    // Like a shell's globstar: any number of folders, but not hidden ones.
    for (let skip = 0; skip <= parts.length; skip++) {
      if (matches(parts.slice(skip), rest)) return true;
      if (parts[skip]?.startsWith(".")) return false;
    }
    return false;
  }
  return parts.length > 0 && !parts[0].startsWith(".") === !first.startsWith(".") &&
    segmentRegExp(first).test(parts[0]) && matches(parts.slice(1), rest);
}

/** Every file under `dir`, as paths relative to it with `/`, in Python's sorted order. */
async function walk(dir: string, prefix = ""): Promise<string[]> {
  const entries: Deno.DirEntry[] = [];
  for await (const entry of Deno.readDir(dir)) entries.push(entry);
  entries.sort((a, b) => comparePython(a.name, b.name));
  const files: string[] = [];
  for (const entry of entries) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) files.push(...await walk(join(dir, entry.name), rel));
    else if (entry.isFile || entry.isSymlink) files.push(rel);
  }
  return files;
}

/** The files a glob pattern matches: walks from its longest folder without glob characters. */
async function expandGlob(pattern: string): Promise<string[]> {
  const absolute = pattern.startsWith("/");
  const segments = pattern.split("/").filter((s) => s !== "" && s !== ".");
  const fixed = segments.findIndex((s) => s === "**" || GLOB_CHARS.test(s));
  const base = (absolute ? "/" : "") + segments.slice(0, fixed).join("/");
  const root = base === "" ? "." : base;
  let files: string[];
  try {
    files = await walk(root);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const rest = segments.slice(fixed);
  return files.filter((f) => matches(f.split("/"), rest)).map((f) =>
    base === "" ? f : join(base, f)
  );
}

/**
 * Expand image arguments into image files, in order: a file stays as it is; a folder becomes
 * every image inside it (recursively, hidden entries skipped, in Python's sorted order: the
 * order of torchvision); a pattern with `*`, `?`, `[...]` or `**` becomes the files it matches
 * (for patterns the shell did not expand, e.g. quoted ones). Nothing is read yet: this only
 * checks that every argument names something.
 *
 * @throws Error naming the argument, when a path does not exist, a folder holds no image or a
 * pattern matches nothing.
 *
 * @example
 * ```ts
 * import { expandImagePaths } from "./inputs.ts";
 * const dir = new URL("../../data/images/", import.meta.url).pathname;
 * const files = await expandImagePaths([dir, `${dir}c*.png`]);
 * console.log(files.map((f) => f.slice(dir.length))); // every image of data/images, then chelsea.png
 * if (!files.at(-1)!.endsWith("chelsea.png")) throw new Error(files.join());
 * ```
 */
export async function expandImagePaths(args: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const arg of args) {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(arg);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw new Error(`${arg}: ${(e as Error).message}`);
    }
    if (info?.isFile) out.push(arg);
    else if (info?.isDirectory) {
      const images = (await walk(arg)).filter((f) =>
        isImageFile(f) && !f.split("/").some((p) => p.startsWith("."))
      );
      if (images.length === 0) throw new Error(`${arg}: no image files in this folder`);
      out.push(...images.map((f) => join(arg, f)));
    } else if (info === undefined && GLOB_CHARS.test(arg)) {
      const found = await expandGlob(arg.split(sep).join("/"));
      if (found.length === 0) throw new Error(`${arg}: no file matches this pattern`);
      out.push(...found);
    } else if (info === undefined) {
      throw new Error(`${arg}: no such file or folder`);
    } else throw new Error(`${arg}: not a file or folder`);
  }
  return out;
}
