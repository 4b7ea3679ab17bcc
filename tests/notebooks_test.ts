// Executes every notebook headlessly on the Deno kernel, offline (notebooks/offline.json:
// fixture weights and data from the repository), and checks each produced its key outputs
// and no error.
import assert from "node:assert/strict";
import { join } from "node:path";
import { findNotebooks, runNotebooks } from "../tools/notebooks/run.ts";
import { offlineEnv } from "../tools/notebooks.ts";

interface Output {
  output_type: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: string;
  execution_count?: number | null;
  outputs?: Output[];
}

const join1 = (t: string | string[] | undefined) => Array.isArray(t) ? t.join("") : t ?? "";

/** What each notebook must show; a notebook not listed here only has to run cleanly. */
const EXPECTATIONS: Record<string, (cells: Cell[], text: string, mimes: string[]) => void> = {
  "classification.ipynb": (_cells, text, mimes) => {
    assert.ok(mimes.includes("image/png"), "the photos");
    // Four top-5 charts and the 22k one.
    assert.ok(mimes.filter((m) => m === "image/svg+xml").length >= 5, "the top-5 bar charts");
    assert.match(text, /21841 classes/);
    assert.match(text, /224px resize-crop/);
  },
  "accuracy_table.ipynb": (_cells, text, mimes) => {
    assert.match(text, /\| name \| original acc@1 \| ours acc@1 \|/);
    assert.ok(mimes.includes("text/markdown") && mimes.includes("image/svg+xml"));
  },
  "fine_tuning.ipynb": (_cells, text, mimes) => {
    // Loss and accuracy curves and the confusion matrix; sample and prediction grids.
    assert.ok(
      mimes.filter((m) => m === "image/svg+xml").length >= 3,
      "curves and confusion matrix",
    );
    assert.ok(mimes.filter((m) => m === "image/png").length >= 2, "image grids");
    assert.ok(mimes.includes("application/vnd.plotly.v1+json"), "the interactive Plotly figure");
    assert.match(text, /valAccuracy/);
    assert.match(text, /best: epoch \d+/);
  },
  "conversion.ipynb": (_cells, text, mimes) => {
    const m = /max \|TF\.js - PyTorch\| over all 1000 logits: ([0-9.e+-]+)/.exec(text);
    assert.ok(m, "the side-by-side check printed its maximum difference");
    assert.ok(Number(m[1]) <= 1e-4, `max diff ${m[1]}`);
    assert.ok(mimes.includes("image/svg+xml"), "the logits bar chart");
    assert.match(text, /Total params: /);
  },
  "feature_maps.ipynb": (_cells, text, mimes) => {
    // The photo, 4 channel grids, 4 mean-activation overlays and the Grad-CAM overlay.
    assert.ok(mimes.filter((m) => m === "image/png").length >= 10, `${mimes.length} outputs`);
    assert.match(text, /stages_3_block_2: 7 x 7 x 768/);
    assert.match(text, /class \d+ \(.*\), logit /);
  },
};

Deno.test("every notebook runs offline with its key outputs and no error", async () => {
  const notebooks = await findNotebooks();
  assert.ok(notebooks.length >= 2, "notebooks/ holds the notebooks");
  const out = await Deno.makeTempDir();
  try {
    const result = await runNotebooks({ notebooks, out, env: await offlineEnv(), capture: true });
    assert.deepEqual(result.failures, []);
    assert.equal(result.code, 0, result.stderr);
    for (const path of notebooks) {
      const name = path.split("/").at(-1)!;
      const nb = JSON.parse(await Deno.readTextFile(join(out, name))) as { cells: Cell[] };
      const code = nb.cells.filter((c) => c.cell_type === "code");
      for (const [i, cell] of code.entries()) {
        assert.ok(cell.execution_count, `${name}: code cell ${i} was executed`);
        const errors = (cell.outputs ?? []).filter((o) => o.output_type === "error");
        assert.deepEqual(errors.map((e) => `${e.ename}: ${e.evalue}`), [], `${name}: cell ${i}`);
      }
      const outputs = code.flatMap((c) => c.outputs ?? []);
      const text = outputs.map((o) => join1(o.text) + join1(o.data?.["text/plain"])).join("\n");
      const mimes = outputs.flatMap((o) => Object.keys(o.data ?? {}));
      EXPECTATIONS[name]?.(code, text, mimes);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
