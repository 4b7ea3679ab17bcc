/**
 * Downloads into the cache: streamed to `<dest>.part`, resumed with HTTP Range
 * after an interruption, retried with exponential backoff, checked (size, zip
 * central directory), hashed, and only then renamed into place.
 *
 * What is left behind on failure, and why:
 * - HTTP errors such as 404, and complete-but-corrupt files: nothing (the `.part`
 *   is deleted; retrying cannot help).
 * - A server that keeps ending responses early without making progress
 *   (a truncated file): nothing, reported as truncated.
 * - A network failure after progress was made: the `.part` stays, so the next run
 *   resumes instead of starting a multi-GB download over; unless the server ignores
 *   Range (it answers 200, or says `Accept-Ranges: none`): then no run can resume, the
 *   `.part` is deleted and the error says the next run starts over.
 *
 * A `.part` that cannot be continued (the server sends the whole file, or a range that
 * starts elsewhere) is truncated and written again from byte 0, never appended to.
 *
 * @module
 */

import { STATUS_CODES } from "node:http";
import { basename, dirname } from "node:path";
import { ProgressBar, type ProgressOptions } from "./progress.ts";
import { exists, removeIfExists } from "./fs.ts";
import { sha256File, verifySha256Record, writeSha256Record } from "./cache.ts";
import { withFileLock } from "./lock.ts";
import { runVerify, type VerifyMode } from "./integrity.ts";

export { checkSafetensorsFile, checkZipFile, type VerifyMode } from "./integrity.ts";

/** Progress of one download, passed to {@link DownloadOptions.onProgress}. */
export interface DownloadProgress {
  /** The URL being downloaded. */
  url: string;
  /** Bytes on disk so far (including bytes of a resumed `.part`). */
  received: number;
  /** Expected size in bytes, when the server says. */
  total: number | undefined;
}

/** Options of {@link download}. */
export interface DownloadOptions {
  /** Called after every chunk. */
  onProgress?: (progress: DownloadProgress) => void;
  /** No progress bar and no retry notices on stderr. */
  quiet?: boolean;
  /** Overrides for the progress bar (e.g. `write`, `isTTY` in tests). */
  progress?: Partial<Omit<ProgressOptions, "total" | "unit">>;
  /** Retries after the first attempt; default 3. */
  retries?: number;
  /** First backoff delay in ms, doubled after each retry; default 500. */
  backoffMs?: number;
  /** Abort an attempt (and retry) when no data arrives for this long; default 60000 ms. */
  stallTimeoutMs?: number;
  /** Cancels the download; a `.part` is kept for a later resume. */
  signal?: AbortSignal;
  /** The fetch to use (tests inject failures); default: global `fetch`. */
  fetch?: typeof fetch;
  /**
   * Check of the complete file: `"zip"` (end-of-central-directory record),
   * `"safetensors"` (header and size), `"none"`, a custom function that throws,
   * or `"auto"` (default): by the extension of `dest`.
   */
  verify?: VerifyMode;
  /** Expected sha256 (hex); a mismatch is a corrupt download. */
  sha256?: string;
}

/** Result of {@link download}. */
export interface DownloadResult {
  /** The final path (`dest`). */
  path: string;
  /** Size in bytes. */
  size: number;
  /** sha256 (lowercase hex), also recorded in `<dest>.sha256`. */
  sha256: string;
  /** Number of HTTP requests made (1 without interruptions). */
  attempts: number;
}

/**
 * Why a download failed: `http` status, `corrupt` content, `network` (after the retries),
 * `offline` (the host cannot be resolved or reached: no retries), `aborted`.
 */
export type DownloadErrorKind = "http" | "corrupt" | "network" | "offline" | "aborted";

/** A failed download; the message is one line that names the URL. */
export class DownloadError extends Error {
  /** The category of failure. */
  readonly kind: DownloadErrorKind;
  /** The HTTP status for `kind === "http"`. */
  readonly status?: number;
  /** Constructs the error; `message` is the full one-line message. */
  constructor(message: string, kind: DownloadErrorKind, status?: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "DownloadError";
    this.kind = kind;
    this.status = status;
  }
}

