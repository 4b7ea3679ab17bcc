// Hostile checkpoints (issue #14): files built to exhaust memory, hang, or confuse the
// readers. Each is built here, byte by byte, into a temp dir (no committed fixtures):
// a deflate bomb, zero-stride views, huge pickle integers and containers, handler errors,
// directories, overlapping safetensors ranges. Every one must fail fast with a one-line
// error naming the file (and the key); the memory cases are measured in a child process
// by its peak resident size (VmHWM), not by wall-clock time.

import assert from "node:assert/strict";
import { constants as zlibConstants, deflateRawSync, inflateRawSync } from "node:zlib";
import { crc32 } from "../lib/weights/crc32.ts";
import { MAX_LONG_BYTES, unpickle } from "../lib/weights/pickle.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { readStateDict } from "../lib/weights/state_dict.ts";
import { MAX_EXPANDED_ELEMENTS, readTorchCheckpoint } from "../lib/weights/torch.ts";
import { ZipArchive } from "../lib/weights/zip.ts";

const enc = new TextEncoder();

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Little-endian fields: `le([v, bytes], ...)`. */
function le(...fields: [number, 1 | 2 | 4][]): Uint8Array {
  const out = new Uint8Array(fields.reduce((n, [, b]) => n + b, 0));
  const dv = new DataView(out.buffer);
  let o = 0;
  for (const [v, b] of fields) {
    if (b === 1) dv.setUint8(o, v);
    else if (b === 2) dv.setUint16(o, v, true);
    else dv.setUint32(o, v >>> 0, true);
    o += b;
  }
  return out;
}

/** One zip entry: stored `data`, or raw deflate bytes with whatever size they claim. */
interface ZipFile {
  name: string;
  data?: Uint8Array;
  deflated?: { bytes: Uint8Array; size: number; crc: number };
}

/** A plain (non-ZIP64) zip archive, as Python's zipfile writes one. */
function buildZip(files: ZipFile[]): Uint8Array {
  const local: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const name = enc.encode(f.name);
    const method = f.deflated ? 8 : 0;
    const body = f.deflated ? f.deflated.bytes : f.data!;
    const size = f.deflated ? f.deflated.size : f.data!.length;
    const crc = f.deflated ? f.deflated.crc : crc32(f.data!);
    const common: [number, 1 | 2 | 4][] = [
      [0, 2], // flags
      [method, 2],
      [0, 2], // time
      [0x21, 2], // date
      [crc, 4],
      [body.length, 4],
      [size, 4],
      [name.length, 2],
      [0, 2], // extra
    ];
    const header = concat([le([0x04034b50, 4], [20, 2], ...common), name]);
    local.push(header, body);
    central.push(
      concat([
        le([0x02014b50, 4], [20, 2], [20, 2], ...common, [0, 2], [0, 2], [0, 2], [0, 4], [
          offset,
          4,
        ]),
        name,
      ]),
    );
    offset += header.length + body.length;
  }
  const cd = concat(central);
  const eocd = le(
    [0x06054b50, 4],
    [0, 2],
    [0, 2],
    [files.length, 2],
    [files.length, 2],
    [cd.length, 4],
    [offset, 4],
    [0, 2],
  );
  return concat([...local, cd, eocd]);
}

