/**
 * Errors that name what the caller passed. A library function reports a bad option by its
 * option name (`epochs`), never by a command-line flag (`--epochs`): a notebook calling
 * `finetune({ epochs: 0 })` has no flags. A command-line tool rewrites the names as its
 * flags with {@link OptionError.format} (see `tools/cli.ts`), which is why the error keeps
 * its message as a function of how options are named rather than as a finished string.
 *
 * @module
 */

/**
 * How a message names an option: `name("epochs")`, and `name("resume", true)` for "pass this
 * value" (`resume: true` in the library, `--resume` on a command line).
 */
export type OptionNamer = (option: string, value?: unknown) => string;

/** Options as a library caller writes them: `epochs`, `resume: true`. */
export const optionName: OptionNamer = (option, value) =>
  value === undefined ? option : `${option}: ${JSON.stringify(value)}`;

/**
 * A one-line error about an option of a library call. `option` is the option at fault, as
 * spelled in the options object; the message is written with a namer so that every option
 * it mentions can be renamed (e.g. as flags).
 *
 * @example
 * ```ts
 * import { OptionError } from "./errors.ts";
 * const e = new OptionError("epochs", (n) => `finetune: ${n("epochs")} must be >= 1, got 0`);
 * console.log(e.message); // finetune: epochs must be >= 1, got 0
 * console.log(e.format((o) => `--${o}`)); // finetune: --epochs must be >= 1, got 0
 * ```
 */
export class OptionError extends Error {
  /** The option at fault (camelCase, as in the options object). */
  readonly option: string;
  readonly #text: (name: OptionNamer) => string;

  /**
   * `text` builds the message from a namer; a plain string names only `option`, as a word
   * of its own.
   */
  constructor(option: string, text: string | ((name: OptionNamer) => string)) {
    const build = typeof text === "string"
      ? (name: OptionNamer) => text.replace(wordPattern(option), () => name(option))
      : text;
    super(build(optionName));
    this.name = "OptionError";
    this.option = option;
    this.#text = build;
  }

  /** The message with every option it mentions named by `name`. */
  format(name: OptionNamer): string {
    return this.#text(name);
  }
}

/** `option` as a word: not part of a longer name or of a path. */
function wordPattern(option: string): RegExp {
  const escaped = option.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(?<![\\w./-])${escaped}(?![\\w/-])`, "g");
}
