/**
 * Extract `.tar` / `.tar.gz` archives (ustar, GNU long names, pax paths), for datasets
 * published as tarballs such as TensorFlow's `flower_photos.tgz`.
 *
 * @module
 */
import { dirname, join, normalize } from "node:path";

const BLOCK = 512;

function text(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

function octal(bytes: Uint8Array, what: string, archive: string): number {
  // GNU base-256 encoding for sizes >= 8 GiB: high bit set in the first byte.
  if (bytes[0] & 0x80) {
    let n = bytes[0] & 0x7f;
    for (let i = 1; i < bytes.length; i++) n = n * 256 + bytes[i];
    return n;
  }
  const s = text(bytes).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`${archive}: corrupt tar header (${what} "${s}")`);
  return parseInt(s, 8);
}

/** Reads exactly n bytes from a stream reader (buffering leftovers), or null at a clean end. */
class Reader {
  private buffer = new Uint8Array(0);
  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  async read(n: number): Promise<Uint8Array | null> {
    while (this.buffer.length < n) {
      const { value, done } = await this.reader.read();
      if (done) {
        if (this.buffer.length === 0) return null;
        throw new Error("unexpected end of archive");
      }
      const merged = new Uint8Array(this.buffer.length + value.length);
      merged.set(this.buffer);
      merged.set(value, this.buffer.length);
      this.buffer = merged;
    }
    const out = this.buffer.slice(0, n);
    this.buffer = this.buffer.subarray(n);
    return out;
  }
}

function safePath(name: string, archive: string): string {
  const path = normalize(name.replace(/^\.\/+/, ""));
  if (path.startsWith("/") || path === ".." || path.startsWith("../") || path.includes("/../")) {
    throw new Error(`${archive}: refusing to extract "${name}" outside the target directory`);
  }
  return path;
}

function paxPath(data: Uint8Array): string | undefined {
  // Records: "<len> <key>=<value>\n".
  const s = new TextDecoder().decode(data);
  for (const m of s.matchAll(/\d+ ([^=]+)=([^\n]*)\n/g)) if (m[1] === "path") return m[2];
  return undefined;
}

/**
 * Extract a tar archive (gzip-compressed when the file starts with the gzip magic) into
 * `dest`. Regular files and directories only; links and devices are skipped. Entries that
 * would land outside `dest` are an error.
 *
 * @returns the relative paths of the files written.
 * @example
 * ```ts
 * import { extractTar } from "./tar.ts";
 * const into = await Deno.makeTempDir();
 * await extractTar(new URL("../../tests/fixtures/tar/gnu.tgz", import.meta.url).pathname, into);
 * console.log([...Deno.readDirSync(into)].map((e) => e.name));
 * await Deno.remove(into, { recursive: true });
 * ```
 */
export async function extractTar(archive: string, dest: string): Promise<string[]> {
  const file = await Deno.open(archive, { read: true });
  const head = new Uint8Array(2);
  await file.read(head);
  await file.seek(0, Deno.SeekMode.Start);
  const gz = head[0] === 0x1f && head[1] === 0x8b;
  const stream = gz ? file.readable.pipeThrough(new DecompressionStream("gzip")) : file.readable;
  const reader = new Reader(stream.getReader());
  const written: string[] = [];
  let longName: string | undefined;
  try {
    while (true) {
      const header = await reader.read(BLOCK);
      if (header === null || header.every((b) => b === 0)) break; // end-of-archive blocks
      let name = text(header.subarray(0, 100));
      const prefix = text(header.subarray(345, 500));
      if (text(header.subarray(257, 262)) === "ustar" && prefix) name = `${prefix}/${name}`;
      const size = octal(header.subarray(124, 136), "size", archive);
      const type = String.fromCharCode(header[156] || 48);
      const data = size > 0 ? await reader.read(Math.ceil(size / BLOCK) * BLOCK) : new Uint8Array();
      if (data === null) throw new Error("unexpected end of archive");
      const body = data.subarray(0, size);
      if (type === "L") {
        longName = text(body);
        continue;
      }
      if (type === "x") {
        longName = paxPath(body) ?? longName;
        continue;
      }
      if (type === "g") continue;
      if (longName !== undefined) {
        name = longName;
        longName = undefined;
      }
      const path = safePath(name, archive);
      if (type === "5") {
        await Deno.mkdir(join(dest, path), { recursive: true });
      } else if (type === "0" || type === "7") {
        await Deno.mkdir(join(dest, dirname(path)), { recursive: true });
        await Deno.writeFile(join(dest, path), body);
        written.push(path);
      }
    }
  } catch (e) {
    const message = (e as Error).message;
    throw new Error(message.startsWith(archive) ? message : `${archive}: ${message}`);
  } finally {
    try {
      file.close();
    } catch { /* the stream may have closed it */ }
  }
  return written;
}
