/**
 * Reads PyTorch checkpoints (`torch.save` zip format, torch >= 1.6) into a {@link StateDict}.
 *
 * The archive holds `<root>/data.pkl` (the pickled object, whose tensors refer to
 * storages by persistent id) and one entry `<root>/data/<key>` per storage. The pickle
 * is read with the safe reader of `pickle.ts` and a whitelist of the few torch globals
 * a state dict uses; storages are read on demand, only for the tensors of the chosen
 * state dict (a training checkpoint's optimizer state is never loaded). Before any storage
 * is read, every storage is checked against its archive entry and every view (offset,
 * shape, stride) against its storage, so a hostile file fails for the price of its pickle.
 *
 * @module
 */

import { decodeToFloat32, type DType, DTYPE_SIZE } from "./dtype.ts";
import { describe, type PickleGlobal, PickleObject, unpickle } from "./pickle.ts";
import type { ByteSource } from "./source.ts";
import { openCheckpointSource } from "./source.ts";
import type { StateDict, TensorData } from "./types.ts";
import { ZipArchive } from "./zip.ts";

export type { StateDict, TensorData } from "./types.ts";

/** Options of {@link readTorchCheckpoint}. */
export interface TorchCheckpointOptions {
  /**
   * Top-level key that holds the state dict (e.g. `"model_ema"`). Default: the object
   * itself when it holds tensors, else the first of `"model"`, `"state_dict"`,
   * `"model_ema"` present, repeatedly (so `{"model": {"state_dict": ...}}` works too).
   * `"model"` comes first because the official ConvNeXt files, `*_ema.pth` included,
   * store their (EMA) weights under `"model"`, and in a training checkpoint with both,
   * `"model"` is the trained model.
   */
  readonly key?: string;
  /** Check each storage's CRC-32 (default true). */
  readonly verifyCrc?: boolean;
}

/**
 * Largest expanded view accepted, in elements: a view with more elements than its storage
 * repeats storage elements (stride 0, as `expand` makes), so its size is not bounded by
 * the file. State dicts have none, or tiny ones; a 1-element storage viewed as
 * [16000, 16000] would cost a gigabyte from a few hundred bytes.
 */
export const MAX_EXPANDED_ELEMENTS = 1 << 16;

/**
 * Budget of the elements copied out of storages (slices, transposes, expansions), beyond
 * twice the storages' own elements: views of one storage are copied each time, so
 * many views of one large storage would otherwise multiply its size at no cost in the file.
 */
const COPY_SLACK_ELEMENTS = 1 << 20;

/** The keys tried, in order, to find the state dict inside a checkpoint object. */
export const STATE_DICT_KEYS: readonly string[] = ["model", "state_dict", "model_ema"];

/** A storage as a pickle's persistent id names it; its bytes are read later. */
class StorageRef {
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number) {}
}

/** A tensor view of a storage, as `_rebuild_tensor_v2` describes it. */
class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: "float32",
  DoubleStorage: "float64",
  HalfStorage: "float16",
  BFloat16Storage: "bfloat16",
  LongStorage: "int64",
  IntStorage: "int32",
  ShortStorage: "int16",
  CharStorage: "int8",
  ByteStorage: "uint8",
  BoolStorage: "bool",
};

/** A whitelisted global that only stands for a type (a storage class, `torch.Tensor`). */
interface TypeMarker extends PickleGlobal {
  readonly dtype?: DType;
}

/** A pickled value for an error message: numbers as such, anything else by its type. */
function show(x: unknown): string {
  if (typeof x === "bigint") return x.toString().length > 30 ? "a huge integer" : String(x);
  return typeof x === "number" ? String(x) : describe(x);
}

/** A checkpoint key for an error message: quoted, control characters escaped, shortened. */
function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name);
}

function intList(x: unknown, what: string): number[] {
  if (!Array.isArray(x) || !x.every((v) => Number.isSafeInteger(v) && v >= 0)) {
    throw new Error(`${what} is not a tuple of non-negative ints (${describe(x)})`);
  }
  return x as number[];
}

