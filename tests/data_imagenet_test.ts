import assert from "node:assert/strict";
import { imagenetClasses, imagenetClassInfo, imagenetWnids } from "../lib/data/imagenet.ts";

Deno.test("1000 unique class names and WordNet ids, wnids sorted (checkpoint order)", () => {
  const names = imagenetClasses();
  const wnids = imagenetWnids();
  assert.equal(names.length, 1000);
  assert.equal(new Set(names).size, 1000);
  assert.equal(wnids.length, 1000);
  assert.equal(new Set(wnids).size, 1000);
  assert.deepEqual([...wnids].sort(), wnids);
  for (const w of wnids) assert.match(w, /^n\d{8}$/);
});

Deno.test("known indices match torchvision's list and ImageNet's synsets", () => {
  // Values from torchvision/models/_meta.py (Debian python3-torchvision 0.14) and
  // the ILSVRC2012 synset list.
  const info = imagenetClassInfo();
  assert.deepEqual(info[0], { wnid: "n01440764", name: "tench" });
  assert.deepEqual(info[1], { wnid: "n01443537", name: "goldfish" });
  assert.deepEqual(info[281], { wnid: "n02123045", name: "tabby" });
  assert.deepEqual(info[285], { wnid: "n02124075", name: "Egyptian cat" });
  assert.deepEqual(info[812], { wnid: "n04266014", name: "space shuttle" });
  assert.deepEqual(info[967], { wnid: "n07920052", name: "espresso" });
  assert.deepEqual(info[999], { wnid: "n15075141", name: "toilet tissue" });
});

Deno.test("returned arrays are copies", () => {
  const a = imagenetClasses();
  a[0] = "changed";
  assert.equal(imagenetClasses()[0], "tench");
  assert.ok(Object.isFrozen(imagenetClassInfo()));
});