// Internal: an attempt that failed in a way a retry may fix.
class RetryableError extends Error {
  constructor(
    message: string,
    /** Bytes this attempt added to the `.part`. */
    readonly progressed: number,
    /** The response ended early (as opposed to no response / a stall). */
    readonly short: boolean,
    /** Retry at once: the server's answer told us what to do differently. */
    readonly immediate = false,
    /** The HTTP status, for a retryable HTTP error (5xx, 408, 429). */
    readonly status?: number,
  ) {
    super(message);
  }
}

// Internal: an attempt that failed in a way no retry can fix.
class FatalError extends Error {
  constructor(message: string, readonly kind: DownloadErrorKind, readonly status?: number) {
    super(message);
  }
}

/** Fetch errors that mean the host cannot be reached at all (resolver or routing failures). */
const UNREACHABLE =
  /dns error|failed to lookup address|name or service not known|temporary failure in name resolution|nodename nor servname|no such host|network is unreachable|no route to host/i;

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
    return `${e.message}${cause}`;
  }
  return String(e);
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function parseContentRange(value: string | null): { start: number; total?: number } | null {
  const m = value?.match(/^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i);
  if (!m) return null;
  return { start: Number(m[1]), total: m[3] === "*" ? undefined : Number(m[3]) };
}

function unsatisfiedRangeTotal(value: string | null): number | undefined {
  const m = value?.match(/^bytes\s+\*\/(\d+)$/i);
  return m ? Number(m[1]) : undefined;
}

function httpMessage(url: string, res: Response): string {
  const text = res.statusText || STATUS_CODES[res.status] || "";
  return `download ${url}: HTTP ${res.status}${text ? ` ${text}` : ""}`;
}

interface AttemptContext {
  url: string;
  dest: string;
  part: string;
  opts: DownloadOptions;
  fetchFn: typeof fetch;
  /** Strong ETag or Last-Modified of an earlier response, for `If-Range`. */
  validator?: string;
  /** Size of the `.part` when the current attempt began: what counts as progress. */
  before: number;
  /** The server showed it cannot resume (200 to a Range request, `Accept-Ranges: none`). */
  noResume: boolean;
}

/**
 * The abort signal of one attempt: the caller's abort, or a stall (no data for
 * `stallMs`; each chunk re-arms the timer). Dispose when the attempt ends.
 */
class AttemptSignal {
  readonly controller = new AbortController();
  readonly stallMs: number;
  /** The stall timer fired. */
  stalled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #user: AbortSignal | undefined;
  readonly #onUserAbort = () => this.controller.abort(this.#user?.reason);

  constructor(user: AbortSignal | undefined, stallMs: number) {
    this.#user = user;
    this.stallMs = stallMs;
    user?.addEventListener("abort", this.#onUserAbort, { once: true });
  }

  /** (Re)starts the stall timer. */
  arm(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.stalled = true;
      this.controller.abort(new Error(`no data for ${this.stallMs / 1000} s`));
    }, this.stallMs);
  }

  [Symbol.dispose](): void {
    clearTimeout(this.#timer);
    this.#user?.removeEventListener("abort", this.#onUserAbort);
  }
}

/**
 * One attempt: an HTTP request (two when the `.part` cannot be continued: the second asks
 * for the whole file). Resolves when `part` holds the complete file.
 */