function rebuildTensor(args: readonly unknown[], fn: string): TensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) {
    throw new Error(`${fn}: expected a storage as first argument, got ${describe(storage)}`);
  }
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) {
    throw new Error(`${fn}: bad storage offset ${show(offset)}`);
  }
  const shape = intList(size, `${fn} size`);
  const strides = intList(stride, `${fn} stride`);
  if (strides.length !== shape.length) throw new Error(`${fn}: size and stride lengths differ`);
  return new TensorRef(storage, offset as number, shape, strides);
}

function torchGlobals(): Map<string, PickleGlobal> {
  const g = new Map<string, PickleGlobal>();
  const add = (qualname: string, call?: (args: readonly unknown[]) => unknown) =>
    g.set(qualname, { qualname, call });
  for (const [name, dtype] of Object.entries(STORAGE_DTYPES)) {
    g.set(`torch.${name}`, { qualname: `torch.${name}`, dtype } as TypeMarker);
  }
  add("collections.OrderedDict", (args) => {
    const m = new Map<unknown, unknown>();
    if (Array.isArray(args[0])) {
      for (const kv of args[0]) if (Array.isArray(kv)) m.set(kv[0], kv[1]);
    }
    return m;
  });
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  add("torch._utils._rebuild_tensor_v2", (a) => rebuildTensor(a, "_rebuild_tensor_v2"));
  add("torch._utils._rebuild_tensor", (a) => rebuildTensor(a, "_rebuild_tensor"));
  // nn.Parameter(data, requires_grad, backward_hooks[, state]): the data is what we need.
  const param = (a: readonly unknown[]) => {
    if (!(a[0] instanceof TensorRef)) {
      throw new Error(`_rebuild_parameter: data is a ${describe(a[0])}, not a tensor`);
    }
    return a[0];
  };
  add("torch._utils._rebuild_parameter", param);
  add("torch._utils._rebuild_parameter_with_state", param);
  // Tensor subclasses pickle as _rebuild_from_type_v2(func, type, args, state).
  add("torch._tensor._rebuild_from_type_v2", (a) => {
    const [func, type, args] = a;
    const f = func as PickleGlobal;
    const t = type as PickleGlobal;
    if (!t || (t.qualname !== "torch.Tensor" && t.qualname !== "torch.nn.parameter.Parameter")) {
      throw new Error(`_rebuild_from_type_v2: tensor type ${describe(type)} is not whitelisted`);
    }
    if (!f?.call || !Array.isArray(args)) throw new Error(`_rebuild_from_type_v2: bad arguments`);
    return f.call(args);
  });
  add("torch.Tensor");
  add("torch.nn.parameter.Parameter");
  add("torch.Size", (a) => intList(a[0] ?? [], "torch.Size"));
  // The official training script saves its argparse arguments in checkpoints
  // (`'args': args`); keep them as inert data so such files load.
  add("argparse.Namespace", (a) => new PickleObject("argparse.Namespace", a));
  return g;
}

const GLOBALS = torchGlobals();

function persistentLoad(pid: unknown): StorageRef {
  // ('storage', storage_type, key, location, numel)
  if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
    throw new Error(`unsupported persistent id ${describe(pid)} (expected a storage)`);
  }
  const type = pid[1] as TypeMarker;
  if (!type?.dtype) throw new Error(`unsupported storage type ${describe(pid[1])}`);
  if (typeof pid[2] !== "string" && !Number.isSafeInteger(pid[2])) {
    throw new Error(`storage key is a ${describe(pid[2])}, expected a string`);
  }
  const key = String(pid[2]);
  const numel = pid[4];
  if (!Number.isSafeInteger(numel) || (numel as number) < 0) {
    throw new Error(`storage ${quote(key)}: bad element count ${show(numel)}`);
  }
  return new StorageRef(key, type.dtype, numel as number);
}

/** What a checkpoint file is, judged by its first bytes. */
export type CheckpointFormat = "zip" | "legacy-tar" | "legacy-pickle" | "safetensors" | "unknown";

/**
 * Guesses a checkpoint's format from its first bytes (at least 8; 512 detects tar).
 *
 * @example
 * ```ts
 * sniffFormat(new Uint8Array([0x50, 0x4b, 3, 4, 0, 0, 0, 0])); // "zip"
 * ```
 */
export function sniffFormat(head: Uint8Array): CheckpointFormat {
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b) {
    if ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6)) return "zip";
  }
  if (head.length >= 262 && new TextDecoder().decode(head.subarray(257, 262)) === "ustar") {
    return "legacy-tar";
  }
  if (head.length >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5) return "legacy-pickle";
  if (head.length >= 9) {
    const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
    if (n >= 2n && n < 100_000_000n && head[8] === 0x7b /* "{" */) return "safetensors";
  }
  return "unknown";
}

