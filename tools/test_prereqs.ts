/**
 * What the test suite needs beyond Deno, checked (and on Debian as root, installed)
 * before any test runs, so that `deno task test` on a fresh machine either passes or
 * stops at once naming the packages, never with a half-run suite.
 *
 * - python3-jupyter-client, python3-nbformat: execute the notebooks headlessly
 *   (tools/notebooks/run_notebooks.py).
 * - fonts-dejavu-core: a font for the text of charts rendered to PNG (lib/viz/svg.ts).
 * - mesa-vulkan-drivers: a software Vulkan driver, so that Deno's WebGPU finds an adapter
 *   and the WebGPU tests run without a GPU.
 *
 * The main job (`deno task classify`) needs none of these.
 *
 * Usage: `deno run -A tools/test_prereqs.ts [--check]` (`--check`: never install).
 *
 * @module
 */

/** One requirement: the Debian package and a probe that works on any system. */
interface Requirement {
  pkg: string;
  why: string;
  present: () => Promise<boolean>;
}

async function runs(cmd: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false; // not installed
  }
}

async function anyFile(paths: string[]): Promise<boolean> {
  for (const p of paths) {
    try {
      if ((await Deno.stat(p)).isFile) return true;
    } catch { /* next */ }
  }
  return false;
}

async function anyIcd(dirs: string[]): Promise<boolean> {
  for (const dir of dirs) {
    try {
      for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".json")) return true;
    } catch { /* next */ }
  }
  return false;
}

const PYTHON = Deno.env.get("NOTEBOOK_PYTHON") ?? "/usr/bin/python3";

/** Everything the tests need beyond Deno. */
const REQUIREMENTS: Requirement[] = [
  {
    pkg: "python3-jupyter-client",
    why: "executes the notebooks headlessly",
    present: () => runs(PYTHON, ["-c", "import jupyter_client"]),
  },
  {
    pkg: "python3-nbformat",
    why: "reads and writes the executed notebooks",
    present: () => runs(PYTHON, ["-c", "import nbformat"]),
  },
  {
    pkg: "fonts-dejavu-core",
    why: "a font for the text of charts rendered to PNG",
    present: () =>
      anyFile([
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
      ]),
  },
  {
    pkg: "mesa-vulkan-drivers",
    why: "a software Vulkan driver, so that WebGPU finds an adapter without a GPU",
    present: () => anyIcd(["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]),
  },
];

async function isDebianRoot(): Promise<boolean> {
  return Deno.uid() === 0 && await anyFile(["/etc/debian_version"]) &&
    await runs("apt-get", ["--version"]);
}

async function aptInstall(pkgs: string[]): Promise<void> {
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  for (
    const args of [["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", ...pkgs]]
  ) {
    const { success } = await new Deno.Command("apt-get", { args, env }).spawn().status;
    if (!success) throw new Error(`apt-get ${args.join(" ")} failed`);
  }
}

async function missing(): Promise<Requirement[]> {
  const out: Requirement[] = [];
  for (const r of REQUIREMENTS) if (!(await r.present())) out.push(r);
  return out;
}

async function main(): Promise<number> {
  const checkOnly = Deno.args.includes("--check");
  let absent = await missing();
  if (absent.length === 0) return 0;
  const names = absent.map((r) => r.pkg);
  if (!checkOnly && await isDebianRoot()) {
    console.error(`test prerequisites: installing ${names.join(" ")}`);
    await aptInstall(names);
    absent = await missing();
    if (absent.length === 0) return 0;
  }
  const list = absent.map((r) => `${r.pkg} (${r.why})`).join("; ");
  console.error(
    `test prerequisites missing: ${list}; install them first, e.g. on Debian/Ubuntu: ` +
      `sudo apt-get install ${absent.map((r) => r.pkg).join(" ")}`,
  );
  return 1;
}

if (import.meta.main) Deno.exit(await main());