async function attempt(ctx: AttemptContext): Promise<void> {
  const { url, part, opts } = ctx;
  let offset = await fileSize(part);
  ctx.before = offset;
  using signal = new AttemptSignal(opts.signal, opts.stallTimeoutMs ?? 60_000);
  for (;;) {
    const headers = new Headers({ "accept-encoding": "identity" });
    if (offset > 0) {
      headers.set("range", `bytes=${offset}-`);
      // If the file changed on the server since our partial copy, If-Range makes the
      // server send all of the new file (200) instead of a mismatched tail (206).
      if (ctx.validator) headers.set("if-range", ctx.validator);
    }
    signal.arm();
    let res: Response;
    try {
      res = await ctx.fetchFn(url, { headers, signal: signal.controller.signal });
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      const text = errorText(e);
      // No name resolution or no route: retrying in seconds will not help (offline, or a
      // typo in the host), so say so at once instead of after the back-offs.
      const unreachable = UNREACHABLE.exec(text);
      if (unreachable) {
        throw new FatalError(
          `download ${url}: cannot reach ${new URL(url).host} (${unreachable[0]}): offline?`,
          "offline",
        );
      }
      throw new RetryableError(`download ${url}: ${text}`, 0, false);
    }
    const etag = res.headers.get("etag");
    const validator = etag && !etag.startsWith("W/") ? etag : res.headers.get("last-modified");
    if (validator) ctx.validator = validator;
    if (res.headers.get("accept-ranges")?.trim().toLowerCase() === "none") ctx.noResume = true;
    // A conditional request answered with another validator: the file changed on the
    // server (a 200 then says nothing about Range support).
    const sent = headers.get("if-range");
    const changed = sent !== null && validator !== null && validator !== sent;
    const range = await responseRange(ctx, res, offset, changed);
    if (range === "complete") return;
    if (range === "restart") {
      // The `.part` is gone (responseRange removed it): ask for the whole file at once,
      // within this attempt, so that starting over never costs a retry.
      offset = 0;
      continue;
    }
    if (!res.body) throw new RetryableError(`download ${url}: empty response body`, 0, true);
    return await receiveBody(ctx, res.body, range, signal);
  }
}

/**
 * Where the response's bytes go in the file and its announced size, from its status:
 * 206 continues the `.part` (or rewrites it, for a range from byte 0), 200 starts over,
 * 416 may mean the `.part` is complete. `"restart"`: the `.part` cannot be continued and
 * was removed; ask again for the whole file. `changed`: the file changed on the server
 * (If-Range), so a 200 answer does not mean that the server ignores Range.
 *
 * @throws RetryableError for a retryable status or a mismatched range to a request for the
 *   whole file; FatalError for another HTTP error.
 */
async function responseRange(
  ctx: AttemptContext,
  res: Response,
  offset: number,
  changed: boolean,
): Promise<{ start: number; total: number | undefined } | "complete" | "restart"> {
  const { url, part } = ctx;
  if (res.status === 416 && offset > 0) {
    await res.body?.cancel();
    const size = unsatisfiedRangeTotal(res.headers.get("content-range"));
    if (size === offset) return "complete"; // The .part was already complete.
    await removeIfExists(part);
    notice(
      ctx.opts,
      `download ${url}: the server cannot resume from byte ${offset}; starting over`,
    );
    return "restart";
  }
  if (res.status === 206) {
    const range = parseContentRange(res.headers.get("content-range"));
    // A range from byte 0 is the whole file: written over the `.part` from its start.
    if (range && (range.start === offset || range.start === 0)) {
      if (range.start !== offset) ctx.noResume = true;
      return { start: range.start, total: range.total };
    }
    await res.body?.cancel();
    const why = `asked for bytes from ${offset}, the server sent ` +
      `"${res.headers.get("content-range")}"`;
    if (offset === 0) throw new RetryableError(`download ${url}: ${why}`, 0, false);
    await removeIfExists(part);
    notice(ctx.opts, `download ${url}: ${why}; starting over`);
    return "restart";
  }
  if (res.ok) {
    // 200: a fresh download, a file changed on the server (If-Range), or a server that
    // ignores Range: then start over (the body is written from byte 0, the `.part`
    // truncated), and in the last case no later run can resume either.
    if (offset > 0 && !changed) ctx.noResume = true;
    const length = res.headers.get("content-length");
    return {
      start: 0,
      total: length !== null && /^\d+$/.test(length) ? Number(length) : undefined,
    };
  }
  await res.body?.cancel();
  const message = httpMessage(url, res);
  if (res.status >= 500 || res.status === 408 || res.status === 429) {
    throw new RetryableError(message, 0, false, false, res.status);
  }
  throw new FatalError(message, "http", res.status);
}

/**
 * Streams the response body into the `.part` from byte `start`, with the progress bar.
 *
 * @throws RetryableError when the connection is lost, stalls or ends early; FatalError
 *   when the server sends more than it announced.
 */
