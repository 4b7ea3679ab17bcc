/**
 * Backend selection that never falls back silently.
 *
 * TF.js quietly switches to the (about 13x slower) cpu backend when the one asked for
 * fails to initialize. Here the backend that really runs is checked after selection,
 * and a mismatch is an error.
 *
 * WebGPU (`@tensorflow/tfjs-backend-webgpu`) is imported only when it is asked for or when
 * "auto" finds a hardware adapter: its import registers "webgpu" with a priority above
 * wasm, and it comes with the Deno compatibility layer of ./webgpu_compat.ts.
 *
 * @module
 */
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
import {
  describeAdapter,
  quietHeadlessVulkan,
  registerWebGpuBackend,
  type RequestAdapter,
  requestWebGpuAdapter,
  webGpuAdapter,
  type WebGpuAdapterDescription,
  webGpuBackendRegistered,
  WebGpuUnavailable,
} from "./webgpu_compat.ts";

export { type RequestAdapter, type WebGpuAdapterDescription, WebGpuUnavailable };

/** What callers may ask for. */
export type BackendRequest = "auto" | "tensorflow" | "webgpu" | "wasm" | "cpu";
/** Backends that can actually run. */
export type BackendName = Exclude<BackendRequest, "auto">;

/** Accepted values of `selectBackend` and `CONVNEXT_BACKEND`. */
export const BACKEND_REQUESTS: readonly BackendRequest[] = [
  "auto",
  "tensorflow",
  "webgpu",
  "wasm",
  "cpu",
];

/** Options of {@link selectBackend}. */
export interface SelectBackendOptions {
  /**
   * How to ask for a WebGPU adapter (default `navigator.gpu.requestAdapter`); tests inject
   * one to simulate a machine without a GPU driver or with a hardware adapter.
   */
  requestAdapter?: RequestAdapter;
}

/**
 * The native TensorFlow bindings, in order of preference. They are imported by bare name,
 * so they load only when the user's import map (deno.json) maps them: an unmapped name
 * fails at once instead of downloading anything. The specifiers are literals, so that
 * `deno publish` can analyse them; an unmapped one is no error for `deno check` or the lock
 * file (a dynamic import is resolved when it runs), `deno info` lists it as unresolved.
 * Where no import map applies (e.g. the package from JSR), import the binding yourself
 * before `selectBackend`: it registers the "tensorflow" backend, which is then used.
 */
const NATIVE_PACKAGES = [
  ["@tensorflow/tfjs-node-gpu", () => import("@tensorflow/tfjs-node-gpu")],
  ["@tensorflow/tfjs-node", () => import("@tensorflow/tfjs-node")],
] as const;

function envOverride(): string | undefined {
  try {
    return Deno.env.get("CONVNEXT_BACKEND") || undefined;
  } catch {
    return undefined; // no --allow-env: the argument decides
  }
}

function validate(value: string, source: string): BackendRequest {
  if (!(BACKEND_REQUESTS as readonly string[]).includes(value)) {
    throw new Error(
      `${source}: unknown backend "${value}"; expected one of: ${BACKEND_REQUESTS.join(", ")}`,
    );
  }
  return value as BackendRequest;
}

/**
 * Try to import the native TensorFlow binding. Returns the package name that loaded, or
 * the errors of each attempt.
 */
