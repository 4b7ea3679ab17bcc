/**
 * "Did you mean": the known names nearest to a mistyped one, for error messages.
 *
 * @module
 */

/** Edit distance with adjacent transpositions (optimal string alignment), case-insensitive. */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  // Three rows suffice: the transposition looks two rows back.
  let before = new Array<number>(y.length + 1).fill(0);
  let previous = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const row = [i];
    for (let j = 1; j <= y.length; j++) {
      const cost = x[i - 1] === y[j - 1] ? 0 : 1;
      let d = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost);
      if (i > 1 && j > 1 && x[i - 1] === y[j - 2] && x[i - 2] === y[j - 1]) {
        d = Math.min(d, before[j - 2] + 1);
      }
      row.push(d);
    }
    before = previous;
    previous = row;
  }
  return previous[y.length];
}

/**
 * Up to `max` names of `candidates` that `name` most likely meant: names that start with it
 * (`convnext_tiny` -> `convnext_tiny_1k_224`), else those at the smallest edit distance if it
 * is within a third of the name's length (at least 2). Empty when nothing is close.
 *
 * @example
 * ```ts
 * import { nearestNames } from "./suggest.ts";
 * console.log(nearestNames("convnext_tiny", ["convnext_tiny_1k_224", "convnext_small_1k_224"]));
 * // ["convnext_tiny_1k_224"]
 * console.log(nearestNames("convnxet_base", ["convnext_base", "convnext_large"])); // ["convnext_base"]
 * console.log(nearestNames("resnet50", ["convnext_base"])); // []
 * ```
 */
export function nearestNames(
  name: string,
  candidates: readonly string[],
  max = 3,
): string[] {
  const key = name.trim().toLowerCase();
  if (key === "") return [];
  const prefixed = candidates.filter((c) => c.toLowerCase().startsWith(key));
  if (prefixed.length > 0) return prefixed.slice(0, max);
  const limit = Math.max(2, Math.floor(key.length / 3));
  const scored = candidates.map((c) => ({ c, d: editDistance(key, c) }));
  const best = Math.min(...scored.map(({ d }) => d));
  if (best > limit) return [];
  return scored.filter(({ d }) => d === best).slice(0, max).map(({ c }) => c);
}

/**
 * The clause for an error message: `; did you mean "a" or "b"?`, or `""` when no candidate
 * is close (see {@link nearestNames}).
 *
 * @example
 * ```ts
 * import { didYouMean } from "./suggest.ts";
 * const names = ["convnext_tiny", "convnext_small"];
 * console.log(`unknown architecture "convnext_tny"${didYouMean("convnext_tny", names)}`);
 * // unknown architecture "convnext_tny"; did you mean "convnext_tiny"?
 * ```
 */
export function didYouMean(name: string, candidates: readonly string[]): string {
  const near = nearestNames(name, candidates);
  if (near.length === 0) return "";
  const quoted = near.map((n) => JSON.stringify(n));
  const list = quoted.length === 1
    ? quoted[0]
    : `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}`;
  return `; did you mean ${list}?`;
}
