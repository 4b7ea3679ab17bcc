/**
 * `deno run -A tools/notebooks/make_crops.ts [--force]`
 *
 * Makes data/crops/, the small image folder the fine-tuning notebook trains on offline
 * (`notebooks/offline.json`): four classes, one per example photo of data/images/ (cat,
 * coffee, rocket, astronaut), 15 random square crops each (side 45-90 % of the photo's
 * shorter side, anywhere in the photo, half of them mirrored), resized to 96 x 96 with
 * sharp's Lanczos filter and saved as JPEG quality 80: about 4 KB each, 250 KB in all.
 * The crops are seeded (mulberry32), so a re-run gives the same crops. Files that exist are
 * kept unless --force.
 *
 * @module
 */

import sharp from "sharp";
import { join } from "node:path";
import { REPO_ROOT } from "./kernelspec.ts";

/** Class name -> source photo under data/images/. */
export const CROP_SOURCES: Record<string, string> = {
  astronaut: "astronaut.jpg",
  cat: "chelsea.png",
  coffee: "coffee.jpg",
  rocket: "rocket.jpg",
};

/** Crops per class. */
export const CROPS_PER_CLASS = 15;

/** Side of every crop, in pixels. */
export const CROP_SIZE = 96;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Writes the crops under `out` (default data/crops); returns the paths written. */
export async function makeCrops(
  out = join(REPO_ROOT, "data", "crops"),
  force = false,
): Promise<string[]> {
  const written: string[] = [];
  for (const [index, [name, file]] of Object.entries(CROP_SOURCES).entries()) {
    const source = join(REPO_ROOT, "data", "images", file);
    const meta = await sharp(source).metadata();
    const width = meta.width!;
    const height = meta.height!;
    const random = mulberry32(1000 + index);
    await Deno.mkdir(join(out, name), { recursive: true });
    for (let i = 0; i < CROPS_PER_CLASS; i++) {
      const side = Math.round(Math.min(width, height) * (0.45 + 0.45 * random()));
      const left = Math.floor(random() * (width - side + 1));
      const top = Math.floor(random() * (height - side + 1));
      const mirror = random() < 0.5;
      const path = join(out, name, `${name}_${String(i).padStart(2, "0")}.jpg`);
      if (!force && await exists(path)) continue;
      let image = sharp(source).extract({ left, top, width: side, height: side })
        .resize(CROP_SIZE, CROP_SIZE, { kernel: "lanczos3" });
      if (mirror) image = image.flop();
      // No metadata (rocket.jpg's ICC profile is dropped): small, plain sRGB JPEGs.
      const bytes = await image.jpeg({ quality: 80, mozjpeg: false }).toBuffer();
      await Deno.writeFile(path, bytes);
      written.push(path);
    }
  }
  return written;
}

if (import.meta.main) {
  const force = Deno.args.includes("--force");
  const unknown = Deno.args.filter((a) => a !== "--force");
  if (unknown.length > 0) {
    console.error(`make_crops: unknown argument ${unknown[0]}; usage: make_crops.ts [--force]`);
    Deno.exit(2);
  }
  const written = await makeCrops(undefined, force);
  console.log(`make_crops: wrote ${written.length} files under data/crops/`);
}
