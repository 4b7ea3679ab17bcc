/**
 * Shared helpers of the tests/train_*_test.ts files: a generated ImageFolder dataset and
 * a tiny ConvNeXt saved as a model directory.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { join } from "node:path";
import { createConvNeXt } from "../lib/model/convnext.ts";
import { saveModel } from "../lib/model/io.ts";
import { mulberry32 } from "../lib/train/rng.ts";

/** The tiny architecture of the training tests. */
export const TINY_SPEC = {
  kind: "hierarchical",
  depths: [1, 1, 1, 1],
  dims: [8, 16, 32, 64],
  layerScaleInit: 1e-6,
} as const;

/** Class names of the generated dataset. */
export const SYNTHETIC_CLASSES = ["blue", "green", "red"];

/**
 * Write a generated ImageFolder: per class, `perClass` PNGs of varying sizes whose
 * dominant colour is the class's channel, on noise; plus one corrupt `.jpg` in the first
 * class (`bad.jpg`) to test that unreadable files are skipped.
 *
 * @returns the dataset root and the corrupt file's path.
 */
export async function makeSyntheticDataset(
  root: string,
  perClass: number,
  seed = 1,
): Promise<{ root: string; bad: string }> {
  const u = mulberry32(seed);
  // Channel order of the names above: blue = 2, green = 1, red = 0.
  const channelOf = [2, 1, 0];
  for (const [c, name] of SYNTHETIC_CLASSES.entries()) {
    await Deno.mkdir(join(root, name), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const width = 48 + Math.floor(u() * 24);
      const height = 48 + Math.floor(u() * 24);
      const data = new Uint8Array(width * height * 3);
      // A bright disc of the class colour on a noisy background.
      const cx = width * (0.3 + 0.4 * u()), cy = height * (0.3 + 0.4 * u());
      const r = Math.min(width, height) * (0.25 + 0.2 * u());
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
          for (let ch = 0; ch < 3; ch++) {
            const noise = Math.floor(u() * 90);
            data[(y * width + x) * 3 + ch] = inside && ch === channelOf[c] ? 165 + noise : noise;
          }
        }
      }
      await sharp(data, { raw: { width, height, channels: 3 } }).png().toFile(
        join(root, name, `img_${String(i).padStart(3, "0")}.png`),
      );
    }
  }
  const bad = join(root, SYNTHETIC_CLASSES[0], "bad.jpg");
  await Deno.writeTextFile(bad, "this is not a JPEG");
  return { root, bad };
}

/**
 * Save a randomly initialized tiny ConvNeXt (10 classes) as a model directory.
 * `layerScaleInit` overrides the spec's 1e-6 (a large value makes drop path matter).
 */
export async function makeTinyModel(
  dir: string,
  seed = 1,
  layerScaleInit?: number,
): Promise<string> {
  const model = createConvNeXt(TINY_SPEC, { numClasses: 10, seed, layerScaleInit });
  await saveModel(model, dir, { overwrite: true });
  model.dispose();
  return dir;
}

/** Use the cpu backend quietly (deterministic, and has every gradient kernel). */
export async function useCpu(): Promise<void> {
  await tf.setBackend("cpu");
  await tf.ready();
  (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
}
