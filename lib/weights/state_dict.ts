/**
 * One entry point for every checkpoint format: `readStateDict` picks the reader by
 * the file's content, not its name.
 *
 * @module
 */

import { readSafetensors } from "./safetensors.ts";
import { readTorchCheckpoint, sniffFormat, type TorchCheckpointOptions } from "./torch.ts";
import { openCheckpointSource } from "./source.ts";
import type { StateDict } from "./types.ts";

export type { StateDict, TensorData } from "./types.ts";

/**
 * Reads a PyTorch checkpoint (zip) or a safetensors file, chosen by content
 * (zip signature vs safetensors header). Legacy PyTorch files get an error that says
 * how to re-save them. `options` apply to PyTorch checkpoints.
 *
 * @example
 * ```ts
 * import { readStateDict } from "./state_dict.ts";
 * const dir = new URL("../../tests/fixtures/checkpoints/", import.meta.url);
 * const sd = await readStateDict(new URL("official_tiny.pth", dir).pathname); // a path
 * const sd2 = await readStateDict(await Deno.readFile(new URL("timm_mini.safetensors", dir)));
 * console.log(sd.size, sd2.size); // tensors in each
 * ```
 */
export async function readStateDict(
  source: string | Uint8Array,
  options: TorchCheckpointOptions = {},
): Promise<StateDict> {
  const src = await openCheckpointSource(source);
  let head: Uint8Array;
  try {
    head = (await src.read(0, Math.min(512, src.size))).slice();
  } finally {
    src.close();
  }
  const format = sniffFormat(head);
  if (format === "safetensors") return await readSafetensors(source);
  if (format === "unknown") {
    const label = typeof source === "string" ? source : "<bytes>";
    throw new Error(
      `${label}: not a PyTorch checkpoint or safetensors file (unrecognised first bytes; corrupt download?)`,
    );
  }
  return await readTorchCheckpoint(source, options);
}
