"""Execute the notebooks in place and check what they saved (`make notebooks`).

    .venv/bin/python -m notebooks.refresh              # all five
    .venv/bin/python -m notebooks.refresh sinks ...    # some

Each notebook runs top to bottom in a fresh kernel (IPC transport: nothing listens on a port),
then is written back with what changes from run to run taken out: no execution timings, cell
ids numbered in order, the kernel's language_info cut to name and version. Its metadata records
`headlab.code_sha256`, a hash of its code cells' sources, so a notebook whose code changed after
it ran shows as stale (`problems`). The tests use `problems` on the committed notebooks and
`execute` to run them again.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parent
ANALYSES = (
    "sinks",
    "retrieval_heads",
    "head_divergence",
    "future_attention",
    "ablation_sweep",
    "vision_language",
)
CELL_TIMEOUT_S = 600
PLOTLY = "application/vnd.plotly.v1+json"
STATIC = ("image/png", "image/svg+xml")


def path_of(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def code_sha256(book: NotebookNode) -> str:
    """Hash of the code cells' sources, in order (markdown edits do not make outputs stale)."""
    sources = [cell.source for cell in book.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def execute(book: NotebookNode) -> NotebookNode:
    """Run `book` top to bottom in a fresh python3 kernel started in notebooks/; raises
    nbclient's CellExecutionError naming the cell on an error. Returns it normalised."""
    with tempfile.TemporaryDirectory(prefix="headlab-kernel-") as sockets:
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sockets}/kernel")
        client = NotebookClient(
            book,
            km=manager,
            timeout=CELL_TIMEOUT_S,
            record_timing=False,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        )
        try:
            client.execute()
        finally:  # what nbclient does for a kernel it started itself: close every socket
            if client.kc is not None:
                client.kc.stop_channels()
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
            manager.context.destroy()
    return normalise(book)


def normalise(book: NotebookNode) -> NotebookNode:
    """Take out what differs between runs of the same code, record the code's hash."""
    for index, cell in enumerate(book.cells):
        cell.metadata.pop("execution", None)
        cell.id = f"cell-{index:02d}"
    language = book.metadata.get("language_info", {})
    book.metadata["language_info"] = {
        key: language[key] for key in ("name", "version") if key in language
    }
    book.metadata["headlab"] = {"code_sha256": code_sha256(book)}
    book.nbformat, book.nbformat_minor = 4, max(book.nbformat_minor, 5)  # 4.5: cells have ids
    return book


def problems(book: NotebookNode) -> list[str]:
    """What is wrong with `book` as an executed notebook, one line each (empty: nothing)."""
    found = []
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    if counts != list(range(1, len(code) + 1)):
        found.append(f"execution counts {counts}: not run once top to bottom")
    if book.metadata.get("headlab", {}).get("code_sha256") != code_sha256(book):
        found.append("code changed since it ran (metadata headlab.code_sha256): run it again")
    for number, cell in enumerate(code, 1):
        for output in cell.outputs:
            if output.output_type == "error":
                found.append(f"code cell {number}: error {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                found.append(f"code cell {number}: stderr {output.text[:200]!r}")
            data = output.get("data", {})
            if PLOTLY in data and not any(kind in data for kind in STATIC):
                found.append(f"code cell {number}: a plotly figure without a static image")
            if "text/html" in data and "plotly" in data["text/html"]:
                found.append(f"code cell {number}: plotly HTML (embedded or CDN plotly.js)")
    if not book.cells or book.cells[-1].cell_type != "markdown":
        found.append("it does not end with a markdown cell saying what the numbers show")
    if code and not any(o.get("name") == "stdout" for o in code[-1].outputs):
        found.append("its last code cell prints no summary")
    return found


def refresh(name: str) -> list[str]:
    """Execute notebook `name` in place; return its problems."""
    path = path_of(name)
    book = execute(nbformat.read(path, as_version=4))
    nbformat.validate(book)
    nbformat.write(book, path)
    return problems(book)


def main(argv: list[str]) -> int:
    names = argv or list(ANALYSES)
    unknown = sorted(set(names) - set(ANALYSES))
    if unknown:
        print(f"unknown notebooks {unknown}; there are {list(ANALYSES)}", file=sys.stderr)
        return 2
    failed = False
    for name in names:
        start = time.perf_counter()
        found = refresh(name)
        size = path_of(name).stat().st_size
        print(f"{name}: {time.perf_counter() - start:.0f} s, {size / 1024:.0f} KiB")
        for line in found:
            print(f"  {line}")
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
