/**
 * Tests of lib/backend/wasm_grads.ts and its helpers: every kernel it adds or wraps is
 * compared with the cpu backend's kernel (the independent reference), and the gradients
 * of a small ConvNeXt on wasm with the gradients on cpu, variable by variable.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import {
  installWasmTrainingKernels,
  WASM_ADDED_KERNELS,
  WASM_WRAPPED_KERNELS,
  wasmTrainingKernelsInstalled,
} from "../lib/backend/wasm_grads.ts";
import { explicitTransposeMatMul } from "../lib/backend/matmul_fix.ts";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { relErr } from "./numeric_helpers.ts";
import {
  type ConvCase,
  convShapes,
  type Data,
  expectMatchesCpu,
  type Pad,
  rand,
  runKernel,
  type Shape,
} from "./kernel_helpers.ts";

installWasmTrainingKernels();
await tf.setBackend("cpu");
// The cpu backend prints an install hint for tfjs-node on first use; not useful here.
(tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
await tf.setBackend("wasm");
await tf.ready();

interface DwCase {
  x: Shape; // NHWC
  k: [number, number];
  m: number;
  strides: number | [number, number];
  pad: Pad;
}

const DEPTHWISE_CASES: DwCase[] = [
  { x: [2, 9, 7, 5], k: [7, 7], m: 1, strides: 1, pad: "same" }, // ConvNeXt's case, odd sizes
  { x: [2, 1, 1, 6], k: [7, 7], m: 1, strides: 1, pad: "same" }, // last stage at 32x32 input
  { x: [1, 8, 10, 3], k: [3, 5], m: 2, strides: 1, pad: "valid" },
  { x: [2, 9, 8, 3], k: [3, 3], m: 2, strides: 2, pad: "same" },
  { x: [2, 9, 8, 3], k: [3, 2], m: 1, strides: [2, 3], pad: "valid" },
  { x: [3, 8, 8, 7], k: [3, 3], m: 1, strides: 1, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
  { x: [2, 12, 11, 3], k: [9, 7], m: 1, strides: 1, pad: "same" }, // 5x5 split, 2x2 pieces
  { x: [1, 12, 10, 3], k: [7, 6], m: 2, strides: 1, pad: "valid" }, // split, cropped pieces
];

Deno.test("installWasmTrainingKernels registers everything and is idempotent", () => {
  assert.ok(wasmTrainingKernelsInstalled());
  for (const name of [...WASM_ADDED_KERNELS, ...WASM_WRAPPED_KERNELS]) {
    assert.ok(tf.getKernel(name, "wasm") != null, name);
  }
  const again = installWasmTrainingKernels();
  assert.deepEqual(again.added, []);
  assert.deepEqual(again.wrapped, []);
  assert.equal(again.unchanged.length, WASM_ADDED_KERNELS.length + WASM_WRAPPED_KERNELS.length);
  // The cpu backend is untouched.
  assert.notEqual(
    tf.getKernel("BatchMatMul", "cpu")!.kernelFunc,
    tf.getKernel("BatchMatMul", "wasm")!.kernelFunc,
  );
});

Deno.test("DepthwiseConv2dNativeBackpropInput matches cpu", async () => {
  for (const [i, c] of DEPTHWISE_CASES.entries()) {
    const { filterShape, outShape } = convShapes(c, c.m, true);
    await expectMatchesCpu(
      "wasm",
      "DepthwiseConv2dNativeBackpropInput",
      { dy: rand(outShape, 10 + i), filter: rand(filterShape, 20 + i) },
      { strides: c.strides, pad: c.pad, dilations: 1, inputShape: c.x },
    );
  }
});

Deno.test("DepthwiseConv2dNativeBackpropFilter matches cpu", async () => {
  for (const [i, c] of DEPTHWISE_CASES.entries()) {
    const { filterShape, outShape } = convShapes(c, c.m, true);
    await expectMatchesCpu(
      "wasm",
      "DepthwiseConv2dNativeBackpropFilter",
      { x: rand(c.x, 30 + i), dy: rand(outShape, 40 + i) },
      { strides: c.strides, pad: c.pad, dilations: 1, filterShape },
    );
  }
});

/** A filter with (d - 1) zeros between taps: dilation d made explicit. */
function dilateFilter(f: Data, d: number): Data {
  const [kh, kw, c, m] = f.shape;
  const eh = (kh - 1) * d + 1;
  const ew = (kw - 1) * d + 1;
  const values = new Float32Array(eh * ew * c * m);
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      for (let q = 0; q < c * m; q++) {
        values[((i * d) * ew + j * d) * c * m + q] = f.values[(i * kw + j) * c * m + q];
      }
    }
  }
  return { shape: [eh, ew, c, m], values };
}

