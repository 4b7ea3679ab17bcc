/**
 * Running tfjs-backend-webgpu 4.22 under Deno: the whole compatibility layer, in one place.
 *
 * {@link registerWebGpuBackend} imports `@tensorflow/tfjs-backend-webgpu` (lazily: its
 * import registers "webgpu" with priority 3, above wasm's 2, so the kit imports it only when
 * webgpu is asked for) and replaces the package's backend factory with {@link
 * createWebGpuBackend}. Nothing in node_modules is patched and no global is touched.
 *
 * Checked against Deno 2.9.6 with Mesa's lavapipe (reproduced or not):
 *
 * - A missing adapter. The stock factory reads `adapter.features` of a null adapter
 *   ("Cannot read properties of null (reading 'features')"). Ours throws
 *   {@link WebGpuUnavailable}, one line naming the missing driver and the other backends.
 * - Synchronous reads. REPRODUCED: the backend's `readSync` copies through
 *   `OffscreenCanvas.getContext("2d")` (https://github.com/tensorflow/tfjs/pull/7576),
 *   which Deno does not implement, so `dataSync()` of a GPU-resident tensor throws
 *   "Cannot read properties of null (reading 'clearRect')". The kit reads asynchronously
 *   on every user path; {@link explainSyncReadFailure} turns the leftover TypeError into a
 *   message that says what to do instead. Delete it when Deno has a 2D OffscreenCanvas or
 *   tfjs reads without a canvas.
 * - `adapter.requestAdapterInfo()` is gone in Deno (https://github.com/denoland/deno/issues/24779).
 *   NOT A PROBLEM for 4.22: its factory prefers `adapter.info` and calls
 *   `requestAdapterInfo` only when `info` is absent (https://github.com/tensorflow/tfjs/pull/8392).
 * - `adapter.info` read after `requestDevice` throws "The adapter cannot be reused"
 *   (https://github.com/tensorflow/tfjs/issues/8518, https://github.com/denoland/deno/issues/28135).
 *   NOT REPRODUCED with Deno 2.9.6 (the info reads fine after device creation). Our factory
 *   reads the info first anyway, which is the order the spec allows everywhere.
 * - `requiredFeatures` gets `["bgra8unorm-storage"]` (an array in the array) from the stock
 *   factory, which Deno once rejected ("can not be converted to a enum",
 *   https://github.com/denoland/webgpu-examples/issues/22). NOT REPRODUCED with Deno 2.9.6
 *   (WebIDL converts the one-element array to its string). Our factory passes plain names.
 * - "error: XDG_RUNTIME_DIR is invalid or not set in the environment." REPRODUCED on headless
 *   Linux: printed by libwayland-client when the Vulkan loader probes for a display
 *   (https://github.com/KhronosGroup/Vulkan-Tools/issues/721); harmless.
 *   {@link quietHeadlessVulkan} (called by ./select.ts before it asks for an adapter, and by
 *   tests and benchmarks) points it at a private temp dir.
 * - A double free at exit when wgpu's GL backend was started. REPRODUCED (core dumps of
 *   `deno test` aborting after every test had passed): see {@link useVulkanOnLinux}, which
 *   {@link requestWebGpuAdapter} calls before each request.
 *
 * Each of these has a test in tests/webgpu_test.ts.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import type { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

/** Adapter facts for benchmark reports and logs. */
export interface WebGpuAdapterDescription {
  /** Vendor name or PCI id as the driver reports it (e.g. "nvidia", "65541"). */
  vendor: string;
  /** GPU family, when the driver says (often ""). */
  architecture: string;
  /** Device name or id, when the driver says. */
  device: string;
  /** Driver's description (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"). */
  description: string;
  /** True for a software adapter: the spec's flag, or a known software rasterizer's name. */
  isFallbackAdapter: boolean;
}

/** How an adapter is asked for (`navigator.gpu.requestAdapter` by default; tests inject one). */
export type RequestAdapter = (options?: GPURequestAdapterOptions) => Promise<GPUAdapter | null>;

/** Software implementations that drivers do not always flag as fallback adapters. */
const SOFTWARE_NAMES = /llvmpipe|lavapipe|swiftshader|software rasterizer|microsoft basic render/i;

/** The one-line error when WebGPU has no adapter (or Deno has no `navigator.gpu`). */
export class WebGpuUnavailable extends Error {
  /** @param detail what was found missing. */
  constructor(detail: string) {
    super(
      `webgpu: ${detail}: install a GPU driver with Vulkan (Linux, e.g. Debian's mesa-vulkan-drivers), Metal (macOS) or D3D12 (Windows) support, or choose another backend with CONVNEXT_BACKEND=wasm`,
    );
    this.name = "WebGpuUnavailable";
  }
}

