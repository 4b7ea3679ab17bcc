#!/usr/bin/python3
"""Execute Jupyter notebooks headlessly on the Deno kernel and write executed copies.

Why not stock nbclient: the Deno kernel publishes some IOPub messages (an
`execute_result`, a late `stream`, even a `display_data`) *after* its
`status: idle` message. nbclient stops reading a cell's IOPub at idle, so
those outputs are silently lost in a fraction of runs (measured: see
stock_baseline.py and README.md). This runner drives jupyter_client directly
and files every IOPub message under the cell whose request it answers
(`parent_header.msg_id`) whenever it arrives. The kernel (Deno 2.9,
cli/js/jupyter_kernel.js `publishIopub`) stamps a message with the request it
is handling when it *publishes* it, not when the cell wrote it: a late
output of one cell sent once the next request has arrived is stamped with
the next cell's id. So after each cell the runner waits until IOPub has been
quiet for a short while before sending the next request, and after the last
cell until it has been quiet for a grace period (both bounded).

Usage (normally through `deno task notebooks`, which installs the kernelspec):

    /usr/bin/python3 tools/notebooks/run_notebooks.py [--out DIR] [--repeat N] NOTEBOOK...

Exit status: 0 when every notebook ran without error, 1 when a cell failed
(one line per failure on stderr naming notebook, cell and error), 2 on bad usage.
Environment: NOTEBOOK_CELL_TIMEOUT (seconds per cell, default 1800) and every
other variable pass through to the kernel, so notebooks read parameters from it.
"""

import argparse
import os
import queue
import sys
import tempfile
import time

import nbformat
from jupyter_client.kernelspec import NoSuchKernel
from jupyter_client.manager import KernelManager

DEFAULT_CELL_TIMEOUT = 1800.0
# After the last cell, IOPub quiet for this long means the kernel has sent everything.
DEFAULT_GRACE = 0.5
# Never wait longer than this after idle, even if unrelated messages keep coming.
MAX_GRACE = 5.0
# Between cells, IOPub quiet for this long is taken to mean the cell's late outputs are in:
# the kernel's REPL thread is idle then, so nothing should hold them back (an assumption, not
# a measured bound).
CELL_GRACE = 0.1
STARTUP_TIMEOUT = 120.0


class CellError(Exception):
    """A code cell raised; carries the one-line description for the report."""


class CellTimeout(Exception):
    """A code cell ran longer than the per-cell timeout."""


def log(message):
    print(message, file=sys.stderr, flush=True)


def env_float(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"run_notebooks: {name}={raw!r} is not a number of seconds")
    if value <= 0:
        raise SystemExit(f"run_notebooks: {name}={raw!r} must be > 0 seconds")
    return value


class OutputCollector:
    """Builds nbformat outputs for the cells of one notebook from IOPub messages."""

    def __init__(self, nb):
        self.nb = nb
        self.cell_of_msg = {}  # execute request msg_id -> cell index
        self.display_ids = {}  # display_id -> list of (cell index, output dict)
        self.clear_pending = {}  # cell index -> True when clear_output(wait=True) is pending

    def register(self, msg_id, index):
        self.cell_of_msg[msg_id] = index

    def _append(self, index, output, display_id=None):
        cell = self.nb.cells[index]
        if self.clear_pending.pop(index, False):
            cell.outputs = []
        outputs = cell.outputs
        # Merge consecutive chunks of the same stream, as Jupyter front ends do.
        if (
            output["output_type"] == "stream"
            and outputs
            and outputs[-1]["output_type"] == "stream"
            and outputs[-1]["name"] == output["name"]
        ):
            outputs[-1]["text"] += output["text"]
            return
        outputs.append(output)
        if display_id:
            self.display_ids.setdefault(display_id, []).append(output)

    def handle(self, msg):
        """Route one IOPub message; returns the cell index it belonged to or None."""
        parent = msg.get("parent_header", {}).get("msg_id")
        index = self.cell_of_msg.get(parent)
        if index is None:
            return None
        kind = msg["msg_type"]
        content = msg["content"]
        cell = self.nb.cells[index]
        if kind == "execute_input":
            cell.execution_count = content.get("execution_count")
        elif kind == "stream":
            self._append(
                index,
                nbformat.v4.new_output("stream", name=content["name"], text=content["text"]),
            )
        elif kind in ("display_data", "execute_result"):
            fields = {"data": content.get("data", {}), "metadata": content.get("metadata", {})}
            if kind == "execute_result" and not fields["data"]:
                # An empty bundle shows nothing; lib/viz figures that already
                # displayed themselves return one when they end a cell.
                return index
            if kind == "execute_result":
                fields["execution_count"] = content.get("execution_count")
            display_id = (content.get("transient") or {}).get("display_id")
            self._append(index, nbformat.v4.new_output(kind, **fields), display_id)
        elif kind == "update_display_data":
            display_id = (content.get("transient") or {}).get("display_id")
            for output in self.display_ids.get(display_id, []):
                output["data"] = content.get("data", {})
                output["metadata"] = content.get("metadata", {})
        elif kind == "clear_output":
            if content.get("wait"):
                self.clear_pending[index] = True
            else:
                cell.outputs = []
        elif kind == "error":
            self._append(
                index,
                nbformat.v4.new_output(
                    "error",
                    ename=content.get("ename", "Error"),
                    evalue=content.get("evalue", ""),
                    traceback=content.get("traceback", []),
                ),
            )
        return index


