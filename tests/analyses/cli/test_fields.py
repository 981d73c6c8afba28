"""The config → command-line builder (analyses/cli/fields.py) on a small dataclass, and every
verb's defaults against its config's defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from analyses.cli import main as cli
from analyses.cli.fields import add_options, config_from_args, default_of
from analyses.jobs.bench import BenchConfig
from analyses.jobs.induction_check import InductionCheckConfig
from analyses.jobs.retrieval_masking import MaskingConfig
from analyses.jobs.scan import ScanConfig
from probes.core.errors import ConfigError
from probes.core.options import DEFAULT_MODEL


@dataclass(frozen=True)
class Toy:
    name: str = field(default="x", metadata={"help": "a name"})
    count: int = field(default=3, metadata={"help": "how many things"})
    ratio: float = field(default=0.5, metadata={"help": "a share in percent, 0-100 %"})
    where: Path = field(
        default=Path("data"),
        metadata={"flag": "--data", "aliases": ("--out",), "help": "data directory"},
    )
    limit: int | None = field(default=256, metadata={"help": "at most; none = no limit"})
    sizes: tuple[int, ...] = (1, 2)
    words: tuple[str, ...] = field(default=("a", "b"), metadata={"choices": ("a", "b", "c")})
    maybe: tuple[int, ...] | None = None
    mode: str = field(default="fast", metadata={"choices": ("fast", "slow")})
    verbose: bool = False
    progress: bool = field(
        default=True, metadata={"flag": "--quiet", "invert": True, "help": "no progress bar"}
    )
    color: bool = field(default=True, metadata={"help": "colour the output"})
    table: dict[str, int] = field(default_factory=dict, metadata={"cli": False})
    hidden: int = field(default=7, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"count must be at least 1, got {self.count}")


def toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_options(parser, Toy)
    return parser


def toy(argv: list[str], **overrides) -> Toy:
    return config_from_args(Toy, toy_parser().parse_args(argv), **overrides)


def test_no_flags_give_the_dataclass_defaults():
    assert toy([]) == Toy()


def test_each_type_converts_from_its_flag():
    argv = ["--name", "y", "--count", "5", "--ratio", "0.25", "--data", "/tmp/d",
            "--limit", "none", "--sizes", "4, 5,6", "--words", "c,a", "--maybe", "8,9",
            "--mode", "slow", "--verbose", "--quiet", "--no-color"]  # fmt: skip
    expected = Toy(
        name="y", count=5, ratio=0.25, where=Path("/tmp/d"), limit=None, sizes=(4, 5, 6),
        words=("c", "a"), maybe=(8, 9), mode="slow", verbose=True, progress=False, color=False,
    )  # fmt: skip
    assert toy(argv) == expected
    assert isinstance(toy(argv).where, Path) and isinstance(toy(argv).sizes, tuple)


def test_none_aliases_and_overrides():
    assert toy(["--limit", "None", "--maybe", "NONE"]).limit is None
    assert toy(["--limit", "12"]).limit == 12
    assert toy(["--out", "elsewhere"]).where == toy(["--data", "elsewhere"]).where
    assert toy(["--color"]).color is True
    # fields off the command line come from overrides, which also win over flags
    assert toy(["--name", "y"], name="z", hidden=9, table={"a": 1}) == Toy(
        name="z", hidden=9, table={"a": 1}
    )


@pytest.mark.parametrize(
    ("argv", "flag", "says"),
    [
        (["--count", "x"], "--count", "expected a whole number, got 'x'"),
        (["--count", "none"], "--count", "expected a whole number, got 'none'"),  # not optional
        (["--ratio", "half"], "--ratio", "expected a number, got 'half'"),
        (["--limit", "many"], "--limit", "expected a whole number, got 'many'"),
        (["--sizes", "1,x"], "--sizes", "expected comma-separated whole numbers, got '1,x'"),
        (["--sizes", ","], "--sizes", "expected comma-separated whole numbers, got ','"),
        (["--words", "a,d"], "--words", "'d' is not one of a,b,c"),
        (["--mode", "medium"], "--mode", "invalid choice: 'medium'"),
        (["--verbose=yes"], "--verbose", "ignored explicit argument"),
    ],
)
def test_bad_values_are_one_argparse_error_naming_the_flag(capsys, argv, flag, says):
    with pytest.raises(SystemExit) as exit_info:
        toy_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [err.strip().splitlines()[-1]]  # one line, after argparse's usage
    assert errors[0].startswith(f"toy: error: argument {flag}") and says in errors[0]


def test_config_checks_come_back_naming_the_flag():
    with pytest.raises(ConfigError, match=r"^--count must be at least 1, got 0$"):
        toy(["--count", "0"])
    with pytest.raises(ConfigError, match=r"^count must be at least 1, got 0$"):
        toy([], count=0)  # set by the caller, not by a flag: the field's name stays


def test_help_takes_text_and_defaults_from_the_fields(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping
    with pytest.raises(SystemExit):
        toy_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for text in [
        "a name (default: x)",
        "how many things (default: 3)",
        "a share in percent, 0-100 % (default: 0.5)",
        "--data DATA ",
        "data directory (also --out; default: data)",
        "at most; none = no limit (default: 256)",
        "--sizes SIZES,...",
        "(default: 1,2)",
        "(choose from a,b,c; default: a,b)",
        "(default: none)",
        "--mode {fast,slow}",
        "--quiet ",
        "no progress bar",
        "--color, --no-color",
        "colour the output (default: --color)",
    ]:
        assert text in out
    assert "--table" not in out and "--hidden" not in out and "--progress" not in out
    assert "--out DATA" not in out  # the alias is named in the help text, not listed


def test_fields_without_a_command_line_form_are_refused_when_the_parser_is_built():
    @dataclass
    class Factory:
        table: dict[str, int] = field(default_factory=dict)

    @dataclass
    class Pair:
        pair: tuple[int, int] = (1, 2)

    for cls in (Factory, Pair):
        with pytest.raises(TypeError):
            add_options(argparse.ArgumentParser(), cls)


def test_a_field_without_a_default_is_positional():
    @dataclass
    class Named:
        run: str = field(metadata={"metavar": "RUN", "help": "which run"})
        top: int = 2

    parser = argparse.ArgumentParser()
    add_options(parser, Named)
    assert config_from_args(Named, parser.parse_args(["r1", "--top", "3"])) == Named("r1", 3)
    assert "RUN" in parser.format_usage()


# --- the verbs -------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def test_every_verb_defaults_to_its_config_defaults():
    assert config_from_args(ScanConfig, parse(["scan"])) == ScanConfig()
    assert config_from_args(BenchConfig, parse(["bench"])) == BenchConfig()
    assert config_from_args(MaskingConfig, parse(["mask-retrieval", "r1"])) == MaskingConfig("r1")
    induction = config_from_args(InductionCheckConfig, parse(["induction-check"]))
    assert induction == InductionCheckConfig()


def test_sweep_defaults_are_the_plan_and_config_defaults():
    from analyses.cli import sweep as sweep_cli
    from analyses.sweeps.plan import SweepPlan, TopK
    from analyses.sweeps.plan_file import plan_from_dict
    from analyses.sweeps.runner import SweepConfig

    args = parse(["sweep", "--top-metric", "alpha"])
    plan = plan_from_dict(sweep_cli.plan_dict_from_args(args))
    assert config_from_args(SweepConfig, args, plan=plan) == SweepConfig(plan=plan)
    (top_k,) = plan.top_k
    assert top_k.k == sweep_cli.DEFAULT_K
    assert (top_k.seeds, top_k.mode) == (default_of(TopK, "seeds"), default_of(TopK, "mode"))
    assert (plan.model, plan.name, plan.batch_size, plan.copies) == tuple(
        default_of(SweepPlan, name) for name in ("model", "name", "batch_size", "copies")
    )
    assert default_of(SweepPlan, "model") == DEFAULT_MODEL  # what `sweep --help` says
    flags = parse(["sweep", "--top-metric", "alpha", "--k", "3", "--seeds", "4", "--top-mode",
                   "mean", "--batch-size", "2", "--run", "r", "--metrics-run", "m", "--out", "o",
                   "--device", "cuda", "--quiet"])  # fmt: skip
    plan = plan_from_dict(sweep_cli.plan_dict_from_args(flags))
    assert (plan.top_k[0].k, plan.top_k[0].seeds, plan.top_k[0].mode) == ((3,), (4,), "mean")
    assert plan.batch_size == 2
    config = config_from_args(SweepConfig, flags, plan=plan)
    assert config == SweepConfig(plan, Path("o"), "r", "m", "cuda", progress=False)


def test_data_is_the_one_flag_for_the_data_directory_and_out_stays_where_it_was():
    from analyses.sweeps.runner import SweepConfig

    defaults = {
        default_of(cls, "data_dir") for cls in (ScanConfig, BenchConfig, MaskingConfig, SweepConfig)
    }
    assert defaults == {cli.DEFAULT_DATA}
    for verb in (["scan"], ["bench"], ["sweep"], ["mask-retrieval", "r"], ["runs"],
                 ["show", "latest"], ["dashboard"]):  # fmt: skip
        assert parse([*verb, "--data", "d"]).data_dir == Path("d")
    for verb in DATA_VERBS:
        assert parse([*verb, "--out", "d"]).data_dir == Path("d")
        assert parse([*verb, "--data", "d", "--data", "e"]).data_dir == Path("e")  # last wins
    for verb in (["runs"], ["show", "latest"], ["dashboard"]):
        assert parse(verb).data_dir == cli.DEFAULT_DATA


# Every verb that reads or writes a data directory.
DATA_VERBS = (["scan"], ["bench"], ["sweep"], ["mask-retrieval", "r"], ["runs"],
              ["show", "latest"], ["dashboard"])  # fmt: skip


def test_every_data_verb_documents_data_and_names_out_as_its_alias(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for verb in DATA_VERBS:
        with pytest.raises(SystemExit):
            parse([verb[0], "--help"])
        out = capsys.readouterr().out
        assert "--data DATA " in out and "(also --out; default: data)" in out, verb
        assert "--out DATA" not in out, verb


def one_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, no usage block
    return err.strip()


@pytest.mark.parametrize("verb", DATA_VERBS)
def test_both_names_of_the_data_directory_are_refused_on_one_line(capsys, verb):
    err = one_error(capsys, [*verb, "--out", "a", "--data", "b"])
    assert err == (
        f"headlab {verb[0]}: error: --out and --data are two names of the same option; "
        f"give one (see `headlab {verb[0]} --help`)"
    )
    assert "--data and --out are" in one_error(capsys, [*verb, "--data", "a", "--out", "a"])


@pytest.mark.parametrize("verb", DATA_VERBS)
@pytest.mark.parametrize("flag", ["--data", "--out"])
def test_an_empty_data_directory_names_the_flag_typed(capsys, verb, flag):
    err = one_error(capsys, [*verb, flag, ""])
    assert err.startswith(f"headlab {verb[0]}: error: argument {flag}: expected a name or path")


def test_default_model_is_spelled_once():
    import probes.models
    from probes.models import REGISTRY

    assert probes.models.DEFAULT_MODEL == DEFAULT_MODEL and DEFAULT_MODEL in REGISTRY
    for cls in (ScanConfig, BenchConfig, InductionCheckConfig):
        assert default_of(cls, "model") == DEFAULT_MODEL
    assert parse(["prepare"]).models == [DEFAULT_MODEL]
