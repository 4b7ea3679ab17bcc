/**
 * Random-access byte sources: an in-memory `Uint8Array` or a file read on demand.
 *
 * Checkpoints can be 10 GB (convnext_xlarge_22k), so readers never load a file
 * whole: they ask a source for the byte ranges they need.
 *
 * @module
 */

/** Random access to the bytes of a file or buffer. */
export interface ByteSource {
  /** What to call the source in error messages (a path, or `"<bytes>"`). */
  readonly label: string;
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Reads exactly `length` bytes at `offset`; throws when the range lies past the end.
   * The result may share memory with the source (do not modify it).
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases the file handle, if any. Safe to call twice. */
  close(): void;
}

/**
 * Wraps a buffer as a {@link ByteSource}; reads return views into `bytes`.
 *
 * @example
 * ```ts
 * import { bytesSource } from "./source.ts";
 * const src = bytesSource(new Uint8Array([1, 2, 3]));
 * console.log(await src.read(1, 2)); // Uint8Array [2, 3]
 * ```
 */
export function bytesSource(bytes: Uint8Array, label = "<bytes>"): ByteSource {
  return {
    label,
    size: bytes.length,
    read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(label, bytes.length, offset, length);
      return Promise.resolve(bytes.subarray(offset, offset + length));
    },
    close() {},
  };
}

/**
 * Opens a file as a {@link ByteSource} that seeks and reads only the requested ranges.
 *
 * @example
 * ```ts
 * import { fileSource } from "./source.ts";
 * const file = new URL("../../tests/fixtures/download/tiny.pth", import.meta.url);
 * const src = await fileSource(file.pathname);
 * try {
 *   const magic = await src.read(0, 4);
 *   console.log(magic); // a zip's local header: 0x50 0x4b 0x03 0x04
 * } finally {
 *   src.close();
 * }
 * ```
 */
export async function fileSource(path: string): Promise<ByteSource> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new Error(`${path}: cannot open checkpoint (${(e as Error).message})`);
  }
  const size = (await file.stat()).size;
  let closed = false;
  // Reads are serialised: seek + read on one handle must not interleave.
  let queue: Promise<unknown> = Promise.resolve();
  const readAt = async (offset: number, length: number): Promise<Uint8Array> => {
    checkRange(path, size, offset, length);
    if (closed) throw new Error(`${path}: read after close`);
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = await file.read(out.subarray(done));
      if (n === null) throw new Error(`${path}: unexpected end of file at byte ${offset + done}`);
      done += n;
    }
    return out;
  };
  return {
    label: path,
    size,
    read(offset: number, length: number): Promise<Uint8Array> {
      const result = queue.then(() => readAt(offset, length));
      queue = result.catch(() => undefined);
      return result;
    },
    close() {
      if (!closed) {
        closed = true;
        file.close();
      }
    },
  };
}

/** Opens a path with {@link fileSource} or wraps bytes with {@link bytesSource}. */
export function openSource(source: string | Uint8Array): Promise<ByteSource> {
  return typeof source === "string" ? fileSource(source) : Promise.resolve(bytesSource(source));
}

function checkRange(label: string, size: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new Error(
      `${label}: read of ${length} bytes at offset ${offset} is outside the file (${size} bytes; truncated?)`,
    );
  }
}

/**
 * Opens a checkpoint path (or wraps its bytes) as a {@link ByteSource}, refusing what is
 * not a regular file: a directory would otherwise fail later with the OS's bare
 * "Is a directory", and a FIFO or device would block or never end.
 *
 * @example
 * ```ts
 * import { openCheckpointSource } from "./source.ts";
 * const path = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const src = await openCheckpointSource(path.pathname);
 * console.log(src.size); // bytes, read on demand
 * src.close();
 * ```
 */
export async function openCheckpointSource(source: string | Uint8Array): Promise<ByteSource> {
  if (typeof source === "string") {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(source);
    } catch {
      // Missing or unreadable: openSource says so with the OS's reason.
    }
    if (info?.isDirectory) {
      throw new Error(`${source}: expected a checkpoint file (.pth/.safetensors), got a directory`);
    }
    if (info && !info.isFile) {
      throw new Error(
        `${source}: expected a checkpoint file (.pth/.safetensors), got a special file (FIFO, socket or device)`,
      );
    }
  }
  return await openSource(source);
}
