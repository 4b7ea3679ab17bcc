/**
 * A read-only zip reader for PyTorch checkpoints (`torch.save` since 1.6 writes a zip).
 *
 * Supports stored and deflated entries and ZIP64 (end-of-central-directory record and
 * locator, and the ZIP64 extra field of entries), which files over 4 GiB need. The
 * central directory is read from the end of the file and each entry on demand, so a
 * 10 GB checkpoint is never held in memory whole. Sizes are not trusted: a deflated entry
 * may declare at most deflate's 1032:1 of its compressed size, and inflating stops as
 * soon as the output passes the declared size, so a zip bomb costs what it declares.
 *
 * @module
 */

import { inflateRawSync } from "node:zlib";
import { crc32 } from "./crc32.ts";
import type { ByteSource } from "./source.ts";
import { openCheckpointSource } from "./source.ts";

/** One file inside a zip archive, as its central directory describes it. */
export interface ZipEntry {
  /** Path inside the archive, e.g. `"archive/data.pkl"`. */
  readonly name: string;
  /** 0 (stored) or 8 (deflated); others are rejected when read. */
  readonly method: number;
  /** CRC-32 of the uncompressed bytes. */
  readonly crc32: number;
  /** Bytes stored in the archive. */
  readonly compressedSize: number;
  /** Bytes after decompression. */
  readonly size: number;
  /** Offset of the entry's local header in the archive. */
  readonly localHeaderOffset: number;
  /** General-purpose flags (bit 0: encrypted). */
  readonly flags: number;
}

/** Options of {@link ZipArchive.read}. */
export interface ZipReadOptions {
  /** Check the CRC-32 of the entry (default true: catches corrupt downloads). */
  readonly verifyCrc?: boolean;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const MAX_COMMENT = 0xffff;
/**
 * Deflate's best ratio: a 258-byte match costs at least 2 bits, so no stream inflates to
 * more than 1032 times its size (plus a few bytes of block overhead). A larger declared
 * size is a lie, and believing it would let a small file claim gigabytes.
 */
const MAX_DEFLATE_RATIO = 1032;
const DEFLATE_SLACK = 1024;

/**
 * An open zip archive. Use {@link ZipArchive.open}, then {@link ZipArchive.read} entries
 * by name, then {@link ZipArchive.close}.
 *
 * @example
 * ```ts
 * import { ZipArchive } from "./zip.ts";
 * const file = new URL("../../tests/fixtures/download/tiny.pth", import.meta.url);
 * const zip = await ZipArchive.open(file.pathname);
 * try {
 *   const names = [...zip.entries.keys()]; // ["<archive>/data.pkl", ...]
 *   const pkl = await zip.read(names.find((n) => n.endsWith("/data.pkl"))!);
 *   console.log(pkl.length);
 * } finally {
 *   zip.close();
 * }
 * ```
 */
export class ZipArchive {
  /** Entries by name, in central-directory order. */
  readonly entries: ReadonlyMap<string, ZipEntry>;
  readonly #source: ByteSource;

  private constructor(source: ByteSource, entries: Map<string, ZipEntry>) {
    this.#source = source;
    this.entries = entries;
  }

  /** What error messages call this archive (its path, or `"<bytes>"`). */
  get label(): string {
    return this.#source.label;
  }

  /**
   * Opens a zip archive from a path (read on demand), bytes, or a {@link ByteSource}
   * (which the archive then owns and closes).
   */
  static async open(source: string | Uint8Array | ByteSource): Promise<ZipArchive> {
    const src = typeof source === "string" || source instanceof Uint8Array
      ? await openCheckpointSource(source)
      : source;
    try {
      return new ZipArchive(src, await readCentralDirectory(src));
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** True when the archive has an entry called `name`. */
  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Reads and (if needed) inflates one entry; throws on a missing or corrupt entry. */
  async read(name: string, options: ZipReadOptions = {}): Promise<Uint8Array> {
    const entry = this.entries.get(name);
    if (!entry) throw new Error(`${this.label}: zip archive has no entry "${name}"`);
    const where = `${this.label}: zip entry "${name}"`;
    if (entry.flags & 1) throw new Error(`${where} is encrypted (not supported)`);
    const local = await this.#source.read(entry.localHeaderOffset, 30).catch(() => {
      throw new Error(`${where}: local header lies past the end of the file (truncated?)`);
    });
    const lv = view(local);
    if (lv.getUint32(0, true) !== SIG_LOCAL) {
      throw new Error(`${where}: bad local header (corrupt)`);
    }
    // The local name/extra lengths may differ from the central directory's.
    const dataOffset = entry.localHeaderOffset + 30 + lv.getUint16(26, true) +
      lv.getUint16(28, true);
    if (dataOffset + entry.compressedSize > this.#source.size) {
      throw new Error(`${where}: data lies past the end of the file (truncated download?)`);
    }
    // Refuse impossible sizes before reading or allocating anything.
    if (entry.method === 0 && entry.size !== entry.compressedSize) {
      throw new Error(
        `${where}: stored entry declares ${entry.size} bytes but holds ${entry.compressedSize} (corrupt)`,
      );
    }
    if (
      entry.method === 8 && entry.size > entry.compressedSize * MAX_DEFLATE_RATIO + DEFLATE_SLACK
    ) {
      throw new Error(
        `${where}: declares ${entry.size} bytes from ${entry.compressedSize} compressed bytes, ` +
          `more than deflate can produce (corrupt or hostile zip)`,
      );
    }
    if (entry.method !== 0 && entry.method !== 8) {
      throw new Error(`${where}: unsupported compression method ${entry.method}`);
    }
    const raw = await this.#source.read(dataOffset, entry.compressedSize);
    const data = entry.method === 0 ? raw : inflateRaw(raw, entry.size, where);
    if (data.length !== entry.size) {
      throw new Error(`${where}: expected ${entry.size} bytes, got ${data.length} (corrupt)`);
    }
    if ((options.verifyCrc ?? true) && crc32(data) !== entry.crc32) {
      throw new Error(`${where}: CRC-32 mismatch (corrupt download?)`);
    }
    return data;
  }