/** The adapter's {@link WebGpuAdapterDescription}; read it before `requestDevice`. */
export function describeAdapter(adapter: GPUAdapter): WebGpuAdapterDescription {
  const info = adapter.info;
  // `isFallbackAdapter` moved from GPUAdapter to GPUAdapterInfo in the spec; read both.
  const flagged = Boolean(
    (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
      (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
  );
  const description = info.description ?? "";
  return {
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    device: info.device ?? "",
    description,
    isFallbackAdapter: flagged || SOFTWARE_NAMES.test(`${description} ${info.device ?? ""}`),
  };
}

function defaultRequestAdapter(): RequestAdapter | undefined {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  return gpu ? (options) => gpu.requestAdapter(options) : undefined;
}

/** tfjs-webgpu's WEBGPU_USE_LOW_POWER_GPU flag (registered only once the package is loaded). */
function lowPowerRequested(): boolean {
  try {
    return tf.env().getBool("WEBGPU_USE_LOW_POWER_GPU");
  } catch {
    return false; // probing before the import: the flag's default
  }
}

/** Deno's list of wgpu backends to start (read once per isolate, at its first adapter request). */
const WGPU_BACKENDS_VAR = "DENO_WEBGPU_BACKEND";

/**
 * On Linux, unless `DENO_WEBGPU_BACKEND` is set, sets it to "vulkan" so that Deno starts only
 * wgpu's Vulkan backend, not also its GL one. Why: the GL backend loads libglvnd's libEGL, whose
 * exit-time destructor (`__eglFini`) frees the EGL state of every thread that used EGL, while a
 * thread exiting at the same moment frees its own (libglvnd's `OnThreadDestroyed`): a double
 * free. `deno test` runs each test module on a pool thread that is shut down while the exit
 * handlers run, so a test process that asked for an adapter aborted now and then after all its
 * tests had passed ("free(): invalid pointer", "double free or corruption"; exit status 134).
 * Workers are exposed the same way; a plain `deno run` asks on the main thread, which runs no
 * thread-exit destructors. Vulkan is what wgpu uses on Linux anyway (Mesa's drivers, lavapipe
 * included, and NVIDIA's); a machine with GL drivers only can set
 * `DENO_WEBGPU_BACKEND=vulkan,gl` itself.
 *
 * Deno reads the variable when an isolate first asks for an adapter, so this must run before
 * that: {@link requestWebGpuAdapter} calls it. Without permission to read and write that one
 * variable it changes nothing (and never prompts).
 *
 * @returns the value set, or undefined when nothing was changed.
 */
export function useVulkanOnLinux(): string | undefined {
  if (Deno.build.os !== "linux") return undefined;
  const permission = Deno.permissions.querySync({ name: "env", variable: WGPU_BACKENDS_VAR });
  if (permission.state !== "granted" || Deno.env.get(WGPU_BACKENDS_VAR) !== undefined) {
    return undefined;
  }
  Deno.env.set(WGPU_BACKENDS_VAR, "vulkan");
  return "vulkan";
}

/**
 * The high-performance adapter, or {@link WebGpuUnavailable}. On Linux, Deno is first
 * restricted to wgpu's Vulkan backend ({@link useVulkanOnLinux}).
 *
 * @param requestAdapter where to ask (default `navigator.gpu.requestAdapter`).
 */
export async function requestWebGpuAdapter(requestAdapter?: RequestAdapter): Promise<GPUAdapter> {
  const request = requestAdapter ?? defaultRequestAdapter();
  if (!request) throw new WebGpuUnavailable("this runtime has no navigator.gpu");
  useVulkanOnLinux();
  const adapter = await request({
    powerPreference: lowPowerRequested() ? "low-power" : "high-performance",
  });
  if (!adapter) throw new WebGpuUnavailable("no WebGPU adapter found");
  return adapter;
}

/**
 * The device descriptor tfjs-backend-webgpu 4.22 means to send: the optional features it
 * uses, as plain names, and the adapter's own limits where the defaults are lower (the
 * default `maxStorageBufferBindingSize` of 128 MiB would cap tensor sizes needlessly).
 */
export function webGpuDeviceDescriptor(adapter: GPUAdapter): GPUDeviceDescriptor {
  const requiredFeatures = (["timestamp-query", "bgra8unorm-storage"] as GPUFeatureName[])
    .filter((f) => adapter.features.has(f));
  const l = adapter.limits;
  return {
    requiredFeatures,
    requiredLimits: {
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    },
  };
}

let activeAdapter: WebGpuAdapterDescription | undefined;
let ownFactory: (() => Promise<WebGPUBackend>) | undefined;

/** Whether "webgpu" is registered with {@link createWebGpuBackend} (not the stock factory). */
export function webGpuBackendRegistered(): boolean {
  return ownFactory !== undefined && tf.findBackendFactory("webgpu") === ownFactory;
}

/** The adapter under the webgpu backend created last, or undefined before one is. */
export function webGpuAdapter(): WebGpuAdapterDescription | undefined {
  return activeAdapter ? { ...activeAdapter } : undefined;
}

/** The TypeError of tfjs-webgpu's canvas-based `readSync` under Deno (see the module doc). */
const CANVAS_READ_FAILURE = /reading 'clearRect'|getContext|OffscreenCanvas/;

/**
 * Wraps the backend's `readSync` so that a synchronous read of a GPU-resident tensor fails
 * with a message saying what to use instead, rather than tfjs's canvas TypeError. Reads that
 * work (CPU-resident values) are untouched.
 */
export function explainSyncReadFailure(backend: tf.KernelBackend): void {
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (dataId: object) => {
    try {
      return readSync(dataId);
    } catch (e) {
      if (e instanceof TypeError && CANVAS_READ_FAILURE.test(e.message)) {
        throw new Error(
          `webgpu: synchronous reads of GPU tensors (dataSync, arraySync, bufferSync) are not possible under Deno, which has no 2D OffscreenCanvas (${e.message}); use await tensor.data() or tensor.array()`,
        );
      }
      throw e;
    }
  };
}

/**
 * The webgpu backend factory: adapter (or {@link WebGpuUnavailable}), its info read before
 * `requestDevice`, the device with {@link webGpuDeviceDescriptor}, then tfjs's
 * `WebGPUBackend`.
 */
export async function createWebGpuBackend(
  requestAdapter?: RequestAdapter,
): Promise<WebGPUBackend> {
  const { WebGPUBackend } = await import("npm:@tensorflow/tfjs-backend-webgpu@4.22.0");
  const adapter = await requestWebGpuAdapter(requestAdapter);
  const info = adapter.info;
  const description = describeAdapter(adapter);
  const device = await adapter.requestDevice(webGpuDeviceDescriptor(adapter));
  const backend = new WebGPUBackend(device, info);
  explainSyncReadFailure(backend);
  activeAdapter = description;
  return backend;
}

/**
 * Imports tfjs-backend-webgpu (kernels) and registers "webgpu" with
 * {@link createWebGpuBackend} in place of the package's factory, at priority 1 (below wasm),
 * so that `tf.ready()` without an explicit backend never lands on webgpu by surprise.
 * Re-registering replaces a backend that was already created.
 *
 * @param requestAdapter where to ask for the adapter (tests inject one).
 */
export async function registerWebGpuBackend(requestAdapter?: RequestAdapter): Promise<void> {
  await import("npm:@tensorflow/tfjs-backend-webgpu@4.22.0");
  if (tf.engine().backendName === "webgpu") {
    throw new Error("registerWebGpuBackend: webgpu is the active backend; select another first");
  }
  // registerBackend keeps an existing factory ("already registered"), so remove it first.
  if (tf.findBackendFactory("webgpu")) tf.removeBackend("webgpu");
  activeAdapter = undefined;
  ownFactory = () => createWebGpuBackend(requestAdapter);
  tf.registerBackend("webgpu", ownFactory, 1);
}

/**
 * On Linux without `XDG_RUNTIME_DIR`, points it at a private dir (one per user under the temp
 * dir, reused by every process, so that none is left behind per run), which keeps
 * libwayland-client from printing "error: XDG_RUNTIME_DIR is invalid or not set" (harmless)
 * when the Vulkan loader starts. Call it before the first adapter request: backend selection
 * (./select.ts) does, tests and benchmarks do. Not done on import, since it changes the
 * environment that child processes inherit.
 *
 * @returns the directory set, or undefined when nothing was changed.
 */
export function quietHeadlessVulkan(): string | undefined {
  try {
    if (Deno.build.os !== "linux" || Deno.env.get("XDG_RUNTIME_DIR")) return undefined;
    const dir = privateRuntimeDir();
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    return dir;
  } catch {
    return undefined; // no --allow-env/--allow-write: the message stays, nothing breaks
  }
}

/**
 * `<tmp>/convnext-xdg-runtime-<uid>`, created 0700. A name others can predict must be ours:
 * a directory (not a link) owned by this user with no access for others; else a fresh one.
 */
function privateRuntimeDir(): string {
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  const dir = `${tmp}/convnext-xdg-runtime-${Deno.uid()}`;
  try {
    Deno.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
  const st = Deno.lstatSync(dir);
  if (st.isDirectory && st.uid === Deno.uid() && ((st.mode ?? 0) & 0o077) === 0) return dir;
  const fresh = Deno.makeTempDirSync({ prefix: "xdg-runtime-" });
  Deno.chmodSync(fresh, 0o700);
  return fresh;
}
