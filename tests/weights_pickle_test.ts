// Safe pickle reader: plain data of protocols 2..5 as Python's pickle.dumps wrote it
// (tests/fixtures/checkpoints/pickles.json), and refusals naming the global or opcode.

import assert from "node:assert/strict";
import { PickleObject, unpickle } from "../lib/weights/pickle.ts";

const DIR = new URL("./fixtures/checkpoints/", import.meta.url);

/** Reader output as JSON-like data, in the form the Python script wrote its expectations. */
function toPlain(x: unknown): unknown {
  if (x instanceof Map) return Object.fromEntries([...x].map(([k, v]) => [String(k), toPlain(v)]));
  if (x instanceof Set) return [...x].map(toPlain).sort((a, b) => (a as number) - (b as number));
  if (x instanceof Uint8Array) return [...x];
  if (Array.isArray(x)) return x.map(toPlain);
  if (typeof x === "bigint") return x.toString();
  return x;
}

const hex = (s: string) => new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
const ascii = (s: string) => new Uint8Array([...s].map((c) => c.charCodeAt(0)));

const cases = JSON.parse(await Deno.readTextFile(new URL("pickles.json", DIR))) as {
  protocol: number;
  hex: string;
  expect: unknown;
}[];

for (const c of cases) {
  Deno.test(`pickle: protocol ${c.protocol} plain data round-trips`, () => {
    const got = unpickle(hex(c.hex)) as Map<string, unknown>;
    assert.deepEqual(toPlain(got), c.expect);
    // Memoised objects stay shared, as in Python.
    assert.equal(got.get("shared1"), got.get("shared2"));
  });
}

Deno.test("pickle: GLOBAL os system is refused by name", () => {
  // pickle of os.system("echo pwned"): PROTO 2, GLOBAL 'os\nsystem\n', BINUNICODE, TUPLE1, REDUCE, STOP
  const evil = ascii("\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.");
  assert.throws(
    () => unpickle(evil, { label: "evil.pkl" }),
    /evil\.pkl: refusing to load global os\.system \("os system"\)/,
  );
});

Deno.test("pickle: STACK_GLOBAL builtins.eval is refused by name", () => {
  // protocol 4: SHORT_BINUNICODE 'builtins', SHORT_BINUNICODE 'eval', STACK_GLOBAL
  const evil = ascii("\x80\x04\x8c\x08builtins\x8c\x04eval\x93.");
  assert.throws(() => unpickle(evil), /refusing to load global builtins\.eval/);
});

Deno.test("pickle: only whitelisted callables run; non-callable globals are refused", () => {
  const calls: unknown[] = [];
  const globals = new Map([
    ["m.f", { qualname: "m.f", call: (a: readonly unknown[]) => (calls.push(a), "made") }],
    ["m.T", { qualname: "m.T" }],
  ]);
  // f(1) -> "made"
  assert.equal(unpickle(ascii("\x80\x02cm\nf\nK\x01\x85R."), { globals }), "made");
  assert.deepEqual(calls, [[1]]);
  // T(1): a type marker is not callable
  assert.throws(
    () => unpickle(ascii("\x80\x02cm\nT\nK\x01\x85R."), { globals }),
    /REDUCE of non-callable global m\.T/,
  );
  // REDUCE of a plain value
  assert.throws(
    () => unpickle(ascii("\x80\x02K\x01K\x01\x85R.")),
    /REDUCE of a non-global callable \(number\)/,
  );
});

Deno.test("pickle: BUILD fills a whitelisted placeholder object, nothing else", () => {
  const globals = new Map([["argparse.Namespace", {
    qualname: "argparse.Namespace",
    call: (a: readonly unknown[]) => new PickleObject("argparse.Namespace", a),
  }]]);
  // Namespace.__new__() then BUILD {"lr": 1}: PROTO 2, GLOBAL, EMPTY_TUPLE, NEWOBJ, EMPTY_DICT, X 'lr', K 1, SETITEM, BUILD
  const ns = unpickle(ascii("\x80\x02cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrK\x01sb."), {
    globals,
  });
  assert.ok(ns instanceof PickleObject);
  assert.deepEqual(toPlain((ns as PickleObject).state), { lr: 1 });
  // BUILD on a list is refused
  assert.throws(() => unpickle(ascii("\x80\x02]}b.")), /BUILD on a tuple\/list is not supported/);
});

Deno.test("pickle: unsupported opcodes, persistent ids and truncation are named", () => {
  // INST (protocol 0 class instantiation)
  assert.throws(
    () => unpickle(ascii("\x80\x02(ios\nsystem\n.")),
    /unsupported pickle opcode INST \(0x69\) at byte 3/,
  );
  // EXT1
  assert.throws(
    () => unpickle(ascii("\x80\x02\x82\x01.")),
    /unsupported pickle opcode EXT1 \(0x82\)/,
  );
  // an undefined byte
  assert.throws(
    () => unpickle(ascii("\x80\x02\xff.")),
    /unsupported pickle opcode unknown \(0xff\)/,
  );
  // BINPERSID without a loader
  assert.throws(() => unpickle(ascii("\x80\x02K\x01Q.")), /persistent id number without a loader/);
  // no STOP
  assert.throws(() => unpickle(ascii("\x80\x02K\x01")), /truncated pickle \(no STOP opcode\)/);
  // BINUNICODE longer than the data
  assert.throws(() => unpickle(ascii("\x80\x02X\xff\x00\x00\x00ab.")), /truncated pickle/);
  // undefined memo key
  assert.throws(() => unpickle(ascii("\x80\x02h\x05.")), /memo key 5 is not defined/);
});

Deno.test("pickle: persistent ids go to the loader", () => {
  const got = unpickle(ascii("\x80\x02X\x01\x00\x00\x00kQ."), {
    persistentLoad: (pid) => ({ pid }),
  });
  assert.deepEqual(got, { pid: "k" });
});
