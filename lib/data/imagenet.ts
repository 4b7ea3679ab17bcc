/**
 * ImageNet-1k class list in the index order of the official ConvNeXt checkpoints
 * (sorted WordNet ids, as torchvision's ImageFolder orders the class folders).
 * Names come from torchvision's `_IMAGENET_CATEGORIES`; provenance in data/README.md.
 *
 * @module
 */

// A JSON import (not a file read) so the list resolves when this library is imported
// from another project or from a remote URL.
import classes from "../../data/imagenet_classes.json" with { type: "json" };

/** One ImageNet-1k class. */
export interface ImagenetClass {
  /** WordNet 3.0 noun synset id, e.g. "n01440764". */
  wnid: string;
  /** Human-readable name (torchvision's), e.g. "tench". */
  name: string;
}

const CLASSES: readonly ImagenetClass[] = Object.freeze(
  (classes as ImagenetClass[]).map((c) => Object.freeze({ wnid: c.wnid, name: c.name })),
);

/**
 * The 1000 class names, index i = logit i of the official checkpoints.
 *
 * @example
 * ```ts
 * import { imagenetClasses } from "./imagenet.ts";
 * const names = imagenetClasses();
 * console.log(names.length, names[281]); // 1000 "tabby"
 * if (names[281] !== "tabby") throw new Error(names[281]);
 * ```
 */
export function imagenetClasses(): string[] {
  return CLASSES.map((c) => c.name);
}

/**
 * The 1000 WordNet ids in index order (they are sorted, so `wnids.indexOf(folderName)`
 * is the label of an ImageFolder class folder).
 *
 * @example
 * ```ts
 * import { imagenetWnids } from "./imagenet.ts";
 * const wnids = imagenetWnids();
 * console.log(wnids[0], wnids.indexOf("n01443537")); // "n01440764" 1: goldfish's folder
 * if (wnids.indexOf("n01443537") !== 1) throw new Error("wnids out of order");
 * ```
 */
export function imagenetWnids(): string[] {
  return CLASSES.map((c) => c.wnid);
}

/**
 * The full class records (wnid + name) in index order.
 *
 * @example
 * ```ts
 * import { imagenetClassInfo } from "./imagenet.ts";
 * const { wnid, name } = imagenetClassInfo()[1];
 * console.log(wnid, name); // "n01443537" "goldfish"
 * if (name !== "goldfish") throw new Error(name);
 * ```
 */
export function imagenetClassInfo(): readonly ImagenetClass[] {
  return CLASSES;
}
