/**
 * Combining the results of a sharded evaluation (`--shard I/N` on several processes or
 * machines) into the result of the whole set.
 *
 * @module
 */

import type { EvalResult } from "./evaluate.ts";
import { selectIndices } from "./evaluate.ts";

/** Read an evaluation result JSON file written by `deno task eval --out`. */
export async function readEvalResult(path: string): Promise<EvalResult> {
  let data: EvalResult;
  try {
    data = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new Error(`${path}: cannot read the evaluation result: ${why}`);
  }
  const fields = ["model", "count", "top1", "top5", "correct1", "correct5", "datasetSize"];
  const missing = fields.filter((f) => !(f in (data ?? {})));
  if (typeof data !== "object" || data === null || missing.length > 0) {
    throw new Error(`${path}: not an evaluation result (missing ${missing.join(", ")})`);
  }
  return data;
}

function same<T>(
  results: readonly EvalResult[],
  names: readonly string[],
  what: string,
  get: (r: EvalResult) => T,
) {
  const first = JSON.stringify(get(results[0]));
  results.forEach((r, i) => {
    if (JSON.stringify(get(r)) !== first) {
      throw new Error(
        `merge: ${names[i]} has ${what} ${JSON.stringify(get(r))} but ${names[0]} has ${first}`,
      );
    }
  });
}

/**
 * Merge the results of all N shards of one evaluation. They must be the same model
 * (name and checkpoint hash), the same data (fingerprint), the same preprocessing, have
 * no `--limit`, and be the N distinct complete shards `0/N .. N-1/N`.
 *
 * The merged `elapsedSeconds` is the sum over shards (total compute time), and
 * `imagesPerSecond` is count / that sum.
 *
 * @param names labels for error messages (default `result #i`)
 * @throws Error with one line naming the offending shard
 * @example
 * ```ts
 * import { selectBackend } from "../backend/select.ts";
 * import { loadModel } from "../weights/pretrained.ts";
 * import { loadEvalDataset } from "./dataset.ts";
 * import { evaluate } from "./evaluate.ts";
 * import { mergeResults, readEvalResult } from "./merge.ts";
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * await selectBackend("cpu");
 * const model = await loadModel(`${fix}tiny10.pth`);
 * const synsets = `${fix}synsets.txt`;
 * const data = await loadEvalDataset(`${fix}flat`, { synsets, numClasses: 10 });
 * // Two shards, e.g. two machines, each saving its result; then one merged result.
 * const dir = await Deno.makeTempDir();
 * for (const index of [0, 1]) {
 *   const out = `${dir}/s${index}.json`;
 *   await evaluate(model, data, { shard: { index, count: 2 }, out, progress: { quiet: true } });
 * }
 * const all = mergeResults([await readEvalResult(`${dir}/s0.json`), await readEvalResult(`${dir}/s1.json`)]);
 * console.log(all.top1, all.count);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function mergeResults(
  results: readonly EvalResult[],
  names: readonly string[] = results.map((_, i) => `result #${i}`),
): EvalResult {
  if (results.length === 0) throw new Error("merge: no results given");
  same(results, names, "model", (r) => r.model);
  same(results, names, "checkpoint sha256", (r) => r.modelSha256);
  same(results, names, "dataset fingerprint", (r) => r.datasetFingerprint);
  same(results, names, "preprocessing", (r) => r.preprocessing);
  const n = results[0].shard?.count;
  results.forEach((r, i) => {
    if (r.shard === null || r.shard === undefined) {
      throw new Error(`merge: ${names[i]} is not a shard (run with --shard I/N)`);
    }
    if (r.limit !== null && r.limit !== undefined) {
      throw new Error(
        `merge: ${names[i]} was limited to ${r.limit} images; shards must be complete`,
      );
    }
    if (r.shard.count !== n) {
      throw new Error(
        `merge: ${names[i]} is shard ${r.shard.index}/${r.shard.count}, not of ${n} shards`,
      );
    }
    const expected = selectIndices(r.datasetSize, r.shard).length;
    if (r.total !== expected || r.count + r.errors.length !== expected) {
      throw new Error(
        `merge: ${names[i]} (shard ${r.shard.index}/${n}) covers ${
          r.count + r.errors.length
        } of its ${expected} images`,
      );
    }
  });
  const seen = new Map<number, string>();
  results.forEach((r, i) => {
    const k = r.shard!.index;
    if (seen.has(k)) {
      throw new Error(`merge: ${names[i]} and ${seen.get(k)} are both shard ${k}/${n}`);
    }
    seen.set(k, names[i]);
  });
  const absent = Array.from({ length: n! }, (_, k) => k).filter((k) => !seen.has(k));
  if (absent.length > 0) {
    throw new Error(`merge: shard(s) ${absent.map((k) => `${k}/${n}`).join(", ")} missing`);
  }

  const first = results[0];
  const count = results.reduce((s, r) => s + r.count, 0);
  const correct1 = results.reduce((s, r) => s + r.correct1, 0);
  const correct5 = results.reduce((s, r) => s + r.correct5, 0);
  const elapsedSeconds = results.reduce((s, r) => s + r.elapsedSeconds, 0);
  const all = results.every((r) => Array.isArray(r.predictions));
  return {
    ...first,
    count,
    top1: count ? (100 * correct1) / count : 0,
    top5: count ? (100 * correct5) / count : 0,
    correct1,
    correct5,
    shard: null,
    limit: null,
    total: first.datasetSize,
    backend: [...new Set(results.map((r) => r.backend))].join(","),
    elapsedSeconds,
    imagesPerSecond: elapsedSeconds > 0 ? count / elapsedSeconds : 0,
    resumed: results.reduce((s, r) => s + (r.resumed ?? 0), 0),
    errors: results.flatMap((r) => r.errors).sort((a, b) => a.index - b.index),
    predictions: all
      ? results.flatMap((r) => r.predictions!).sort((a, b) => a.index - b.index)
      : undefined,
  };
}