/** Pickle opcodes, protocol 2, as CPython's pickler writes them. */
class Pickle {
  readonly #parts: Uint8Array[] = [];
  raw(...bytes: number[]): this {
    this.#parts.push(new Uint8Array(bytes));
    return this;
  }
  str(s: string): this {
    const b = enc.encode(s);
    this.#parts.push(concat([new Uint8Array([0x58]), le([b.length, 4]), b])); // BINUNICODE
    return this;
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.raw(0x4b, n); // BININT1
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.raw(0x4a, ...le([n, 4])); // BININT
    const b = new Uint8Array(8); // LONG1, 8 bytes
    new DataView(b.buffer).setBigInt64(0, BigInt(n), true);
    return this.raw(0x8a, 8, ...b);
  }
  global(module: string, name: string): this {
    this.#parts.push(enc.encode(`c${module}\n${name}\n`));
    return this;
  }
  ints(xs: number[]): this {
    this.raw(0x28); // MARK
    for (const x of xs) this.int(x);
    return this.raw(0x74); // TUPLE
  }
  bytes(): Uint8Array {
    return concat(this.#parts);
  }
}

interface View {
  name: string;
  storage: string;
  numel: number;
  offset?: number;
  shape: number[];
  stride: number[];
}

/** `{name: torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())}`. */
function stateDictPickle(views: View[]): Uint8Array {
  const p = new Pickle().raw(0x80, 2, 0x7d, 0x28); // PROTO 2, EMPTY_DICT, MARK
  for (const v of views) {
    p.str(v.name).global("torch._utils", "_rebuild_tensor_v2").raw(0x28); // MARK (args)
    // persistent id ('storage', torch.FloatStorage, key, 'cpu', numel), BINPERSID
    p.raw(0x28).str("storage").global("torch", "FloatStorage").str(v.storage).str("cpu")
      .int(v.numel).raw(0x74, 0x51);
    p.int(v.offset ?? 0).ints(v.shape).ints(v.stride).raw(0x89); // NEWFALSE
    p.global("collections", "OrderedDict").raw(0x29, 0x52); // EMPTY_TUPLE, REDUCE
    p.raw(0x74, 0x52); // TUPLE, REDUCE
  }
  return p.raw(0x75, 0x2e).bytes(); // SETITEMS, STOP
}

/** A torch.save-style archive: `archive/data.pkl`, its storages (float32), `archive/version`. */
function checkpoint(pkl: Uint8Array, storages: Record<string, number> = {}): Uint8Array {
  return buildZip([
    { name: "archive/data.pkl", data: pkl },
    ...Object.entries(storages).map(([key, numel]) => ({
      name: `archive/data/${key}`,
      data: new Uint8Array(4 * numel),
    })),
    { name: "archive/version", data: enc.encode("3\n") },
  ]);
}

/** Writes files into a fresh temp dir; returns their paths and a cleanup. */
async function tempFiles(files: Record<string, Uint8Array>) {
  const dir = await Deno.makeTempDir({ prefix: "hostile_" });
  const paths: Record<string, string> = {};
  for (const [name, bytes] of Object.entries(files)) {
    paths[name] = `${dir}/${name}`;
    await Deno.writeFile(paths[name], bytes);
  }
  return { dir, paths, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A string as a literal part of a RegExp. */
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Asserts a rejection whose message is one line and matches `re`. */
async function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.match(e.message, re);
    assert.ok(!/[\r\n]/.test(e.message), `one line: ${JSON.stringify(e.message)}`);
    return true;
  });
}

/**
 * Reads each file with readStateDict in a child process and returns, per file, the
 * error message and how far the child's peak resident size (VmHWM) rose while reading
 * it. Linux only (undefined elsewhere). The child is killed after 2 minutes, so a
 * regression to the old quadratic or unbounded behaviour fails instead of hanging.
 */
