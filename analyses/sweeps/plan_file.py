"""Reading a sweep plan from TOML (or a dict of the same shape): every key, table and value
checked, errors naming the file and the section, before anything runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.interventions.controls import Head
from analyses.interventions.registry import ABLATION_MODES
from analyses.sweeps.plan import (
    PlanError,
    Ranking,
    SingleHead,
    Strength,
    SweepPlan,
    TopK,
    check_strength,
)
from probes.core.options import DEFAULT_MODEL

if TYPE_CHECKING:  # plans are read and checked without torch (`headlab sweep --help` too)
    pass


def _cast(item: Any, cast: type, where: str) -> Any:
    """One TOML value read as `cast` (int, float or str), refusing look-alikes: a bool or 2.5
    is no whole number, a number no text."""
    if cast is int and isinstance(item, int) and not isinstance(item, bool):
        return item
    if cast is float and isinstance(item, int | float) and not isinstance(item, bool):
        return float(item)
    if cast is str and isinstance(item, str):
        return item
    kind = {int: "a whole number", float: "a number", str: "text"}[cast]
    raise PlanError(f"{where}: expected {kind}, got {item!r}")


def _tuple_of(value: Any, cast: type, where: str) -> tuple[Any, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(_cast(item, cast, where) for item in items)


def _nonempty(values: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if not values:
        raise PlanError(f"{where}: give at least one value")
    return values


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanError(
            f"{where} must be a table (a [section] with key = value lines), got {value!r}"
        )
    return value


def _tables(value: Any, where: str) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [_table(item, f"{where} #{index + 1}") for index, item in enumerate(items)]


def _heads(value: Any, where: str) -> tuple[Head, ...]:
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)
        for pair in value
    ):
        raise PlanError(f"{where}: heads are a list of [layer, head] pairs, got {value!r}")
    return tuple((layer, head) for layer, head in value)


def _ranking(table: dict[str, Any], where: str) -> Ranking:
    if not isinstance(table.get("metric"), str):
        raise PlanError(f'{where}: needs metric = "<stored metric name>"')
    optional = {"probe": str, "position": int, "condition": str}
    given = {
        key: _cast(table[key], cast, f"{where} {key}")
        for key, cast in optional.items()
        if table.get(key) is not None
    }
    ascending = table.get("ascending", False)
    if not isinstance(ascending, bool):
        raise PlanError(f"{where} ascending: expected true or false, got {ascending!r}")
    return Ranking(metric=table["metric"], ascending=ascending, **given)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def plan_from_dict(raw: dict[str, Any], source: str = "plan") -> SweepPlan:
    """A plan from the parsed TOML (or any dict of the same shape); errors name `source`."""
    top = {"model", "name", "tasks", "single_head", "top_k", "strength", "attribution",
           "batch_size", "copies"}  # fmt: skip
    _check_keys(raw, top, source)
    tasks = _table(raw.get("tasks", {"ioi": {}}), f"{source}: [tasks]")
    if not tasks:
        raise PlanError(f"{source}: [tasks] must name at least one task, e.g. [tasks.ioi]")
    for name, params in tasks.items():
        _table(params, f"{source}: [tasks.{name}]")
    single = None
    if "single_head" in raw:
        table = _table(raw["single_head"], f"{source}: [single_head]")
        _check_keys(table, {"modes", "layers"}, f"{source} [single_head]")
        modes = _tuple_of(table.get("modes", ["zero"]), str, f"{source} [single_head] modes")
        if not modes:
            raise PlanError(f"{source} [single_head] modes: give at least one ablation mode")
        layers = table.get("layers")
        single = SingleHead(modes, None if layers is None else _tuple_of(layers, int, source))
    top_k = []
    for index, table in enumerate(_tables(raw.get("top_k", []), f"{source}: [[top_k]]")):
        where = f"{source} [[top_k]] #{index + 1}"
        _check_keys(table, {"metric", "probe", "position", "condition", "ascending", "k",
                            "seeds", "mode"}, where)  # fmt: skip
        if "k" not in table:
            raise PlanError(f"{where}: needs k = [1, 2, 4, ...]")
        top_k.append(
            TopK(
                ranking=_ranking(table, where),
                k=_tuple_of(table["k"], int, f"{where} k"),
                seeds=_tuple_of(table.get("seeds", [0, 1, 2]), int, f"{where} seeds"),
                mode=_cast(table.get("mode", "zero"), str, f"{where} mode"),
            )
        )
    strengths = []
    for index, table in enumerate(_tables(raw.get("strength", []), f"{source}: [[strength]]")):
        where = f"{source} [[strength]] #{index + 1}"
        _check_keys(table, {"kind", "values", "heads", "top", "sources", "targets",
                            "queries_from", "threshold"}, where)  # fmt: skip
        if ("heads" in table) == ("top" in table):
            raise PlanError(f"{where}: give exactly one of heads = [[l, h], ...] or top = {{...}}")
        ranking, k = None, 0
        if "top" in table:
            ranking = _ranking(_table(table["top"], f"{where} top"), f"{where} top")
            k = _cast(table["top"].get("k", 0), int, f"{where} top k")
            if k < 1:
                raise PlanError(f"{where} top: needs k >= 1")
        option_keys = ("sources", "targets", "queries_from", "threshold")
        options: dict[str, Any] = {key: table[key] for key in option_keys if key in table}
        for key in ("sources", "targets"):
            if key in options:
                options[key] = tuple(options[key])
        values = _nonempty(
            _tuple_of(table.get("values", []), float, f"{where} values"), f"{where} values"
        )
        check_strength(str(table.get("kind")), values, where)
        strengths.append(
            Strength(
                kind=table["kind"],
                values=values,
                heads=_heads(table["heads"], where) if "heads" in table else (),
                top=ranking,
                top_k=k,
                options=options,
            )
        )
    asked = [*(single.modes if single else ()), *(t.mode for t in top_k)]
    asked += list(_tuple_of(raw.get("attribution", []), str, f"{source} attribution"))
    for mode in asked:
        if mode not in ABLATION_MODES:
            raise PlanError(f"{source}: ablation mode {mode!r} is not one of {ABLATION_MODES}")
    copies = raw.get("copies")
    plan = SweepPlan(
        model=_cast(raw.get("model", DEFAULT_MODEL), str, f"{source}: model"),
        name=_cast(raw.get("name", "sweep"), str, f"{source}: name"),
        tasks={name: dict(params) for name, params in tasks.items()},
        single_head=single,
        top_k=tuple(top_k),
        strength=tuple(strengths),
        attribution=_tuple_of(raw.get("attribution", []), str, f"{source} attribution"),
        batch_size=_cast(raw.get("batch_size", 16), int, f"{source}: batch_size"),
        copies=None if copies is None else _cast(copies, int, f"{source}: copies"),
    )
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", plan.name):
        raise PlanError(f"{source}: name {plan.name!r}: use letters, digits, '.', '_' and '-'")
    if plan.batch_size < 1 or (plan.copies is not None and plan.copies < 1):
        raise PlanError(f"{source}: batch_size and copies must be at least 1")
    if not (plan.single_head or plan.top_k or plan.strength or plan.attribution):
        raise PlanError(f"{source}: nothing to do; add [single_head], [[top_k]], [[strength]] "
                        "or attribution = [...]")  # fmt: skip
    return plan


def load_plan(path: Path | str) -> SweepPlan:
    """A plan from a TOML file."""
    from probes.inputs.prompts import PromptFileError, read_text_file

    path = Path(path)
    try:
        raw = tomllib.loads(read_text_file(path, "plan file", max_bytes=2**20))
    except PromptFileError as error:
        raise PlanError(str(error)) from None
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"plan file {path} is not valid TOML: {error}") from error
    return plan_from_dict(raw, str(path))
