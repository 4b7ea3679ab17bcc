/**
 * Tests of lib/util/worker_pool.ts's closing: queued requests are rejected, started ones
 * finish before close resolves (inline and on worker threads), nothing is taken afterwards.
 */
import assert from "node:assert/strict";
import { Float32WorkerPool, type PoolRequest } from "../lib/util/worker_pool.ts";
import { PreprocessPool } from "../lib/data/pool.ts";
import { repoPath } from "./data_helpers.ts";

interface Wait extends PoolRequest {
  ms: number;
}

Deno.test("closing an inline pool waits for the requests it started", async () => {
  const done: number[] = [];
  const pool = new Float32WorkerPool<Wait>({
    script: new URL("../lib/data/worker.ts", import.meta.url), // never started: 0 workers
    workers: 0,
    inline: async ({ ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      done.push(ms);
      return new Float32Array([ms]);
    },
    name: "TestPool",
  });
  const results = [pool.submit({ ms: 60 }), pool.submit({ ms: 30 })];
  const closing = pool.close();
  assert.equal(pool.close(), closing, "one closing promise");
  await closing;
  assert.deepEqual(done, [30, 60], "close resolved before its requests finished");
  assert.deepEqual((await Promise.all(results)).map((r) => r[0]), [60, 30]);
  await assert.rejects(() => pool.submit({ ms: 1 }), /^Error: TestPool: pool is closed$/);
});

Deno.test("closing a worker pool: started requests finish, queued ones are rejected", async () => {
  const pool = new PreprocessPool(1); // two requests in flight per worker, the rest queued
  const photo = repoPath("data/images/chelsea.png");
  const results = Promise.allSettled(Array.from({ length: 4 }, () => pool.run(photo, 64)));
  await pool.close();
  const settled = await results;
  assert.deepEqual(settled.map((s) => s.status), [
    "fulfilled",
    "fulfilled",
    "rejected",
    "rejected",
  ]);
  for (const s of settled.slice(0, 2)) {
    assert.equal((s as PromiseFulfilledResult<Float32Array>).value.length, 64 * 64 * 3);
  }
  assert.match(String((settled[2] as PromiseRejectedResult).reason), /PreprocessPool: pool closed/);
});
