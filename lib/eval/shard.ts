/**
 * Shards of an evaluation: `--shard I/N`, or the index and count a job scheduler gives each
 * task of an array job:
 *
 * - SLURM job arrays (`sbatch --array=0-7`): `SLURM_ARRAY_TASK_ID` and
 *   `SLURM_ARRAY_TASK_COUNT`; when `SLURM_ARRAY_TASK_MIN` is set, the index is
 *   `ID - MIN` (so `--array=1-8` works too), divided by `SLURM_ARRAY_TASK_STEP` when that is
 *   above 1. The array must be a contiguous range (no lists such as `--array=1,4,9`).
 * - Kubernetes Indexed Jobs (`completionMode: Indexed`): `JOB_COMPLETION_INDEX`, and the count
 *   in `CONVNEXT_SHARD_COUNT` (Kubernetes does not put `completions` in the environment: set
 *   it to the same number in the pod template).
 *
 * An explicit shard wins over the environment; a variable that is malformed, out of range,
 * or that contradicts another is a one-line error naming it.
 *
 * @module
 */

import { OptionError } from "../util/errors.ts";

/** A shard of the work: images k with `k % count === index`. */
export interface Shard {
  /** This shard, 0-based. */
  index: number;
  /** Number of shards. */
  count: number;
}

/** A shard and where it came from. */
export interface ResolvedShard {
  /** The shard; undefined when neither the option nor the environment gives one. */
  shard?: Shard;
  /**
   * `"option"`, or the variables it was read from:
   * `"SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"` or `"JOB_COMPLETION_INDEX/CONVNEXT_SHARD_COUNT"`.
   */
  source?: string;
  /** The environment's shard when an explicit one replaced a different one. */
  overridden?: { shard: Shard; source: string };
}

/** Reads one environment variable (undefined when unset). */
export type EnvReader = (name: string) => string | undefined;

/** The process environment; without `--allow-env` nothing is set. */
export const processEnv: EnvReader = (name) => {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
};

/**
 * Parse `I/N` (0 <= I < N).
 *
 * @throws OptionError (option `shard`) for anything else.
 * @example
 * ```ts
 * import { parseShard } from "./shard.ts";
 * console.log(parseShard("2/4")); // { index: 2, count: 4 }
 * ```
 */
export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !(count >= 1) || !(index < count)) {
    throw new OptionError(
      "shard",
      (name) => `${name("shard")}: expected I/N with 0 <= I < N (e.g. 0/4), got "${text}"`,
    );
  }
  return { index, count };
}

/** The integer value of variable `name` (>= `min`), or undefined when it is unset or empty. */
function intVar(env: EnvReader, name: string, min: number): number | undefined {
  const raw = env(name)?.trim();
  if (raw === undefined || raw === "") return undefined;
  const n = /^-?\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new Error(`${name}: expected an integer >= ${min}, got "${raw}"`);
  }
  return n;
}

const SLURM = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT";
const KUBERNETES = "JOB_COMPLETION_INDEX/CONVNEXT_SHARD_COUNT";

/** The shard of a SLURM array task, or undefined outside one. */
function slurmShard(env: EnvReader): Shard | undefined {
  const id = intVar(env, "SLURM_ARRAY_TASK_ID", 0);
  if (id === undefined) return undefined;
  const count = intVar(env, "SLURM_ARRAY_TASK_COUNT", 1);
  if (count === undefined) {
    throw new Error(
      `SLURM_ARRAY_TASK_ID is set (${id}) but SLURM_ARRAY_TASK_COUNT is not: pass --shard I/N`,
    );
  }
  const min = intVar(env, "SLURM_ARRAY_TASK_MIN", 0) ?? 0;
  const step = intVar(env, "SLURM_ARRAY_TASK_STEP", 1) ?? 1;
  const max = intVar(env, "SLURM_ARRAY_TASK_MAX", 0);
  const offset = id - min;
  const index = offset / step;
  if (offset < 0 || !Number.isInteger(index) || index >= count) {
    throw new Error(
      `SLURM_ARRAY_TASK_ID: task ${id} of an array from ${min} with step ${step} is not one of SLURM_ARRAY_TASK_COUNT=${count} shards (use a range such as --array=0-${
        count - 1
      })`,
    );
  }
  if (max !== undefined && (max - min) / step + 1 !== count) {
    throw new Error(
      `SLURM_ARRAY_TASK_COUNT: ${count} tasks but the array runs from ${min} to ${max} with step ${step}: use a contiguous range such as --array=0-${
        count - 1
      }`,
    );
  }
  return { index, count };
}

