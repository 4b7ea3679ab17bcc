/**
 * Tests of lib/weights/zoo.ts: coverage of the architectures, naming rules, the
 * structure the official file names encode, URLs and lookups.
 */

import assert from "node:assert/strict";
import { ARCHITECTURE_NAMES } from "../lib/model/variants.ts";
import {
  DEFAULT_BASE_URL,
  formatZooTable,
  getZooEntry,
  isZooName,
  labels22kUrl,
  ZOO,
  ZOO_NAMES,
  zooBaseUrl,
  zooUrl,
} from "../lib/weights/zoo.ts";

function withBaseEnv(value: string | undefined, fn: () => void): void {
  const saved = Deno.env.get("CONVNEXT_BASE_URL");
  try {
    if (value === undefined) Deno.env.delete("CONVNEXT_BASE_URL");
    else Deno.env.set("CONVNEXT_BASE_URL", value);
    fn();
  } finally {
    if (saved === undefined) Deno.env.delete("CONVNEXT_BASE_URL");
    else Deno.env.set("CONVNEXT_BASE_URL", saved);
  }
}

Deno.test("zoo: every architecture has at least one checkpoint", () => {
  for (const arch of ARCHITECTURE_NAMES) {
    assert.ok(ZOO.some((e) => e.architecture === arch), `no checkpoint for ${arch}`);
  }
});

Deno.test("zoo: names and files are unique", () => {
  assert.equal(new Set(ZOO.map((e) => e.name)).size, ZOO.length);
  assert.equal(new Set(ZOO.map((e) => e.file)).size, ZOO.length);
  assert.deepEqual([...ZOO_NAMES], ZOO.map((e) => e.name));
});

Deno.test("zoo: counts per group match the issue's list", () => {
  const count = (f: (e: (typeof ZOO)[number]) => boolean) => ZOO.filter(f).length;
  const iso = (e: (typeof ZOO)[number]) => e.architecture.startsWith("convnext_iso_");
  assert.equal(count((e) => e.pretraining === "1k" && !iso(e) && e.resolution === 224), 4);
  assert.equal(count((e) => e.pretraining === "1k" && !iso(e) && e.resolution === 384), 2);
  assert.equal(count((e) => e.pretraining === "22k"), 5);
  assert.equal(count((e) => e.numClasses === 21841), 5);
  assert.equal(count((e) => e.pretraining === "22k->1k" && e.resolution === 224), 5);
  assert.equal(count((e) => e.pretraining === "22k->1k" && e.resolution === 384), 5);
  assert.equal(count(iso), 3);
  assert.equal(ZOO.length, 24);
});

Deno.test("zoo: each name spells out its architecture, data and resolution", () => {
  for (const e of ZOO) {
    // Official pattern: convnext_<size>_<data>_<res>[_ema].pth
    const m = e.file.match(/^(convnext_(?:iso_)?[a-z]+)_(1k|22k|22k_1k)_(224|384)(_ema)?\.pth$/);
    assert.ok(m, `unexpected file name ${e.file}`);
    const [, arch, data, res, ema] = m;
    assert.equal(e.architecture, arch, e.name);
    assert.equal(e.resolution, Number(res), e.name);
    assert.equal(e.pretraining, { "1k": "1k", "22k": "22k", "22k_1k": "22k->1k" }[data], e.name);
    assert.equal(e.numClasses, data === "22k" ? 21841 : 1000, e.name);
    assert.equal(e.ema, ema !== undefined, e.name);
    assert.equal(e.name, e.file.replace(/(_ema)?\.pth$/, ""));
  }
});

Deno.test("zoo: accuracies are published exactly for the ImageNet-1K heads", () => {
  for (const e of ZOO) {
    if (e.numClasses === 21841) {
      assert.equal(e.top1, null, e.name);
      assert.equal(e.top5, null, e.name);
    } else {
      assert.ok(e.top1 !== null && e.top1 > 70 && e.top1 < 90, `${e.name}: top1 ${e.top1}`);
      assert.ok(e.top5 === null || e.top5 > e.top1, e.name);
      assert.ok(e.paramsM !== null && e.gflops !== null, e.name);
    }
  }
  // Within one architecture and data, 384 is more accurate than 224 in the README.
  for (const e of ZOO.filter((x) => x.resolution === 384)) {
    const low = ZOO.find((x) =>
      x.architecture === e.architecture && x.pretraining === e.pretraining && x.resolution === 224
    );
    if (low) assert.ok(e.top1! > low.top1!, `${e.name} vs ${low.name}`);
  }
});

