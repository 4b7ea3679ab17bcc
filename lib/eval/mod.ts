/**
 * ImageNet evaluation: dataset listing (ImageFolder and flat layouts), the evaluation
 * loop (sharded, resumable), shard merging and the accuracy table.
 *
 * @example
 * ```ts
 * import { evaluate, loadEvalDataset } from "./lib/eval/mod.ts";
 * const data = await loadEvalDataset("/data/imagenet/val", { numClasses: 1000 });
 * const result = await evaluate(model, data, { out: "result.json" });
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
  parseShard,
  partialPath,
  selectIndices,
  type Shard,
} from "./evaluate.ts";
export { mergeResults, readEvalResult } from "./merge.ts";
export { accuracyTable, IMAGENET_VAL_SIZE, partialReason } from "./table.ts";
