/**
 * The machine a benchmark ran on, in one line: benchmark figures mean little without it.
 *
 * @example
 * ```ts
 * import { machineLine } from "./machine.ts";
 * console.log(machineLine()); // e.g. "AMD EPYC, 2 logical cores, 24 GiB, linux x86_64, Deno 2.9.6 (V8 ...)"
 * ```
 *
 * @module
 */

/** The CPU's model name (Linux: /proc/cpuinfo), or null where unknown. */
function cpuModel(): string | null {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"));
    return m ? m[1].trim() : null;
  } catch {
    return null; // not Linux, or no read permission
  }
}

/** Total memory in GiB, or null where unknown. */
function memoryGiB(): number | null {
  try {
    return Math.round(Deno.systemMemoryInfo().total / 2 ** 30);
  } catch {
    return null;
  }
}

/**
 * CPU model, logical cores, memory, OS and Deno/V8 versions, e.g. "AMD EPYC, 2 logical
 * cores, 24 GiB, linux x86_64, Deno 2.9.6 (V8 15.0.0)"; parts that cannot be read are left out.
 */
export function machineLine(): string {
  const memory = memoryGiB();
  return [
    cpuModel(),
    `${navigator.hardwareConcurrency || 1} logical cores`,
    memory === null ? null : `${memory} GiB`,
    `${Deno.build.os} ${Deno.build.arch}`,
    `Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
  ].filter((part) => part !== null).join(", ");
}
