/**
 * `deno task demo`: build a ConvNeXt with random weights, print its summary and run one
 * forward pass; no network, no checkpoint.
 *
 *   deno task demo [--model convnext_tiny] [--size 224] [--backend auto]
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { createConvNeXt, selectBackend } from "../lib/mod.ts";
import { parseLayerName } from "../lib/model/names.ts";
import { isArchitectureName } from "../lib/model/variants.ts";
import {
  architectureFlag,
  BACKEND_HELP,
  BACKEND_OPTION,
  backendFlag,
  command,
  type CommandHelp,
  type Fail,
  failer,
} from "./cli.ts";

const HELP: CommandHelp = {
  name: "demo",
  synopsis: "[flags]",
  about: `
Build a ConvNeXt architecture with random weights, print its layer summary (the stem, the first
block, the head and the totals) and time one forward pass on random input. Needs no network and
no checkpoint: a first check that the kit runs here. For a pretrained model, see
\`deno task classify\` and \`deno task models\`.`,
  flags: {
    model: {
      value: "ARCH",
      help: "architecture, random weights: convnext_{atto..xlarge}, convnextv2_{atto..huge}, ...",
    },
    size: { value: "PX", help: "input side in pixels (>= 32)" },
    ...BACKEND_HELP,
  },
  env: ["CONVNEXT_BACKEND", "CONVNEXT_THREADS", "CONVNEXT_EXECUTOR"],
  examples: [
    "deno task demo                                  # convnext_tiny at 224x224",
    "deno task demo --model convnext_small --size 384",
    "deno task demo --model convnextv2_atto --backend cpu",
  ],
};

const fail: Fail = failer("demo");
const { values, positionals } = command(HELP, {
  model: { type: "string", default: "convnext_tiny" },
  size: { type: "string", default: "224" },
  ...BACKEND_OPTION,
}, fail);
if (positionals.length > 0) {
  const [arg] = positionals;
  fail(
    `unexpected argument "${arg}": name the architecture with --model ${
      isArchitectureName(arg) ? arg : "NAME"
    }`,
  );
}
const arch = architectureFlag(values.model, fail);
const requested = backendFlag(values.backend, fail);
const size = Number(values.size);
if (!Number.isInteger(size) || size < 32) {
  fail(`--size expects an integer >= 32, got "${values.size}"`);
}
try {
  const backend = await selectBackend(requested);
  const model = createConvNeXt(arch);
  // The full table has hundreds of rows; show the stem, the first block, the head and totals.
  let skipping = false;
  model.summary(150, [0.33, 0.53, 0.73, 0.83], (line: string) => {
    if (/^[a-z]/i.test(line)) {
      const where = parseLayerName(line.split(" ")[0]);
      const first = where?.kind === "block" && where.block === 0 && (where.stage ?? 0) === 0;
      skipping = (where?.kind === "block" || where?.kind === "downsample") && !first;
    }
    if (!skipping) console.log(line);
  });
  const x = tf.randomNormal([1, size, size, 3], 0, 1, "float32", 0);
  const start = performance.now();
  const logits = model.predict(x) as tf.Tensor;
  const values = await logits.data();
  const ms = performance.now() - start;
  console.log(
    `\n${arch} on ${backend}: forward pass at ${size}x${size} in ${ms.toFixed(0)} ms, ` +
      `logits ${JSON.stringify(logits.shape)}, first ${
        Array.from(values.slice(0, 3), (v) => v.toFixed(4)).join(", ")
      }`,
  );
} catch (e) {
  fail((e as Error).message.split("\n")[0], 1);
}
