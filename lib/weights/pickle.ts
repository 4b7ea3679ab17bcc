/**
 * A safe reader for Python pickles (protocols 2 to 5).
 *
 * Python's `pickle.load` runs whatever callables a pickle names, so a checkpoint can
 * run arbitrary code. This reader evaluates nothing: it only builds plain data
 * (None, bools, ints, floats, str, bytes, tuples and lists as arrays, dicts as `Map`,
 * sets as `Set`) and calls the handlers the caller whitelisted for named globals.
 * Any other global, any call of a non-callable, and any opcode outside the data
 * subset (INST, OBJ, EXT*, out-of-band buffers, protocol-0 text opcodes) is an error
 * naming it. A hostile pickle costs time and memory linear in its size: integers are
 * built in one pass and capped at {@link MAX_LONG_BYTES}, containers are filled without
 * recursion or argument spreading, and every error (a handler's too) is one line that
 * names the pickle.
 *
 * @module
 */

/** A whitelisted Python global, as the `globals` option of {@link unpickle} declares it. */
export interface PickleGlobal {
  /** `"module.name"`, e.g. `"collections.OrderedDict"`. */
  readonly qualname: string;
  /** Builds the result of calling the global (REDUCE / NEWOBJ); absent: not callable. */
  readonly call?: (args: readonly unknown[]) => unknown;
}

/**
 * An inert placeholder for a whitelisted Python object that carries only data (for
 * example an `argparse.Namespace` of training arguments); BUILD stores its state here.
 */
export class PickleObject {
  /** Instance state set by BUILD (usually a `Map` of attributes), or undefined. */
  state: unknown = undefined;
  /**
   * @param qualname the Python class, e.g. `"argparse.Namespace"`
   * @param args the constructor arguments the pickle gave
   */
  constructor(readonly qualname: string, readonly args: readonly unknown[]) {}
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Whitelisted globals by `"module.name"`; every other global is refused. */
  readonly globals?: ReadonlyMap<string, PickleGlobal>;
  /** Resolves persistent ids (PERSID/BINPERSID); absent: persistent ids are refused. */
  readonly persistentLoad?: (pid: unknown) => unknown;
  /** What to call the pickle in error messages (e.g. `"ckpt.pth: archive/data.pkl"`). */
  readonly label?: string;
}

const HEX: readonly string[] = Array.from(
  { length: 256 },
  (_, i) => i.toString(16).padStart(2, "0"),
);

const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/** Marks the MARK position on the stack; never escapes the reader. */
const MARK = Symbol("MARK");

/**
 * Longest integer accepted (LONG1/LONG4), in bytes. Checkpoints hold small ints (epochs,
 * steps, seeds); a huge one only costs time and memory in whatever handles it next.
 */
export const MAX_LONG_BYTES = 1024;

/** An error the reader raised itself, already naming the pickle. */
class PickleError extends Error {}

/** Keeps an error message on one line, whatever strings a hostile pickle put in it. */
function oneLine(msg: string): string {
  // deno-lint-ignore no-control-regex
  return msg.replace(/[\x00-\x1f\x7f]+/g, " ");
}

