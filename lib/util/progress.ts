/**
 * A small, dependency-free progress bar for long jobs (downloads, evaluation,
 * fine-tuning).
 *
 * On a terminal it redraws one line in place with `\r`; when stderr is a pipe or
 * a file (CI logs) it prints a plain line at most every few seconds instead, so
 * logs stay readable rather than filling with carriage returns.
 *
 * @module
 */

/** Extra `key=value` fields shown after the counters, e.g. `{ loss: 0.123 }`. */
export type ProgressExtra = Record<string, string | number>;

/** Options of {@link ProgressBar}. */
export interface ProgressOptions {
  /** Short label printed first, e.g. a file name or `"eval"`. */
  label: string;
  /** Expected final value of `current`; unknown (no bar, no ETA) when omitted. */
  total?: number;
  /** `"bytes"` formats counters as KiB/MiB/GiB and rates as MiB/s; default `"items"`. */
  unit?: "bytes" | "items";
  /** Name of one item for the rate, e.g. `"img"` gives `12.3 img/s`; default `"it"`. */
  itemName?: string;
  /** Where text goes; default: stderr. */
  write?: (text: string) => void;
  /** Redraw in place with `\r`; default: whether stderr is a terminal. */
  isTTY?: boolean;
  /** Minimum milliseconds between terminal redraws; default 100. */
  ttyIntervalMs?: number;
  /** Minimum milliseconds between plain (non-terminal) lines; default 5000. */
  plainIntervalMs?: number;
  /** Print nothing at all (the bar still tracks values for {@link ProgressBar.render}). */
  quiet?: boolean;
  /** Clock in milliseconds, for tests; default `performance.now`. */
  now?: () => number;
  /** Width of the bar in characters on a terminal; default 24. */
  barWidth?: number;
}

const encoder = new TextEncoder();

function defaultWrite(text: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(text));
  } catch {
    // A closed stderr must never break the job the bar is reporting on.
  }
}

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/**
 * Formats a byte count with binary units, e.g. `1536` -> `"1.5 KiB"`.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./progress.ts";
 * console.log(formatBytes(3 * 1024 * 1024)); // "3.0 MiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "? B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[i]}`;
}

/**
 * Formats a duration in seconds as `m:ss` or `h:mm:ss`; `"?"` when unknown.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./progress.ts";
 * console.log(formatDuration(75)); // "1:15"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function formatExtraValue(v: string | number): string {
  if (typeof v === "string") return v;
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toFixed(4);
}

/**
 * A progress bar: label, counters, percentage, rate, ETA and extra fields.
 *
 * @example
 * ```ts
 * import { ProgressBar } from "./progress.ts";
 * const bar = new ProgressBar({ label: "eval", total: 50000, itemName: "img" });
 * for (let i = 0; i < 50000; i += 100) bar.update(i + 100, { top1: 0.81 });
 * bar.done();
 * // On a terminal the line is redrawn in place (elsewhere printed every so often); midway
 * // it reads like `eval [=====>    ] 25000/50000  50.0%  812.3 img/s  ETA 0:31  top1=0.8100`.
 * if (bar.current !== 50000) throw new Error(`at ${bar.current}`);
 * ```
 */
export class ProgressBar {
  /** Current value. */
  current = 0;
  /** Expected final value, if known. */
  total: number | undefined;
  /** Latest extra fields. */
  extra: ProgressExtra = {};

  readonly #opts: Required<Omit<ProgressOptions, "total">>;
  readonly #start: number;
  #startValue = 0;
  #lastDraw = -Infinity;
  #drewTTY = false;
  #finished = false;

