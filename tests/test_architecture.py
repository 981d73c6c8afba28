"""The layer rules, checked: what import-linter cannot see (private attributes of model objects,
transformers' submodules) and what only running shows (what `--help` imports)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("headlab", "probes", "analyses", "dashboard")
ADAPTER = Path("probes/bridge.py")
MODEL_LOADING = Path("probes/models")


def package_files() -> list[Path]:
    return sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def private_attributes(tree: ast.AST) -> list[tuple[int, str]]:
    """`obj._name` where obj is not self/cls: reaching into another object's internals."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_only_the_adapter_reaches_into_private_attributes():
    offenders = {
        str(path): hits
        for path in package_files()
        if path != ADAPTER and (hits := private_attributes(ast.parse((ROOT / path).read_text())))
    }
    assert offenders == {}


def test_only_the_adapter_and_model_loading_import_transformers_submodules():
    offenders = []
    for path in package_files():
        if path == ADAPTER or MODEL_LOADING in path.parents:
            continue
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [
                f"{path}:{node.lineno} {name}"
                for name in names
                if name.startswith(("transformers.", "transformer_lens"))
            ]
    assert offenders == []


def test_the_private_attribute_check_can_fail():
    tree = ast.parse("hf.config._attn_implementation = 'eager'\nself._state = 1\n")
    assert private_attributes(tree) == [(1, "hf.config._attn_implementation")]


def imported_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    script = (
        f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return set(result.stdout.split())


HEAVY = {"torch", "transformers", "transformer_lens", "ray"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["scan", "--help"],
        ["sweep", "--help"],
        ["bench", "--help"],
        ["runs", "--help"],
        ["mask-retrieval", "--help"],
        ["induction-check", "--help"],
    ],
)
def test_help_imports_neither_torch_nor_transformers(argv):
    code = (
        "import contextlib, io\nfrom analyses.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})"
    )
    assert imported_after(code) & HEAVY == set()


def test_results_layer_and_dashboard_import_no_torch():
    modules = [
        "analyses.results.store",
        "analyses.results.summary",
        "analyses.results.manifest",
        "analyses.results.ranking",
        "analyses.interventions.controls",
        "dashboard.data",
        "dashboard.frames",
        "dashboard.figures",
        "dashboard.ui",
    ]
    assert imported_after("\n".join(f"import {m}" for m in modules)) & HEAVY == set()


def test_importing_headlab_and_reading_results_imports_no_torch(tmp_path):
    """`import headlab` is light: the results, rankings and figures load neither torch nor
    transformers; the first name that runs a model does."""
    code = (
        "import headlab as hl\n"
        f"runs = hl.runs({str(tmp_path)!r})\n"
        "assert runs.empty and hl.Head.of('L18H8') == (18, 8)\n"
        "import pandas as pd\n"
        "table = pd.DataFrame({'probe': ['sink'], 'metric': ['alpha'], 'layer': [0], 'head': [1],\n"
        "                      'position': [0], 'condition': [None], 'value': [0.5]})\n"
        "assert hl.top_heads(table, 'alpha', position=0)['name'].tolist() == ['L0H1']\n"
        "hl.plot.head_map(table, 'alpha', position=0)\n"
        "hl.HeadlabError, hl.ConfigError"
    )
    assert imported_after(code) & HEAVY == set()
    assert "torch" in imported_after("import headlab as hl\nhl.ablate")


def test_headlab_imports_from_outside_the_repository(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import headlab; print(headlab.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert Path(result.stdout.strip()) == ROOT / "headlab" / "__init__.py"
