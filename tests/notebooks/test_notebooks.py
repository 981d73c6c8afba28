"""Every notebook is committed executed (`make notebooks`) and shows its results where plotly's
JavaScript cannot run; and it still runs top to bottom on the default model."""

from __future__ import annotations

import base64
import copy
import io

import nbformat
import pytest
from PIL import Image

from notebooks.refresh import ANALYSES, NOTEBOOKS, PLOTLY, code_sha256, execute, problems


def executed(**changes) -> nbformat.NotebookNode:
    """A two-cell notebook as `make notebooks` saves it, with `changes` to its code cell."""
    png = io.BytesIO()
    Image.new("RGB", (4, 3), "white").save(png, "PNG")
    figure = {
        PLOTLY: {"data": [], "layout": {}},
        "image/png": base64.b64encode(png.getvalue()).decode(),
        "text/plain": "<plotly figure>",
    }
    cell = nbformat.v4.new_code_cell("print('2 heads')", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output("display_data", data=figure),
        nbformat.v4.new_output("stream", name="stdout", text="2 heads\n"),
    ]
    for key, value in changes.items():
        cell[key] = value
    book = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("Two heads.")])
    book.metadata["headlab"] = {"code_sha256": code_sha256(book)}
    return book


def test_there_is_one_notebook_per_analysis():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(ANALYSES)


def test_the_check_passes_a_clean_notebook_and_names_each_fault():
    assert problems(executed()) == []
    figure_only = executed()
    del figure_only.cells[0].outputs[0].data["image/png"]
    stale = executed()
    stale.cells[0].source = "print('3 heads')"
    noisy = executed()
    noisy.cells[0].outputs.append(nbformat.v4.new_output("stream", name="stderr", text="10%|█"))
    failed = executed()
    failed.cells[0].outputs.append(nbformat.v4.new_output("error", ename="KeyError", evalue="x"))
    unfinished = executed()
    unfinished.cells.pop()
    cases = {
        "without a static image": figure_only,
        "code changed since it ran": stale,
        "stderr '10%|█'": noisy,
        "error KeyError: x": failed,
        "does not end with a markdown cell": unfinished,
        "not run once top to bottom": executed(execution_count=None),
        "prints no summary": executed(outputs=executed().cells[0].outputs[:1]),
    }
    for fault, book in cases.items():
        found = problems(book)
        assert len(found) == 1 and fault in found[0], (fault, found)


@pytest.mark.parametrize("name", ANALYSES)
def test_notebooks_are_saved_executed_with_static_figures(name):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    assert problems(book) == []  # if it fails: `make notebooks`
    figures = [
        output
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if PLOTLY in output.get("data", {})
    ]
    assert figures  # each notebook draws at least one figure, and each has its PNG
    for output in figures:
        image = Image.open(io.BytesIO(base64.b64decode(output.data["image/png"])))
        assert image.format == "PNG" and 400 <= image.width <= 1600
    assert (NOTEBOOKS / f"{name}.ipynb").stat().st_size < 512 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("name", ANALYSES)
def test_notebook_runs_top_to_bottom(name):
    saved = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    book = execute(copy.deepcopy(saved))  # raises CellExecutionError naming the cell on any error
    assert problems(book) == []
    assert summary(book) == summary(saved), "the committed results are stale: `make notebooks`"


def summary(book: nbformat.NotebookNode) -> str:
    """What the last code cell printed: the sentence the closing markdown cell reads."""
    last = next(cell for cell in reversed(book.cells) if cell.cell_type == "code")
    return "".join(output.text for output in last.outputs if output.get("name") == "stdout")
