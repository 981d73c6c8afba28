"""The README's Python API example, run exactly as written on the real default model."""

import ast
import re
from pathlib import Path

import pytest
import torch

from analyses.interventions.kinds import HeadAblation, hooks
from probes import bridge

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The first ```python block under "## Python API" in the README."""
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def test_the_example_is_one_import_and_at_most_ten_lines():
    code = readme_example()
    lines = [line for line in code.splitlines() if line.strip()]
    imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert len(lines) <= 10, lines
    assert [ast.unparse(node) for node in imports] == ["import headlab as hl"]


@pytest.mark.slow
def test_the_readme_example_runs_and_measures_what_it_says(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    model, table, top, ablated = (namespace[k] for k in ("model", "table", "top", "ablated"))

    # The top heads are the five highest α at key 0 of the scan, a real sink head first.
    alpha = table[(table.metric == "alpha") & (table.position == 0)]
    assert len(alpha) == model.info.n_layers * model.info.n_heads
    expected = alpha.sort_values(["value", "layer", "head"], ascending=[False, True, True])[:5]
    assert top["name"].tolist() == [f"L{r.layer}H{r.head}" for r in expected.itertuples()]
    assert top["value"].tolist() == pytest.approx(expected["value"].tolist())
    assert top["value"][0] > 0.9

    # Both figures were written, the pattern one for the top head.
    assert "plotly" in (tmp_path / "alpha.html").read_text()
    assert top["name"][0] in (tmp_path / "head.html").read_text()

    # The loss inside the block is the one with those heads zeroed, and differs from clean.
    text = namespace["text"]
    tokens = torch.tensor([model.tokenize(text)])
    ablation = HeadAblation(list(top["name"]))
    logits = bridge.forward(model, tokens, hooks([ablation], model.info))[0]
    zeroed = torch.nn.functional.cross_entropy(logits[:-1], tokens[0, 1:])
    clean = torch.nn.functional.cross_entropy(bridge.forward(model, tokens)[0][:-1], tokens[0, 1:])
    assert ablated == pytest.approx(float(zeroed), rel=1e-5)
    assert abs(ablated - float(clean)) > 1e-3
    assert f"loss {float(clean):.3f} -> {ablated:.3f} with them zeroed" in capsys.readouterr().out
