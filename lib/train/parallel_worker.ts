/**
 * Worker thread of the data-parallel gradient step (./parallel.ts): its own TF.js backend
 * (wasm, with the training kernels of lib/backend/wasm_grads.ts) and a replica of the
 * model; for each job it loads the weights that changed, computes the loss gradients of
 * its shard of the batch and writes them to shared memory (see ./parallel_protocol.ts).
 *
 * @module
 */
import { workerData } from "node:worker_threads";
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import { installWasmTrainingKernels } from "../backend/wasm_grads.ts";
import { JobServer } from "../util/jobs.ts";
// Registers ConvNeXt's custom layers and ConvNeXtModel, so that the topology deserializes.
import "../model/layers.ts";
import "../infer/model.ts";
import { correctCount, crossEntropy } from "./losses.ts";
import { withSeededMathRandom } from "./rng.ts";
import {
  TCTRL,
  TOP,
  type TrainSetupMessage,
  type TrainWorkerInit,
  TSCALAR,
} from "./parallel_protocol.ts";

const init = workerData as TrainWorkerInit;
const { ctrl, scalars, port, backend } = init;

const jobs = new JobServer(ctrl, port, "training worker");

let model: tf.LayersModel;
/** Model variables in `weightNames` order, their shapes and offsets in the shared buffer. */
let weightVars: { variable: tf.Variable; offset: number; size: number }[] = [];
/** Trained variables in `paramNames` order. */
let paramVars: tf.Variable[] = [];
const versions = new Int32Array(init.versions);
const allWeights = new Float32Array(init.weights);
const grads = new Float32Array(init.grads);
/** Version of each weight this replica holds (-1: none yet). */
let loaded: Int32Array = new Int32Array(0);
let input: Float32Array = new Float32Array(0);

/** After the backend is up: the training kernels, the replica, its weights' layout. */
async function prepare(): Promise<void> {
  if (backend === "wasm") installWasmTrainingKernels();
  model = await tf.models.modelFromJSON(
    { modelTopology: init.topology } as unknown as tf.io.ModelJSON,
  );
  const byName = new Map(model.weights.map((w) => [w.originalName, w]));
  const lookup = (name: string) => {
    const w = byName.get(name);
    if (!w) throw new Error(`training worker: the replica has no weight "${name}"`);
    // LayerVariable.read() returns its backing tf.Variable itself.
    return w.read() as tf.Variable;
  };
  let offset = 0;
  weightVars = init.weightNames.map((name) => {
    const variable = lookup(name);
    const entry = { variable, offset, size: variable.size };
    offset += variable.size;
    return entry;
  });
  if (offset !== allWeights.length) {
    throw new Error(
      `training worker: the replica's weights hold ${offset} floats, the shared buffer ${allWeights.length}`,
    );
  }
  paramVars = init.paramNames.map(lookup);
  loaded = new Int32Array(weightVars.length).fill(-1);
}

/** Copy the weights whose version moved since the last job into the replica. */
function syncWeights(): void {
  weightVars.forEach((w, i) => {
    const version = Atomics.load(versions, i);
    if (loaded[i] === version) return;
    tf.tidy(() => {
      const values = allWeights.subarray(w.offset, w.offset + w.size);
      w.variable.assign(tf.tensor(values, w.variable.shape, "float32"));
    });
    loaded[i] = version;
  });
}

function gradients(): void {
  syncWeights();
  const shape = [0, 1, 2, 3].map((i) => Atomics.load(ctrl, TCTRL.SHAPE + i)) as [
    number,
    number,
    number,
    number,
  ];
  const size = shape.reduce((a, b) => a * b, 1);
  const n = shape[0];
  if (size + n > input.length) throw new Error("training worker: the input buffer is too small");
  const smoothing = scalars[TSCALAR.SMOOTHING];
  const scale = scalars[TSCALAR.SCALE];
  const x = tf.tensor4d(input.slice(0, size), shape);
  const labels = tf.tensor1d(Int32Array.from(input.subarray(size, size + n)), "int32");
  let logits: tf.Tensor | undefined;
  const { value, grads: g } = withSeededMathRandom(
    Atomics.load(ctrl, TCTRL.SEED) >>> 0,
    () =>
      tf.variableGrads(() => {
        const y = model.apply(x, { training: true }) as tf.Tensor;
        logits = tf.keep(y);
        return tf.mul(crossEntropy(y, labels, smoothing), scale) as tf.Scalar;
      }, paramVars),
  );
  try {
    scalars[TSCALAR.LOSS] = value.dataSync()[0] / scale;
    scalars[TSCALAR.CORRECT] = correctCount(logits!, labels);
    let offset = 0;
    for (const v of paramVars) {
      const gv = g[v.name];
      if (!gv) throw new Error(`training worker: no gradient for "${v.name}"`);
      grads.set(gv.dataSync() as Float32Array, offset);
      offset += v.size;
    }
  } finally {
    tf.dispose([value, logits!, labels, x, ...Object.values(g)]);
  }
}

function runJob(op: number): boolean {
  if (op === TOP.EXIT) return false;
  if (op === TOP.SETUP) input = new Float32Array(jobs.pull<TrainSetupMessage>().input);
  else if (op === TOP.GRADS) gradients();
  else throw new Error(`training worker: unknown opcode ${op}`);
  return true;
}

if (await jobs.start(backend, prepare)) jobs.serve(runJob);
