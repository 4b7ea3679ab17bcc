/**
 * What every `deno task` command line shares: `--help`, argument parsing with a one-line
 * error plus the usage, and exit codes (2 for bad usage, 1 for a failure).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { BACKEND_REQUESTS, type BackendRequest } from "../lib/backend/select.ts";
import { ARCHITECTURE_NAMES, isArchitectureName } from "../lib/model/variants.ts";
import { OptionError } from "../lib/util/errors.ts";
import { didYouMean } from "../lib/util/suggest.ts";
import { getZooEntry, isZooName } from "../lib/weights/zoo.ts";

type OptionsConfig = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>["options"]>;

/** Prints a one-line error and exits. Declare it with this type (`const fail: Fail = ...`) so
 * that TypeScript narrows after a call. */
export type Fail = (message: string, code?: number) => never;

/**
 * The error exit of the command `name`: prints `name: message` on stderr and exits with
 * `code` (2, the default, for bad usage; 1 for a failure).
 */
export function failer(name: string): Fail {
  return (message: string, code = 2): never => {
    console.error(`${name}: ${message}`);
    Deno.exit(code);
  };
}

/** The environment variables the kit reads, each with what it does (the `--help` texts). */
export const ENVIRONMENT = {
  CONVNEXT_BACKEND: "backend when --backend is auto: tensorflow, webgpu, wasm or cpu",
  CONVNEXT_CACHE: "cache folder for checkpoints, converted models and datasets " +
    "(default: $XDG_CACHE_HOME/convnext-tfjs or ~/.cache/convnext-tfjs)",
  CONVNEXT_BASE_URL: "mirror of https://dl.fbaipublicfiles.com/convnext/ (http(s):// or file://)",
  CONVNEXT_THREADS: "threads of the wasm inference engine (default: every core)",
  CONVNEXT_EXECUTOR: "kernels (default) or tfjs: what runs the optimized inference path",
  CONVNEXT_TRAIN_THREADS: "data-parallel training threads on wasm (default: min(cores, batch))",
  SLURM_ARRAY_TASK_ID: "with SLURM_ARRAY_TASK_COUNT: the shard of a SLURM array job",
  JOB_COMPLETION_INDEX: "with CONVNEXT_SHARD_COUNT: the shard of a Kubernetes Indexed Job",
  CONVNEXT_VIZ_FONT: "TTF font file(s) for text in PNG charts, ':'-separated " +
    "(default: DejaVu Sans or another common system font)",
} as const;

/** Name of an environment variable in {@link ENVIRONMENT}. */
export type EnvName = keyof typeof ENVIRONMENT;

/** What `--help` says about one flag. */
export interface FlagHelp {
  /** The value's placeholder (`N`, `DIR`, `a|b`); absent for a boolean flag. */
  value?: string;
  /** What the flag does, one line. */
  help: string;
  /** The default shown, when it is not the option's `default`. */
  default?: string;
  /** For internal flags (e.g. between a command and its subprocesses): not shown. */
  hidden?: boolean;
}

/** What `--help` says about a command: every flag, the environment, examples. */
export interface CommandHelp {
  /** The task, as in `deno task NAME`. */
  name: string;
  /** What follows the name on the usage line, e.g. `[flags] IMAGE...`. */
  synopsis: string;
  /** What the command does: a few lines. */
  about: string;
  /** One entry per option of the command. */
  flags: Record<string, FlagHelp>;
  /** The environment variables the command reads. */
  env: readonly EnvName[];
  /** At least two command lines, each may end with `# what it does`. */
  examples: readonly string[];
}

type OptionSpec = OptionsConfig[string];

/** The one-line usage of a command: `usage: deno task NAME SYNOPSIS`. */
export function usageLine(help: CommandHelp): string {
  return `usage: deno task ${help.name} ${help.synopsis}`;
}

/** Two aligned columns, indented; a left cell wider than 22 gets its text on the next line. */
function columns(rows: readonly (readonly [string, string])[]): string[] {
  const width = Math.min(22, Math.max(...rows.map(([left]) => left.length)));
  return rows.flatMap(([left, right]) =>
    left.length > width
      ? [`  ${left}`, `  ${" ".repeat(width)}  ${right}`]
      : [`  ${left.padEnd(width)}  ${right}`]
  );
}

/**
 * The full `--help` text: usage, what the command does, each flag with its default, the
 * environment variables and examples. Throws when an option has no help entry (a
 * programming error, caught by the help tests) or when fewer than two examples are given.
 */
