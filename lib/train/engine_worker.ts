/**
 * Worker thread of the kernel engine's training step (./engine_grads.ts): a kernel
 * instance attached to the main thread's engine memory that runs whole shards (forward,
 * loss, backward) in place, as posted through the control array (./engine_protocol.ts).
 *
 * @module
 */
import { workerData } from "node:worker_threads";
import { KernelEngine } from "../infer/engine/engine.ts";
import { runShard, runTasks, type Tape, type TrainProgram } from "../infer/engine/train.ts";
import { JobServer } from "../util/jobs.ts";
import {
  ECTRL,
  type EngineSetupMessage,
  type EngineWorkerInit,
  EOP,
  ESCALAR,
} from "./engine_protocol.ts";

const init = workerData as EngineWorkerInit;
const { ctrl, scalars, port } = init;
const jobs = new JobServer(ctrl, port, "engine training worker");

let engine: KernelEngine;
let program: TrainProgram | null = null;
let tape: Tape | null = null;

function step(): void {
  if (!program || !tape) throw new Error("engine training worker: no program or tape set up");
  const ptr = (slot: number) => Atomics.load(ctrl, slot) >>> 0;
  const t0 = performance.now();
  const r = runShard(engine, program, tape, {
    x: ptr(ECTRL.X),
    count: Atomics.load(ctrl, ECTRL.SHAPE),
    labels: ptr(ECTRL.LABELS),
    scales: ptr(ECTRL.SCALES),
    first: ptr(ECTRL.FIRST),
    batch: ptr(ECTRL.BATCH),
    smoothing: scalars[ESCALAR.SMOOTHING],
    scale: scalars[ESCALAR.SCALE],
  });
  scalars[ESCALAR.LOSS] = r.lossSum;
  scalars[ESCALAR.CORRECT] = r.correct;
  scalars[ESCALAR.MS] = performance.now() - t0;
}

function runJob(op: number): boolean {
  if (op === EOP.EXIT) return false;
  if (op === EOP.SETUP) {
    const m = jobs.pull<EngineSetupMessage>();
    if (m.program) program = m.program;
    if (m.tape) tape = m.tape;
  } else if (op === EOP.STEP) {
    step();
  } else if (op === EOP.TASKS) {
    const ptr = (slot: number) => Atomics.load(ctrl, slot) >>> 0;
    runTasks(engine, ptr(ECTRL.TASK_TABLE), ptr(ECTRL.TASK_COUNT), ptr(ECTRL.TASK_COUNTER));
  } else {
    throw new Error(`engine training worker: unknown opcode ${op}`);
  }
  return true;
}

// The TF.js backend is only the job loop's requirement; the kernels run on the engine.
const started = await jobs.start("cpu", () => {
  engine = KernelEngine.attach(init.memory, init.relaxed, init.stackTop);
});
if (started) jobs.serve(runJob);
