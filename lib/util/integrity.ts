/**
 * Integrity checks of downloaded files, cheap enough to run after every
 * download: a truncated or garbled file fails here instead of deep inside the
 * checkpoint reader. Deliberately independent of the full zip reader (zip.ts).
 *
 * @module
 */

/** How a finished download is checked before it is accepted. */
export type VerifyMode =
  | "auto"
  | "zip"
  | "safetensors"
  | "none"
  | ((path: string) => Promise<void>);

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  const out = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = await file.read(out.subarray(got));
    if (n === null) break;
    got += n;
  }
  return out.subarray(0, got);
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;

/**
 * Checks that `path` is a complete zip archive (what `torch.save` writes since
 * PyTorch 1.6): it starts with a local file header, its end-of-central-directory
 * record (ZIP64 too) is in the last 64 KiB and ends the file exactly, and the
 * central directory it points to starts with a central header. A truncated
 * download fails here. Throws a one-line error naming the file.
 *
 * @example
 * ```ts
 * import { checkZipFile } from "./integrity.ts";
 * await checkZipFile(new URL("../../tests/fixtures/download/tiny.pth", import.meta.url).pathname);
 * ```
 */
export async function checkZipFile(path: string): Promise<void> {
  const bad = (why: string) => new Error(`${path}: not a complete zip archive: ${why}`);
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  if (size < 22) throw bad(`only ${size} bytes`);
  const head = new DataView((await readAt(file, 0, 4)).slice().buffer);
  if (head.getUint32(0, true) !== LOCAL_SIG) throw bad("it does not start with a zip entry");
  // The record is 22 bytes plus a comment of at most 65535 bytes.
  const tailStart = Math.max(0, size - (22 + 65535));
  const tail = (await readAt(file, tailStart, size - tailStart)).slice();
  const view = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (
      view.getUint32(i, true) === EOCD_SIG && i + 22 + view.getUint16(i + 20, true) === tail.length
    ) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad("no end-of-central-directory record (truncated download?)");
  let entries = view.getUint16(eocd + 10, true);
  let cdSize = view.getUint32(eocd + 12, true);
  let cdOffset = view.getUint32(eocd + 16, true);
  let recordStart = tailStart + eocd;
  if (entries === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || view.getUint32(loc, true) !== ZIP64_LOCATOR_SIG) {
      throw bad("ZIP64 sizes without a ZIP64 locator");
    }
    const z64Offset = Number(view.getBigUint64(loc + 8, true));
    if (z64Offset + 56 > recordStart) throw bad("ZIP64 record offset out of range");
    const z64 = new DataView((await readAt(file, z64Offset, 56)).slice().buffer);
    if (z64.byteLength < 56 || z64.getUint32(0, true) !== ZIP64_EOCD_SIG) {
      throw bad("bad ZIP64 end-of-central-directory record");
    }
    entries = Number(z64.getBigUint64(32, true));
    cdSize = Number(z64.getBigUint64(40, true));
    cdOffset = Number(z64.getBigUint64(48, true));
    recordStart = z64Offset;
  }
  if (cdOffset + cdSize > recordStart) {
    throw bad(
      `central directory (${cdOffset}+${cdSize}) overlaps its end record at ${recordStart}`,
    );
  }
  if (entries > 0) {
    const sig = await readAt(file, cdOffset, 4);
    if (sig.length < 4 || new DataView(sig.slice().buffer).getUint32(0, true) !== CENTRAL_SIG) {
      throw bad(`no central directory header at offset ${cdOffset}`);
    }
  }
}

/**
 * Checks that `path` is a complete safetensors file: an 8-byte little-endian
 * header length, a JSON header, and a data section whose size matches the
 * largest tensor end offset in the header.
 */
export async function checkSafetensorsFile(path: string): Promise<void> {
  const bad = (why: string) => new Error(`${path}: not a complete safetensors file: ${why}`);
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  if (size < 8) throw bad(`only ${size} bytes`);
  const n = Number(new DataView((await readAt(file, 0, 8)).slice().buffer).getBigUint64(0, true));
  if (n > size - 8 || n > 100_000_000) {
    throw bad(`header length ${n} exceeds the file size ${size}`);
  }
  let header: Record<string, { data_offsets?: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(await readAt(file, 8, n)));
  } catch (e) {
    throw bad(`header is not JSON (${errorText(e)})`);
  }
  let end = 0;
  for (const [key, value] of Object.entries(header)) {
    if (key === "__metadata__") continue;
    const offs = value?.data_offsets;
    if (Array.isArray(offs) && typeof offs[1] === "number") end = Math.max(end, offs[1]);
  }
  if (8 + n + end !== size) throw bad(`expected ${8 + n + end} bytes, got ${size}`);
}

// A legacy (pre-1.6) checkpoint is a raw pickle or a tar archive, not a zip; let the
// checkpoint reader report it with advice instead of calling it corrupt here.
async function isLegacyTorchFile(path: string): Promise<boolean> {
  using file = await Deno.open(path, { read: true });
  const head = await readAt(file, 0, 262);
  const ustar = new TextDecoder().decode(head.subarray(257, 262)) === "ustar";
  return head[0] === 0x80 || ustar;
}

/** Runs the check that `mode` names on `part` (the extension of `dest` decides `"auto"`). */
export async function runVerify(mode: VerifyMode, dest: string, part: string): Promise<void> {
  if (typeof mode === "function") return await mode(part);
  let m = mode;
  if (m === "auto") {
    if (/\.(pth|pt|zip)$/i.test(dest)) m = "zip";
    else if (/\.safetensors$/i.test(dest)) m = "safetensors";
    else m = "none";
    if (m === "zip" && !/\.zip$/i.test(dest) && await isLegacyTorchFile(part)) m = "none";
  }
  if (m === "zip") await checkZipFile(part);
  else if (m === "safetensors") await checkSafetensorsFile(part);
}