  /** Closes the underlying file, if any. */
  close(): void {
    this.#source.close();
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u64(v: DataView, offset: number, what: string): number {
  const x = v.getBigUint64(offset, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} is too large (${x})`);
  return Number(x);
}

/**
 * Inflates a raw deflate stream that must give exactly `size` bytes. zlib works in
 * bounded chunks and stops as soon as the output passes `size`, so a stream that lies
 * about its size (a zip bomb) costs about `size` bytes, not what it would inflate to.
 */
function inflateRaw(bytes: Uint8Array, size: number, where: string): Uint8Array {
  let out: Uint8Array;
  try {
    // maxOutputLength must be at least 1; an empty entry that inflates to 1 byte still fails
    // the length check of the caller.
    out = inflateRawSync(bytes, { maxOutputLength: Math.max(1, size) });
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === "ERR_BUFFER_TOO_LARGE") {
      throw new Error(
        `${where}: inflates to more than its declared ${size} bytes (corrupt or hostile zip)`,
      );
    }
    throw new Error(`${where}: cannot inflate (${err.message}; corrupt?)`);
  }
  // A plain Uint8Array view, not a node Buffer, like every other read.
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

async function readCentralDirectory(src: ByteSource): Promise<Map<string, ZipEntry>> {
  const incomplete = `${src.label}: not a complete zip archive (truncated or corrupt download?)`;
  if (src.size < EOCD_SIZE) throw new Error(incomplete);
  // The EOCD record is last, followed only by a comment of up to 64 KiB.
  const tailLen = Math.min(src.size, EOCD_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE);
  const tailStart = src.size - tailLen;
  const tail = await src.read(tailStart, tailLen);
  const tv = view(tail);
  let eocd = -1;
  for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
    if (
      tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) <= tailLen
    ) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(incomplete);
  if (tv.getUint16(eocd + 4, true) !== 0 || tv.getUint16(eocd + 6, true) !== 0) {
    throw new Error(`${src.label}: multi-disk zip archives are not supported`);
  }
  let count: number = tv.getUint16(eocd + 10, true);
  let cdSize: number = tv.getUint32(eocd + 12, true);
  let cdOffset: number = tv.getUint32(eocd + 16, true);
  const locator = eocd - ZIP64_LOCATOR_SIZE;
  if (locator >= 0 && tv.getUint32(locator, true) === SIG_ZIP64_LOCATOR) {
    const z64Offset = u64(tv, locator + 8, `${src.label}: ZIP64 end record offset`);
    if (z64Offset + 56 > src.size) throw new Error(incomplete);
    const z = view(await src.read(z64Offset, 56));
    if (z.getUint32(0, true) !== SIG_ZIP64_EOCD) {
      throw new Error(`${src.label}: bad ZIP64 end-of-central-directory record (corrupt)`);
    }
    count = u64(z, 32, `${src.label}: ZIP64 entry count`);
    cdSize = u64(z, 40, `${src.label}: ZIP64 central directory size`);
    cdOffset = u64(z, 48, `${src.label}: ZIP64 central directory offset`);
  } else if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw new Error(`${src.label}: ZIP64 archive without its locator record (corrupt)`);
  }
  if (cdOffset + cdSize > src.size) throw new Error(incomplete);
  const cd = await src.read(cdOffset, cdSize);
  return parseCentralDirectory(cd, count, src.label);
}

function parseCentralDirectory(
  cd: Uint8Array,
  count: number,
  label: string,
): Map<string, ZipEntry> {
  const v = view(cd);
  const decoder = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let n = 0; n < count; n++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== SIG_CENTRAL) {
      throw new Error(`${label}: bad central directory entry ${n} (corrupt zip)`);
    }
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let compressedSize: number = v.getUint32(p + 20, true);
    let size: number = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    const disk = v.getUint16(p + 34, true);
    let localHeaderOffset: number = v.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) {
      throw new Error(
        `${label}: central directory entry ${n} overruns the directory (corrupt zip)`,
      );
    }
    const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extra field: 64-bit values for exactly those fields set to 0xFFFFFFFF, in order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        const take = (what: string): number => {
          if (q + 8 > e + 4 + len) {
            throw new Error(`${label}: entry "${name}": ZIP64 extra field lacks the ${what}`);
          }
          const x = u64(v, q, `${label}: entry "${name}" ${what}`);
          q += 8;
          return x;
        };
        if (size === 0xffffffff) size = take("size");
        if (compressedSize === 0xffffffff) compressedSize = take("compressed size");
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take("header offset");
      }
      e += 4 + len;
    }
    if (disk !== 0 && disk !== 0xffff) {
      throw new Error(`${label}: multi-disk zip archives are not supported`);
    }
    entries.set(name, { name, method, crc32: crc, compressedSize, size, localHeaderOffset, flags });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}