/**
 * Reads one pickle and returns the object it describes, without running any code.
 *
 * @example
 * ```ts
 * // pickle.dumps({"a": 1}, protocol=2)
 * const bytes = new Uint8Array([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x71, 1, 0x4b, 1, 0x73, 0x2e]);
 * unpickle(bytes); // Map { "a" => 1 }
 * ```
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions = {}): unknown {
  const label = options.label ?? "pickle";
  const globals = options.globals ?? new Map<string, PickleGlobal>();
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const latin1 = new TextDecoder("latin1");
  let stack: unknown[] = [];
  const metastack: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;

  const fail = (msg: string): never => {
    throw new PickleError(oneLine(`${label}: ${msg}`));
  };
  // Whitelisted handlers and the persistent-id loader know nothing of the file: their
  // errors get the pickle's label here, so every error names where it came from.
  const guarded = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof PickleError) throw e;
      return fail(e instanceof Error ? e.message : String(e));
    }
  };
  const need = (n: number): number => {
    if (n < 0 || pos + n > bytes.length) fail(`truncated pickle (needs ${n} bytes at byte ${pos})`);
    const p = pos;
    pos += n;
    return p;
  };
  const u8 = (): number => bytes[need(1)];
  const u16 = (): number => dv.getUint16(need(2), true);
  const u32 = (): number => dv.getUint32(need(4), true);
  const u64 = (): number => {
    const x = dv.getBigUint64(need(8), true);
    if (x > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${x} is too large`);
    return Number(x);
  };
  const take = (n: number): Uint8Array => {
    const p = need(n);
    return bytes.subarray(p, p + n);
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail(`truncated pickle (unterminated line at byte ${pos})`);
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const str = (n: number): string => {
    const b = take(n); // outside the try: a truncation error must stay one
    try {
      return utf8.decode(b);
    } catch {
      return fail(`invalid UTF-8 string at byte ${pos - n}`);
    }
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail(`stack underflow at byte ${pos - 1}`);
    const x = stack.pop();
    if (x === MARK) fail(`unexpected MARK at byte ${pos - 1}`);
    return x;
  };
  const top = (): unknown => {
    if (stack.length === 0) fail(`stack underflow at byte ${pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    if (metastack.length === 0) fail(`missing MARK at byte ${pos - 1}`);
    stack = metastack.pop()!;
    return items;
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) fail(`memo key ${i} is not defined`);
    return memo.get(i);
  };
  const findGlobal = (module: string, name: string): PickleGlobal => {
    const qualname = `${module}.${name}`;
    const g = globals.get(qualname);
    if (!g) {
      fail(
        `refusing to load global ${qualname} ("${module} ${name}"): only whitelisted types are allowed (unsafe or unsupported pickle)`,
      );
    }
    return g!;
  };
  const callGlobal = (callable: unknown, args: unknown, op: string): unknown => {
    if (!(callable && typeof callable === "object" && "qualname" in callable)) {
      return fail(`${op} of a non-global callable (${describe(callable)})`);
    }
    const g = callable as PickleGlobal;
    if (!g.call) return fail(`${op} of non-callable global ${g.qualname}`);
    if (!Array.isArray(args)) return fail(`${op} of ${g.qualname}: arguments are not a tuple`);
    return guarded(() => g.call!(args));
  };
  const setItems = (dict: unknown, items: unknown[]): void => {
    if (!(dict instanceof Map)) fail(`SETITEM(S) on a ${describe(dict)}, expected a dict`);
    if (items.length % 2) fail(`SETITEMS with an odd number of items`);
    for (let i = 0; i < items.length; i += 2) {
      (dict as Map<unknown, unknown>).set(items[i], items[i + 1]);
    }
  };
  const append = (list: unknown, items: unknown[]): void => {
    if (!Array.isArray(list)) fail(`APPEND(S) on a ${describe(list)}, expected a list`);
    // One by one: push(...items) passes every item as an argument and overflows the
    // stack for a few hundred thousand of them.
    const l = list as unknown[];
    for (let i = 0; i < items.length; i++) l.push(items[i]);
  };
  const int = (x: bigint): number | bigint =>
    x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
  // Little-endian two's complement. Built from one hex string in linear time: shifting
  // a BigInt byte by byte is quadratic (minutes for a 300 kB integer).
  const long = (n: number): number | bigint => {
    if (n > MAX_LONG_BYTES) {
      fail(`integer of ${n} bytes at byte ${pos} is too large (at most ${MAX_LONG_BYTES} bytes)`);
    }
    const b = take(n);
    if (b.length === 0) return 0;
    const hex = new Array<string>(b.length);
    for (let i = 0; i < b.length; i++) hex[b.length - 1 - i] = HEX[b[i]];
    let x = BigInt("0x" + hex.join(""));
    if (b[b.length - 1] & 0x80) x -= 1n << BigInt(8 * b.length);
    return int(x);
  };

  // Anything else that goes wrong (a BigInt or string too large for the engine...) still
  // gets the pickle's name and stays one line.
  try {
    while (true) {
      if (pos >= bytes.length) fail(`truncated pickle (no STOP opcode)`);
      const at = pos;
      const op = bytes[pos++];
      switch (op) {
        case 0x80: // PROTO
          if (u8() > 5) fail(`unsupported pickle protocol ${bytes[pos - 1]}`);
          break;
        case 0x95: // FRAME: a length prefix for buffering only
          u64();
          break;
        case 0x2e: { // STOP
          const result = pop();
          return result;
        }
        case 0x28: // MARK
          metastack.push(stack);
          stack = [];
          break;
        case 0x30: // POP
          if (stack.length) stack.pop();
          else popMark();
          break;
        case 0x31: // POP_MARK
          popMark();
          break;
        case 0x32: // DUP
          stack.push(top());
          break;
        case 0x4e: // NONE
          stack.push(null);
          break;
        case 0x88: // NEWTRUE
          stack.push(true);
          break;
        case 0x89: // NEWFALSE
          stack.push(false);
          break;
        case 0x4a: // BININT
          stack.push(dv.getInt32(need(4), true));
          break;
        case 0x4b: // BININT1
          stack.push(u8());
          break;
        case 0x4d: // BININT2
          stack.push(u16());
          break;
        case 0x8a: // LONG1
          stack.push(long(u8()));
          break;
        case 0x8b: // LONG4
          stack.push(long(u32()));
          break;
        case 0x47: // BINFLOAT (big-endian double)
          stack.push(dv.getFloat64(need(8), false));
          break;
        case 0x58: // BINUNICODE
          stack.push(str(u32()));
          break;
        case 0x8c: // SHORT_BINUNICODE
          stack.push(str(u8()));
          break;
        case 0x8d: // BINUNICODE8
          stack.push(str(u64()));
          break;
        case 0x54: // BINSTRING (Python 2 str)
          stack.push(latin1.decode(take(dv.getInt32(need(4), true))));
          break;
        case 0x55: // SHORT_BINSTRING
          stack.push(latin1.decode(take(u8())));
          break;
        case 0x42: // BINBYTES
          stack.push(take(u32()).slice());
          break;
        case 0x43: // SHORT_BINBYTES
          stack.push(take(u8()).slice());
          break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
          stack.push(take(u64()).slice());
          break;
        case 0x5d: // EMPTY_LIST
          stack.push([]);
          break;
        case 0x61: { // APPEND
          const x = pop();
          append(top(), [x]);
          break;
        }
        case 0x65: { // APPENDS
          const items = popMark();
          append(top(), items);
          break;
        }
        case 0x6c: { // LIST
          const items = popMark(); // before touching `stack`: popMark replaces it
          stack.push(items);
          break;
        }
        case 0x29: // EMPTY_TUPLE
          stack.push([]);
          break;
        case 0x74: { // TUPLE
          const items = popMark();
          stack.push(items);
          break;
        }
        case 0x85: // TUPLE1
          stack.push([pop()]);
          break;
        case 0x86: { // TUPLE2
          const b = pop();
          const a = pop();
          stack.push([a, b]);
          break;
        }
        case 0x87: { // TUPLE3
          const c = pop();
          const b = pop();
          const a = pop();
          stack.push([a, b, c]);
          break;
        }
        case 0x7d: // EMPTY_DICT
          stack.push(new Map());
          break;
        case 0x64: { // DICT
          const d = new Map();
          setItems(d, popMark());
          stack.push(d);
          break;
        }
        case 0x73: { // SETITEM
          const v = pop();
          const k = pop();
          setItems(top(), [k, v]);
          break;
        }
        case 0x75: { // SETITEMS
          const items = popMark();
          setItems(top(), items);
          break;
        }
        case 0x8f: // EMPTY_SET
          stack.push(new Set());
          break;
        case 0x90: { // ADDITEMS
          const items = popMark();
          const s = top();
          if (!(s instanceof Set)) fail(`ADDITEMS on a ${describe(s)}, expected a set`);
          for (const x of items) (s as Set<unknown>).add(x);
          break;
        }
        case 0x91: { // FROZENSET
          const items = popMark();
          stack.push(new Set(items));
          break;
        }
        case 0x71: // BINPUT
          memo.set(u8(), top());
          break;
        case 0x72: // LONG_BINPUT
          memo.set(u32(), top());
          break;
        case 0x94: // MEMOIZE
          memo.set(memo.size, top());
          break;
        case 0x68: // BINGET
          stack.push(memoGet(u8()));
          break;
        case 0x6a: // LONG_BINGET
          stack.push(memoGet(u32()));
          break;
        case 0x63: { // GLOBAL "module\nname\n"
          const module = line();
          const name = line();
          stack.push(findGlobal(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = pop();
          const module = pop();
          if (typeof module !== "string" || typeof name !== "string") {
            fail(`STACK_GLOBAL with non-string module/name`);
          }
          stack.push(findGlobal(module as string, name as string));
          break;
        }
        case 0x52: { // REDUCE
          const args = pop();
          const callable = pop();
          stack.push(callGlobal(callable, args, "REDUCE"));
          break;
        }
        case 0x81: { // NEWOBJ: cls.__new__(cls, *args)
          const args = pop();
          const cls = pop();
          stack.push(callGlobal(cls, args, "NEWOBJ"));
          break;
        }
        case 0x62: { // BUILD: obj.__setstate__(state), applied to data only
          const state = pop();
          const obj = top();
          if (obj instanceof PickleObject) obj.state = state;
          // An OrderedDict's BUILD state is its instance __dict__ (torch puts the
          // state dict's `_metadata` there): nothing to apply to a Map.
          else if (!(obj instanceof Map)) fail(`BUILD on a ${describe(obj)} is not supported`);
          break;
        }
        case 0x51: { // BINPERSID
          const pid = pop();
          if (!options.persistentLoad) fail(`persistent id ${describe(pid)} without a loader`);
          stack.push(guarded(() => options.persistentLoad!(pid)));
          break;
        }
        default: {
          const name = OPCODE_NAMES[op] ?? "unknown";
          fail(
            `unsupported pickle opcode ${name} (0x${
              op.toString(16).padStart(2, "0")
            }) at byte ${at}`,
          );
        }
      }
    }
  } catch (e) {
    if (e instanceof PickleError) throw e;
    throw new Error(
      oneLine(`${label}: ${e instanceof Error ? e.message : String(e)} (at byte ${pos})`),
    );
  }
}

/** A short description of a pickled value's type, for error messages. */
export function describe(x: unknown): string {
  if (x === null) return "None";
  if (x === MARK) return "MARK";
  if (Array.isArray(x)) return "tuple/list";
  if (x instanceof Map) return "dict";
  if (x instanceof Set) return "set";
  if (x instanceof Uint8Array) return "bytes";
  if (x instanceof PickleObject) return x.qualname;
  if (typeof x === "object" && "qualname" in x) return `global ${(x as PickleGlobal).qualname}`;
  if (typeof x === "object" && x.constructor) return x.constructor.name;
  return typeof x;
}
