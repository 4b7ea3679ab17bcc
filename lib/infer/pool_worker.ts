/**
 * Worker thread of the inference pool (./pool.ts): its own TF.js wasm backend and a copy of
 * the folded weights; runs whole plans on a share of a batch, or single blocks on a band of
 * rows, as posted through shared memory (see ./protocol.ts).
 *
 * @module
 */
import { workerData } from "node:worker_threads";
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import { blockOnSlab, executePlan, hiddenSlice, mlpPart } from "./execute.ts";
import type { FoldedWeights } from "./fold.ts";
import type { BlockStep, Plan } from "./plan.ts";
import { KernelEngine } from "./engine/engine.ts";
import { EnginePlan } from "./engine/run.ts";
import { JobServer } from "../util/jobs.ts";
import { CTRL, type EngineSetup, OP, type SetupMessage, type WorkerInit } from "./pool_protocol.ts";

const { ctrl, port, backend } = workerData as WorkerInit;

const jobs = new JobServer(ctrl, port, "inference worker");

let plan: Plan | null = null;
let weights: FoldedWeights = {};
let data: Float32Array<ArrayBufferLike> = new Float32Array(0);
/** The plan on the main thread's kernel engine, once attached (see setupEngine). */
let enginePlan: EnginePlan | null = null;

/** Hidden-unit slices of the weights, made on first use: `prefix|part|parts`. */
const slices = new Map<string, ReturnType<typeof hiddenSlice>>();

function slice(prefix: string, part: number, parts: number): ReturnType<typeof hiddenSlice> {
  const key = `${prefix}|${part}|${parts}`;
  let found = slices.get(key);
  if (!found) {
    found = tf.tidy(() => hiddenSlice(weights, prefix, part, parts));
    Object.values(found).forEach((t) => tf.keep(t));
    slices.set(key, found);
  }
  return found;
}

/** Free the TF.js copies of the weights (a new set, or the engine, replaces them). */
function dropTensors(): void {
  for (const s of slices.values()) tf.dispose(Object.values(s));
  slices.clear();
  for (const t of Object.values(weights)) t.dispose();
  weights = {};
}

function setupEngine(setup: EngineSetup): void {
  dropTensors();
  const engine = KernelEngine.attach(setup.memory, setup.relaxed, setup.stackTop);
  enginePlan = EnginePlan.attach(plan!, setup.steps, engine);
}

function setup(message: SetupMessage): void {
  if (message.plan) plan = message.plan;
  if (message.engine) {
    setupEngine(message.engine);
  } else if (message.weights) {
    enginePlan?.dispose();
    enginePlan = null;
    dropTensors();
    const { names, shapes, buffer } = message.weights;
    const all = new Float32Array(buffer);
    let offset = 0;
    names.forEach((name, i) => {
      const size = shapes[i].reduce((a, b) => a * b, 1);
      // The backend copies the values into its own memory at once.
      weights[name] = tf.tensor(all.subarray(offset, offset + size), shapes[i], "float32");
      offset += size;
    });
  }
  if (message.data) data = new Float32Array(message.data);
}

function writeOutput(y: tf.Tensor): void {
  writeArray(y.dataSync() as Float32Array, y.shape);
}

function inputShape(): number[] {
  return [0, 1, 2, 3].map((i) => Atomics.load(ctrl, CTRL.SHAPE + i));
}

function writeArray(values: Float32Array<ArrayBufferLike>, shape: number[]): void {
  if (values.length > data.length) {
    throw new Error(`inference worker: output of ${values.length} floats exceeds the buffer`);
  }
  data.set(values);
  Atomics.store(ctrl, CTRL.OUT_RANK, shape.length);
  shape.forEach((d, i) => Atomics.store(ctrl, CTRL.OUT_SHAPE + i, d));
}

/** Engine jobs: in place in the shared memory, no output to copy. */
function runEngineJob(op: number, runner: EnginePlan): void {
  const ptr = (slot: number) => Atomics.load(ctrl, slot) >>> 0;
  const arg = (i: number) => ptr(CTRL.ARGS + i);
  Atomics.store(ctrl, CTRL.OUT_RANK, 0);
  if (op === OP.GEMM) {
    const job = { a: arg(0), lda: arg(1), m: arg(2), k: arg(3), b: arg(4), n: arg(5) };
    const rest = { bias: arg(6), c: arg(7), ldc: arg(8), mode: arg(9) };
    runner.gemm({ ...job, ...rest }, arg(10));
    return;
  }
  if (op === OP.LAYER_NORM) {
    const eps = new Float32Array(new Int32Array([Atomics.load(ctrl, CTRL.ARGS + 3)]).buffer)[0];
    runner.layerNorm({
      x: arg(0),
      m: arg(1),
      c: arg(2),
      eps,
      gamma: arg(4),
      beta: arg(5),
      out: arg(6),
    });
    return;
  }
  if (op === OP.BLOCK_CHUNKS) {
    runner.runBlockChunks(
      Atomics.load(ctrl, CTRL.STEP),
      ptr(CTRL.X_PTR),
      inputShape(),
      ptr(CTRL.OUT_PTR),
      { byImages: arg(1) === 1, size: arg(2), count: arg(3) },
      arg(0),
      ptr(CTRL.SCRATCH_PTR),
    );
    return;
  }
  throw new Error(`inference worker: opcode ${op} has no engine job`);
}

function input(): tf.Tensor4D {
  const shape = inputShape();
  const size = shape.reduce((a, b) => a * b, 1);
  return tf.tensor4d(data.slice(0, size), shape as [number, number, number, number]);
}

function runJob(op: number): boolean {
  if (op === OP.EXIT) return false;
  if (op === OP.SETUP) {
    setup(jobs.pull<SetupMessage>());
    return true;
  }
  if (!plan) throw new Error("inference worker: no plan set up");
  if (enginePlan) {
    runEngineJob(op, enginePlan);
    return true;
  }
  const current = plan;
  tf.tidy(() => {
    const x = input();
    const blockStep = () => {
      const step = current.steps[Atomics.load(ctrl, CTRL.STEP)] as BlockStep;
      if (step?.op !== "block") throw new Error("inference worker: step is not a block");
      return step;
    };
    if (op === OP.RUN) {
      writeOutput(executePlan(current, weights, x));
    } else if (op === OP.HIDDEN) {
      const step = blockStep();
      const { w1, b1, w2 } = slice(
        step.prefix,
        Atomics.load(ctrl, CTRL.PART),
        Atomics.load(ctrl, CTRL.PARTS),
      );
      const a = tf.reshape(x, [x.shape[2], x.shape[3]]) as tf.Tensor2D;
      writeOutput(mlpPart(a, w1, b1, w2));
    } else if (op === OP.BLOCK) {
      const step = blockStep();
      const padTop = Atomics.load(ctrl, CTRL.PAD_TOP);
      const padBottom = Atomics.load(ctrl, CTRL.PAD_BOTTOM);
      writeOutput(blockOnSlab(x, weights, step, padTop, padBottom));
    } else {
      throw new Error(`inference worker: unknown opcode ${op}`);
    }
  });
  return true;
}

if (await jobs.start(backend)) jobs.serve(runJob);
