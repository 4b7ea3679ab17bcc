/**
 * Backend selection that never falls back silently.
 *
 * TF.js quietly switches to the (about 13x slower) cpu backend when the one asked for
 * fails to initialize. Here the backend that really runs is checked after selection,
 * and a mismatch is an error.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";

/** What callers may ask for. */
export type BackendRequest = "auto" | "tensorflow" | "wasm" | "cpu";
/** Backends that can actually run. */
export type BackendName = Exclude<BackendRequest, "auto">;

/** Accepted values of `selectBackend` and `CONVNEXT_BACKEND`. */
export const BACKEND_REQUESTS: readonly BackendRequest[] = ["auto", "tensorflow", "wasm", "cpu"];

/**
 * The native TensorFlow bindings, in order of preference. They are imported by bare name,
 * so they load only when the user's import map (deno.json) maps them: an unmapped name
 * fails at once instead of downloading anything.
 */
const NATIVE_PACKAGES = ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"] as const;

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
  for (const name of NATIVE_PACKAGES) {
    try {
      // A variable specifier keeps `deno check`/the lock file from resolving an optional package.
      const specifier: string = name;
      await import(specifier);
      return { loaded: name, errors };
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return { errors };
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
 *   `@tensorflow/tfjs-node` is importable (mapped in the import map), otherwise wasm.
 * - `"tensorflow"`: the native backend, or an error saying how to install it.
 * - `"wasm"`: the embedded WebAssembly backend (SIMD; single-threaded under Deno).
 * - `"cpu"`: the plain JavaScript backend (slow; for tests and gradient checks).
 *
 * The environment variable `CONVNEXT_BACKEND` overrides the argument.
 *
 * @returns the name of the backend now active.
 * @throws Error when the backend cannot be initialized (never a silent fallback).
 *
 * @example
 * ```ts
 * import { selectBackend } from "./select.ts";
 * const backend = await selectBackend(); // "tensorflow" or "wasm"
 * ```
 */
export async function selectBackend(requested: BackendRequest = "auto"): Promise<BackendName> {
  const fromEnv = envOverride();
  const choice = fromEnv !== undefined
    ? validate(fromEnv, "CONVNEXT_BACKEND")
    : validate(requested, "selectBackend");
  if (choice === "tensorflow" || choice === "auto") {
    if (tf.findBackend("tensorflow") === null) {
      const { loaded, errors } = await importNative();
      if (!loaded && choice === "tensorflow") {
        throw new Error(
          `selectBackend: the "tensorflow" backend needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node in the import map (see README, "GPU and native TensorFlow"); ${
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
  const name: BackendName = choice === "auto" ? "wasm" : choice as BackendName;
  await activate(name);
  return name;
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
