/**
 * The notebook display of progress: in Jupyter one output that is updated in place
 * (`display_data` with a display id, then `update_display_data`), so a training loop leaves
 * one bar instead of thousands of log lines; elsewhere, throttled lines on stderr.
 *
 * The kit's jobs (downloads, evaluation, fine-tuning) report on the terminal with
 * `ProgressBar` (lib/util/progress.ts, the owner of progress bars and their
 * `ProgressOptions`); this module is only the display a notebook drives itself.
 *
 * @module
 */

import { displayBundle, inJupyter, type MimeBundle, updateBundle } from "./jupyter.ts";
import { escapeXml } from "./svg.ts";

/** Options of {@link progress}. */
export interface ProgressDisplayOptions {
  /** When given, `update(n)` takes a count out of `total`; otherwise a fraction 0..1. */
  total?: number;
  /** Minimum ms between redraws (default 100 in Jupyter, 1000 on stderr); the final state always shows. */
  intervalMs?: number;
}

/** Handle returned by {@link progress}. */
export interface ProgressDisplay {
  /** Reports progress: a fraction 0..1, or a count when `total` was given; optional status text. */
  update(value: number, message?: string): Promise<void>;
  /** Marks the work finished (100%) with an optional closing message. */
  done(message?: string): Promise<void>;
}

/**
 * Starts a progress display.
 *
 * @example
 * ```ts
 * import { progress } from "./progress.ts";
 * const epochs = 3;
 * let loss = 1;
 * const bar = progress("training", { total: epochs });
 * for (let e = 1; e <= epochs; e++) {
 *   loss /= 2; // ... train one epoch ...
 *   await bar.update(e, `loss ${loss.toFixed(3)}`);
 * }
 * await bar.done();
 * ```
 */
export function progress(label: string, options: ProgressDisplayOptions = {}): ProgressDisplay {
  const total = options.total;
  if (total !== undefined && !(total > 0)) {
    throw new Error(`lib/viz: progress: total must be > 0, got ${total}`);
  }
  const jupyter = inJupyter();
  const interval = options.intervalMs ?? (jupyter ? 100 : 1000);
  const displayId = `lib-viz-progress-${crypto.randomUUID()}`;
  let shown = false;
  let last = -Infinity;
  let finished = false;
  // Serialises redraws so an update never overtakes the display it updates.
  let chain: Promise<unknown> = Promise.resolve();

  const draw = (fraction: number, message: string | undefined, force: boolean) => {
    const now = performance.now();
    if (!force && now - last < interval) return chain as Promise<void>;
    last = now;
    const text = line(label, fraction, message, total);
    chain = chain.then(async () => {
      if (!jupyter) {
        await Deno.stderr.write(new TextEncoder().encode(text + "\n"));
      } else if (!shown) {
        shown = true;
        await displayBundle(bundle(fraction, text), { displayId });
      } else {
        await updateBundle(bundle(fraction, text), displayId);
      }
    });
    return chain as Promise<void>;
  };

  return {
    update(value: number, message?: string) {
      if (finished) return chain as Promise<void>;
      if (!Number.isFinite(value)) {
        throw new Error(
          `lib/viz: progress "${label}": update value must be a number, got ${value}`,
        );
      }
      const fraction = Math.min(1, Math.max(0, total === undefined ? value : value / total));
      return draw(fraction, message, !shown && jupyter);
    },
    done(message?: string) {
      if (finished) return chain as Promise<void>;
      finished = true;
      return draw(1, message ?? "done", true);
    },
  };
}

function line(
  label: string,
  fraction: number,
  message: string | undefined,
  total?: number,
): string {
  const pct = `${(fraction * 100).toFixed(0).padStart(3)}%`;
  const count = total === undefined ? "" : ` (${Math.round(fraction * total)}/${total})`;
  return `${label}: ${pct}${count}${message ? ` ${message}` : ""}`;
}

function bundle(fraction: number, text: string): MimeBundle {
  const pct = (fraction * 100).toFixed(1);
  const html = `<div style="font-family:monospace">` +
    `<progress value="${pct}" max="100" style="width:40%;vertical-align:middle"></progress> ` +
    `${escapeXml(text)}</div>`;
  return { "text/plain": text, "text/html": html };
}
