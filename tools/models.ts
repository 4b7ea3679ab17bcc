/**
 * `deno task models`: prints the model zoo (every official ConvNeXt checkpoint)
 * with architecture, resolution, classes, official top-1 and download URL.
 *
 * Usage:
 * ```sh
 * deno task models          # aligned table
 * deno task models --json   # one JSON line per checkpoint, URL included
 * ```
 *
 * @module
 */

import { cacheDir } from "../lib/util/cache.ts";
import { formatZooTable, ZOO, zooBaseUrl, zooUrl } from "../lib/weights/zoo.ts";
import { command, type CommandHelp, helpText, usageLine } from "./cli.ts";

const HELP: CommandHelp = {
  name: "models",
  synopsis: "[--json]",
  about: `
The model zoo: every official ConvNeXt checkpoint, with its architecture, resolution, classes,
pretraining, official ImageNet-1K top-1, parameters, FLOPs and download URL. Any name in the first
column names a model for classify, eval and finetune (downloaded and converted on first use).`,
  flags: {
    json: {
      help: "JSON lines: one checkpoint each, its download url included",
    },
  },
  env: ["CONVNEXT_BASE_URL", "CONVNEXT_CACHE"],
  examples: [
    "deno task models",
    'deno task models --json | grep \'"pretraining":"22k->1k"\'',
    "CONVNEXT_BASE_URL=file:///mnt/mirror/convnext/ deno task models   # URLs of a mirror",
  ],
};

const OPTIONS = { json: { type: "boolean", default: false } } as const;

/** A usage error of {@link main}: printed as one line, exit code 2. */
class UsageError extends Error {}

/** Runs the tool with command-line `args`; returns the exit code. */
export function main(args: readonly string[]): number {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(helpText(HELP, OPTIONS));
    return 0;
  }
  let json = false;
  try {
    const { values, positionals } = command(HELP, OPTIONS, (message) => {
      throw new UsageError(message);
    }, [...args]);
    if (positionals.length > 0) {
      throw new UsageError(`unexpected argument "${positionals[0]}"\n${usageLine(HELP)}`);
    }
    json = values.json;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`models: ${e.message}`);
    return 2;
  }
  try {
    if (json) {
      for (const e of ZOO) console.log(JSON.stringify({ ...e, url: zooUrl(e) }));
      return 0;
    }
    console.log(formatZooTable());
    const hub = ZOO.filter((e) => !zooUrl(e).startsWith(zooBaseUrl())).length;
    console.log(
      `\n${ZOO.length} checkpoints: ${ZOO.length - hub} from ${zooBaseUrl()} ` +
        `(set CONVNEXT_BASE_URL for a mirror), ${hub} from timm on the Hugging Face Hub; ` +
        `cache: ${cacheDir()} (CONVNEXT_CACHE).\n` +
        "top-1: ImageNet-1K accuracy as published (the READMEs of facebookresearch/ConvNeXt and " +
        "ConvNeXt-V2, timm's results for the small V1 sizes); 22k checkpoints have 21841-class " +
        "heads and FCMAE encoders no head, so no accuracy.\n" +
        "license: of the weights. ConvNeXt V2's CC-BY-NC-4.0 allows non-commercial use only.",
    );
    return 0;
  } catch (e) {
    console.error(`models: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