/** The error for a pre-1.6 checkpoint, saying how to re-save it. */
export function legacyCheckpointError(
  label: string,
  format: "legacy-tar" | "legacy-pickle",
): Error {
  const what = format === "legacy-tar" ? "tar" : "raw pickle";
  return new Error(
    `${label}: legacy PyTorch checkpoint (pre-1.6 ${what} format) is not supported; ` +
      `re-save it with torch >= 1.6: torch.save(torch.load(path), new_path) ` +
      `(the zip format, _use_new_zipfile_serialization=True, is the default)`,
  );
}

/**
 * Reads a PyTorch checkpoint and returns its state dict, every tensor as float32.
 *
 * `source` is a path (read on demand: only the pickle and the needed storages are read)
 * or the file's bytes. Nested checkpoints (`{"model": ...}` etc.) are unwrapped as
 * {@link TorchCheckpointOptions.key} says; non-tensor entries are skipped.
 *
 * @example
 * ```ts
 * import { readTorchCheckpoint } from "./torch.ts";
 * const file = new URL("../../tests/fixtures/checkpoints/official_tiny.pth", import.meta.url);
 * const sd = await readTorchCheckpoint(file.pathname);
 * console.log(sd.get("head.weight")!.shape); // [classes, channels], as PyTorch stores it
 * ```
 */
export async function readTorchCheckpoint(
  source: string | Uint8Array,
  options: TorchCheckpointOptions = {},
): Promise<StateDict> {
  const src = await openCheckpointSource(source);
  let zip: ZipArchive;
  try {
    const format = sniffFormat(await src.read(0, Math.min(512, src.size)));
    if (format === "legacy-tar" || format === "legacy-pickle") {
      throw legacyCheckpointError(src.label, format);
    }
    if (format === "safetensors") {
      throw new Error(
        `${src.label}: this is a safetensors file, not a PyTorch checkpoint (use readStateDict)`,
      );
    }
    if (format !== "zip") {
      // A truncated zip still starts with "PK"; anything else is not a checkpoint at all.
      throw new Error(`${src.label}: not a PyTorch checkpoint (no zip or pickle signature)`);
    }
    zip = await ZipArchive.open(src);
  } catch (e) {
    src.close();
    throw e;
  }
  try {
    return await readFromZip(zip, src, options);
  } finally {
    zip.close();
  }
}

async function readFromZip(
  zip: ZipArchive,
  src: ByteSource,
  options: TorchCheckpointOptions,
): Promise<StateDict> {
  const label = src.label;
  const names = [...zip.entries.keys()];
  const pkl = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkl.length !== 1) {
    if (names.some((n) => /^[^/]+\/(constants\.pkl|code\/)/.test(n))) {
      throw new Error(
        `${label}: a TorchScript archive; save the model's state_dict() with torch.save instead`,
      );
    }
    throw new Error(
      `${label}: zip archive is not a PyTorch checkpoint (expected one <root>/data.pkl entry, found ${pkl.length})`,
    );
  }
  const root = pkl[0].slice(0, -"/data.pkl".length);
  const verifyCrc = options.verifyCrc ?? true;
  let bigEndian = false;
  if (zip.has(`${root}/byteorder`)) {
    const order = new TextDecoder().decode(await zip.read(`${root}/byteorder`)).trim();
    if (order !== "little" && order !== "big") {
      throw new Error(`${label}: unknown byteorder "${order}"`);
    }
    bigEndian = order === "big";
  }
  const obj = unpickle(await zip.read(pkl[0], { verifyCrc }), {
    globals: GLOBALS,
    persistentLoad,
    label: `${label}: ${pkl[0]}`,
  });
  const refs = selectStateDict(obj, options.key, label);
  // Read each storage once, materialise the tensors that view it, then drop its bytes.
  const byStorage = groupByStorage(refs, label);
  checkAgainstArchive(zip, root, refs, byStorage, label);
  const tensors = new Map<string, TensorData>();
  for (const [key, tensorNames] of byStorage) {
    const entry = `${root}/data/${key}`;
    const storage = refs.get(tensorNames[0])!.storage;
    const bytes = await zip.read(entry, { verifyCrc });
    const need = storage.numel * DTYPE_SIZE[storage.dtype];
    if (bytes.length < need) {
      throw new Error(`${label}: storage "${entry}" has ${bytes.length} bytes, expected ${need}`);
    }
    const values = decodeToFloat32(bytes, storage.dtype, storage.numel, bigEndian);
    for (const name of tensorNames) {
      tensors.set(name, materialize(refs.get(name)!, values, `${label}: tensor ${quote(name)}`));
    }
  }
  // Keep the checkpoint's key order.
  const out: StateDict = new Map();
  for (const name of refs.keys()) out.set(name, tensors.get(name)!);
  return out;
}