Deno.test("depthwise gradients with dilation match cpu with an explicitly dilated filter", async () => {
  // tfjs's cpu kernels ignore dilations, so the reference is the undilated kernel applied to
  // the zero-dilated filter (for the input gradient) or read at every d-th tap (filter).
  const d = 2;
  const xShape = [2, 11, 9, 4];
  const filter = rand([3, 3, 4, 1], 51);
  const dilated = dilateFilter(filter, d);
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    [3, 3, 4, 1],
    1,
    d,
    "same",
    undefined,
    true,
  );
  const dy = rand(info.outShape, 52);
  const dxRef = await runKernel("cpu", "DepthwiseConv2dNativeBackpropInput", {
    dy,
    filter: dilated,
  }, { strides: 1, pad: "same", dilations: 1, inputShape: xShape });
  await expectMatchesCpu(
    "wasm",
    "DepthwiseConv2dNativeBackpropInput",
    { dy, filter },
    { strides: 1, pad: "same", dilations: d, inputShape: xShape },
    dxRef,
  );
  const x = rand(xShape, 53);
  const dwFull = await runKernel("cpu", "DepthwiseConv2dNativeBackpropFilter", { x, dy }, {
    strides: 1,
    pad: "same",
    dilations: 1,
    filterShape: dilated.shape,
  });
  const dwRef = { shape: filter.shape, values: new Float32Array(3 * 3 * 4) };
  const ew = dilated.shape[1];
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      for (let c = 0; c < 4; c++) {
        dwRef.values[(i * 3 + j) * 4 + c] = dwFull.values[((i * d) * ew + j * d) * 4 + c];
      }
    }
  }
  await expectMatchesCpu(
    "wasm",
    "DepthwiseConv2dNativeBackpropFilter",
    { x, dy },
    { strides: 1, pad: "same", dilations: d, filterShape: filter.shape },
    dwRef,
  );
});

interface ConvCaseOut extends ConvCase {
  cout: number;
}

const CONV_CASES: ConvCaseOut[] = [
  { x: [2, 16, 12, 3], k: [4, 4], cout: 5, strides: 4, pad: "valid" }, // stem
  { x: [2, 9, 11, 6], k: [2, 2], cout: 7, strides: 2, pad: "valid" }, // downsample, odd size
  { x: [2, 9, 11, 3], k: [2, 3], cout: 5, strides: [2, 3], pad: "same" },
  { x: [1, 8, 8, 6], k: [2, 2], cout: 7, strides: 2, pad: [[0, 0], [1, 1], [0, 1], [0, 0]] },
  { x: [2, 9, 8, 3], k: [3, 3], cout: 5, strides: 1, pad: "same" }, // general im2col path
  { x: [3, 9, 8, 6], k: [3, 2], cout: 7, strides: [2, 1], pad: "valid" },
];

Deno.test("Conv2DBackpropFilter matches cpu", async () => {
  for (const [i, c] of CONV_CASES.entries()) {
    const { filterShape, outShape } = convShapes(c, c.cout, false);
    await expectMatchesCpu(
      "wasm",
      "Conv2DBackpropFilter",
      { x: rand(c.x, 60 + i), dy: rand(outShape, 70 + i) },
      { strides: c.strides, pad: c.pad, dataFormat: "NHWC", filterShape },
    );
  }
});

Deno.test("Conv2DBackpropInput (patchify fast path and fallback) matches cpu", async () => {
  for (const [i, c] of CONV_CASES.entries()) {
    const { filterShape, outShape } = convShapes(c, c.cout, false);
    await expectMatchesCpu(
      "wasm",
      "Conv2DBackpropInput",
      { dy: rand(outShape, 80 + i), filter: rand(filterShape, 90 + i) },
      { strides: c.strides, pad: c.pad, dataFormat: "NHWC", inputShape: c.x },
    );
  }
});

Deno.test("DepthwiseConv2dNative (7x7 split into 5x5 pieces) matches cpu", async () => {
  for (const [i, c] of DEPTHWISE_CASES.entries()) {
    if (c.strides !== 1) continue;
    await expectMatchesCpu(
      "wasm",
      "DepthwiseConv2dNative",
      { x: rand(c.x, 100 + i), filter: rand([c.k[0], c.k[1], c.x[3], c.m], 110 + i) },
      { strides: 1, pad: c.pad, dilations: 1 },
    );
  }
});

