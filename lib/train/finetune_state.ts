/**
 * The state of a `finetune` (./finetune.ts) run as its checkpoint keeps it: the JSON part (settings,
 * progress, metrics, best epoch) and the tensors (weights, AdamW moments, EMA averages),
 * with the checks that make a resume continue the very same run.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import { OptionError } from "../util/errors.ts";
import { type Checkpoint, type CheckpointTensor, loadCheckpoint } from "./checkpoint.ts";
import type { ModelEma } from "./ema.ts";
import type { AdamW, AdamWState } from "./optimizer.ts";
import type { ValidationReport } from "./report.ts";
import type { EpochMetrics, FinetuneResult } from "./finetune.ts";
import type { RunPlan } from "./finetune_setup.ts";

/** What a checkpoint's state.json holds. */
export interface RunState {
  /** Settings that must match on resume. */
  config: Record<string, unknown>;
  /** Completed epochs. */
  epoch: number;
  /** Optimizer steps done. */
  step: number;
  /** Metrics of every completed epoch. */
  metrics: EpochMetrics[];
  /** The best epoch so far. */
  best: FinetuneResult["best"];
  /** The best epoch's validation report. */
  report: ValidationReport | null;
}

/** The state of a run that starts at epoch 1. */
export function initialState(config: Record<string, unknown>): RunState {
  return { config, epoch: 0, step: 0, metrics: [], best: null, report: null };
}

/**
 * The checkpoint a `resume` continues (undefined, and a log line, when there is none yet).
 *
 * @throws OptionError naming `resume` when the checkpoint was made with other settings.
 */
export async function loadResumeCheckpoint(
  plan: RunPlan,
  log: (line: string) => void,
): Promise<Checkpoint<RunState> | undefined> {
  const dir = plan.checkpointDir;
  const checkpoint = await loadCheckpoint<RunState>(dir);
  if (!checkpoint) {
    log(`resume: no checkpoint in ${dir}; starting from epoch 1`);
    return undefined;
  }
  const saved = checkpoint.state.config;
  const now = plan.config;
  const diff = Object.keys({ ...saved, ...now }).filter((k) =>
    JSON.stringify(saved[k]) !== JSON.stringify(now[k])
  );
  if (diff.length > 0) {
    const changes = diff.map((k) =>
      `${k} ${JSON.stringify(saved[k])} (now ${JSON.stringify(now[k])})`
    );
    throw new OptionError(
      "resume",
      (name) =>
        `finetune: ${name("resume")}: the checkpoint in ${dir} was made with other settings: ${
          changes.join(", ")
        }`,
    );
  }
  return checkpoint;
}

/** Every tensor of the run's state, as the checkpoint stores them. */
export async function collectTensors(
  model: tf.LayersModel,
  optimizer: AdamW,
  ema: ModelEma | undefined,
): Promise<CheckpointTensor[]> {
  const out: CheckpointTensor[] = [];
  for (const w of model.weights) {
    out.push({
      group: "model",
      name: w.originalName,
      shape: w.shape as number[],
      data: await w.read().data() as Float32Array,
    });
  }
  const s = await optimizer.getState();
  for (const slot of s.slots) {
    out.push({ group: "adam_m", name: slot.name, shape: slot.shape, data: slot.m });
    out.push({ group: "adam_v", name: slot.name, shape: slot.shape, data: slot.v });
  }
  for (const e of await ema?.getState() ?? []) {
    out.push({ group: "ema", name: e.name, shape: e.shape, data: e.data });
  }
  return out;
}

/**
 * Puts a checkpoint's tensors back: the weights, the optimizer moments at `step`, the EMA.
 *
 * @throws OptionError naming `resume` when a weight of the model is missing or differs.
 */
export function restoreTensors(
  model: tf.LayersModel,
  optimizer: AdamW,
  ema: ModelEma | undefined,
  tensors: CheckpointTensor[],
  step: number,
): void {
  const group = (g: string) =>
    new Map(tensors.filter((t) => t.group === g).map((t) => [t.name, t]));
  const weights = group("model");
  for (const w of model.weights) {
    const t = weights.get(w.originalName);
    if (!t || t.shape.join() !== w.shape.join()) {
      throw new OptionError(
        "resume",
        (name) =>
          `finetune: ${
            name("resume")
          }: the checkpoint has no weight "${w.originalName}" of shape [${w.shape}]`,
      );
    }
    const value = tf.tensor(t.data, t.shape, "float32");
    w.write(value);
    value.dispose();
  }
  const m = group("adam_m");
  const v = group("adam_v");
  const state: AdamWState = {
    step,
    slots: [...m.values()].map((t) => ({
      name: t.name,
      shape: t.shape,
      m: t.data,
      v: v.get(t.name)?.data ?? new Float32Array(0),
    })),
  };
  optimizer.setState(state);
  if (ema) {
    ema.setState(
      [...group("ema").values()].map((t) => ({ name: t.name, shape: t.shape, data: t.data })),
    );
  }
}
