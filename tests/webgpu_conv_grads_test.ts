// The convolution gradients of lib/backend/webgpu_conv_grads.ts on webgpu (matrix products for
// patchify convs, split reductions, a forward depthwise conv) against their definition in
// float64, with several chunks, partial chunks, padding, strides, odd channel counts and inputs
// the conv does not cover whole, each checked to take its path; and cases left to the
// backend's own kernels.
//
// Runs on whatever adapter Deno finds (CI: Mesa's software Vulkan driver). Without an
// adapter every test FAILS (no silent skip).
import * as tf from "@tensorflow/tfjs";
import assert from "node:assert/strict";
import type { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu";
import { selectBackend } from "../lib/backend/select.ts";
import { quietHeadlessVulkan, useVulkanOnLinux } from "../lib/backend/webgpu_compat.ts";
import {
  chunkRows,
  filterGradGeometry,
  installWebGpuConvGrads,
  stockConvGradKernel,
  WEBGPU_CONV_GRAD_KERNELS,
} from "../lib/backend/webgpu_conv_grads.ts";

quietHeadlessVulkan();
useVulkanOnLinux(); // before this module's first adapter request, as the library's requests do

async function onWebGpu(): Promise<WebGPUBackend> {
  if (!await navigator.gpu?.requestAdapter()) {
    throw new Error("no WebGPU adapter: apt-get install mesa-vulkan-drivers");
  }
  assert.equal(await selectBackend("webgpu"), "webgpu");
  return tf.backend() as unknown as WebGPUBackend;
}

/** Deterministic values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31 * 2 - 1;
  });
}

interface Case {
  name: string;
  kernel: typeof WEBGPU_CONV_GRAD_KERNELS[number];
  x: [number, number, number, number];
  filter: [number, number, number, number];
  strides: number;
  pad: "same" | "valid";
  dilations?: number;
  /**
   * How ours computes it: a matrix product, a split reduction, a forward depthwise conv, or
   * the backend's own kernel.
   */
  path: "product" | "split" | "forward" | "stock";
}

/**
 * Both gradients by their definition, in float64: over images, output pixels and filter taps,
 * the filter's gradient sums input times output gradient, the input's filter times output
 * gradient (depthwise: channel c with output channels c * m + q).
 */
function references(
  c: Case,
  x: Float32Array,
  dy: Float32Array,
  w: Float32Array,
  dyShape: number[],
) {
  const [n, h, wd, cin] = c.x, [kh, kw, , mult] = c.filter;
  const [, oh, ow, cout] = dyShape;
  const d = c.dilations ?? 1, depthwise = c.kernel.startsWith("Depthwise");
  // TF.js's "same" padding: the total split with the smaller half on top/left.
  const padOf = (size: number, out: number, k: number) =>
    c.pad === "valid" ? 0 : Math.floor(
      Math.max((out - 1) * c.strides + (k - 1) * d + 1 - size, 0) / 2,
    );
  const pt = padOf(h, oh, kh), pl = padOf(wd, ow, kw);
  const filter = new Float64Array(kh * kw * cin * mult), input = new Float64Array(x.length);
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < oh; y++) {
      for (let xo = 0; xo < ow; xo++) {
        for (let ky = 0; ky < kh; ky++) {
          for (let kx = 0; kx < kw; kx++) {
            const iy = y * c.strides + ky * d - pt, ix = xo * c.strides + kx * d - pl;
            if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
            for (let ci = 0; ci < cin; ci++) {
              const at = ((b * h + iy) * wd + ix) * cin + ci;
              for (let q = 0; q < mult; q++) {
                const co = depthwise ? ci * mult + q : q;
                const f = ((ky * kw + kx) * cin + ci) * mult + q;
                const g = dy[((b * oh + y) * ow + xo) * cout + co];
                filter[f] += x[at] * g;
                input[at] += w[f] * g;
              }
            }
          }
        }
      }
    }
  }
  return { filter, input };
}

