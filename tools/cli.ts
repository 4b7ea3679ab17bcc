/**
 * What every `deno task` command line shares: `--help`, argument parsing with a one-line
 * error plus the usage, and exit codes (2 for bad usage, 1 for a failure).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { BACKEND_REQUESTS, type BackendRequest } from "../lib/backend/select.ts";
import { OptionError } from "../lib/util/errors.ts";

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

/**
 * Parse `args`: prints `usage` and exits 0 on `--help`/`-h`; an unknown or malformed option
 * is reported through `fail` with the usage (exit 2).
 *
 * @example
 * ```ts
 * const fail: Fail = failer("convert");
 * const { values, positionals } = command(USAGE, { out: { type: "string" } }, fail);
 * if (!values.out) fail("--out DIR is required");
 * ```
 */
export function command<const O extends OptionsConfig>(
  usage: string,
  options: O,
  fail: Fail,
  args: string[] = Deno.args,
) {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    Deno.exit(0);
  }
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    return fail(`${(e as Error).message}\n${usage}`);
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

/** The usage text of {@link BACKEND_OPTION}. */
export const BACKEND_USAGE = `[--backend ${BACKEND_REQUESTS.join("|")}]`;

/** The validated `--backend` value, or a one-line error through `fail`. */
export function backendFlag(value: string | undefined, fail: Fail): BackendRequest {
  const v = value ?? "auto";
  if (!(BACKEND_REQUESTS as readonly string[]).includes(v)) {
    fail(`--backend: expected one of ${BACKEND_REQUESTS.join(", ")}, got "${v}"`);
  }
  return v as BackendRequest;
}
