import assert from "node:assert/strict";
import { didYouMean, editDistance, nearestNames } from "../lib/util/suggest.ts";

Deno.test("editDistance: hand-computed distances, transpositions count once", () => {
  assert.equal(editDistance("", ""), 0);
  assert.equal(editDistance("abc", ""), 3);
  assert.equal(editDistance("kitten", "sitting"), 3); // the textbook case
  assert.equal(editDistance("convnxet", "convnext"), 1); // one transposition
  assert.equal(editDistance("ConvNeXt", "convnext"), 0); // case-insensitive
  assert.equal(editDistance("ca", "abc"), 3); // optimal string alignment, not full Damerau (2)
});

Deno.test("nearestNames: prefix matches first, then close names, nothing for far ones", () => {
  const zoo = ["convnext_tiny_1k_224", "convnext_tiny_22k_224", "convnext_small_1k_224"];
  assert.deepEqual(nearestNames("convnext_tiny", zoo), zoo.slice(0, 2));
  assert.deepEqual(nearestNames("convnext_smal_1k_224", zoo), ["convnext_small_1k_224"]);
  assert.deepEqual(nearestNames("resnet50", zoo), []);
  assert.deepEqual(nearestNames("", zoo), []);
  assert.deepEqual(nearestNames("c", zoo, 1), ["convnext_tiny_1k_224"]);
});

Deno.test("didYouMean: the clause, or nothing", () => {
  const names = ["convnext_tiny", "convnext_small", "convnext_base"];
  assert.equal(didYouMean("convnext_tny", names), '; did you mean "convnext_tiny"?');
  assert.equal(
    didYouMean("convnext_", names),
    '; did you mean "convnext_tiny", "convnext_small" or "convnext_base"?',
  );
  assert.equal(didYouMean("vit_b_16", names), "");
});
