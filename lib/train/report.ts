/**
 * The validation report: accuracy, per-class accuracy and the confusion matrix.
 *
 * @module
 */

/** A classification report. */
export interface ValidationReport {
  /** Class names. */
  classes: string[];
  /** Images evaluated. */
  total: number;
  /** Overall accuracy. */
  accuracy: number;
  /** Accuracy (recall) per class; `null` for a class without validation images. */
  perClassAccuracy: Record<string, number | null>;
  /** `confusion[true][predicted]` counts. */
  confusion: number[][];
}

/**
 * Build the report from true and predicted class indices.
 *
 * @example
 * ```ts
 * const r = validationReport(["cat", "dog"], [0, 1, 1], [0, 1, 0]);
 * r.accuracy; // 2 / 3
 * ```
 */
export function validationReport(
  classes: string[],
  truth: ArrayLike<number>,
  predicted: ArrayLike<number>,
): ValidationReport {
  if (truth.length !== predicted.length) {
    throw new Error(`validationReport: ${truth.length} labels but ${predicted.length} predictions`);
  }
  const k = classes.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  let correct = 0;
  for (let i = 0; i < truth.length; i++) {
    confusion[truth[i]][predicted[i]]++;
    if (truth[i] === predicted[i]) correct++;
  }
  const perClassAccuracy: Record<string, number | null> = {};
  classes.forEach((name, c) => {
    const n = confusion[c].reduce((a, b) => a + b, 0);
    perClassAccuracy[name] = n === 0 ? null : confusion[c][c] / n;
  });
  return {
    classes,
    total: truth.length,
    accuracy: truth.length === 0 ? 0 : correct / truth.length,
    perClassAccuracy,
    confusion,
  };
}

/**
 * The report as text: per-class accuracy, then the confusion matrix (rows: true class,
 * columns: predicted).
 */
export function formatReport(report: ValidationReport): string {
  const lines = [
    `validation: ${report.total} images, accuracy ${(report.accuracy * 100).toFixed(2)}%`,
  ];
  const width = Math.max(5, ...report.classes.map((c) => c.length));
  for (const c of report.classes) {
    const a = report.perClassAccuracy[c];
    lines.push(
      `  ${c.padEnd(width)}  ${a === null ? "   n/a" : `${(a * 100).toFixed(1).padStart(5)}%`}`,
    );
  }
  const cell = Math.max(4, ...report.confusion.flat().map((n) => String(n).length + 1));
  lines.push("confusion matrix (rows: true, columns: predicted):");
  lines.push(
    " ".repeat(width + 2) + report.classes.map((_, j) => String(j).padStart(cell)).join(""),
  );
  report.confusion.forEach((row, i) => {
    lines.push(
      `  ${`${report.classes[i]}`.padEnd(width)}` + row.map((n) =>
        String(n).padStart(cell)
      ).join("") +
        `   (${i})`,
    );
  });
  return lines.join("\n");
}
