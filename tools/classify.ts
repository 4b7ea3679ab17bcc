/**
 * `deno task classify`: the top classes of images with a ConvNeXt.
 *
 *   deno task classify [--model NAME|DIR|FILE] [--top K] [--json] [--batch B] IMAGE...
 *
 * The model is a zoo name (default `convnext_tiny_1k_224`, downloaded and converted on
 * first use), a converted model directory or a `.pth` / `.safetensors` checkpoint.
 * Human output is a small table per image; `--json` prints one object per line per image:
 * `{"image": PATH, "model": NAME, "top": [{"index", "label", "probability"}, ...]}`.
 * An unreadable image is a one-line error on stderr and exit code 1 at the end; the other
 * images are still classified. An unknown model is a one-line error and exit code 1.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { selectBackend } from "../lib/backend.ts";
import { classifyEach, type Prediction } from "../lib/classify.ts";
import { loadModel } from "../lib/weights/pretrained.ts";

const USAGE =
  "usage: deno task classify [--model NAME|DIR|FILE] [--top K] [--json] [--batch B] IMAGE...";
const DEFAULT_MODEL = "convnext_tiny_1k_224";

function fail(message: string, code = 2): never {
  console.error(`classify: ${message}`);
  Deno.exit(code);
}

function positiveInt(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) fail(`${flag} expects a positive integer, got "${value}"`);
  return n;
}

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
 * One JSON line, spaced as the issue writes it (and as Python's json.dumps does):
 * `{"image": "a.jpg", "model": "m", "top": [{"index": 1, "label": "x", "probability": 0.5}]}`.
 */
function jsonLine(image: string, model: string, top: Prediction[]): string {
  const s = JSON.stringify;
  const items = top.map((p) =>
    `{"index": ${s(p.index)}, "label": ${s(p.label)}, "probability": ${s(p.probability)}}`
  );
  return `{"image": ${s(image)}, "model": ${s(model)}, "top": [${items.join(", ")}]}`;
}

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      model: { type: "string", default: DEFAULT_MODEL },
      top: { type: "string" },
      json: { type: "boolean", default: false },
      batch: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
} catch (e) {
  fail(`${(e as Error).message}\n${USAGE}`);
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
if (positionals.length === 0) fail(`no IMAGE given\n${USAGE}`);
const topK = positiveInt(values.top, "--top", 5);
const batch = positiveInt(values.batch, "--batch", 16);
const name = values.model!;

let model;
try {
  await selectBackend();
  model = await loadModel(name);
} catch (e) {
  fail((e as Error).message.split("\n")[0], 1);
}

let failed = 0;
try {
  let first = true;
  for await (const item of classifyEach(model, positionals, { topK, batch })) {
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
Deno.exit(failed > 0 ? 1 : 0);
