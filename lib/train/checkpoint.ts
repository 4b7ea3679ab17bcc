/**
 * Training checkpoints: every float32 tensor of a run (model weights, optimizer moments,
 * EMA weights) in one binary file plus a JSON state, written as a directory atomically
 * (temporary directory, then rename), so an interruption at any moment leaves either the
 * previous checkpoint or the new one.
 *
 * @module
 */
import { join } from "node:path";
import { exists, withTempDir } from "../util/fs.ts";

/** One named tensor of a checkpoint. */
export interface CheckpointTensor {
  /** What it belongs to, e.g. `"model"`, `"adam_m"`, `"adam_v"`, `"ema"`. */
  group: string;
  /** Weight name. */
  name: string;
  /** Shape. */
  shape: number[];
  /** Values. */
  data: Float32Array;
}

/** A checkpoint: JSON state and tensors. */
export interface Checkpoint<S> {
  /** Anything JSON (epoch, step, settings, metrics history...). */
  state: S;
  /** The tensors. */
  tensors: CheckpointTensor[];
}

const FORMAT = "convnext-tfjs-train-checkpoint/1";

/**
 * Write a checkpoint directory (`state.json` + `tensors.bin`), replacing an existing one
 * atomically.
 *
 * @example
 * ```ts
 * const dir = await Deno.makeTempDir();
 * await saveCheckpoint(`${dir}/checkpoint`, { state: { epoch: 1 }, tensors: [] });
 * console.log((await loadCheckpoint<{ epoch: number }>(`${dir}/checkpoint`))?.state); // { epoch: 1 }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveCheckpoint<S>(dir: string, checkpoint: Checkpoint<S>): Promise<void> {
  const total = checkpoint.tensors.reduce((n, t) => n + t.data.length, 0);
  const bin = new Float32Array(total);
  const manifest: { group: string; name: string; shape: number[]; offset: number }[] = [];
  let offset = 0;
  for (const t of checkpoint.tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (size !== t.data.length) {
      throw new Error(
        `saveCheckpoint: ${t.group}/${t.name} has ${t.data.length} values for shape [${t.shape}]`,
      );
    }
    bin.set(t.data, offset);
    manifest.push({ group: t.group, name: t.name, shape: t.shape, offset });
    offset += t.data.length;
  }
  await withTempDir(dir, async (tmp) => {
    await Deno.writeFile(join(tmp, "tensors.bin"), new Uint8Array(bin.buffer));
    await Deno.writeTextFile(
      join(tmp, "state.json"),
      JSON.stringify({ format: FORMAT, manifest, state: checkpoint.state }, null, 1) + "\n",
    );
  });
}

/**
 * Read a checkpoint written by {@link saveCheckpoint}; `undefined` when `dir` does not exist.
 *
 * @throws Error naming the directory when it exists but is not a valid checkpoint.
 */
export async function loadCheckpoint<S>(dir: string): Promise<Checkpoint<S> | undefined> {
  if (!await exists(dir)) return undefined;
  const fail = (why: string): never => {
    throw new Error(`checkpoint ${dir}: ${why}`);
  };
  let json: {
    format?: string;
    manifest?: { group: string; name: string; shape: number[]; offset: number }[];
    state?: S;
  } = {};
  try {
    json = JSON.parse(await Deno.readTextFile(join(dir, "state.json")));
  } catch (e) {
    fail(`cannot read state.json (${(e as Error).message.split("\n")[0]})`);
  }
  if (json.format !== FORMAT || !Array.isArray(json.manifest)) {
    fail(`state.json is not a ${FORMAT} file`);
  }
  const bytes = await Deno.readFile(join(dir, "tensors.bin")).catch((e) =>
    fail(`cannot read tensors.bin (${(e as Error).message.split("\n")[0]})`)
  );
  if (bytes.byteLength % 4 !== 0) fail("tensors.bin is truncated");
  const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const tensors = json.manifest!.map((m) => {
    const size = m.shape.reduce((a, b) => a * b, 1);
    if (m.offset + size > all.length) fail(`tensors.bin is too short for ${m.group}/${m.name}`);
    return {
      group: m.group,
      name: m.name,
      shape: m.shape,
      data: all.slice(m.offset, m.offset + size),
    };
  });
  return { state: json.state as S, tensors };
}
