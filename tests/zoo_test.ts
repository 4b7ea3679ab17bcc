/**
 * Tests of lib/weights/zoo.ts: coverage of the architectures, naming rules, the
 * structure the official file names encode, URLs, licenses, preprocessing and lookups.
 * References: the READMEs of facebookresearch/ConvNeXt and ConvNeXt-V2, timm's results csv,
 * and the official parameter counts (tests/model_test.ts).
 */

import assert from "node:assert/strict";
import { ARCHITECTURE_NAMES, ARCHITECTURES } from "../lib/model/variants.ts";
import { expectedWeightShapes } from "../lib/weights/remap.ts";
import {
  DEFAULT_BASE_URL,
  formatZooTable,
  getZooEntry,
  isZooName,
  labels22kUrl,
  licenseNotice,
  ZOO,
  ZOO_NAMES,
  zooBaseUrl,
  zooPreprocessing,
  zooUrl,
} from "../lib/weights/zoo.ts";

type Entry = (typeof ZOO)[number];
const isV1 = (e: Entry) => e.license === "MIT";
const isV2 = (e: Entry) => e.architecture.startsWith("convnextv2_");
const isTimm = (e: Entry) => e.path.startsWith("https://huggingface.co/timm/");

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

Deno.test("zoo: every entry is official V1, V2 or timm's, and licensed as its source says", () => {
  for (const e of ZOO) {
    assert.equal([isV1(e), isV2(e), isTimm(e)].filter(Boolean).length, 1, e.name);
    if (isV2(e)) assert.equal(e.license, "CC-BY-NC-4.0", e.name);
    if (isTimm(e)) assert.equal(e.license, "Apache-2.0", e.name);
    assert.equal(licenseNotice(e) === undefined, e.license === "MIT", e.name);
  }
  assert.match(licenseNotice(getZooEntry("convnextv2_huge_22k_512"))!, /non-commercial/);
});

Deno.test("zoo: ConvNeXt V2 and timm groups match the issue's list", () => {
  const count = (f: (e: Entry) => boolean) => ZOO.filter(f).length;
  assert.equal(count((e) => isV2(e) && e.pretraining === "1k"), 8);
  assert.equal(count((e) => isV2(e) && e.pretraining === "22k->1k"), 10);
  assert.equal(count((e) => isV2(e) && e.pretraining === "fcmae"), 8);
  assert.equal(count((e) => e.numClasses === 0), 8);
  assert.equal(count(isTimm), 5);
  for (const size of ["atto", "femto", "pico", "nano", "tiny", "base", "large", "huge"]) {
    assert.ok(isZooName(`convnextv2_${size}_1k_224`), size);
    assert.ok(isZooName(`convnextv2_${size}_fcmae`), size);
  }
});

Deno.test("zoo: V2 and timm entries point at the published files", () => {
  withBaseEnv(undefined, () => {
    const base = "https://dl.fbaipublicfiles.com/convnext/convnextv2";
    assert.equal(
      zooUrl(getZooEntry("convnextv2_atto_1k_224")),
      `${base}/im1k/convnextv2_atto_1k_224_ema.pt`,
    );
    assert.equal(
      zooUrl(getZooEntry("convnextv2_huge_22k_512")),
      `${base}/im22k/convnextv2_huge_22k_512_ema.pt`,
    );
    assert.equal(
      zooUrl(getZooEntry("convnextv2_base_fcmae")),
      `${base}/pt_only/convnextv2_base_1k_224_fcmae.pt`,
    );
    assert.equal(
      zooUrl(getZooEntry("convnext_atto_1k_224")),
      "https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors",
    );
  });
  // A mirror replaces the official base, folders kept; the Hub's URLs stay.
  const mirror = "file:///srv/m";
  assert.equal(
    zooUrl(getZooEntry("convnextv2_nano_22k_384"), mirror),
    "file:///srv/m/convnextv2/im22k/convnextv2_nano_22k_384_ema.pt",
  );
  assert.match(zooUrl(getZooEntry("convnext_nano_12k_1k_224"), mirror), /^https:\/\/huggingface/);
  // The 22k-pretrained V2 files carry 1k heads; FCMAE has no head; the README's numbers.
  const v2 = getZooEntry("convnextv2_huge_22k_512");
  assert.deepEqual([v2.numClasses, v2.resolution, v2.top1, v2.ema], [1000, 512, 88.9, true]);
  const fcmae = getZooEntry("convnextv2_tiny_fcmae");
  assert.deepEqual([fcmae.numClasses, fcmae.top1, fcmae.ema], [0, null, false]);
  assert.equal(getZooEntry("convnextv2_atto_1k_224").top1, 76.7);
  assert.equal(getZooEntry("convnext_atto_1k_224").top1, 75.672); // timm's results csv
  assert.equal(getZooEntry("convnext_atto_1k_224").file, "convnext_atto.d2_in1k.safetensors");
});