/** The tensors' names by the storage they view; a storage declared twice differently throws. */
function groupByStorage(refs: Map<string, TensorRef>, label: string): Map<string, string[]> {
  const byStorage = new Map<string, string[]>();
  for (const [name, t] of refs) {
    const list = byStorage.get(t.storage.key) ?? [];
    const first = list.length ? refs.get(list[0])!.storage : t.storage;
    if (first.dtype !== t.storage.dtype || first.numel !== t.storage.numel) {
      throw new Error(
        `${label}: tensor ${quote(name)}: storage ${quote(t.storage.key)} is declared twice, ` +
          `as ${first.numel} x ${first.dtype} and ${t.storage.numel} x ${t.storage.dtype} (corrupt checkpoint)`,
      );
    }
    list.push(name);
    byStorage.set(t.storage.key, list);
  }
  return byStorage;
}

/**
 * Checks everything against what the archive holds before any storage is read or any
 * tensor allocated, so that a hostile file fails for the price of its pickle: every storage
 * entry present and large enough, and the views copying at most twice the storages' data.
 */
function checkAgainstArchive(
  zip: ZipArchive,
  root: string,
  refs: Map<string, TensorRef>,
  byStorage: Map<string, string[]>,
  label: string,
): void {
  let storageElements = 0;
  for (const [key, tensorNames] of byStorage) {
    const storage = refs.get(tensorNames[0])!.storage;
    const entry = zip.entries.get(`${root}/data/${key}`);
    if (!entry) {
      throw new Error(
        `${label}: storage entry "${root}/data/${key}" is missing (corrupt checkpoint)`,
      );
    }
    const need = storage.numel * DTYPE_SIZE[storage.dtype];
    if (entry.size < need) {
      throw new Error(
        `${label}: storage "${entry.name}" has ${entry.size} bytes, expected ${need} ` +
          `(${storage.numel} x ${storage.dtype}; tensor ${quote(tensorNames[0])})`,
      );
    }
    storageElements += storage.numel;
  }
  const copyBudget = 2 * storageElements + COPY_SLACK_ELEMENTS;
  let copied = 0;
  for (const [name, t] of refs) {
    copied += checkView(t, `${label}: tensor ${quote(name)}`);
    if (copied > copyBudget) {
      throw new Error(
        `${label}: tensor ${quote(name)}: the state dict's views copy more than ${copyBudget} ` +
          `elements out of storages of ${storageElements} (views repeat storage data; refused)`,
      );
    }
  }
}

function tensorEntries(m: Map<unknown, unknown>): Map<string, TensorRef> {
  const out = new Map<string, TensorRef>();
  for (const [k, v] of m) if (typeof k === "string" && v instanceof TensorRef) out.set(k, v);
  return out;
}

