/**
 * `deno task convert SOURCE --out DIR`: an official (or torchvision/timm/Hugging Face)
 * ConvNeXt checkpoint to a TF.js layers model directory.
 *
 *   deno task convert SOURCE --out DIR [--arch NAME] [--drop-head] [--include-preprocessing] [--num-classes N]
 *                                      [--head-init-scale X] [--overwrite]
 *
 * SOURCE is a zoo name (`deno task models`), a `.pth` / `.safetensors` path or a URL.
 * DIR must be new or an empty folder; `--overwrite` replaces a folder holding a converted
 * model (model.json, convnext.json, shards) and nothing else: any other folder, and the
 * current one, is refused, so the user's files are never deleted.
 *
 * @module
 */
import {
  BACKEND_HELP,
  BACKEND_OPTION,
  backendFlag,
  command,
  type CommandHelp,
  errorLine,
  type Fail,
  failer,
  usageLine,
} from "./cli.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { architectureOf } from "../lib/model/architecture.ts";
import type { ArchitectureName } from "../lib/model/variants.ts";
import { convertToDirectory } from "../lib/weights/pretrained.ts";

const HELP: CommandHelp = {
  name: "convert",
  synopsis: "SOURCE --out DIR [flags]",
  about: `
Convert a ConvNeXt checkpoint to a TF.js layers model folder (model.json, weight shards and
convnext.json, its configuration). SOURCE is a zoo name (deno task models), a .pth/.pt or
.safetensors file in the official, torchvision, timm, Hugging Face or FCMAE layout, or a URL.
DIR must be new or empty; --overwrite replaces only a folder that holds a converted model.`,
  flags: {
    out: { value: "DIR", help: "the folder to write (required)" },
    arch: {
      value: "NAME",
      help: "the architecture, when the weights alone do not tell (default: inferred)",
    },
    "drop-head": { help: "leave out the classifier: a feature extractor" },
    "include-preprocessing": { help: "the model takes 0..255 pixels and normalizes them itself" },
    "num-classes": { value: "N", help: "replace the classifier by a new one with N classes" },
    "head-init-scale": { value: "X", help: "scale of the new classifier's init", default: "1" },
    overwrite: { help: "replace DIR if it holds a converted model (nothing else)" },
    json: { help: "print the converted model's configuration (convnext.json) as one JSON line" },
    ...BACKEND_HELP,
  },
  env: ["CONVNEXT_BACKEND", "CONVNEXT_CACHE", "CONVNEXT_BASE_URL"],
  examples: [
    "deno task convert convnext_tiny_1k_224 --out models/tiny",
    "deno task convert ./convnext_small_22k_224.pth --out models/small10 --num-classes 10",
    "deno task convert ./model.safetensors --out models/feat --drop-head --overwrite",
  ],
};
const USAGE = usageLine(HELP);

const fail: Fail = failer("convert");
const { values, positionals } = command(HELP, {
  out: { type: "string" },
  arch: { type: "string" },
  "drop-head": { type: "boolean", default: false },
  "include-preprocessing": { type: "boolean", default: false },
  "num-classes": { type: "string" },
  "head-init-scale": { type: "string" },
  overwrite: { type: "boolean", default: false },
  json: { type: "boolean", default: false },
  ...BACKEND_OPTION,
}, fail);
const backend = backendFlag(values.backend, fail);
if (positionals.length !== 1) fail(`expected one SOURCE, got ${positionals.length}\n${USAGE}`);
if (!values.out) fail(`--out DIR is required\n${USAGE}`);
if (values.arch !== undefined) {
  try {
    architectureOf(values.arch, "--arch");
  } catch (e) {
    fail((e as Error).message);
  }
}
const numClasses = values["num-classes"] === undefined ? undefined : Number(values["num-classes"]);
if (numClasses !== undefined && !(Number.isInteger(numClasses) && numClasses > 0)) {
  fail(`--num-classes expects a positive integer, got "${values["num-classes"]}"`);
}
const headInitScale = values["head-init-scale"] === undefined
  ? undefined
  : Number(values["head-init-scale"]);
if (headInitScale !== undefined && !(headInitScale > 0)) {
  fail(`--head-init-scale expects a positive number, got "${values["head-init-scale"]}"`);
}

try {
  await selectBackend(backend);
  const start = performance.now();
  const info = await convertToDirectory(positionals[0], values.out, {
    architecture: values.arch as ArchitectureName | undefined,
    dropHead: values["drop-head"],
    includePreprocessing: values["include-preprocessing"],
    numClasses,
    headInitScale,
    overwrite: values.overwrite,
  });
  if (values.json) console.log(JSON.stringify({ out: values.out, ...info }));
  else {
    console.log(
      `${info.source.file} (${info.source.layout} layout, sha256 ${
        info.source.sha256.slice(0, 12)
      }…) -> ${values.out}: ` +
        `${info.architecture}, ${info.numClasses} classes, ${info.preprocessing.size}px, ` +
        `${((performance.now() - start) / 1000).toFixed(1)} s`,
    );
  }
} catch (e) {
  // The library names options (`out`, `overwrite: true`); say them as this tool's flags.
  fail(errorLine(e, "convert"), 1);
}