  /** Creates a bar; nothing is printed until the first {@link update}. */
  constructor(options: ProgressOptions) {
    this.total = options.total;
    const now = options.now ?? (() => performance.now());
    this.#opts = {
      label: options.label,
      unit: options.unit ?? "items",
      itemName: options.itemName ?? "it",
      write: options.write ?? defaultWrite,
      isTTY: options.isTTY ?? stderrIsTerminal(),
      ttyIntervalMs: options.ttyIntervalMs ?? 100,
      plainIntervalMs: options.plainIntervalMs ?? 5000,
      quiet: options.quiet ?? false,
      now,
      barWidth: options.barWidth ?? 24,
    };
    this.#start = now();
  }

  /**
   * Sets the value the rate is measured from (e.g. the bytes already on disk when
   * a download resumes), so the rate and ETA reflect only the work done now.
   */
  setStartValue(value: number): void {
    this.#startValue = value;
    this.current = value;
  }

  /** Items (or bytes) per second since the start, or `NaN` before any time passed. */
  rate(): number {
    const seconds = (this.#opts.now() - this.#start) / 1000;
    return seconds > 0 ? (this.current - this.#startValue) / seconds : NaN;
  }

  /** Estimated seconds left, or `NaN` when the total or the rate is unknown. */
  eta(): number {
    const rate = this.rate();
    if (this.total === undefined || !(rate > 0)) return NaN;
    return Math.max(0, this.total - this.current) / rate;
  }

  /** The status line for the current state (no `\r`, no newline). */
  render(): string {
    const o = this.#opts;
    const bytes = o.unit === "bytes";
    const fmt = (v: number) => (bytes ? formatBytes(v) : String(v));
    const parts = [o.label];
    const total = this.total;
    if (total !== undefined && total > 0) {
      const frac = Math.min(1, Math.max(0, this.current / total));
      if (o.isTTY) {
        const filled = Math.floor(frac * o.barWidth);
        const head = filled < o.barWidth ? ">" : "";
        parts.push(
          `[${"=".repeat(filled)}${head}${" ".repeat(o.barWidth - filled - head.length)}]`,
        );
      }
      parts.push(`${fmt(this.current)}/${fmt(total)}`, `${(frac * 100).toFixed(1)}%`);
    } else {
      parts.push(fmt(this.current));
    }
    const rate = this.rate();
    if (Number.isFinite(rate)) {
      parts.push(bytes ? `${formatBytes(rate)}/s` : `${rate.toFixed(1)} ${o.itemName}/s`);
    }
    if (total !== undefined && !this.#finished) parts.push(`ETA ${formatDuration(this.eta())}`);
    if (this.#finished) {
      parts.push(`in ${formatDuration((o.now() - this.#start) / 1000)}`);
    }
    for (const [k, v] of Object.entries(this.extra)) parts.push(`${k}=${formatExtraValue(v)}`);
    return parts.join("  ");
  }

  /** Sets the current value (and optionally the extra fields) and redraws if due. */
  update(current: number, extra?: ProgressExtra): void {
    this.current = current;
    if (extra) this.extra = { ...this.extra, ...extra };
    this.#draw(false);
  }

  /** Adds `n` (default 1) to the current value and redraws if due. */
  tick(n = 1, extra?: ProgressExtra): void {
    this.update(this.current + n, extra);
  }

  /** Prints the final state and ends the line; later updates are ignored. */
  done(extra?: ProgressExtra): void {
    if (this.#finished) return;
    if (extra) this.extra = { ...this.extra, ...extra };
    this.#finished = true;
    if (this.#opts.quiet) return;
    const line = this.render();
    this.#opts.write(this.#opts.isTTY ? `\r${line}\x1b[K\n` : `${line}\n`);
  }

  /**
   * Ends a terminal line that is being redrawn without printing a final state,
   * so an error message does not land on top of the bar.
   */
  abort(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (!this.#opts.quiet && this.#opts.isTTY && this.#drewTTY) this.#opts.write("\n");
  }

  #draw(force: boolean): void {
    const o = this.#opts;
    if (o.quiet || this.#finished) return;
    const now = o.now();
    const interval = o.isTTY ? o.ttyIntervalMs : o.plainIntervalMs;
    if (!force && now - this.#lastDraw < interval) return;
    this.#lastDraw = now;
    if (o.isTTY) {
      this.#drewTTY = true;
      o.write(`\r${this.render()}\x1b[K`);
    } else {
      o.write(`${this.render()}\n`);
    }
  }
}