function selectStateDict(
  obj: unknown,
  key: string | undefined,
  label: string,
): Map<string, TensorRef> {
  // Keys may be anything a pickle builds (a deeply nested tuple: String() would recurse),
  // and there may be a million of them: name strings, describe the rest, list a few.
  const keysOf = (m: Map<unknown, unknown>) => {
    const shown: string[] = [];
    for (const k of m.keys()) {
      if (shown.length === 20) {
        shown.push(`... (${m.size} keys)`);
        break;
      }
      shown.push(typeof k === "string" ? JSON.stringify(k).slice(1, -1).slice(0, 100) : show(k));
    }
    return shown.join(", ");
  };
  if (!(obj instanceof Map)) {
    throw new Error(`${label}: checkpoint holds a ${describe(obj)}, not a dict`);
  }
  let cur: Map<unknown, unknown> = obj;
  if (key !== undefined) {
    const v = cur.get(key);
    if (!(v instanceof Map)) {
      throw new Error(
        `${label}: checkpoint has no dict under key "${key}" (top-level keys: ${keysOf(cur)})`,
      );
    }
    cur = v;
  }
  for (let depth = 0; depth < 4; depth++) {
    const direct = tensorEntries(cur);
    if (direct.size > 0) return direct;
    const next = key === undefined
      ? STATE_DICT_KEYS.find((k) => cur.get(k) instanceof Map)
      : undefined;
    if (next === undefined) break;
    cur = cur.get(next) as Map<unknown, unknown>;
  }
  throw new Error(
    `${label}: no tensors found in the checkpoint (keys: ${keysOf(cur)}); expected a state dict, ` +
      `possibly under ${STATE_DICT_KEYS.map((k) => `"${k}"`).join(", ")}`,
  );
}

/**
 * Checks a view against its storage's declared size (which the caller checked against the
 * archive) before anything is allocated, and returns how many elements materialising it
 * copies (0 when the tensor is its whole storage, which is shared, not copied).
 */
function checkView(t: TensorRef, what: string): number {
  const { shape, stride, offset } = t;
  const storageNumel = t.storage.numel;
  const describeView = () =>
    `view (offset ${offset}, shape [${shape.slice(0, 8)}${shape.length > 8 ? ",..." : ""}], ` +
    `stride [${stride.slice(0, 8)}${stride.length > 8 ? ",..." : ""}])`;
  if (shape.includes(0)) return 0;
  // Every index stays in the storage (one term at a time: the sum could pass 2^53).
  let last = offset;
  for (let d = 0; d < shape.length && last < storageNumel; d++) {
    if ((shape[d] - 1) * stride[d] >= storageNumel) last = storageNumel;
    else last += (shape[d] - 1) * stride[d];
  }
  if (last >= storageNumel) {
    throw new Error(`${what}: ${describeView()} exceeds its storage of ${storageNumel} elements`);
  }
  // Element count, stopping once it passes what any honest view of this storage can have.
  const limit = Math.max(storageNumel, MAX_EXPANDED_ELEMENTS);
  let numel = 1;
  for (const n of shape) {
    numel *= n;
    if (numel > limit) {
      throw new Error(
        `${what}: ${describeView()} has more elements than its storage of ${storageNumel} ` +
          `(an expanded view, refused above ${MAX_EXPANDED_ELEMENTS} elements)`,
      );
    }
  }
  let contiguous = true;
  for (let d = shape.length - 1, expect = 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expect) contiguous = false;
    expect *= shape[d];
  }
  return contiguous && offset === 0 && numel === storageNumel ? 0 : numel;
}

function materialize(t: TensorRef, storage: Float32Array, what: string): TensorData {
  const { shape, stride, offset } = t;
  const dtype = t.storage.dtype;
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel === 0) return { dtype, shape: [...shape], data: new Float32Array(0) };
  let last = offset;
  for (let d = 0; d < shape.length; d++) last += (shape[d] - 1) * stride[d];
  if (last >= storage.length) {
    throw new Error(
      `${what}: view (offset ${offset}, shape [${shape}], stride [${stride}]) exceeds its storage of ${storage.length} elements`,
    );
  }
  let contiguous = true;
  for (let d = shape.length - 1, expect = 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expect) contiguous = false;
    expect *= shape[d];
  }
  if (contiguous) {
    const data = offset === 0 && numel === storage.length
      ? storage
      : storage.slice(offset, offset + numel);
    return { dtype, shape: [...shape], data };
  }
  // Non-contiguous view (a transpose, a slice, an expand): gather in row-major order.
  const data = new Float32Array(numel);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  const inner = shape[rank - 1];
  const innerStride = stride[rank - 1];
  let base = offset;
  for (let o = 0; o < numel; o += inner) {
    for (let i = 0, s = base; i < inner; i++, s += innerStride) data[o + i] = storage[s];
    // Advance the outer index (odometer over dims 0..rank-2).
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]++;
      base += stride[d];
      if (idx[d] < shape[d]) break;
      base -= stride[d] * shape[d];
      idx[d] = 0;
    }
  }
  return { dtype, shape: [...shape], data };
}
