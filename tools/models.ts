/**
 * `deno task models`: prints the model zoo (every official ConvNeXt checkpoint)
 * with architecture, resolution, classes, official top-1 and download URL.
 *
 * Usage:
 * ```sh
 * deno task models          # aligned table
 * deno task models --json   # the registry as JSON, URLs included
 * ```
 *
 * @module
 */

import { cacheDir } from "../lib/util/cache.ts";
import { formatZooTable, ZOO, zooBaseUrl, zooUrl } from "../lib/weights/zoo.ts";

const USAGE = "usage: deno task models [--json]";

/** Runs the tool with command-line `args`; returns the exit code. */
export function main(args: readonly string[]): number {
  const unknown = args.filter((a) => a !== "--json" && a !== "--help" && a !== "-h");
  if (unknown.length > 0) {
    console.error(`models: unknown argument ${JSON.stringify(unknown[0])}; ${USAGE}`);
    return 2;
  }
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  try {
    if (args.includes("--json")) {
      console.log(JSON.stringify(ZOO.map((e) => ({ ...e, url: zooUrl(e) })), null, 2));
      return 0;
    }
    console.log(formatZooTable());
    console.log(
      `\n${ZOO.length} checkpoints from ${zooBaseUrl()} (set CONVNEXT_BASE_URL for a mirror); ` +
        `cache: ${cacheDir()} (CONVNEXT_CACHE).\n` +
        "top-1: official ImageNet-1K accuracy (README of facebookresearch/ConvNeXt); " +
        "22k checkpoints have 21841-class heads and no published accuracy.",
    );
    return 0;
  } catch (e) {
    console.error(`models: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
