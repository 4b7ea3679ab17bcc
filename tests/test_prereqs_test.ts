/** The test-prerequisite check stops at once, naming the missing packages and the command. */
import assert from "node:assert/strict";

const TOOL = new URL("../tools/test_prereqs.ts", import.meta.url).pathname;

async function run(env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TOOL, "--check"],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("test_prereqs: a Python without the Jupyter client is named with the apt command", async () => {
  const { code, stderr } = await run({ NOTEBOOK_PYTHON: "/bin/false" });
  assert.equal(code, 1);
  assert.equal(stderr.trim().split("\n").length, 1, stderr);
  assert.match(stderr, /python3-jupyter-client \(executes the notebooks headlessly\)/);
  assert.match(stderr, /apt-get install python3-jupyter-client python3-nbformat$/m);
});

Deno.test("test_prereqs: this machine has everything the tests need", async () => {
  const { code, stderr } = await run({});
  assert.equal(code, 0, stderr);
});
