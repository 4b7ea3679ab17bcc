/**
 * Tables as Markdown outputs (rendered as tables by JupyterLab, VS Code and GitHub).
 *
 * @module
 */

import { writeFileAtomic } from "../util/fs.ts";
import { emit, Figure, type OutputOptions } from "./figure.ts";

/** A table cell: text, a number, or nothing (shown as "-"). */
export type TableCell = string | number | null | undefined;

/** Options for {@link markdownTable}. */
export interface MarkdownTableOptions extends OutputOptions {
  /** Columns in order (default: the keys of the first row). */
  columns?: string[];
  /** Columns aligned right (default: those whose values are all numbers or empty). */
  alignRight?: string[];
  /** Text under the table (e.g. where the numbers come from). */
  note?: string;
}

function cellText(v: TableCell): string {
  if (v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v))) return "-";
  return String(v).replaceAll("|", "\\|").replaceAll("\n", " ");
}

/**
 * Shows rows of values as a Markdown table (text/markdown, with the same text as text/plain).
 *
 * @example
 * ```ts
 * import { markdownTable } from "./table.ts";
 * const fig = await markdownTable([{ name: "convnext_tiny_1k_224", "top-1": 82.1 }]);
 * console.log(fig.bundle["text/markdown"]);
 * // | name | top-1 |
 * // | --- | ---: |
 * // | convnext_tiny_1k_224 | 82.1 |
 * ```
 */
export async function markdownTable(
  rows: readonly Record<string, TableCell>[],
  options: MarkdownTableOptions = {},
): Promise<Figure> {
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new Error("lib/viz: markdownTable: expected a non-empty array of rows");
  }
  const columns = options.columns ?? Object.keys(rows[0]);
  const right = new Set(
    options.alignRight ??
      columns.filter((c) =>
        rows.every((r) => typeof r[c] === "number" || r[c] === null || r[c] === undefined)
      ),
  );
  const lines = [
    `| ${columns.map((c) => cellText(c)).join(" | ")} |`,
    `| ${columns.map((c) => (right.has(c) ? "---:" : "---")).join(" | ")} |`,
    ...rows.map((r) => `| ${columns.map((c) => cellText(r[c])).join(" | ")} |`),
  ];
  if (options.note) lines.push("", options.note);
  const text = lines.join("\n") + "\n";
  const figure = new Figure({
    bundle: { "text/markdown": text, "text/plain": text },
    width: 0,
    height: 0,
  });
  // Written here: a table has no PNG or SVG form for emit() to write.
  if (options.path !== undefined) await writeFileAtomic(options.path, text);
  return await emit(figure, { display: options.display });
}