async function importNative(): Promise<{ loaded?: string; errors: string[] }> {
  const errors: string[] = [];
  for (const [name, load] of NATIVE_PACKAGES) {
    try {
      await load();
      return { loaded: name, errors };
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return { errors };
}

/**
 * Registers the webgpu backend (first use) and makes it active. The adapter is requested
 * here first so that a missing one is {@link WebGpuUnavailable}, not TF.js's generic
 * "failed to initialize" (TF.js only logs the factory's error).
 */
async function activateWebGpu(requestAdapter?: RequestAdapter, found?: GPUAdapter): Promise<void> {
  if (!requestAdapter && webGpuBackendRegistered() && tf.findBackend("webgpu") !== null) {
    // Already created: switching back keeps the tensors that live on it.
    await activate("webgpu");
    return;
  }
  quietHeadlessVulkan();
  let adapter: GPUAdapter | undefined = found ?? await requestWebGpuAdapter(requestAdapter);
  // The factory takes the adapter found here once; a later re-creation asks anew.
  const once: RequestAdapter = (options) => {
    const a = adapter;
    adapter = undefined;
    return a ? Promise.resolve(a) : (requestAdapter ?? ((o) => navigator.gpu.requestAdapter(o)))(
      options,
    );
  };
  if (tf.engine().backendName === "webgpu") await activate("wasm");
  await registerWebGpuBackend(once);
  await activate("webgpu");
}

/**
 * The hardware WebGPU adapter "auto" would use, or undefined: no `navigator.gpu`, no
 * adapter, or a software one (llvmpipe/lavapipe/SwiftShader, for tests only: slower than
 * wasm). Probing imports nothing.
 */
async function probeHardwareAdapter(
  requestAdapter?: RequestAdapter,
): Promise<GPUAdapter | undefined> {
  if (!requestAdapter && !(globalThis.navigator as { gpu?: GPU } | undefined)?.gpu) {
    return undefined;
  }
  quietHeadlessVulkan();
  try {
    const adapter = await requestWebGpuAdapter(requestAdapter);
    return describeAdapter(adapter).isFallbackAdapter ? undefined : adapter;
  } catch {
    return undefined;
  }
}

async function activate(name: BackendName): Promise<void> {
  const ok = await tf.setBackend(name);
  await tf.ready();
  const active = tf.getBackend();
  if (!ok || active !== name) {
    throw new Error(
      `selectBackend: backend "${name}" failed to initialize (TF.js is on "${active}"); refusing to fall back silently`,
    );
  }
  if (name === "cpu") {
    // The cpu backend prints an install hint for tfjs-node on first use; the choice was explicit.
    (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
  }
}

/**
 * Select and initialize the TF.js backend, then check it is really the active one.
 *
 * - `"auto"` (default): the native TensorFlow backend when `@tensorflow/tfjs-node-gpu` or
 *   `@tensorflow/tfjs-node` is importable (mapped in the import map), else WebGPU on a
 *   hardware adapter (never a software/fallback one), else wasm.
 * - `"tensorflow"`: the native backend, or an error saying how to install it.
 * - `"webgpu"`: WebGPU (Vulkan, Metal or D3D12), or {@link WebGpuUnavailable} saying which
 *   driver is missing. A software adapter is accepted when asked for by name (tests).
 * - `"wasm"`: the embedded WebAssembly backend (SIMD; single-threaded under Deno).
 * - `"cpu"`: the plain JavaScript backend (slow; for tests and gradient checks).
 *
 * The environment variable `CONVNEXT_BACKEND` overrides the argument.
 *
 * @param options injection points for tests ({@link SelectBackendOptions}).
 * @returns the name of the backend now active.
 * @throws Error when the backend cannot be initialized (never a silent fallback).
 *
 * @example
 * ```ts
 * import { selectBackend } from "./select.ts";
 * const backend = await selectBackend(); // "tensorflow", "webgpu" or "wasm"
 * console.log(backend, await selectBackend("cpu")); // e.g. wasm cpu: an explicit choice
 * ```
 */
export async function selectBackend(
  requested: BackendRequest = "auto",
  options: SelectBackendOptions = {},
): Promise<BackendName> {
  const fromEnv = envOverride();
  const choice = fromEnv !== undefined
    ? validate(fromEnv, "CONVNEXT_BACKEND")
    : validate(requested, "selectBackend");
  if (choice === "tensorflow" || choice === "auto") {
    if (tf.findBackend("tensorflow") === null) {
      const { loaded, errors } = await importNative();
      if (!loaded && choice === "tensorflow") {
        throw new Error(
          `selectBackend: the "tensorflow" backend needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node in the import map (see README, "GPU"); ${
            errors.join("; ")
          }`,
        );
      }
    }
    if (tf.findBackend("tensorflow") !== null) {
      await activate("tensorflow");
      return "tensorflow";
    }
    if (choice === "tensorflow") {
      throw new Error(
        `selectBackend: the native binding loaded but registered no "tensorflow" backend`,
      );
    }
  }
  if (choice === "webgpu") {
    await activateWebGpu(options.requestAdapter);
    return "webgpu";
  }
  if (choice === "auto") {
    const adapter = await probeHardwareAdapter(options.requestAdapter);
    if (adapter) {
      await activateWebGpu(options.requestAdapter, adapter);
      return "webgpu";
    }
  }
  const name: BackendName = choice === "auto" ? "wasm" : choice as BackendName;
  await activate(name);
  return name;
}

/**
 * Make sure a backend is active: the one already selected (by {@link selectBackend}, or by
 * `tf.setBackend`), else what `selectBackend()` picks (`"auto"`, or `CONVNEXT_BACKEND`).
 * `lib/mod.ts` calls it when it is imported, so that a model can be built right after the
 * import; an explicit {@link selectBackend} switches at any time.
 *
 * @returns the name of the backend now active.
 * @throws Error as {@link selectBackend} does, when no backend was active and the one it
 *   picks cannot be initialized.
 *
 * @example
 * ```ts
 * import { ensureBackend, selectBackend } from "./select.ts";
 * await selectBackend("cpu");
 * console.log(await ensureBackend()); // "cpu": an explicit choice is kept
 * ```
 */
export async function ensureBackend(): Promise<BackendName> {
  const current = tf.engine().backendName;
  if (current) {
    await tf.ready(); // a selection may still be initializing
    return tf.getBackend() as BackendName;
  }
  return await selectBackend();
}

/**
 * The backend that TF.js is running on now. Unlike `tf.getBackend()`, this throws rather
 * than initializing a default backend as a side effect.
 */
export function activeBackend(): string {
  const name = tf.engine().backendName;
  if (!name) throw new Error("activeBackend: no backend selected yet; call selectBackend() first");
  return name;
}

/**
 * The adapter under the webgpu backend (vendor, architecture, device, description, whether
 * it is a software/fallback adapter), for benchmark reports; undefined until webgpu was
 * selected.
 */
export function webGpuAdapterInfo(): WebGpuAdapterDescription | undefined {
  return webGpuAdapter();
}