Deno.test("zoo: parameter counts agree with the architectures' (published rounding, 1%)", () => {
  for (const e of ZOO.filter((x) => !isV1(x))) {
    const shapes = expectedWeightShapes(ARCHITECTURES[e.architecture], e.numClasses || 1000);
    const count = [...shapes.values()].reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
    assert.ok(
      Math.abs(e.paramsM! * 1e6 - count) / count < 0.01,
      `${e.name}: ${e.paramsM}M vs ${count}`,
    );
  }
});

Deno.test("zoo: preprocessing per checkpoint as its evaluation (crop below 384, warp from 384)", () => {
  for (const e of ZOO) {
    const p = zooPreprocessing(e);
    assert.equal(p.size, e.resolution, e.name);
    assert.equal(p.mode, e.resolution < 384 ? "resize-crop" : "warp", e.name);
    assert.equal(p.cropPct, e.resolution < 384 ? e.cropPct : 1, e.name);
    if (!isTimm(e)) assert.equal(e.cropPct, e.resolution < 384 ? 0.875 : 1, e.name);
  }
  assert.equal(zooPreprocessing(getZooEntry("convnext_nano_1k_224")).cropPct, 0.95);
  assert.equal(zooPreprocessing(getZooEntry("convnextv2_huge_22k_512")).mode, "warp");
});

Deno.test("zoo: counts per group match the issue's list", () => {
  const count = (f: (e: Entry) => boolean) => ZOO.filter((e) => isV1(e) && f(e)).length;
  const iso = (e: Entry) => e.architecture.startsWith("convnext_iso_");
  assert.equal(count((e) => e.pretraining === "1k" && !iso(e) && e.resolution === 224), 4);
  assert.equal(count((e) => e.pretraining === "1k" && !iso(e) && e.resolution === 384), 2);
  assert.equal(count((e) => e.pretraining === "22k"), 5);
  assert.equal(count((e) => e.numClasses === 21841), 5);
  assert.equal(count((e) => e.pretraining === "22k->1k" && e.resolution === 224), 5);
  assert.equal(count((e) => e.pretraining === "22k->1k" && e.resolution === 384), 5);
  assert.equal(count(iso), 3);
  assert.equal(count(() => true), 24);
  assert.equal(ZOO.length, 24 + 26 + 5);
});

