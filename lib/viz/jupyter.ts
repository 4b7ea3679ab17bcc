/**
 * Thin guard around `Deno.jupyter`, which only exists inside `deno jupyter`
 * (reading it elsewhere throws), so the rest of lib/viz can ask "are we in a
 * notebook?" and display MIME bundles without caring.
 *
 * @module
 */

/** A Jupyter MIME bundle: MIME type to string (text, base64) or JSON object. */
export type MimeBundle = Record<string, string | object>;

/** The subset of `Deno.jupyter` lib/viz uses (kept structural so tests can fake it). */
export interface JupyterApi {
  /** `Deno.jupyter.display`. */
  display(
    obj: unknown,
    options?: { raw?: boolean; update?: boolean; display_id?: string },
  ): Promise<void>;
  /** `Deno.jupyter.broadcast`. */
  broadcast(msgType: string, content: Record<string, unknown>): Promise<void>;
}

/**
 * Returns `Deno.jupyter` when running inside the Deno Jupyter kernel, else undefined.
 *
 * @example
 * ```ts
 * if (jupyter()) console.log("inside a notebook");
 * ```
 */
export function jupyter(): JupyterApi | undefined {
  try {
    // Outside `deno jupyter` the getter throws instead of returning undefined.
    return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
  } catch {
    return undefined;
  }
}

/** True inside the Deno Jupyter kernel. */
export function inJupyter(): boolean {
  return jupyter() !== undefined;
}

/**
 * Displays a raw MIME bundle in the notebook; a no-op (returns false) outside Jupyter.
 *
 * @param bundle MIME type -> data (images base64-encoded, JSON types as objects).
 * @param options `displayId` tags the output so `updateBundle` can replace it later.
 * @returns whether something was displayed.
 *
 * @example
 * ```ts
 * await displayBundle({ "text/markdown": "**hello**" });
 * ```
 */
export async function displayBundle(
  bundle: MimeBundle,
  options: { displayId?: string } = {},
): Promise<boolean> {
  const api = jupyter();
  if (!api) return false;
  await api.display(bundle, {
    raw: true,
    ...(options.displayId ? { display_id: options.displayId } : {}),
  });
  return true;
}

/**
 * Replaces the data of an earlier display with the same display id
 * (Jupyter `update_display_data`); a no-op (returns false) outside Jupyter.
 *
 * @example
 * ```ts
 * await displayBundle({ "text/plain": "0%" }, { displayId: "job" });
 * await updateBundle({ "text/plain": "100%" }, "job");
 * ```
 */
export async function updateBundle(bundle: MimeBundle, displayId: string): Promise<boolean> {
  const api = jupyter();
  if (!api) return false;
  await api.broadcast("update_display_data", {
    data: bundle,
    metadata: {},
    transient: { display_id: displayId },
  });
  return true;
}

/** Base64 of bytes, as Jupyter wants for binary MIME types (chunked: no call-stack blowup). */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}