async function receiveBody(
  ctx: AttemptContext,
  body: ReadableStream<Uint8Array>,
  { start, total }: { start: number; total: number | undefined },
  signal: AttemptSignal,
): Promise<void> {
  const { url, part, opts } = ctx;
  let bar: ProgressBar | undefined;
  if (!opts.quiet) {
    bar = new ProgressBar({ label: basename(ctx.dest), unit: "bytes", ...opts.progress, total });
    bar.setStartValue(start);
  }
  let received = start;
  // Progress is what the `.part` gained over its size before the attempt: a server that
  // ignores Range and ends at the same byte each time makes none.
  const progressed = () => Math.max(0, received - ctx.before);
  try {
    using file = await Deno.open(part, {
      write: true,
      create: true,
      append: start > 0,
      truncate: start === 0,
    });
    try {
      for await (const chunk of body) {
        signal.arm();
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
        received += chunk.length;
        if (total !== undefined && received > total) {
          throw new FatalError(
            `download ${url}: corrupt: the server sent more than the announced ${total} bytes`,
            "corrupt",
          );
        }
        bar?.update(received);
        opts.onProgress?.({ url, received, total });
      }
    } catch (e) {
      if (e instanceof FatalError || opts.signal?.aborted) throw e;
      const why = signal.stalled
        ? `stalled (no data for ${signal.stallMs / 1000} s)`
        : errorText(e);
      throw new RetryableError(
        `download ${url}: connection lost after ${received}` +
          `${total === undefined ? "" : ` of ${total}`} bytes: ${why}`,
        progressed(),
        !signal.stalled,
      );
    }
    if (total !== undefined && received < total) {
      throw new RetryableError(
        `download ${url}: truncated: got ${received} of ${total} bytes`,
        progressed(),
        true,
      );
    }
    bar?.done();
    bar = undefined;
  } finally {
    bar?.abort();
  }
}

/** A notice on stderr (or the progress writer), unless `quiet`. */
function notice(opts: DownloadOptions, text: string): void {
  if (!opts.quiet) (opts.progress?.write ?? ((t) => console.error(t.trimEnd())))(`${text}\n`);
}

/**
 * Downloads `url` to `dest`: streamed into `dest + ".part"`, resumed with
 * `Range: bytes=N-` after an interruption, retried with exponential backoff,
 * verified (size; zip central directory for `.pth`), then renamed to `dest` with
 * its sha256 written to `dest + ".sha256"`. A progress bar (bytes, rate, ETA)
 * goes to stderr unless `quiet`.
 *
 * @throws {DownloadError} with a one-line message such as
 *   `download https://…/x.pth: HTTP 404 Not Found`.
 *
 * @example
 * ```ts
 * import { download } from "./download.ts";
 * // e.g. "https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth"; any URL
 * // fetch takes works, here a file: URL of a small checkpoint from the tests.
 * const url = new URL("../../tests/fixtures/download/tiny.pth", import.meta.url).href;
 * const dir = await Deno.makeTempDir();
 * const { sha256, size } = await download(url, `${dir}/tiny.pth`, { quiet: true });
 * console.log(size, sha256); // also recorded in tiny.pth.sha256
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function download(
  url: string,
  dest: string,
  opts: DownloadOptions = {},
): Promise<DownloadResult> {
  const retries = opts.retries ?? 3;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new Error(`download: retries must be an integer >= 0, got ${retries}`);
  }
  const part = `${dest}.part`;
  await Deno.mkdir(dirname(dest), { recursive: true });
  const existed = await exists(dest);
  // One process at a time writes `.part` and renames; one that waited for another's
  // download of the same file takes that file instead of downloading it again.
  return await withFileLock(dest, async () => {
    if (!existed && await exists(dest)) {
      return {
        path: dest,
        size: await fileSize(dest),
        sha256: await verifySha256Record(dest),
        attempts: 0,
      };
    }
    const ctx: AttemptContext = {
      url,
      dest,
      part,
      opts,
      fetchFn: opts.fetch ?? fetch,
      before: 0,
      noResume: false,
    };
    const attempts = await attemptWithRetries(ctx, retries);
    const sha256 = await verifyPart(ctx);
    // Record first, rename second: a file at `dest` then always has its record.
    await writeSha256Record(dest, sha256);
    await Deno.rename(part, dest);
    return { path: dest, size: await fileSize(dest), sha256, attempts };
  }, { onWait: () => notice(opts, `waiting for another process downloading ${basename(dest)}`) });
}

/**
 * Attempts until the `.part` is complete, with exponential backoff between retryable
 * failures; returns the number of attempts.
 *
 * @throws DownloadError when aborted, on a fatal failure, or after the last retry.
 */
