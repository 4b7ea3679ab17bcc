/**
 * `deno task demo`: build a ConvNeXt, print its summary and run one forward pass.
 *
 *   deno task demo [ARCHITECTURE] [--size 224]
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { createConvNeXt, selectBackend } from "../lib/mod.ts";
import { parseLayerName } from "../lib/model/names.ts";
import { BACKEND_OPTION, BACKEND_USAGE, backendFlag, command, type Fail, failer } from "./cli.ts";

const USAGE = `usage: deno task demo [ARCHITECTURE] [--size 224] ${BACKEND_USAGE}`;
const fail: Fail = failer("demo");
const { values, positionals } = command(
  USAGE,
  { size: { type: "string", default: "224" }, ...BACKEND_OPTION },
  fail,
);
const requested = backendFlag(values.backend, fail);
const arch = positionals[0] ?? "convnext_tiny";
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
