/**
 * Classification losses.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";

/**
 * Mean cross entropy with label smoothing, as timm's `LabelSmoothingCrossEntropy` and
 * torch's `cross_entropy(..., label_smoothing=s)`:
 * `(1 - s) * nll + s * mean_c(-log p_c)` per sample, averaged over the batch.
 *
 * @param logits `[batch, classes]`
 * @param labels `[batch]` int32 class indices
 * @param smoothing in [0, 1); 0 is plain cross entropy.
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { selectBackend } from "../backend/select.ts";
 * import { crossEntropy } from "./losses.ts";
 * await selectBackend("cpu");
 * const logits = tf.tensor2d([[2, 0, 0, 0], [0, 0, 0, 2]]);
 * const loss = crossEntropy(logits, tf.tensor1d([0, 3], "int32"), 0.1); // label smoothing 0.1
 * console.log((await loss.data())[0]);
 * ```
 */
export function crossEntropy(logits: tf.Tensor, labels: tf.Tensor, smoothing = 0): tf.Scalar {
  if (!(smoothing >= 0 && smoothing < 1)) {
    throw new RangeError(`crossEntropy: smoothing must be in [0, 1), got ${smoothing}`);
  }
  if (logits.rank !== 2) {
    throw new Error(`crossEntropy: logits must be [batch, classes], got [${logits.shape}]`);
  }
  return tf.tidy(() => {
    const classes = logits.shape[1]!;
    const logp = tf.logSoftmax(logits);
    const nll = tf.neg(tf.sum(tf.mul(tf.oneHot(labels, classes), logp), -1));
    if (smoothing === 0) return tf.mean(nll) as tf.Scalar;
    const smooth = tf.neg(tf.mean(logp, -1));
    return tf.mean(tf.add(tf.mul(nll, 1 - smoothing), tf.mul(smooth, smoothing))) as tf.Scalar;
  });
}

function correctTensor(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(logits, -1), labels), "int32")));
}

/**
 * Number of rows whose arg-max equals the label, read synchronously: for the wasm/cpu
 * training paths (./parallel.ts and its workers). On webgpu use {@link countCorrect}.
 */
export function correctCount(logits: tf.Tensor, labels: tf.Tensor): number {
  const count = correctTensor(logits, labels);
  try {
    return count.dataSync()[0];
  } finally {
    count.dispose();
  }
}

/**
 * Number of rows whose arg-max equals the label, read with await: works on every backend,
 * webgpu included (which cannot read synchronously under Deno).
 */
export async function countCorrect(logits: tf.Tensor, labels: tf.Tensor): Promise<number> {
  const count = correctTensor(logits, labels);
  try {
    return (await count.data())[0];
  } finally {
    count.dispose();
  }
}
