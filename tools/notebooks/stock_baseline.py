#!/usr/bin/python3
"""Measures how often stock nbclient loses outputs of the runner fixture on the Deno kernel.

This is the evidence for the pitfall run_notebooks.py works around (the Deno
kernel publishes some outputs after `idle`, where nbclient stops reading).

    JUPYTER_PATH=.cache/jupyter /usr/bin/python3 tools/notebooks/stock_baseline.py [RUNS]

(`deno task notebooks --install-kernel` writes the kernelspec to .cache/jupyter.)
"""

import os
import sys

import nbclient
import nbformat
from nbclient import NotebookClient

FIXTURE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "tests", "fixtures", "notebooks", "runner_fixture.ipynb",
)
# Outputs each code cell makes, read off the cell code: cell 5 prints to stdout,
# stderr and returns a value; the others make one output each. Empty
# execute_results (a lib/viz figure ending a cell) carry nothing and are not counted.
EXPECTED = [1, 1, 1, 1, 3, 1, 1, 1, 1, 1]


def main(runs):
    os.environ.setdefault("NO_COLOR", "1")
    complete = 0
    lost_total = 0
    for run in range(1, runs + 1):
        nb = nbformat.read(FIXTURE, as_version=4)
        client = NotebookClient(
            nb,
            kernel_name="deno",
            timeout=300,
            resources={"metadata": {"path": os.path.dirname(FIXTURE)}},
        )
        client.execute()
        counts = [
            sum(
                1
                for o in cell.outputs
                if not (o.output_type == "execute_result" and not o.get("data"))
            )
            for cell in nb.cells
            if cell.cell_type == "code"
        ]
        lost = sum(max(0, e - c) for e, c in zip(EXPECTED, counts))
        lost_total += lost
        complete += lost == 0
        print(f"run {run}: outputs per code cell {counts}, lost {lost}", flush=True)
    print(
        f"stock nbclient {nbclient.__version__}: all outputs kept in {complete}/{runs} runs, "
        f"{lost_total} outputs lost in total"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