Deno.test("BatchMatMul and _FusedMatMul with transpose flags, batches and bias match cpu", async () => {
  // [batchA, batchB, M, K, N]: shapes where transposing the flagged operands is cheaper, and
  // where computing the transposed product is (N or M small).
  const shapes = [[3, 3, 5, 7, 4], [1, 1, 9, 7, 2], [2, 1, 2, 6, 9], [1, 1, 33, 17, 3]];
  let seed = 200;
  for (const [ba, bb, m, k, n] of shapes) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const a = rand(transposeA ? [ba, k, m] : [ba, m, k], seed++);
        const b = rand(transposeB ? [bb, n, k] : [bb, k, n], seed++);
        await expectMatchesCpu("wasm", "BatchMatMul", { a, b }, { transposeA, transposeB });
        for (const activation of ["linear", "relu"]) {
          await expectMatchesCpu("wasm", "_FusedMatMul", { a, b, bias: rand([n], seed++) }, {
            transposeA,
            transposeB,
            activation,
          });
        }
        await expectMatchesCpu("wasm", "_FusedMatMul", { a, b }, {
          transposeA,
          transposeB,
          activation: "linear",
        });
      }
    }
  }
});

Deno.test("Sum and Mean over outer axes (pooling path) and other axes match cpu", async () => {
  const cases: [Shape, number | number[] | null, boolean][] = [
    [[2, 5, 6, 7], [0, 1, 2], false], // bias / LayerNorm gradients: all but channels
    [[2, 5, 6, 7], [0, 1, 2], true],
    [[37, 9], 0, false], // Dense bias gradient
    [[2, 5, 6, 7], [1, 2], true], // global average pooling
    [[2, 5, 6, 7], [-3, -2], false],
    [[3, 4, 5], [2], true], // innermost: wasm's own kernel
    [[3, 4, 5], [0, 2], false], // not contiguous: wasm's own kernel
    [[3, 4, 5], [0, 1, 2], false],
    [[3, 4, 5], null, false], // all axes
  ];
  for (const [i, [shape, axis, keepDims]] of cases.entries()) {
    for (const kernel of ["Sum", "Mean"]) {
      await expectMatchesCpu("wasm", kernel, { x: rand(shape, 500 + i) }, { axis, keepDims });
    }
  }
});

Deno.test("the matmul wrapper never passes transpose flags down", async () => {
  await tf.setBackend("wasm");
  const original = tf.getKernel("BatchMatMul", "wasm")!.kernelFunc;
  const seen: unknown[] = [];
  const spy: tf.KernelFunc = (args) => {
    seen.push([args.attrs?.transposeA, args.attrs?.transposeB]);
    return original(args);
  };
  const wrapped = explicitTransposeMatMul(spy, "wasm");
  const a = tf.tensor(rand([1, 6, 4], 1).values, [1, 6, 4]);
  const b = tf.tensor(rand([1, 6, 5], 2).values, [1, 6, 5]);
  const out = wrapped({
    inputs: { a, b },
    backend: tf.backend(),
    attrs: { transposeA: true, transposeB: false },
  }) as tf.TensorInfo;
  const result = tf.engine().makeTensorFromTensorInfo(out);
  assert.deepEqual(result.shape, [1, 4, 5]);
  assert.ok(seen.length === 1 && JSON.stringify(seen[0]) === "[false,false]", JSON.stringify(seen));
  const expected = tf.matMul(tf.transpose(a, [0, 2, 1]), b);
  assert.ok(
    relErr(await result.data() as Float32Array, await expected.data() as Float32Array) < 1e-6,
  );
  tf.dispose([a, b, result, expected]);
});

Deno.test("Identity and Cast share data on wasm, and stay correct after disposal", async () => {
  await tf.setBackend("wasm");
  const x = tf.tensor([1, 2, 3, 4], [2, 2]);
  const before = tf.engine().backend.numDataIds();
  const y = tf.clone(x);
  const z = tf.cast(x, "float32");
  assert.equal(tf.engine().backend.numDataIds(), before, "no copy made");
  x.dispose();
  assert.deepEqual(Array.from(await y.data()), [1, 2, 3, 4]);
  y.dispose();
  assert.deepEqual(Array.from(await z.data()), [1, 2, 3, 4]);
  const i = tf.cast(z, "int32");
  assert.equal(i.dtype, "int32");
  assert.deepEqual(Array.from(await i.data()), [1, 2, 3, 4]);
  tf.dispose([z, i]);
});