/** The shard of a Kubernetes Indexed Job pod, or undefined outside one. */
function kubernetesShard(env: EnvReader): Shard | undefined {
  const index = intVar(env, "JOB_COMPLETION_INDEX", 0);
  const count = intVar(env, "CONVNEXT_SHARD_COUNT", 1);
  if (index === undefined && count === undefined) return undefined;
  if (count === undefined) {
    throw new Error(
      `JOB_COMPLETION_INDEX is set (${index}) but CONVNEXT_SHARD_COUNT is not: set it to the Job's completions, or pass --shard I/N`,
    );
  }
  if (index === undefined) {
    throw new Error(
      `CONVNEXT_SHARD_COUNT is set (${count}) but JOB_COMPLETION_INDEX is not (an Indexed Job sets it): pass --shard I/N`,
    );
  }
  if (index >= count) {
    throw new Error(
      `JOB_COMPLETION_INDEX: ${index} is not below CONVNEXT_SHARD_COUNT=${count} (the Job's completions)`,
    );
  }
  return { index, count };
}

/**
 * The shard the environment gives this process: a SLURM array task or a Kubernetes Indexed
 * Job pod (see the module documentation), or undefined when neither is set.
 *
 * @param env where variables are read (default: the process environment).
 * @throws Error naming the variable: malformed, out of range, incomplete, or both schedulers'
 *   variables set.
 * @example
 * ```ts
 * import { shardFromEnv } from "./shard.ts";
 * // sbatch --array=1-8: task 4 is shard 3 of 8.
 * const slurm = new Map([
 *   ["SLURM_ARRAY_TASK_ID", "4"],
 *   ["SLURM_ARRAY_TASK_COUNT", "8"],
 *   ["SLURM_ARRAY_TASK_MIN", "1"],
 * ]);
 * console.log(shardFromEnv((name) => slurm.get(name)).shard); // { index: 3, count: 8 }
 * // A pod of a Kubernetes Indexed Job with CONVNEXT_SHARD_COUNT set to its completions.
 * const pod = new Map([["JOB_COMPLETION_INDEX", "0"], ["CONVNEXT_SHARD_COUNT", "2"]]);
 * console.log(shardFromEnv((name) => pod.get(name)).shard); // { index: 0, count: 2 }
 * console.log(shardFromEnv(() => undefined)); // {}: not an array job
 * ```
 */
export function shardFromEnv(env: EnvReader = processEnv): ResolvedShard {
  const slurm = slurmShard(env);
  const kubernetes = kubernetesShard(env);
  if (slurm && kubernetes) {
    throw new Error(
      `JOB_COMPLETION_INDEX: both a SLURM array task (${SLURM}) and a Kubernetes Indexed Job (${KUBERNETES}) are set: pass --shard I/N`,
    );
  }
  if (slurm) return { shard: slurm, source: SLURM };
  if (kubernetes) return { shard: kubernetes, source: KUBERNETES };
  return {};
}

/**
 * The shard of a run: `option` (`"I/N"`) when given, else the environment's
 * ({@link shardFromEnv}). The environment is not read when the option is given, so
 * `--shard 0/1` runs everything inside an array job; `overridden` tells when the option
 * replaced a different shard of the environment (when the environment is readable).
 *
 * @throws OptionError (option `shard`) for a malformed option; Error naming the variable for
 *   a bad environment (only read without the option).
 * @example
 * ```ts
 * import { resolveShard } from "./shard.ts";
 * const slurm = new Map([["SLURM_ARRAY_TASK_ID", "2"], ["SLURM_ARRAY_TASK_COUNT", "4"]]);
 * console.log(resolveShard(undefined, (name) => slurm.get(name)).shard); // { index: 2, count: 4 }
 * const explicit = resolveShard("0/1", (name) => slurm.get(name)); // the option wins
 * console.log(explicit.shard, explicit.overridden?.shard); // { index: 0, count: 1 } { index: 2, count: 4 }
 * ```
 */
export function resolveShard(
  option: string | undefined,
  env: EnvReader = processEnv,
): ResolvedShard {
  if (option === undefined) return shardFromEnv(env);
  const shard = parseShard(option);
  let fromEnv: ResolvedShard = {};
  try {
    fromEnv = shardFromEnv(env);
  } catch {
    // A broken environment does not matter once the option decides.
  }
  const differs = fromEnv.shard &&
    (fromEnv.shard.index !== shard.index || fromEnv.shard.count !== shard.count);
  return {
    shard,
    source: "option",
    ...(differs ? { overridden: { shard: fromEnv.shard!, source: fromEnv.source! } } : {}),
  };
}
