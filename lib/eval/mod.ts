/**
 * ImageNet evaluation: dataset listing (ImageFolder and flat layouts), the evaluation
 * loop (sharded, resumable), shard merging and the accuracy table.
 *
 * @example
 * ```ts
 * import { evaluate, loadEvalDataset } from "./mod.ts";
 * import { selectBackend } from "../backend/select.ts";
 * import { loadModel } from "../weights/pretrained.ts";
 * // The real run: loadModel("convnext_tiny_1k_224") and the ImageNet validation folder; here
 * // the small evaluation fixture of the tests (10 classes, a few images).
 * const fix = new URL("../../tests/fixtures/eval/", import.meta.url).pathname;
 * await selectBackend("cpu");
 * const model = await loadModel(`${fix}tiny10.pth`);
 * const synsets = `${fix}synsets.txt`;
 * const data = await loadEvalDataset(`${fix}flat`, { synsets, numClasses: 10 });
 * const out = `${await Deno.makeTempDir()}/result.json`; // progress saved, a rerun resumes
 * const result = await evaluate(model, data, { out, progress: { quiet: true } });
 * console.log(result.top1);
 * ```
 *
 * @module
 */

export {
  datasetFingerprint,
  type EvalDataset,
  type EvalDatasetOptions,
  type EvalSample,
  loadEvalDataset,
  parseSolution,
  parseSynsets,
  readSynsets,
} from "./dataset.ts";
export {
  EvalAbortedError,
  type EvalBatchInfo,
  type EvalError,
  type EvalPrediction,
  type EvalResult,
  evaluate,
  type EvaluateOptions,
  evalWorkerCount,
  partialPath,
  selectIndices,
} from "./evaluate.ts";
export {
  type EnvReader,
  parseShard,
  type ResolvedShard,
  resolveShard,
  type Shard,
  shardFromEnv,
} from "./shard.ts";
export { mergeResults, readEvalResult } from "./merge.ts";
export { accuracyTable, IMAGENET_VAL_SIZE, partialReason } from "./table.ts";
