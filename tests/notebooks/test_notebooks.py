"""Every notebook runs top to bottom on the default model, and is stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ANALYSES = ["sinks", "retrieval_heads", "head_divergence", "future_attention", "ablation_sweep"]
CELL_TIMEOUT_S = 600


def test_there_is_one_notebook_per_analysis():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(ANALYSES)


@pytest.mark.parametrize("name", ANALYSES)
def test_notebooks_are_saved_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
@pytest.mark.parametrize("name", ANALYSES)
def test_notebook_runs_top_to_bottom(name):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        book,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    errors = [
        o
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
    last = next(cell for cell in reversed(book.cells) if cell.cell_type == "code")
    assert last.outputs  # the closing figure or table was produced
