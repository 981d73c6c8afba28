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


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Every module of `modules` that `path` imports, at the top or inside a function (a lazy
    import still ties the two modules together), but not under `if TYPE_CHECKING:`.
    `from package import submodule` depends on the submodule, as import-linter counts it."""
    tree = ast.parse((ROOT / path).read_text())
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    package = ".".join(path.with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            names_only = any(f"{base}.{alias.name}" not in modules for alias in node.names)
            found |= submodules | ({base} if names_only else set())
    return found & modules


def module_graph() -> dict[str, set[str]]:
    """headlab module -> the headlab modules it imports (packages stand for their __init__)."""
    names = {
        ".".join(
            p.with_suffix("").parts[:-1] if p.name == "__init__.py" else p.with_suffix("").parts
        )
        for p in package_files()
    }
    graph = {}
    for path in package_files():
        parts = path.with_suffix("").parts
        name = ".".join(parts[:-1] if path.name == "__init__.py" else parts)
        graph[name] = imported_modules(path, names) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_not_even_through_lazy_imports():
    # A package importing its own submodules (its __init__ re-exporting them) is not a cycle
    # unless a submodule imports the package back; so packages' own edges count like any other.
    graph = module_graph()
    assert "analyses.jobs.scan" in graph["analyses.jobs.scan_runs"]  # the graph sees imports
    assert "probes.inputs.image_files" in graph["probes.inputs.prompts"]
    assert cycles(graph) == []


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
