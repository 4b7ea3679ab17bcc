/**
 * Classification losses.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

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
 * const loss = crossEntropy(logits, tf.tensor1d([0, 3], "int32"), 0.1);
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

/** Number of rows whose arg-max equals the label. */
export function correctCount(logits: tf.Tensor, labels: tf.Tensor): number {
  return tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(logits, -1), labels), "int32")))
    .dataSync()[0];
}