Deno.test("zoo: URLs default to the official host, one slash before the file", () => {
  withBaseEnv(undefined, () => {
    assert.equal(DEFAULT_BASE_URL, "https://dl.fbaipublicfiles.com/convnext/");
    for (const e of ZOO) {
      const url = new URL(zooUrl(e));
      assert.equal(url.href, `${DEFAULT_BASE_URL}${e.file}`);
      assert.equal(url.protocol, "https:");
      assert.ok(!url.pathname.includes("//"), url.href);
    }
    assert.equal(labels22kUrl(), "https://dl.fbaipublicfiles.com/convnext/label_to_words.json");
  });
});

Deno.test("zoo: CONVNEXT_BASE_URL replaces the base, with exactly one slash", () => {
  const e = getZooEntry("convnext_iso_large_1k_224");
  for (
    const base of [
      "http://127.0.0.1:8000/m",
      "http://127.0.0.1:8000/m/",
      "http://127.0.0.1:8000/m///",
    ]
  ) {
    withBaseEnv(base, () => {
      assert.equal(zooUrl(e), "http://127.0.0.1:8000/m/convnext_iso_large_1k_224_ema.pth");
      assert.equal(zooBaseUrl(), "http://127.0.0.1:8000/m/");
    });
  }
  withBaseEnv("", () => assert.equal(zooBaseUrl(), DEFAULT_BASE_URL));
  withBaseEnv(
    "not a url",
    () => assert.throws(() => zooUrl(e), /^Error: CONVNEXT_BASE_URL: expected/),
  );
  withBaseEnv("ftp://x/y", () => assert.throws(() => zooUrl(e), /CONVNEXT_BASE_URL: expected/));
  assert.equal(
    zooUrl(e, "file:///srv/mirror"),
    "file:///srv/mirror/convnext_iso_large_1k_224_ema.pth",
  );
});

Deno.test("getZooEntry: accepts name, file stem and file name", () => {
  const e = getZooEntry("convnext_xlarge_22k_1k_384");
  assert.equal(e.file, "convnext_xlarge_22k_1k_384_ema.pth");
  assert.equal(getZooEntry("convnext_xlarge_22k_1k_384_ema"), e);
  assert.equal(getZooEntry("convnext_xlarge_22k_1k_384_ema.pth"), e);
  assert.equal(getZooEntry(" CONVNEXT_XLARGE_22K_1K_384 "), e);
  assert.equal(getZooEntry("convnext_base_1k_384").file, "convnext_base_1k_384.pth");
  assert.ok(isZooName("convnext_large_22k_224"));
  assert.ok(!isZooName("convnext_tiny"));
});

Deno.test("getZooEntry: an unknown name is a one-line error listing every name", () => {
  assert.throws(
    () => getZooEntry("convnext_huge_1k_224"),
    (err: Error) => {
      assert.match(err.message, /^zoo: unknown model "convnext_huge_1k_224"; expected one of: /);
      for (const name of ZOO_NAMES) assert.ok(err.message.includes(name), name);
      assert.ok(!err.message.includes("\n"));
      return true;
    },
  );
});

Deno.test("formatZooTable: a header, a rule and one row per checkpoint", () => {
  withBaseEnv(undefined, () => {
    const lines = formatZooTable().split("\n");
    assert.equal(lines.length, ZOO.length + 2);
    assert.match(
      lines[0],
      /^name\s+architecture\s+res\s+classes\s+pretrain\s+top-1\s+params\s+FLOPs\s+url$/,
    );
    assert.match(lines[1], /^-+( +-+)+$/);
    ZOO.forEach((e, i) => {
      const row = lines[i + 2];
      assert.ok(row.startsWith(e.name + " "), row);
      assert.ok(row.endsWith(zooUrl(e)), row);
      assert.ok(row.includes(e.top1 === null ? " - " : ` ${e.top1.toFixed(1)} `), row);
    });
    // Columns line up: every URL starts at the same column.
    const urlCol = lines[0].indexOf("url");
    for (const row of lines.slice(2)) assert.equal(row.indexOf("https://"), urlCol, row);
  });
});
