/** Tests of lib/util/progress.ts with a fake clock and a captured writer. */

import assert from "node:assert/strict";
import { formatBytes, formatDuration, ProgressBar } from "../lib/util/progress.ts";

function fakeBar(opts: { total?: number; isTTY: boolean; unit?: "bytes" | "items" }) {
  let t = 0;
  const out: string[] = [];
  const bar = new ProgressBar({
    label: "job",
    itemName: "img",
    write: (s) => out.push(s),
    now: () => t,
    barWidth: 10,
    ...opts,
  });
  return { bar, out, advance: (ms: number) => (t += ms) };
}

Deno.test("formatBytes and formatDuration", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(3 * 1024 ** 3), "3.0 GiB");
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(75), "1:15");
  assert.equal(formatDuration(3 * 3600 + 61), "3:01:01");
  assert.equal(formatDuration(NaN), "?");
});

Deno.test("ProgressBar: counters, percentage, rate, ETA and extra fields", () => {
  const { bar, advance } = fakeBar({ total: 1000, isTTY: true });
  advance(2000);
  bar.update(250, { loss: 0.5, epoch: 3, phase: "train" });
  // 250 items in 2 s = 125 img/s; 750 left -> 6 s.
  assert.equal(
    bar.render(),
    "job  [==>       ]  250/1000  25.0%  125.0 img/s  ETA 0:06  loss=0.5000  epoch=3  phase=train",
  );
});

Deno.test("ProgressBar: bytes, unknown total, resumed start value", () => {
  const { bar, advance } = fakeBar({ isTTY: false, unit: "bytes" });
  bar.setStartValue(1024 * 1024);
  advance(1000);
  bar.update(3 * 1024 * 1024);
  // Only the 2 MiB fetched in this run count for the rate.
  assert.equal(bar.render(), "job  3.0 MiB  2.0 MiB/s");
});

Deno.test("ProgressBar: a terminal gets throttled \\r redraws and a final newline", () => {
  const { bar, out, advance } = fakeBar({ total: 10, isTTY: true });
  bar.update(1);
  bar.update(2); // within 100 ms: not drawn
  advance(150);
  bar.update(3);
  advance(1000);
  bar.done({ ok: "yes" }); // a final line even though the last update was not drawn
  assert.equal(out.length, 3);
  assert.ok(out.slice(0, 2).every((s) => s.startsWith("\r") && !s.includes("\n")));
  assert.ok(out[2].startsWith("\rjob  [===>      ]  3/10  30.0%  "), JSON.stringify(out[2]));
  assert.ok(out[2].endsWith(" in 0:01  ok=yes\x1b[K\n"), JSON.stringify(out[2]));
  bar.update(5); // ignored after done
  assert.equal(out.length, 3);
});

Deno.test("ProgressBar: a pipe gets plain lines at most every plainIntervalMs", () => {
  const { bar, out, advance } = fakeBar({ total: 100, isTTY: false });
  for (let i = 1; i <= 100; i++) {
    advance(100);
    bar.update(i);
  }
  bar.done();
  // 10 s of updates: lines at 0.1 s, 5.1 s, then the final line.
  assert.equal(out.length, 3);
  assert.ok(out.every((s) => s.endsWith("\n") && !s.includes("\r") && !s.includes("[")));
  assert.ok(out[0].startsWith("job  1/100  1.0%  "), out[0]);
});

Deno.test("ProgressBar: quiet prints nothing; abort ends a drawn terminal line", () => {
  const q = fakeBar({ total: 5, isTTY: true });
  const quiet = new ProgressBar({ label: "q", total: 5, quiet: true, write: (s) => q.out.push(s) });
  quiet.update(3);
  quiet.done();
  assert.deepEqual(q.out, []);
  const { bar, out } = fakeBar({ total: 5, isTTY: true });
  bar.update(1);
  bar.abort();
  assert.equal(out.at(-1), "\n");
});