Deno.test("bad arguments give one-line errors naming the kernel", async () => {
  await tf.setBackend("wasm");
  const x = tf.zeros([1, 8, 8, 3]);
  const dy = tf.zeros([1, 4, 4, 5]);
  assert.throws(
    () =>
      tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, {
        strides: 2,
        pad: "valid",
        dataFormat: "NCHW",
        filterShape: [2, 2, 3, 5],
      }),
    /Conv2DBackpropFilter: only NHWC/,
  );
  assert.throws(
    () =>
      tf.engine().runKernel("DepthwiseConv2dNativeBackpropFilter", { x, dy }, {
        strides: 1,
        pad: "same",
        dilations: 1,
        filterShape: [3, 3, 3, 1],
      }),
    /DepthwiseConv2dNativeBackpropFilter: .*do not match filterShape/,
  );
  const f = tf.zeros([3, 3, 3, 1]);
  assert.throws(
    () =>
      tf.engine().runKernel("DepthwiseConv2dNativeBackpropInput", { dy, filter: f }, {
        strides: 2,
        pad: "same",
        dilations: 2,
        inputShape: [1, 8, 8, 3],
      }),
    /DepthwiseConv2dNativeBackpropInput: strides \[2,2\] and dilations \[2,2\] cannot both/,
  );
  tf.dispose([x, dy, f]);
});

Deno.test("gradients of a small ConvNeXt on wasm match cpu within 1e-4 for every variable", async () => {
  await tf.setBackend("cpu");
  const model = createConvNeXt(
    { kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], layerScaleInit: 0.5 },
    { numClasses: 5, inputShape: [32, 32, 3], seed: 3 },
  );
  const x = rand([2, 32, 32, 3], 300);
  const weights = rand([2, 5], 301);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  // A weighted sum of logits gives every output a different, nonzero gradient.
  const gradients = (): Record<string, Float32Array> =>
    tf.tidy(() => {
      const input = tf.tensor(x.values, x.shape);
      const w = tf.tensor(weights.values, weights.shape);
      const { grads } = tf.variableGrads(
        () => tf.sum(tf.mul(model.apply(input, { training: true }) as tf.Tensor, w)) as tf.Scalar,
        vars,
      );
      return Object.fromEntries(
        Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array]),
      );
    });
  const cpu = gradients();
  await tf.setBackend("wasm");
  const wasm = gradients();
  assert.equal(Object.keys(wasm).length, vars.length);
  const failures: string[] = [];
  for (const v of vars) {
    const ref = cpu[v.name];
    const got = wasm[v.name];
    const norm = relErr(got, ref);
    // Elementwise: only where |g| is at least 1% of the variable's largest gradient; below
    // that, float32 cancellation in either backend dominates the comparison.
    let gmax = 0;
    for (const g of ref) gmax = Math.max(gmax, Math.abs(g));
    let elem = 0;
    for (let i = 0; i < ref.length; i++) {
      if (Math.abs(ref[i]) >= 1e-2 * gmax) {
        elem = Math.max(elem, Math.abs(got[i] - ref[i]) / Math.abs(ref[i]));
      }
    }
    assert.ok(gmax > 0, `${v.name}: zero gradient, the test would prove nothing`);
    if (!(norm <= 1e-4 && elem <= 1e-4)) {
      failures.push(
        `${v.name}: norm ${norm.toExponential(2)}, elementwise ${elem.toExponential(2)}`,
      );
    }
  }
  assert.deepEqual(failures, []);
  model.dispose();
});

Deno.test("fit() trains a small ConvNeXt on wasm without leaking", async () => {
  await tf.setBackend("wasm");
  const model = createConvNeXt(
    { kind: "hierarchical", depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], layerScaleInit: 0.5 },
    { numClasses: 3, inputShape: [32, 32, 3], seed: 4, dropPathRate: 0.1 },
  );
  model.compile({
    optimizer: tf.train.adam(3e-3),
    loss: (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.losses.softmaxCrossEntropy(yTrue, yPred),
  });
  const xs = tf.tensor(rand([6, 32, 32, 3], 400).values, [6, 32, 32, 3]);
  const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2], "int32"), 3);
  await model.fit(xs, ys, { epochs: 1, batchSize: 3, verbose: 0 });
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  const history = await model.fit(xs, ys, { epochs: 4, batchSize: 3, verbose: 0 });
  const losses = history.history.loss as number[];
  assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
  assert.ok(losses[losses.length - 1] < losses[0], `loss did not fall: ${losses}`);
  assert.equal(tf.memory().numTensors, tensors, "tensors leaked");
  assert.equal(tf.engine().backend.numDataIds(), dataIds, "wasm data leaked");
  tf.dispose([xs, ys]);
  model.dispose();
});