/** Runs `c`'s kernel on webgpu and returns its result and the float64 reference. */
async function runCase(c: Case, seed: number) {
  const size = (shape: number[]) => shape.reduce((a, b) => a * b);
  const dilations = c.dilations ?? 1;
  // The output gradient's shape: the forward conv's output.
  const info = tf.backend_util.computeConv2DInfo(
    c.x,
    c.filter,
    c.strides,
    dilations,
    c.pad,
    undefined,
    c.kernel.startsWith("Depthwise"),
  );
  const dyShape = [c.x[0], info.outHeight, info.outWidth, info.outChannels];
  const xs = values(size(c.x), seed), dys = values(size(dyShape), seed + 1);
  const ws = values(size(c.filter), seed + 2);
  const [x, dy, filter] = [tf.tensor(xs, c.x), tf.tensor(dys, dyShape), tf.tensor(ws, c.filter)];
  const attrs = { strides: c.strides, pad: c.pad, dilations, dataFormat: "NHWC" };
  const input = c.kernel.endsWith("Input");
  const got =
    (input
      ? tf.engine().runKernel(c.kernel, { dy, filter }, { ...attrs, inputShape: c.x })
      : tf.engine().runKernel(c.kernel, { x, dy }, {
        ...attrs,
        filterShape: c.filter,
      })) as tf.Tensor;
  const values32 = await got.data() as Float32Array;
  tf.dispose([x, dy, filter, got]);
  const want = references(c, xs, dys, ws, dyShape);
  return { got: values32, want: input ? want.input : want.filter };
}

function maxRelative(got: Float32Array, want: Float64Array): number {
  const scale = Math.max(...want.map(Math.abs), 1e-30);
  let worst = 0;
  got.forEach((g, i) => worst = Math.max(worst, Math.abs(g - want[i]) / scale));
  return worst;
}

/** Names of the shaders the backend compiled so far (its pipeline cache's keys). */
function compiledShaders(backend: WebGPUBackend): string[] {
  return Object.keys(
    (backend as unknown as { pipelineCache: Record<string, unknown> })
      .pipelineCache,
  );
}

const CASES: Case[] = [
  // A ConvNeXt block's 7x7: "same", odd channels; 4 x 37 output rows of 8 pixels make five
  // chunks of 32 rows, the last one of 20.
  {
    name: "depthwise 7x7 same, 5 chunks",
    kernel: "DepthwiseConv2dNativeBackpropFilter",
    x: [4, 37, 8, 5],
    filter: [7, 7, 5, 1],
    strides: 1,
    pad: "same",
    path: "split",
  },
  {
    name: "depthwise 3x3 valid, stride 2",
    kernel: "DepthwiseConv2dNativeBackpropFilter",
    x: [3, 9, 7, 4],
    filter: [3, 3, 4, 1],
    strides: 2,
    pad: "valid",
    path: "split",
  },
  // The stem (4x4, stride 4) and a downsampling layer (2x2, stride 2): patchify convs.
  {
    name: "conv 4x4 stride 4 (stem)",
    kernel: "Conv2DBackpropFilter",
    x: [2, 16, 12, 3],
    filter: [4, 4, 3, 8],
    strides: 4,
    pad: "valid",
    path: "product",
  },
  {
    name: "conv 2x2 stride 2 (downsampling), an odd width left out",
    kernel: "Conv2DBackpropFilter",
    x: [5, 62, 7, 6],
    filter: [2, 2, 6, 12],
    strides: 2,
    pad: "valid",
    path: "product",
  },
  {
    name: "conv 4x4 stride 4 same, padding on every side",
    kernel: "Conv2DBackpropFilter",
    x: [2, 14, 13, 3],
    filter: [4, 4, 3, 8],
    strides: 4,
    pad: "same",
    path: "product",
  },
  {
    name: "conv 3x3 same",
    kernel: "Conv2DBackpropFilter",
    x: [2, 6, 5, 3],
    filter: [3, 3, 3, 7],
    strides: 1,
    pad: "same",
    path: "split",
  },
  // Input gradients: the stem and a downsampling layer (an odd row and column the conv left
  // out get zeros), a padded patchify conv, the 7x7 and 3x3 depthwise "same"; strided
  // depthwise is the backend's.
  {
    name: "conv 4x4 stride 4 (stem)",
    kernel: "Conv2DBackpropInput",
    x: [2, 16, 12, 3],
    filter: [4, 4, 3, 8],
    strides: 4,
    pad: "valid",
    path: "product",
  },
  {
    name: "conv 2x2 stride 2, an odd row and column left out",
    kernel: "Conv2DBackpropInput",
    x: [3, 9, 11, 6],
    filter: [2, 2, 6, 12],
    strides: 2,
    pad: "valid",
    path: "product",
  },
  {
    name: "conv 4x4 stride 4 same, padding on every side",
    kernel: "Conv2DBackpropInput",
    x: [2, 14, 13, 3],
    filter: [4, 4, 3, 8],
    strides: 4,
    pad: "same",
    path: "product",
  },
  {
    name: "depthwise 7x7 same",
    kernel: "DepthwiseConv2dNativeBackpropInput",
    x: [2, 9, 13, 5],
    filter: [7, 7, 5, 1],
    strides: 1,
    pad: "same",
    path: "forward",
  },
  {
    name: "depthwise 3x3 same, 8 channels",
    kernel: "DepthwiseConv2dNativeBackpropInput",
    x: [3, 5, 4, 8],
    filter: [3, 3, 8, 1],
    strides: 1,
    pad: "same",
    path: "forward",
  },
  {
    name: "depthwise 3x3 valid, stride 2",
    kernel: "DepthwiseConv2dNativeBackpropInput",
    x: [3, 9, 7, 4],
    filter: [3, 3, 4, 1],
    strides: 2,
    pad: "valid",
    path: "stock",
  },
  // A channel multiplier: the backend's kernel.
  {
    name: "depthwise multiplier 2",
    kernel: "DepthwiseConv2dNativeBackpropFilter",
    x: [2, 7, 6, 3],
    filter: [3, 3, 3, 2],
    strides: 1,
    pad: "valid",
    path: "stock",
  },
];