class NotebookRunner:
    """Runs one notebook in a fresh Deno kernel."""

    def __init__(self, path, kernel_name, cell_timeout, grace):
        self.path = path
        self.kernel_name = kernel_name
        self.cell_timeout = cell_timeout
        self.grace = grace

    def run(self):
        """Executes all code cells; returns (notebook, error line or None)."""
        nb = nbformat.read(self.path, as_version=4)
        collector = OutputCollector(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        # Kernel cwd = the notebook's folder, as in JupyterLab: relative imports
        # (../lib/mod.ts) resolve from there and Deno finds deno.json walking up.
        km = KernelManager(kernel_name=self.kernel_name)
        env = dict(os.environ)
        # Deno colours its text/plain results with ANSI codes unless NO_COLOR is
        # set; plain text reads better in committed notebooks and on GitHub.
        env.setdefault("NO_COLOR", "1")
        km.start_kernel(cwd=os.path.dirname(os.path.abspath(self.path)), env=env)
        kc = km.client()
        kc.start_channels()
        failure = None
        try:
            kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
            info = self._kernel_info(kc)
            if info:
                nb.metadata["language_info"] = info
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                try:
                    self._execute(kc, km, collector, index, cell)
                    # Before the next request: the kernel would stamp this cell's late
                    # outputs with the next cell's id (see the module doc).
                    self._drain(kc, collector, CELL_GRACE)
                except CellError as err:
                    failure = f"{self.path}: cell {index + 1} failed: {err}"
                    break
                except CellTimeout as err:
                    failure = f"{self.path}: cell {index + 1} timed out: {err}"
                    break
            self._drain(kc, collector, self.grace)
            if failure is None:
                failure = self._first_error(nb)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        return nb, failure

    def _first_error(self, nb):
        # A cell can publish an `error` output yet reply "ok" (e.g. an unhandled
        # rejection reported late); the run must still fail.
        for index, cell in enumerate(nb.cells):
            for output in cell.get("outputs", []):
                if output["output_type"] == "error":
                    error = describe_error(output["ename"], output["evalue"])
                    return f"{self.path}: cell {index + 1} failed: {error}"
        return None

    def _kernel_info(self, kc):
        msg_id = kc.kernel_info()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"].get("language_info")
        return None

    def _execute(self, kc, km, collector, index, cell):
        """Runs one cell until its execute_reply and its `idle` status have both arrived.

        Outputs that the kernel publishes after `idle` are not waited for here:
        `_drain` does that before the next cell.
        """
        msg_id = kc.execute(cell.source, store_history=True, allow_stdin=False, stop_on_error=True)
        collector.register(msg_id, index)
        deadline = time.monotonic() + self.cell_timeout
        reply = None
        idle = False
        while reply is None or not idle:
            now = time.monotonic()
            if now >= deadline:
                km.interrupt_kernel()
                raise CellTimeout(
                    f"no result after {self.cell_timeout:g} s (NOTEBOOK_CELL_TIMEOUT sets the limit)"
                )
            if not km.is_alive():
                raise CellError("the kernel died (out of memory or a crash in native code?)")
            if reply is None:
                reply = self._poll_reply(kc, msg_id)
            if idle:
                # Only the reply is missing: wait on the shell channel, not IOPub.
                if reply is None:
                    reply = self._poll_reply(kc, msg_id, timeout=min(deadline - now, 0.2))
                continue
            try:
                msg = kc.get_iopub_msg(timeout=min(deadline - now, 0.2))
            except queue.Empty:
                continue
            if (
                collector.handle(msg) == index
                and msg["msg_type"] == "status"
                and msg["content"].get("execution_state") == "idle"
            ):
                idle = True
        if reply["content"].get("execution_count") is not None:
            cell.execution_count = reply["content"]["execution_count"]
        if reply["content"].get("status") == "error":
            content = reply["content"]
            raise CellError(describe_error(content.get("ename", "Error"), content.get("evalue", "")))

    def _drain(self, kc, collector, grace):
        """Reads IOPub until it has been quiet for `grace` s (at most MAX_GRACE s).

        This is the fix for the Deno kernel publishing outputs after `idle`.
        """
        started = time.monotonic()
        last = started
        while True:
            now = time.monotonic()
            if now - last >= grace or now - started >= MAX_GRACE:
                return
            try:
                msg = kc.get_iopub_msg(timeout=max(0.01, min(grace - (now - last), MAX_GRACE - (now - started))))
            except queue.Empty:
                continue
            if collector.handle(msg) is not None:
                last = time.monotonic()

    def _poll_reply(self, kc, msg_id, timeout=0):
        while True:
            try:
                msg = kc.get_shell_msg(timeout=timeout)
            except queue.Empty:
                return None
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg


def first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def describe_error(ename, evalue):
    text = f"{ename}: {evalue}" if evalue else ename
    # Keep the report to one line: the first line of a multi-line message.
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def write_atomic(nb, target):
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".ipynb.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(nb, handle)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def output_name(path, run, repeat):
    base = os.path.basename(path)
    if repeat == 1:
        return base
    stem = base[: -len(".ipynb")] if base.endswith(".ipynb") else base
    return f"{stem}.run{run}.ipynb"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="run_notebooks.py",
        description="Execute notebooks on the Deno Jupyter kernel, keeping late outputs.",
    )
    parser.add_argument("notebooks", nargs="+", help="notebook files (.ipynb)")
    parser.add_argument("--out", default="out/notebooks", help="folder for executed copies")
    parser.add_argument("--kernel", default="deno", help="kernelspec name (default: deno)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per cell (default: $NOTEBOOK_CELL_TIMEOUT or 1800)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        help="seconds of IOPub quiet that end the drain after the last cell (default 0.5)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each notebook N times, each in a fresh kernel, writing NAME.runK.ipynb",
    )
    args = parser.parse_args(argv)
    if args.timeout is None:
        args.timeout = env_float("NOTEBOOK_CELL_TIMEOUT", DEFAULT_CELL_TIMEOUT)
    elif args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.grace < 0 or args.grace > MAX_GRACE:
        parser.error(f"--grace must be within 0..{MAX_GRACE:g} seconds, got {args.grace:g}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    for path in args.notebooks:
        if not path.endswith(".ipynb"):
            parser.error(f"{path}: expected a .ipynb notebook")
        if not os.path.isfile(path):
            parser.error(f"{path}: notebook not found")
    return args


def main(argv):
    args = parse_args(argv)
    failures = []
    for path in args.notebooks:
        for run in range(1, args.repeat + 1):
            started = time.monotonic()
            target = os.path.join(args.out, output_name(path, run, args.repeat))
            try:
                nb, failure = NotebookRunner(path, args.kernel, args.timeout, args.grace).run()
            except NoSuchKernel:
                failures.append(
                    f"{path}: no '{args.kernel}' kernelspec on JUPYTER_PATH "
                    "(run through `deno task notebooks`, which installs it)"
                )
                break
            except (nbformat.reader.NotJSONError, nbformat.ValidationError) as err:
                failures.append(f"{path}: not a valid notebook: {first_line(err)}")
                break
            except RuntimeError as err:
                # jupyter_client raises RuntimeError when the kernel dies or never starts.
                failures.append(f"{path}: kernel failed: {first_line(err)}")
                continue
            # Written even on failure: the executed copy shows the error output.
            write_atomic(nb, target)
            took = time.monotonic() - started
            status = "FAILED" if failure else "ok"
            log(f"{path} -> {target}: {status} in {took:.1f} s")
            if failure:
                failures.append(failure)
    for failure in failures:
        log(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