async function attemptWithRetries(ctx: AttemptContext, retries: number): Promise<number> {
  const { url, opts } = ctx;
  const backoffMs = opts.backoffMs ?? 500;
  for (let attempts = 1;; attempts++) {
    let failure: RetryableError;
    try {
      await attempt(ctx);
      return attempts;
    } catch (e) {
      failure = await retryableOrThrow(ctx, e);
    }
    if (attempts > retries) throw await finalFailure(ctx, failure, attempts);
    const delay = failure.immediate ? 0 : backoffMs * 2 ** (attempts - 1);
    notice(
      opts,
      `${failure.message}; retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempts + 1} of ${
        retries + 1
      })`,
    );
    try {
      await sleep(delay, opts.signal);
    } catch (abortReason) {
      throw new DownloadError(`download ${url}: aborted`, "aborted", undefined, {
        cause: abortReason,
      });
    }
  }
}

/**
 * A failed attempt's error if a retry may fix it; otherwise throws what the caller gets
 * (the `.part` is kept after an abort, for a later resume, and removed otherwise).
 */
async function retryableOrThrow(ctx: AttemptContext, e: unknown): Promise<RetryableError> {
  if (ctx.opts.signal?.aborted) {
    // Cancelled by the caller: keep the .part so a later call resumes.
    throw new DownloadError(`download ${ctx.url}: aborted`, "aborted", undefined, { cause: e });
  }
  if (e instanceof FatalError) {
    // Offline, the partial file is still good: keep it for the next run to resume.
    if (e.kind !== "offline") await removeIfExists(ctx.part);
    throw new DownloadError(e.message, e.kind, e.status);
  }
  if (!(e instanceof RetryableError)) {
    await removeIfExists(ctx.part);
    throw e;
  }
  return e;
}

/** The error after the last retry failed with `e`. */
async function finalFailure(
  ctx: AttemptContext,
  e: RetryableError,
  attempts: number,
): Promise<DownloadError> {
  const { part } = ctx;
  // A server that keeps ending responses early without delivering anything new has a
  // truncated file: remove the partial copy.
  if (e.short && e.progressed === 0) {
    await removeIfExists(part);
    return new DownloadError(
      `${e.message} (after ${attempts} attempts; the file on the server is truncated or corrupt)`,
      "corrupt",
    );
  }
  let kept = "";
  if (ctx.noResume) {
    // Keeping it would promise a resume that this server never gives.
    if ((await fileSize(part)) > 0) {
      await removeIfExists(part);
      kept = "; the server cannot resume downloads (it ignores Range), so the partial file " +
        "was removed and the next run starts over";
    }
  } else if ((await fileSize(part)) > 0) {
    kept = `; the partial file ${part} is kept and the next run resumes it`;
  }
  return new DownloadError(
    `${e.message} (after ${attempts} attempts)${kept}`,
    e.status === undefined ? "network" : "http",
    e.status,
  );
}

/**
 * Checks the complete `.part` (format, expected sha256) and returns its sha256.
 *
 * @throws DownloadError `corrupt` (the `.part` is removed).
 */
async function verifyPart(ctx: AttemptContext): Promise<string> {
  const { url, dest, part, opts } = ctx;
  try {
    await runVerify(opts.verify ?? "auto", dest, part);
  } catch (e) {
    await removeIfExists(part);
    throw new DownloadError(`download ${url}: corrupt: ${errorText(e)}`, "corrupt");
  }
  const sha256 = await sha256File(part);
  if (opts.sha256 && opts.sha256.toLowerCase() !== sha256) {
    await removeIfExists(part);
    throw new DownloadError(
      `download ${url}: corrupt: sha256 ${sha256} does not match the expected ${opts.sha256}`,
      "corrupt",
    );
  }
  return sha256;
}
