// Helpers of the kernel tests (tests/wasm_grads_test.ts, tests/webgpu_grads_test.ts): seeded
// inputs, running one kernel on a backend, and comparing a backend's kernel with cpu's.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { relErr } from "./numeric_helpers.ts";

/** A tensor shape. */
export type Shape = number[];
/** A tensor's values with its shape, independent of any backend. */
export type Data = { shape: Shape; values: Float32Array };
/** A convolution's padding as the TF.js kernels take it. */
export type Pad = "same" | "valid" | [[0, 0], [number, number], [number, number], [0, 0]];

/** Deterministic values in [-1, 1) (a linear congruential generator). */
export function rand(shape: Shape, seed: number): Data {
  let s = seed >>> 0;
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    values[i] = s / 2 ** 31 - 1;
  }
  return { shape, values };
}

/** Run one kernel on a backend through the engine, as ops do; returns values and shape. */
export async function runKernel(
  backend: string,
  kernel: string,
  inputs: Record<string, Data>,
  attrs: Record<string, unknown>,
): Promise<Data> {
  await tf.setBackend(backend);
  const tensors: Record<string, tf.Tensor> = {};
  for (const [k, d] of Object.entries(inputs)) tensors[k] = tf.tensor(d.values, d.shape);
  const out = tf.engine().runKernel(kernel, tensors, attrs as tf.NamedAttrMap) as tf.Tensor;
  const result = { shape: out.shape, values: (await out.data()) as Float32Array };
  out.dispose();
  Object.values(tensors).forEach((t) => t.dispose());
  return result;
}

/**
 * Compare `backend`'s kernel with the cpu kernel, or with `reference` when given: same shape,
 * relative error below 1e-5, no data leaked.
 */
export async function expectMatchesCpu(
  backend: string,
  kernel: string,
  inputs: Record<string, Data>,
  attrs: Record<string, unknown>,
  reference?: Data,
): Promise<void> {
  const expected = reference ?? await runKernel("cpu", kernel, inputs, attrs);
  await tf.setBackend(backend);
  const before = tf.engine().backend.numDataIds();
  const actual = await runKernel(backend, kernel, inputs, attrs);
  await tf.setBackend(backend);
  const label = `${kernel} ${JSON.stringify(attrs)} inputs ${
    JSON.stringify(Object.fromEntries(Object.entries(inputs).map(([k, d]) => [k, d.shape])))
  }`;
  assert.equal(tf.engine().backend.numDataIds(), before, `${label}: ${backend} data leaked`);
  assert.deepEqual(actual.shape, expected.shape, `${label}: shape`);
  const err = relErr(actual.values, expected.values);
  assert.ok(err < 1e-5, `${label}: relative error ${err}`);
}

/** A convolution case: NHWC input, kernel size, strides and padding. */
export interface ConvCase {
  x: Shape;
  k: [number, number];
  strides: number | [number, number];
  pad: Pad;
}

/** The filter shape of a convolution case and its output shape, as TF.js computes them. */
export function convShapes(
  c: ConvCase,
  lastFilterDim: number,
  depthwise: boolean,
): { filterShape: Shape; outShape: Shape } {
  const filterShape = [c.k[0], c.k[1], c.x[3], lastFilterDim];
  const info = tf.backend_util.computeConv2DInfo(
    c.x as [number, number, number, number],
    filterShape as [number, number, number, number],
    c.strides,
    1,
    c.pad,
    undefined,
    depthwise,
  );
  return { filterShape, outShape: info.outShape };
}