export function helpText(help: CommandHelp, options: OptionsConfig): string {
  const rows: [string, string][] = [];
  for (const [name, spec] of Object.entries(options) as [string, OptionSpec][]) {
    const flag = help.flags[name];
    if (!flag) throw new Error(`${help.name}: option --${name} has no help entry`);
    if (flag.hidden) continue;
    const shown = flag.default ??
      (spec.type === "string" && spec.default !== undefined ? String(spec.default) : undefined);
    const left = `--${name}${flag.value ? ` ${flag.value}` : ""}`;
    rows.push([left, shown === undefined ? flag.help : `${flag.help} (default: ${shown})`]);
  }
  rows.push(["-h, --help", "print this help and exit"]);
  if (help.examples.length < 2) throw new Error(`${help.name}: --help needs two examples`);
  const env = help.env.map((name) => [name, ENVIRONMENT[name]] as [string, string]);
  return [
    usageLine(help),
    "",
    help.about.trim(),
    "",
    "flags:",
    ...columns(rows),
    ...(env.length ? ["", "environment:", ...columns(env)] : []),
    "",
    "examples:",
    ...help.examples.map((e) => `  ${e}`),
  ].join("\n");
}

/**
 * Parse `args`: prints the full help (see {@link helpText}) and exits 0 on `--help`/`-h`; an
 * unknown or malformed option is reported through `fail` with the usage line (exit 2).
 *
 * @example
 * ```ts
 * const help: CommandHelp = {
 *   name: "convert",
 *   synopsis: "SOURCE --out DIR",
 *   about: "Convert a checkpoint.",
 *   flags: { out: { value: "DIR", help: "where the converted model goes" } },
 *   env: ["CONVNEXT_CACHE"],
 *   examples: ["deno task convert a.pth --out a/", "deno task convert b.pth --out b/"],
 * };
 * const fail: Fail = (message) => {
 *   throw new Error(message);
 * };
 * const { values } = command(help, { out: { type: "string" } }, fail, ["--out", "x"]);
 * console.log(values.out); // x
 * ```
 */
export function command<const O extends OptionsConfig>(
  help: CommandHelp,
  options: O,
  fail: Fail,
  args: string[] = Deno.args,
) {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(helpText(help, options));
    Deno.exit(0);
  }
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    return fail(`${(e as Error).message}\n${usageLine(help)}`);
  }
}

/** An optional positive integer option: `fallback` when absent, else an error through `fail`. */
export function positiveInt(
  value: string | undefined,
  flag: string,
  fallback: number,
  fail: Fail,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) fail(`${flag} expects a positive integer, got "${value}"`);
  return n;
}

/** The flag of a library option: camelCase becomes `--kebab-case` (`minLr` -> `--min-lr`). */
export function flagOf(option: string): string {
  return `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/**
 * The one-line message of an error thrown by the library, for the command `name`: its first
 * line, without a leading `name: ` (the {@link failer} adds it), and with the options of an
 * {@link OptionError} written as flags (`flags` maps an option to its flag where that is not
 * {@link flagOf}'s). A value passed for an option becomes the flag with it
 * (`resume: true` -> `--resume`, `size: 224` -> `--size 224`).
 */
export function errorLine(e: unknown, name: string, flags: Record<string, string> = {}): string {
  const flag = (option: string) => flags[option] ?? flagOf(option);
  const message = e instanceof OptionError
    ? e.format((option, value) =>
      value === undefined || value === true ? flag(option) : `${flag(option)} ${value}`
    )
    : e instanceof Error
    ? e.message
    : String(e);
  const line = message.split("\n")[0];
  return line.startsWith(`${name}: `) ? line.slice(name.length + 2) : line;
}

/** The `--backend` option of every command (`CONVNEXT_BACKEND` overrides it, as for the library). */
export const BACKEND_OPTION = { backend: { type: "string", default: "auto" } } as const;

/** The help entry of {@link BACKEND_OPTION}. */
export const BACKEND_HELP: Record<"backend", FlagHelp> = {
  backend: {
    value: BACKEND_REQUESTS.join("|"),
    help: "auto: native TensorFlow if installed, else WebGPU on a hardware GPU, else wasm",
  },
};

/** The validated `--backend` value, or a one-line error through `fail`. */
export function backendFlag(value: string | undefined, fail: Fail): BackendRequest {
  const v = value ?? "auto";
  if (!(BACKEND_REQUESTS as readonly string[]).includes(v)) {
    fail(`--backend: expected one of ${BACKEND_REQUESTS.join(", ")}, got "${v}"`);
  }
  return v as BackendRequest;
}

/**
 * The architecture named by a `--model` flag (random-init commands: demo, bench,
 * bench:train), or a one-line error through `fail`: "did you mean" for a typo, the
 * architecture of a zoo checkpoint's name, else the list of architectures.
 */
export function architectureFlag(value: string, fail: Fail): string {
  const name = value.trim();
  if (isArchitectureName(name)) return name;
  if (isZooName(name)) {
    const arch = getZooEntry(name).architecture;
    fail(
      `--model: "${name}" is a pretrained checkpoint; this command builds an architecture with ` +
        `random weights: use --model ${arch}`,
    );
  }
  const near = didYouMean(name, ARCHITECTURE_NAMES);
  fail(
    `--model: unknown architecture "${name}"${
      near || `; expected one of: ${ARCHITECTURE_NAMES.join(", ")}`
    }`,
  );
}