async function peakGrowth(
  files: string[],
): Promise<{ file: string; msg: string; grew: number }[] | undefined> {
  if (Deno.build.os !== "linux") return undefined;
  const mod = new URL("../lib/weights/state_dict.ts", import.meta.url).href;
  const warm = new URL("./fixtures/checkpoints/official_iso_deflated.pth", import.meta.url)
    .pathname;
  const code = `
    const { readStateDict } = await import(${JSON.stringify(mod)});
    const hwm = () =>
      Number(/VmHWM:\\s*(\\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))[1]) * 1024;
    // An honest deflated checkpoint first, so loading the readers' own code is not counted.
    await readStateDict(${JSON.stringify(warm)});
    for (const file of ${JSON.stringify(files)}) {
      const before = hwm();
      let msg = "loaded";
      try { await readStateDict(file); } catch (e) { msg = e.message; }
      console.log(JSON.stringify({ file, msg, grew: hwm() - before }));
    }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--max-old-space-size=256", code],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `child failed: ${stderr}`);
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
}

/** Memory a rejected file may cost: twice its size, plus the runtime's own noise. */
const SLACK = 32 << 20;

Deno.test("hostile zip: a deflate bomb stops at its declared size; impossible sizes are refused unread", async () => {
  // 1 MiB of zeros deflates to ~1 KiB; sync-flushed blocks can be repeated (their
  // back-references only reach zeros), then a final empty block ends the stream.
  const block = deflateRawSync(new Uint8Array(1 << 20), {
    level: 9,
    finishFlush: zlibConstants.Z_SYNC_FLUSH,
  });
  const end = deflateRawSync(new Uint8Array(0));
  assert.equal(inflateRawSync(concat([block, block, end])).length, 2 << 20); // a real bomb
  const stream = concat([...new Array<Uint8Array>(256).fill(block), end]); // ~256 KiB -> 256 MiB
  const bomb = (size: number) =>
    buildZip([
      { name: "archive/data.pkl", deflated: { bytes: stream, size, crc: 0 } },
      { name: "archive/version", data: enc.encode("3\n") },
    ]);
  await using tmp = await tempFiles({
    "model.pth": bomb(1000),
    "huge.pth": bomb(2 ** 32 - 2),
  });
  const { paths } = tmp;
  const lie =
    /model\.pth: zip entry "archive\/data\.pkl": inflates to more than its declared 1000 bytes \(corrupt or hostile zip\)/;
  const zip = await ZipArchive.open(paths["model.pth"]);
  try {
    await rejectsWith(zip.read("archive/data.pkl"), lie);
  } finally {
    zip.close();
  }
  await rejectsWith(readTorchCheckpoint(paths["model.pth"]), lie);
  // 4 GiB from ~256 KiB: more than deflate's 1032:1 can give, refused before inflating.
  await rejectsWith(
    readStateDict(paths["huge.pth"]),
    new RegExp(
      `huge\\.pth: zip entry "archive/data\\.pkl": declares ${
        2 ** 32 - 2
      } bytes from ${stream.length} compressed bytes, more than deflate can produce`,
    ),
  );
  const peaks = await peakGrowth([paths["model.pth"], paths["huge.pth"]]);
  for (const r of peaks ?? []) {
    const size = (await Deno.stat(r.file)).size;
    assert.match(r.msg, /inflates to more than|more than deflate can produce/);
    assert.ok(r.grew < 2 * size + SLACK, `${r.file}: peak memory grew ${r.grew} bytes`);
  }
});

Deno.test("hostile torch: views are checked against their storage before anything is allocated", async () => {
  const one = (v: Partial<View>, numel = 1) =>
    checkpoint(
      stateDictPickle([{ name: "w", storage: "0", numel, shape: [], stride: [], ...v }]),
      { "0": numel },
    );
  // 256M elements (1 GB of float32) from one element.
  const expanded = one({ shape: [16000, 16000], stride: [0, 0] });
  // 2^60 elements: past what a typed array can hold at all.
  const huge = one({ shape: [2 ** 30, 2 ** 30], stride: [0, 0] });
  // 1100 transposed copies of one 32x32 storage: each view is honest, together they
  // multiply the storage's size (the copy budget is 2x the storages + 2^20 elements).
  const copies = checkpoint(
    stateDictPickle(
      Array.from({ length: 1100 }, (_, i) => ({
        name: `t${i}`,
        storage: "0",
        numel: 1024,
        shape: [32, 32],
        stride: [1, 32],
      })),
    ),
    { "0": 1024 },
  );
  await using tmp = await tempFiles({
    "model.pth": expanded,
    "huge.pth": huge,
    "copies.pth": copies,
    "past.pth": one({ offset: 3, shape: [2, 2], stride: [2, 1] }, 6),
    "short.pth": checkpoint(
      stateDictPickle([{ name: "w", storage: "0", numel: 2 ** 40, shape: [2], stride: [1] }]),
      { "0": 1 },
    ),
    // A small expansion, as `torch.randn(4).expand(3, 4)` saves, still loads.
    "small.pth": one({ shape: [3, 4], stride: [0, 1] }, 4),
  });
  const { paths } = tmp;
  const refused = (file: string, shape: string, stride: string, storage: number) =>
    new RegExp(
      `${file}: tensor "w": view \\(offset 0, shape \\[${shape}\\], stride \\[${stride}\\]\\) ` +
        `has more elements than its storage of ${storage} \\(an expanded view, refused above ${MAX_EXPANDED_ELEMENTS} elements\\)`,
    );
  await rejectsWith(
    readTorchCheckpoint(paths["model.pth"]),
    refused("model\\.pth", "16000,16000", "0,0", 1),
  );
  await rejectsWith(
    readStateDict(paths["huge.pth"]),
    refused("huge\\.pth", "1073741824,1073741824", "0,0", 1),
  );
  await rejectsWith(
    readStateDict(paths["copies.pth"]),
    /copies\.pth: tensor "t\d+": the state dict's views copy more than 1050624 elements out of storages of 1024/,
  );
  await rejectsWith(
    readStateDict(paths["past.pth"]),
    /past\.pth: tensor "w": view \(offset 3, shape \[2,2\], stride \[2,1\]\) exceeds its storage of 6 elements/,
  );
  await rejectsWith(
    readStateDict(paths["short.pth"]),
    /short\.pth: storage "archive\/data\/0" has 4 bytes, expected 4398046511104 \(1099511627776 x float32; tensor "w"\)/,
  );
  const small = await readStateDict(paths["small.pth"]);
  assert.deepEqual(small.get("w")!.shape, [3, 4]);
  const peaks = await peakGrowth([paths["model.pth"], paths["huge.pth"], paths["copies.pth"]]);
  for (const r of peaks ?? []) {
    const size = (await Deno.stat(r.file)).size;
    assert.match(r.msg, /has more elements than its storage|views copy more than/);
    assert.ok(r.grew < 2 * size + SLACK, `${r.file}: peak memory grew ${r.grew} bytes`);
  }
});

Deno.test("hostile pickle: huge integers are refused at once; long lists build without recursion", async () => {
  // LONG4 of 300 kB: quadratic to build byte by byte; now refused before it is read.
  const long4 = concat([
    new Uint8Array([0x80, 2, 0x8b]),
    le([300_000, 4]),
    new Uint8Array(300_000).fill(0x5a),
    new Uint8Array([0x2e]),
  ]);
  assert.throws(
    () => unpickle(long4, { label: "model.pth: archive/data.pkl" }),
    new RegExp(
      `^Error: model\\.pth: archive/data\\.pkl: integer of 300000 bytes at byte 7 is too large \\(at most ${MAX_LONG_BYTES} bytes\\)$`,
    ),
  );
  // The largest accepted integers are built exactly (little-endian two's complement).
  const longOf = (bytes: Uint8Array) =>
    unpickle(
      concat([
        new Uint8Array([0x80, 2, 0x8b]),
        le([bytes.length, 4]),
        bytes,
        new Uint8Array([0x2e]),
      ]),
    );
  const top = new Uint8Array(MAX_LONG_BYTES);
  top[MAX_LONG_BYTES - 1] = 0x40;
  assert.equal(longOf(top), 1n << BigInt(8 * MAX_LONG_BYTES - 2));
  assert.equal(longOf(new Uint8Array(MAX_LONG_BYTES).fill(0xff)), -1);
  top[MAX_LONG_BYTES - 1] = 0x80;
  assert.equal(longOf(top), -(1n << BigInt(8 * MAX_LONG_BYTES - 1)));
  assert.equal(
    longOf(new Uint8Array([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0])),
    2n ** 63n - 2n,
  );
  assert.equal(longOf(new Uint8Array([0x2c, 0x01])), 300);
  assert.equal(longOf(new Uint8Array(0)), 0);

  // APPENDS of 300k items (push(...items) overflowed the stack), SETITEMS of 300k pairs.
  const n = 300_000;
  const appends = concat([
    new Uint8Array([0x80, 2, 0x5d, 0x28]), // EMPTY_LIST, MARK
    new Uint8Array(2 * n).map((_, i) => (i % 2 ? 7 : 0x4b)), // BININT1 7, n times
    new Uint8Array([0x65, 0x2e]), // APPENDS, STOP
  ]);
  const list = unpickle(appends) as number[];
  assert.equal(list.length, n);
  assert.equal(list[n - 1], 7);
  const setitems = new Uint8Array(4 + 6 * n + 2);
  setitems.set([0x80, 2, 0x7d, 0x28]); // EMPTY_DICT, MARK
  for (let i = 0; i < n; i++) setitems.set([0x4a, ...le([i, 4]), 0x4e], 4 + 6 * i); // i: None
  setitems.set([0x75, 0x2e], 4 + 6 * n); // SETITEMS, STOP
  assert.equal((unpickle(setitems) as Map<number, null>).size, n);

  // A key nested 100k tuples deep: building it, and naming it in an error, recurse nowhere.
  const deep = concat([
    new Uint8Array([0x80, 2, 0x7d, 0x4e]), // EMPTY_DICT, NONE
    new Uint8Array(100_000).fill(0x85), // TUPLE1
    new Uint8Array([0x4b, 1, 0x73, 0x2e]), // BININT1 1, SETITEM, STOP
  ]);
  await using tmp = await tempFiles({ "model.pth": checkpoint(deep) });
  await rejectsWith(
    readTorchCheckpoint(tmp.paths["model.pth"]),
    /model\.pth: no tensors found in the checkpoint \(keys: tuple\/list\)/,
  );
});

Deno.test("hostile torch: handler errors and directories name the file, on one line", async () => {
  const reduce = (args: Pickle) =>
    checkpoint(
      args.raw(0x52).raw(0x73, 0x2e).bytes(), // REDUCE, SETITEM, STOP
    );
  const head = () => new Pickle().raw(0x80, 2, 0x7d).str("w");
  await using tmp = await tempFiles({
    // w = _rebuild_tensor_v2()
    "model.pth": reduce(head().global("torch._utils", "_rebuild_tensor_v2").raw(0x29)),
    // w = _rebuild_parameter(1, False, OrderedDict())
    "param.pth": reduce(
      head().global("torch._utils", "_rebuild_parameter").raw(0x28).int(1).raw(0x89)
        .global("collections", "OrderedDict").raw(0x29, 0x52, 0x74),
    ),
    // w = _rebuild_tensor_v2(<persistent id ('storage', FloatStorage, (), 'cpu', 1)>, ...)
    "pid.pth": checkpoint(
      head().global("torch._utils", "_rebuild_tensor_v2").raw(0x28, 0x28).str("storage")
        .global("torch", "FloatStorage").raw(0x29).str("cpu").int(1).raw(0x74, 0x51)
        .raw(0x74, 0x52, 0x73, 0x2e).bytes(),
    ),
    // A global name with a newline in it (STACK_GLOBAL), refused on one line.
    "newline.pth": checkpoint(
      new Pickle().raw(
        0x80,
        4,
        0x8c,
        2,
        0x6f,
        0x73,
        0x8c,
        8,
        ...enc.encode("sys\ntem\n"),
        0x93,
        0x2e,
      )
        .bytes(),
    ),
  });
  const { dir, paths } = tmp;
  await rejectsWith(
    readTorchCheckpoint(paths["model.pth"]),
    new RegExp(
      `^${
        esc(paths["model.pth"])
      }: archive/data\\.pkl: _rebuild_tensor_v2: expected a storage as first argument, got undefined$`,
    ),
  );
  await rejectsWith(
    readStateDict(paths["param.pth"]),
    /param\.pth: archive\/data\.pkl: _rebuild_parameter: data is a number, not a tensor$/,
  );
  await rejectsWith(
    readStateDict(paths["pid.pth"]),
    /pid\.pth: archive\/data\.pkl: storage key is a tuple\/list, expected a string$/,
  );
  await rejectsWith(
    readStateDict(paths["newline.pth"]),
    /newline\.pth: archive\/data\.pkl: refusing to load global os\.sys tem/,
  );
  const isDir = new RegExp(
    `^${esc(dir)}: expected a checkpoint file \\(\\.pth/\\.safetensors\\), got a directory$`,
  );
  await rejectsWith(readStateDict(dir), isDir);
  await rejectsWith(readTorchCheckpoint(dir), isDir);
  await rejectsWith(readSafetensors(dir), isDir);
  await rejectsWith(ZipArchive.open(dir), isDir);
});

Deno.test("hostile safetensors: overlapping ranges are refused naming both tensors", async () => {
  const build = (header: unknown, dataBytes: number) => {
    const h = enc.encode(JSON.stringify(header));
    return concat([le([h.length, 4], [0, 4]), h, new Uint8Array(dataBytes)]);
  };
  const f32 = (shape: number[], begin: number, end: number) => ({
    dtype: "F32",
    shape,
    data_offsets: [begin, end],
  });
  await using tmp = await tempFiles({
    "model.safetensors": build({ a: f32([4], 0, 16), b: f32([4], 8, 24) }, 24),
    // The same bytes under two names, listed in reverse order of their offsets.
    "alias.safetensors": build({ z: f32([2], 16, 24), a: f32([4], 0, 16), b: f32([4], 0, 16) }, 24),
    "past.safetensors": build({ a: f32([4], 0, 16), b: f32([4], 16, 32) }, 24),
    // Empty tensors take no bytes: sharing an offset is fine.
    "empty.safetensors": build({ a: f32([0], 8, 8), b: f32([4], 0, 16), c: f32([0, 3], 8, 8) }, 16),
  });
  const { paths } = tmp;
  await rejectsWith(
    readSafetensors(paths["model.safetensors"]),
    /model\.safetensors: not a valid safetensors file \(tensor "b" \(bytes 8\.\.24\) overlaps tensor "a" \(bytes 0\.\.16\)\)/,
  );
  await rejectsWith(
    readStateDict(paths["alias.safetensors"]),
    /alias\.safetensors: .*tensor "b" \(bytes 0\.\.16\) overlaps tensor "a" \(bytes 0\.\.16\)/,
  );
  await rejectsWith(
    readStateDict(paths["past.safetensors"]),
    /past\.safetensors: .*tensor "b" has bad data_offsets \[16,32\] \(data is 24 bytes; truncated\?\)/,
  );
  const sd = await readSafetensors(paths["empty.safetensors"]);
  assert.deepEqual([...sd.keys()], ["a", "b", "c"]);
});
