/**
 * `deno task classify`: the top classes of images with a ConvNeXt.
 *
 *   deno task classify [--model NAME|DIR|FILE] [--top K] [--json] [--batch B] IMAGE|DIR|GLOB...
 *
 * Images are files, folders (every image inside) or quoted glob patterns, all checked before
 * the model is loaded (or downloaded). The model is a zoo name (default `convnext_tiny_1k_224`, downloaded and converted on
 * first use), a converted model directory or a `.pth` / `.safetensors` checkpoint.
 * Human output is a small table per image; `--json` prints one object per line per image:
 * `{"image": PATH, "model": NAME, "top": [{"index", "label", "probability"}, ...]}`.
 * An unreadable image is a one-line error on stderr and exit code 1 at the end; the other
 * images are still classified. An unknown model is a one-line error and exit code 1.
 *
 * @module
 */
import {
  BACKEND_HELP,
  BACKEND_OPTION,
  backendFlag,
  command,
  type CommandHelp,
  type Fail,
  failer,
  positiveInt,
  usageLine,
} from "./cli.ts";
import { selectBackend } from "../lib/backend/select.ts";
import { classifyEach, type Prediction } from "../lib/classify.ts";
import { expandImagePaths } from "../lib/data/inputs.ts";
import { DownloadError } from "../lib/util/download.ts";
import { loadModel } from "../lib/weights/pretrained.ts";

const DEFAULT_MODEL = "convnext_tiny_1k_224";
const HELP: CommandHelp = {
  name: "classify",
  synopsis: "[flags] IMAGE|DIR|GLOB...",
  about: `
The most likely classes of each image with a ConvNeXt. Images are files, folders (every image
inside, recursively) or quoted glob patterns ("photos/**/*.jpg"), checked before the model is
loaded. A zoo model is downloaded and converted once, then loaded from the cache
(\`deno task models\` lists the zoo). An unreadable image is reported on stderr and the others are
still classified; the exit code is then 1.`,
  flags: {
    model: {
      value: "NAME|DIR|FILE",
      help: "zoo name, converted model folder, or .pth/.safetensors checkpoint",
    },
    top: { value: "K", help: "classes shown per image", default: "5" },
    json: {
      help: 'one JSON line per image: {"image", "model", "top": [{index, label, probability}]}',
    },
    batch: { value: "B", help: "images per forward pass", default: "16" },
    ...BACKEND_HELP,
  },
  env: ["CONVNEXT_BACKEND", "CONVNEXT_CACHE", "CONVNEXT_BASE_URL", "CONVNEXT_THREADS"],
  examples: [
    "deno task classify data/images/chelsea.png",
    'deno task classify --model convnext_base_22k_1k_384 --top 3 --json "photos/*.jpg"',
    "deno task classify --model out/finetuned/best data/images/",
  ],
};

/** A small aligned table: rank, probability, class index and name. */
function table(image: string, model: string, top: Prediction[]): string {
  const rows = top.map((p, i) => [
    String(i + 1),
    `${(p.probability * 100).toFixed(2)}%`,
    String(p.index),
    p.label,
  ]);
  const header = ["#", "prob", "index", "label"];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) =>
    cells.map((cell, c) => c === 3 ? cell : cell.padStart(widths[c])).join("  ");
  return [`${image}  (${model})`, ...[header, ...rows].map((r) => `  ${line(r)}`)].join("\n");
}

/**
 * One JSON line, spaced as Python's json.dumps does (so Python tools read it alike):
 * `{"image": "a.jpg", "model": "m", "top": [{"index": 1, "label": "x", "probability": 0.5}]}`.
 */
function jsonLine(image: string, model: string, top: Prediction[]): string {
  const s = JSON.stringify;
  const items = top.map((p) =>
    `{"index": ${s(p.index)}, "label": ${s(p.label)}, "probability": ${s(p.probability)}}`
  );
  return `{"image": ${s(image)}, "model": ${s(model)}, "top": [${items.join(", ")}]}`;
}

const fail: Fail = failer("classify");
const { values, positionals } = command(HELP, {
  model: { type: "string", default: DEFAULT_MODEL },
  top: { type: "string" },
  json: { type: "boolean", default: false },
  batch: { type: "string" },
  ...BACKEND_OPTION,
}, fail);
if (positionals.length === 0) fail(`no IMAGE given\n${usageLine(HELP)}`);
const topK = positiveInt(values.top, "--top", 5, fail);
const batch = positiveInt(values.batch, "--batch", 16, fail);
const name = values.model!;
const backend = backendFlag(values.backend, fail);

let images: string[] = [];
try {
  images = await expandImagePaths(positionals);
} catch (e) {
  fail((e as Error).message.split("\n")[0], 1);
}

let model;
try {
  await selectBackend(backend);
  model = await loadModel(name);
} catch (e) {
  const line = (e as Error).message.split("\n")[0];
  // Offline with a zoo name: the one command that runs without any download.
  const offline = e instanceof DownloadError && e.kind === "offline";
  fail(offline ? `${line} (deno task demo runs a model without network)` : line, 1);
}

let failed = 0;
try {
  let first = true;
  for await (const item of classifyEach(model, images, { topK, batch })) {
    if ("error" in item) {
      failed++;
      console.error(`classify: ${item.error}`);
      continue;
    }
    if (values.json) {
      console.log(jsonLine(item.image, name, item.top));
    } else {
      console.log((first ? "" : "\n") + table(item.image, name, item.top));
      first = false;
    }
  }
} catch (e) {
  fail((e as Error).message.split("\n")[0], 1);
}
// Not Deno.exit: the program ends on its own, after the inference threads have stopped (a
// thread torn down while the process exits can crash it).
Deno.exitCode = failed > 0 ? 1 : 0;