Deno.test("zoo: each name spells out its architecture, data and resolution", () => {
  for (const e of ZOO.filter(isV1)) {
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
  for (const e of ZOO.filter(isV2)) {
    // Official V2 pattern: convnextv2_<size>_<1k|22k>_<res>_ema.pt, or ..._1k_224_fcmae.pt.
    const m = e.file.match(/^(convnextv2_[a-z]+)_(1k|22k)_(224|384|512)_(ema|fcmae)\.pt$/);
    assert.ok(m, `unexpected file name ${e.file}`);
    const [, arch, data, res, kind] = m;
    assert.equal(e.architecture, arch, e.name);
    assert.equal(e.resolution, Number(res), e.name);
    assert.equal(e.path, `convnextv2/${kind === "fcmae" ? "pt_only" : `im${data}`}/${e.file}`);
    assert.equal(e.name, kind === "fcmae" ? `${arch}_fcmae` : `${arch}_${data}_${res}`);
    assert.equal(e.pretraining, kind === "fcmae" ? "fcmae" : data === "22k" ? "22k->1k" : "1k");
  }
  for (const e of ZOO.filter(isTimm)) {
    const timmName = e.file.replace(/\.safetensors$/, "");
    assert.ok(timmName.startsWith(`${e.architecture}.`), e.name);
    assert.equal(e.path, `https://huggingface.co/timm/${timmName}/resolve/main/model.safetensors`);
  }
});

Deno.test("zoo: ImageNet-1K heads carry plausible accuracies (V1 checked exactly in zoo_published_test.ts)", () => {
  for (const e of ZOO) {
    if (e.numClasses !== 1000) {
      assert.equal(e.top1, null, e.name);
      assert.equal(e.top5, null, e.name);
    } else {
      assert.ok(e.top1 !== null && e.top1 > 70 && e.top1 < 90, `${e.name}: top1 ${e.top1}`);
      assert.ok(e.top5 === null || e.top5 > e.top1, e.name);
      // timm's results list no FLOPs.
      assert.ok(e.paramsM !== null && (e.gflops !== null) !== isTimm(e), e.name);
    }
  }
  // Within one architecture and data, a higher resolution is more accurate in the READMEs.
  for (const e of ZOO.filter((x) => x.resolution > 224)) {
    const lower = ZOO.filter((x) =>
      x.architecture === e.architecture && x.pretraining === e.pretraining &&
      x.resolution < e.resolution
    );
    for (const low of lower) assert.ok(e.top1! > low.top1!, `${e.name} vs ${low.name}`);
  }
});

Deno.test("zoo: URLs default to the official host, one slash before the file", () => {
  withBaseEnv(undefined, () => {
    assert.equal(DEFAULT_BASE_URL, "https://dl.fbaipublicfiles.com/convnext/");
    for (const e of ZOO) {
      const url = new URL(zooUrl(e));
      assert.equal(url.href, isTimm(e) ? e.path : `${DEFAULT_BASE_URL}${e.path}`);
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
  const v2 = getZooEntry("convnextv2_tiny_1k_224");
  assert.equal(getZooEntry("convnextv2_tiny_1k_224_ema.pt"), v2);
  assert.equal(getZooEntry("convnextv2_tiny_1k_224_ema"), v2);
  assert.equal(getZooEntry("convnextv2_tiny_1k_224_fcmae"), getZooEntry("convnextv2_tiny_fcmae"));
  assert.equal(getZooEntry("convnext_atto.d2_in1k"), getZooEntry("convnext_atto_1k_224"));
  assert.ok(isZooName("convnext_large_22k_224"));
  assert.ok(!isZooName("convnext_tiny"));
});

Deno.test("getZooEntry: an unknown name is a one-line error: did you mean, or every name", () => {
  assert.throws(
    () => getZooEntry("convnext_huge_1k_224"),
    /zoo: unknown model "convnext_huge_1k_224"; did you mean "convnextv2_huge_1k_224"\?$/,
  );
  assert.throws(
    () => getZooEntry("resnet50_1k_224"),
    (err: Error) => {
      assert.match(err.message, /^zoo: unknown model "resnet50_1k_224"; expected one of: /);
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
      /^name\s+architecture\s+res\s+classes\s+pretrain\s+top-1\s+params\s+FLOPs\s+license\s+url$/,
    );
    assert.match(lines[1], /^-+( +-+)+$/);
    ZOO.forEach((e, i) => {
      const row = lines[i + 2];
      assert.ok(row.startsWith(e.name + " "), row);
      assert.ok(row.endsWith(zooUrl(e)), row);
      assert.ok(row.includes(e.top1 === null ? " - " : ` ${e.top1.toFixed(1)} `), row);
      assert.ok(row.includes(` ${e.license} `), row);
    });
    // Columns line up: every URL starts at the same column.
    const urlCol = lines[0].indexOf("url");
    for (const row of lines.slice(2)) assert.equal(row.indexOf("https://"), urlCol, row);
  });
});
