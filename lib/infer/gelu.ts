/**
 * Exact-erf GELU, `x * Phi(x)`, in kernels the wasm backend runs fast.
 *
 * Why: the wasm backend's `Erf` is scalar libm (about 23 ns per element: 28 ms on one
 * 56x56x384 map, more than the matmul that produces it), while `Sigmoid` goes through
 * XNNPACK's vectorized kernel and `Mul`/`Add` are memory-bound (about 1 ms each).
 * `Phi(x) = sigmoid(logit(Phi(x)))`, and `logit(Phi(x))` is a smooth odd function of x,
 * so `Phi(x) ~= sigmoid(x * P(x^2))` with a degree-4 polynomial P fitted (minimax on the
 * GELU error) by tools/fixtures/gelu_sigmoid_fit.py: 12 fast kernels instead of one slow
 * one, max |error| 3.3e-6 over all float32 inputs (float32 evaluation included), where the
 * stock `x * 0.5 * (1 + erf(x / sqrt 2))` is itself only float32-accurate.
 *
 * P's leading coefficient is positive and `x * P(x^2)` is monotone beyond the fitted range,
 * so large inputs saturate the right way (no clipping pass needed).
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";

/** Coefficients of P, lowest degree first (from tools/fixtures/gelu_sigmoid_fit.py, k = 5). */
export const GELU_SIGMOID_COEFFICIENTS = [
  1.5956552009147427,
  0.07293956428004972,
  -0.0002508286795955412,
  -6.093389754840513e-05,
  2.2237228239126635e-06,
] as const;

/**
 * `x * sigmoid(x * P(x^2))`, the exact GELU within 3.3e-6 (absolute).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * const y = gelu(tf.tensor([-1, 0, 1])); // ~[-0.158655, 0, 0.841345]
 * ```
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const c = GELU_SIGMOID_COEFFICIENTS;
    const u = tf.square(x);
    let p: tf.Tensor = tf.add(tf.mul(u, c[4]), c[3]);
    for (let i = 2; i >= 0; i--) p = tf.add(tf.mul(p, u), c[i]);
    return tf.mul(x, tf.sigmoid(tf.mul(p, x)));
  });
}