/** Calls of each of the webgpu backend's kernels `names` while `f` runs (through wrappers). */
async function countCalls<T>(names: string[], f: () => Promise<T>): Promise<[T, number[]]> {
  const configs = names.map((name) => tf.getKernel(name, "webgpu")!);
  const calls = names.map(() => 0);
  configs.forEach((config, i) => {
    tf.unregisterKernel(config.kernelName, "webgpu");
    tf.registerKernel({ ...config, kernelFunc: (args) => (calls[i]++, config.kernelFunc(args)) });
  });
  try {
    return [await f(), calls];
  } finally {
    for (const config of configs) {
      tf.unregisterKernel(config.kernelName, "webgpu");
      tf.registerKernel(config);
    }
  }
}

for (const c of CASES) {
  Deno.test(`webgpu ${c.kernel}, ${c.path}: ${c.name}, against float64`, async () => {
    const backend = await onWebGpu();
    installWebGpuConvGrads();
    const [{ got, want }, [products, forwards]] = await countCalls(
      ["BatchMatMul", "DepthwiseConv2dNative"],
      () => runCase(c, 7),
    );
    const err = maxRelative(got, want);
    assert.ok(err < 1e-6, `${c.name}: max error ${err} of the largest value`);
    assert.equal(products, c.path === "product" ? 1 : 0, "matrix products");
    assert.equal(forwards, c.path === "forward" ? 1 : 0, "forward depthwise convs");
    if (c.path === "split") {
      const key = c.kernel === "Conv2DBackpropFilter"
        ? "convnext_conv_filter_partials"
        : "convnext_depthwise_filter_partials";
      assert.ok(compiledShaders(backend).some((k) => k.includes(key)), `${key} did not run`);
    }
  });
}

Deno.test("webgpu filter gradients: chunks of ~256 output pixels, fewer when partial sums would not fit", () => {
  const g = filterGradGeometry([32, 56, 56, 96], {
    strides: 1,
    pad: "same",
    filterShape: [7, 7, 96, 1],
  }, true)!;
  assert.equal(chunkRows(g), 5); // ceil(256 / 56) rows: 359 chunks of 4,704 filter values
  // 4,096 images of 7x7 at 768 channels: 28,672 rows, at most 445 chunks of 37,632 values
  // (16 Mi floats of partial sums).
  const big = filterGradGeometry([4096, 7, 7, 768], {
    strides: 1,
    pad: "same",
    filterShape: [7, 7, 768, 1],
  }, true)!;
  assert.equal(chunkRows(big), 65); // ceil(28,672 / 445), more than ceil(256 / 7) = 37
  // Dilation, a channel multiplier and channels-first data are left to the backend.
  const attrs = { strides: 1, pad: "same" as const, filterShape: [3, 3, 4, 1] as const };
  assert.equal(
    filterGradGeometry([1, 8, 8, 4], { ...attrs, dilations: 2 } as never, true),
    undefined,
  );
  assert.equal(
    filterGradGeometry([1, 8, 8, 4], { ...attrs, filterShape: [3, 3, 4, 2] } as never, true),
    undefined,
  );
  assert.equal(
    filterGradGeometry(
      [1, 8, 8, 4],
      { ...attrs, filterShape: [3, 3, 4, 4], dataFormat: "NCHW" } as never,
      false,
    ),
    undefined,
  );
});

Deno.test("installWebGpuConvGrads: replaces the four kernels once; the stock ones stay reachable", async () => {
  await onWebGpu();
  installWebGpuConvGrads();
  assert.deepEqual(installWebGpuConvGrads(), []);
  for (const name of WEBGPU_CONV_GRAD_KERNELS) {
    const current = tf.getKernel(name, "webgpu")!.kernelFunc;
    const stock = stockConvGradKernel(name);
    assert.notEqual(current, stock);
    assert.equal(stockConvGradKernel(name), stock);
  }
});
