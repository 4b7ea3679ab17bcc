/**
 * Extract `.tar` / `.tar.gz` archives (ustar, GNU long names, pax paths), for datasets
 * published as tarballs such as TensorFlow's `flower_photos.tgz`.
 *
 * @module
 */
import { dirname, join, normalize } from "node:path";

const BLOCK = 512;
/** The largest long-name or pax entry read (real ones hold a path and a few fields). */
const MAX_META = 1 << 20;

/**
 * Something wrong with the archive itself (not a tar or gzip file, truncated, a corrupt
 * header, an entry outside the target), as opposed to a failure writing the files: a
 * cached archive that throws this is worth deleting and downloading again.
 */
export class TarError extends Error {
  /** Constructs the error; `message` is the full one-line message. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TarError";
  }
}

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
  if (!/^[0-7]+$/.test(s)) throw new TarError(`${archive}: corrupt tar header (${what} "${s}")`);
  return parseInt(s, 8);
}

/**
 * The header's checksum holds: the sum of its bytes with the checksum field read as spaces
 * (unsigned, or signed as some old tars wrote it). Anything else, e.g. an HTML page saved
 * under the archive's name, is not a tar header.
 */
function checksumMatches(header: Uint8Array): boolean {
  const field = text(header.subarray(148, 156)).trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const stored = parseInt(field, 8);
  let unsigned = 0, signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : header[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

/**
 * Reads a byte stream in exact pieces. The stream's chunks wait in a queue with an offset
 * into the first one: every byte is copied at most once (a read that fits in one chunk is
 * a view of it), so reading is linear in the archive's size. Merging the buffered bytes
 * with each new chunk instead copied them again per chunk: quadratic, 15 s for one 40 MB
 * entry.
 */
class Reader {
  readonly #chunks: Uint8Array[] = [];
  /** Bytes of `#chunks[0]` already consumed. */
  #offset = 0;
  /** Unconsumed bytes in the queue. */
  #available = 0;
  #done = false;
  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  /** Pulls chunks until `n` bytes are queued or the stream ends; false at the end. */
  async #fill(n: number): Promise<boolean> {
    while (this.#available < n && !this.#done) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await this.reader.read();
      } catch (e) {
        // DecompressionStream's errors: not gzip data, a corrupt or truncated stream.
        throw new TarError(`truncated or corrupt gzip data (${(e as Error).message})`, {
          cause: e,
        });
      }
      if (result.done) this.#done = true;
      else if (result.value.length > 0) {
        this.#chunks.push(result.value);
        this.#available += result.value.length;
      }
    }
    return this.#available >= n;
  }

  /** Up to `max` bytes from the front of the queue (a view, no copy), or null at the end. */
  async take(max: number): Promise<Uint8Array | null> {
    if (!await this.#fill(1)) return null;
    const first = this.#chunks[0];
    const n = Math.min(max, first.length - this.#offset);
    const out = first.subarray(this.#offset, this.#offset + n);
    this.#consume(n);
    return out;
  }

  /** Exactly `n` bytes, or null at a clean end (nothing left); fewer is an error. */
  async read(n: number): Promise<Uint8Array | null> {
    if (!await this.#fill(n)) {
      if (this.#available === 0) return null;
      throw new TarError("unexpected end of archive");
    }
    const first = this.#chunks[0];
    if (first.length - this.#offset >= n) {
      const out = first.subarray(this.#offset, this.#offset + n);
      this.#consume(n);
      return out;
    }
    const out = new Uint8Array(n);
    for (let at = 0; at < n;) {
      const piece = (await this.take(n - at))!;
      out.set(piece, at);
      at += piece.length;
    }
    return out;
  }

  /** Drops `n` bytes; fewer left is an error. */
  async skip(n: number): Promise<void> {
    for (let left = n; left > 0;) {
      const piece = await this.take(left);
      if (piece === null) throw new TarError("unexpected end of archive");
      left -= piece.length;
    }
  }

  #consume(n: number): void {
    this.#offset += n;
    this.#available -= n;
    while (this.#chunks.length > 0 && this.#offset >= this.#chunks[0].length) {
      this.#offset -= this.#chunks[0].length;
      this.#chunks.shift();
    }
  }
}

function safePath(name: string, archive: string): string {
  const path = normalize(name.replace(/^\.\/+/, ""));
  if (path.startsWith("/") || path === ".." || path.startsWith("../") || path.includes("/../")) {
    throw new TarError(`${archive}: refusing to extract "${name}" outside the target directory`);
  }
  return path;
}

function paxPath(data: Uint8Array): string | undefined {
  // Records: "<len> <key>=<value>\n".
  const s = new TextDecoder().decode(data);
  for (const m of s.matchAll(/\d+ ([^=]+)=([^\n]*)\n/g)) if (m[1] === "path") return m[2];
  return undefined;
}

/** Bytes of an entry's data blocks: its size rounded up to whole blocks. */
function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

/**
 * Streams an entry's `size` bytes into `path`, then skips its padding: a large entry never
 * sits in memory whole.
 */
async function writeEntry(reader: Reader, path: string, size: number): Promise<void> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  for (let left = size; left > 0;) {
    const piece = await reader.take(left);
    if (piece === null) throw new TarError("unexpected end of archive");
    for (let w = 0; w < piece.length;) w += await file.write(piece.subarray(w));
    left -= piece.length;
  }
  await reader.skip(padded(size) - size);
}

/**
 * Extract a tar archive (gzip-compressed when the file starts with the gzip magic) into
 * `dest`. Regular files and directories only; links and devices are skipped. Entries that
 * would land outside `dest` are an error. Time and memory are linear in the archive (an
 * entry is streamed to its file, not held whole).
 *
 * @returns the relative paths of the files written.
 * @throws TarError for a problem of the archive (not a tar, truncated, corrupt, an entry
 *   outside `dest`), naming the archive; other errors (e.g. a full disk) as they come.
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
  try {
    return await extractEntries(reader, archive, dest);
  } catch (e) {
    const message = (e as Error).message;
    if (message.startsWith(archive)) throw e;
    const Kind = e instanceof TarError ? TarError : Error;
    throw new Kind(`${archive}: ${message}`, { cause: e });
  } finally {
    try {
      file.close();
    } catch { /* the stream may have closed it */ }
  }
}

/** The entries of the archive, extracted one by one (see {@link extractTar}). */
async function extractEntries(reader: Reader, archive: string, dest: string): Promise<string[]> {
  const written: string[] = [];
  let longName: string | undefined;
  for (let offset = 0;; offset += BLOCK) {
    const header = await reader.read(BLOCK);
    if (header === null || header.every((b) => b === 0)) break; // end-of-archive blocks
    if (!checksumMatches(header)) {
      throw new TarError(`not a tar archive (bad header checksum at byte ${offset})`);
    }
    let name = text(header.subarray(0, 100));
    const prefix = text(header.subarray(345, 500));
    if (text(header.subarray(257, 262)) === "ustar" && prefix) name = `${prefix}/${name}`;
    const size = octal(header.subarray(124, 136), "size", archive);
    const type = String.fromCharCode(header[156] || 48);
    offset += padded(size);
    if (type === "L" || type === "x" || type === "g") {
      // Metadata entries are small: read them whole, but not a forged size's worth.
      if (size > MAX_META) {
        throw new TarError(`corrupt tar header (a "${type}" entry of ${size} bytes)`);
      }
      const body = size > 0 ? await reader.read(padded(size)) : new Uint8Array();
      if (body === null) throw new TarError("unexpected end of archive");
      if (type === "L") longName = text(body.subarray(0, size));
      if (type === "x") longName = paxPath(body.subarray(0, size)) ?? longName;
      continue;
    }
    if (longName !== undefined) {
      name = longName;
      longName = undefined;
    }
    const path = safePath(name, archive);
    if (type === "0" || type === "7") {
      await Deno.mkdir(join(dest, dirname(path)), { recursive: true });
      await writeEntry(reader, join(dest, path), size);
      written.push(path);
      continue;
    }
    if (type === "5") await Deno.mkdir(join(dest, path), { recursive: true });
    await reader.skip(padded(size));
  }
  return written;
}
