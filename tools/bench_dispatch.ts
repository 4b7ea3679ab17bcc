/**
 * `deno task bench:dispatch`: what one kernel dispatch costs on the webgpu backend, apart from
 * the GPU's arithmetic: a chain of small elementwise ops (TF.js's `Add`, and this project's
 * one-dispatch moving average) recorded and run back to back, timed to the last result's read.
 * On a GPU, the host records while the GPU runs, so a step costs at least its dispatch count
 * times this; it is why lib/backend/webgpu_kernels.ts and webgpu_layers.ts cut dispatches.
 *
 *   deno task bench:dispatch [--dispatches 2000] [--elements 4096] [--rounds 3] [--json]
 *
 * Prints one line per op and round (`--json`: `{"backend","adapter","op","elements",
 * "dispatches","submitBatch","usPerDispatch"}`), with the machine and adapter first.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { selectBackend, webGpuAdapterInfo } from "../lib/backend/select.ts";
import { quietHeadlessVulkan } from "../lib/backend/webgpu_compat.ts";
import { webGpuMovingAverage } from "../lib/backend/webgpu_kernels.ts";
import { machineLine } from "../lib/util/machine.ts";
import { command, type CommandHelp, type Fail, failer, positiveInt } from "./cli.ts";

const HELP: CommandHelp = {
  name: "bench:dispatch",
  synopsis: "[flags]",
  about: `
The cost of one kernel dispatch on the webgpu backend beyond the GPU's arithmetic: --dispatches
small elementwise ops of --elements floats each (TF.js's Add, then this project's one-dispatch
moving average), recorded back to back and timed to the read of the last result, --rounds times.
The first round includes compiling the shaders.`,
  flags: {
    dispatches: { value: "N", help: "ops in a chain", default: "2000" },
    elements: {
      value: "N",
      help: "floats per tensor (above 1000: run on the GPU)",
      default: "4096",
    },
    rounds: { value: "N", help: "chains timed, each printed", default: "3" },
    json: {
      help: "JSON lines: {backend, adapter, op, elements, dispatches, submitBatch, usPerDispatch}",
    },
  },
  env: [],
  examples: [
    "deno task bench:dispatch",
    "deno task bench:dispatch --elements 1000000 --dispatches 500 --json",
  ],
};

/** Microseconds per op of a chain of `n` ops `f`, to the read of the last result. */
async function chain(n: number, f: () => tf.Tensor): Promise<number> {
  const start = performance.now();
  let last: tf.Tensor | undefined;
  for (let i = 0; i < n; i++) {
    last?.dispose();
    last = f();
  }
  await last!.data();
  last!.dispose();
  return (performance.now() - start) / n * 1000;
}

if (import.meta.main) {
  const fail: Fail = failer("bench:dispatch");
  const { values, positionals } = command(HELP, {
    dispatches: { type: "string" },
    elements: { type: "string" },
    rounds: { type: "string" },
    json: { type: "boolean", default: false },
  }, fail);
  if (positionals.length > 0) fail(`unexpected argument "${positionals[0]}"`);
  const n = positiveInt(values.dispatches, "--dispatches", 2000, fail);
  const elements = positiveInt(values.elements, "--elements", 4096, fail);
  const rounds = positiveInt(values.rounds, "--rounds", 3, fail);
  quietHeadlessVulkan();
  await selectBackend("webgpu");
  const adapter = webGpuAdapterInfo();
  const submitBatch = tf.env().getNumber("WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE");
  const log = values.json ? console.error : console.log;
  log(`machine: ${machineLine()}`);
  log(`adapter: ${adapter?.description || adapter?.vendor || "?"}; submits every ${submitBatch}`);
  const [a, b] = [tf.randomNormal([elements]), tf.randomNormal([elements])];
  await Promise.all([a.data(), b.data()]); // on the GPU before timing
  const ops: [string, () => tf.Tensor][] = [
    ["Add", () => tf.add(a, b)],
    ["ConvnextMovingAverage", () => webGpuMovingAverage(a, b, 0.9)],
  ];
  for (const [op, f] of ops) {
    for (let r = 0; r < rounds; r++) {
      const us = await chain(n, f);
      if (values.json) {
        console.log(JSON.stringify({
          backend: "webgpu",
          adapter,
          op,
          elements,
          dispatches: n,
          submitBatch,
          usPerDispatch: Math.round(us * 10) / 10,
        }));
      } else console.log(`${op}: ${us.toFixed(1)} us per dispatch (${n} of ${elements} floats)`);
    }
  }
  tf.dispose([a, b]);
}
