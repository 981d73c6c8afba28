"""Command-line options from config dataclasses: a verb's flags are its config's fields.

`add_options(parser, Config)` adds one argparse option per field the CLI exposes, and
`config_from_args(Config, args, **overrides)` builds the config back from the parsed arguments,
so a default or a help text is written once, on the field:

    max_tokens: int | None = field(default=256, metadata={"help": "truncate each prompt ..."})

- the flag is the field name (`max_tokens` → `--max-tokens`) unless metadata gives `"flag"`;
  `"aliases"` adds more names (`--data` with the alias `--out`), each its own argument hidden from
  `--help` (the help text names them) so that a bad value's error names the flag typed, and two
  names of one option on one command line are refused; the dest is always the field name;
- the default is the field's default, shown in `--help` in the syntax the flag takes;
- a field without a default is a positional argument (`"metavar"` names it);
- `{"cli": False}` keeps a field off the command line (set it through `overrides`), as does
  `skip=` for one verb; a field with a `default_factory` must be one of these;
- types come from the annotations (`typing.get_type_hints`, as the configs use
  `from __future__ import annotations`): int, float, str, Path; bool as `--flag/--no-flag`, as a
  plain switch when the default is False, or as a switch that turns the field off when metadata
  says `"invert": True` (`progress` ← `--quiet`); `T | None`, where the word `none` means None;
  `tuple[int | float | str, ...]` as a comma-separated list. `"choices"` limits a value (each item
  of a tuple). A value that does not convert is argparse's usual error naming the flag, exit 2.
- ranges and combinations are the config's own business: its `__post_init__` raises `ConfigError`,
  which `config_from_args` re-raises naming the flag instead of the field, and which the CLI's error
  boundary prints as one `headlab: error: ...` line, exit 2.

Why not tyro or jsonargparse, which also turn dataclasses into a CLI: headlab wants a small UX they
make hard to get exactly — comma-separated tuples (`--tokens 512,1024`, not nargs), `none` for an
optional value, aliases that keep old flag names working (`--out`, `--quiet`), defaults printed the
way they are typed, and a `--help` that imports neither torch nor transformers (nor a dependency).
This is a hundred-odd lines of argparse.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from probes.core.errors import ConfigError
from probes.core.options import DATA_ALIASES, DATA_FLAG, DATA_HELP, DEFAULT_DATA

C = TypeVar("C")
NONE = "none"  # the word that means None for an optional field


# type -> (what the error message calls one value, the conversion)
def text_arg(text: str) -> str:
    """argparse `type=` for a name: an empty one (`--model ''`) is a slip, not a value."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a name or path, got {text!r}")
    return text


def path_arg(text: str) -> Path:
    """argparse `type=` for a path: '' would silently mean the current directory."""
    return Path(text_arg(text))


SCALARS: dict[Any, tuple[str, Callable[[str], Any]]] = {
    int: ("a whole number", int),
    float: ("a number", float),
    str: ("a non-empty string", text_arg),
    Path: ("a path", path_arg),
}
PLURALS = {"a whole number": "whole numbers", "a number": "numbers", "a non-empty string": "names"}


def positive_int(text: str) -> int:
    """argparse `type=` for a count: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cli_fields(cls: type, skip: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of `cls` that are command-line options, in declaration order."""
    skipped = set(skip)
    return [
        f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.name not in skipped
    ]


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def default_of(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls` (without constructing one)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")


def render(value: Any) -> str:
    """A value written the way its flag takes it: tuples comma-separated, None as `none`."""
    if value is None:
        return NONE
    if isinstance(value, tuple):
        return ",".join(render(item) for item in value)
    return str(value)


def _optional(hint: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, (hint, False) otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"no command-line form for the union {hint}")
        return rest[0], True
    return hint, False


def _tuple_item(hint: Any) -> Any | None:
    """X for `tuple[X, ...]`, None when `hint` is no tuple."""
    if typing.get_origin(hint) is not tuple:
        return None
    args = typing.get_args(hint)
    if len(args) != 2 or args[1] is not Ellipsis:
        raise TypeError(f"no command-line form for {hint}; use tuple[X, ...]")
    return args[0]


def _scalar(hint: Any) -> tuple[str, Callable[[str], Any]]:
    if hint not in SCALARS:
        raise TypeError(f"no command-line form for {hint}")
    return SCALARS[hint]


def converter(hint: Any, choices: tuple[str, ...] | None = None) -> Callable[[str], Any]:
    """The argparse `type=` for a field annotated `hint`; it raises ArgumentTypeError, so that a
    bad value is argparse's one-line error naming the flag."""
    inner, optional = _optional(hint)
    item_hint = _tuple_item(inner)
    what, cast = _scalar(inner if item_hint is None else item_hint)

    def one(text: str, original: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            expected = what if item_hint is None else f"comma-separated {PLURALS.get(what, what)}"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {original!r}") from None
        if choices is not None and value not in choices:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not one of {','.join(choices)} (got {original!r})"
            )
        return value

    def convert(text: str) -> Any:
        if optional and text.strip().lower() == NONE:
            return None
        if item_hint is None:
            return one(text, text)
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {PLURALS.get(what, what)}, got {text!r}"
            )
        return tuple(one(item, text) for item in items)

    return convert


def _help(
    text: str,
    default: str | None,
    choices: tuple[str, ...] | None = None,
    aliases: Sequence[str] = (),
) -> str:
    parts = [f"choose from {','.join(choices)}"] if choices else []
    if aliases:
        parts.append(f"also {', '.join(aliases)}")
    if default is not None:
        parts.append(f"default: {default}")
    suffix = f" ({'; '.join(parts)})" if parts else ""
    return (text + suffix).strip().replace("%", "%%")  # argparse %-formats help strings


GIVEN = "_option_names_given"  # namespace attribute: dest -> the name its value came under


class OneName(argparse.Action):
    """Store the value, as argparse's "store" does, and refuse a second, different name of the
    same option (`--data d --out e`): which one should win is a guess. Repeating one name keeps
    argparse's rule (the last wins)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given = vars(namespace).setdefault(GIVEN, {})
        earlier = given.get(self.dest)
        if earlier is not None and earlier != option_string:
            parser.error(
                f"{earlier} and {option_string} are two names of the same option; give one"
            )
        given[self.dest] = option_string
        setattr(namespace, self.dest, values)


def add_named(
    parser: argparse.ArgumentParser, flags: Sequence[str], *, help_text: str, **options: Any
) -> None:
    """An option under `flags[0]` with `flags[1:]` as aliases: each alias is a separate argument,
    hidden from `--help` (which names it in `help_text`), so that argparse's error for a bad value
    names the flag the user typed (`argument --out: ...`); two of the names together are refused
    (`OneName`)."""
    canonical, *aliases = flags
    parser.add_argument(canonical, action=OneName, help=help_text, **options)
    for alias in aliases:
        parser.add_argument(alias, action=OneName, help=argparse.SUPPRESS, **options)


def add_data_option(parser: argparse.ArgumentParser, default: Any) -> None:
    """The data directory option (`--data`, alias `--out`) for a verb without a config field
    for it, spelled as the configs' `data_dir` fields are (probes.core.options.DATA_OPTION); its
    help shows `DEFAULT_DATA` (a `default` of argparse.SUPPRESS leaves the config's, the same)."""
    add_named(
        parser, (DATA_FLAG, *DATA_ALIASES), dest="data_dir", metavar="DATA", type=path_arg,
        default=default, help_text=_help(DATA_HELP, str(DEFAULT_DATA), aliases=DATA_ALIASES),
    )  # fmt: skip


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Iterable[str] = ()) -> None:
    """One option (or positional argument) per command-line field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    for field in cli_fields(cls, skip):
        meta, hint = field.metadata, hints[field.name]
        where = f"{cls.__name__}.{field.name}"
        if field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{where}: a default_factory field needs metadata {{'cli': False}}")
        choices = tuple(meta["choices"]) if "choices" in meta else None
        text = meta.get("help", "")
        if field.default is dataclasses.MISSING:
            parser.add_argument(
                field.name,
                metavar=meta.get("metavar", field.name.upper()),
                type=converter(hint, choices),
                help=_help(text, None, choices),
            )
            continue
        flags = [flag_of(field), *meta.get("aliases", ())]
        if hint is bool:
            if meta.get("invert"):
                if field.default is not True:
                    raise TypeError(f"{where}: an inverting switch needs the default True")
                action: Any = "store_false"
                shown = None
            elif field.default is False:
                action, shown = "store_true", None
            else:
                action, shown = argparse.BooleanOptionalAction, flags[0]
            parser.add_argument(
                *flags, dest=field.name, action=action, default=field.default,
                help=_help(text, shown),
            )  # fmt: skip
            continue
        inner, _ = _optional(hint)
        is_tuple = _tuple_item(inner) is not None
        name = meta.get("metavar", flags[0].lstrip("-").upper().replace("-", "_"))
        options: dict[str, Any] = {
            "dest": field.name,
            "default": field.default,
            "type": converter(hint, choices if is_tuple else None),
        }
        if choices is not None and not is_tuple:
            options["choices"] = choices  # argparse shows them as {a,b,c}
        else:
            options["metavar"] = f"{name},..." if is_tuple else name
        shown = _help(text, render(field.default), choices if is_tuple else None, flags[1:])
        add_named(parser, flags, help_text=shown, **options)


def config_from_args(cls: type[C], args: argparse.Namespace, **overrides: Any) -> C:
    """`cls` built from the parsed arguments of its command-line fields, then `overrides`.

    Fields the namespace lacks keep their defaults. A `ConfigError` from the config's own checks
    comes back naming the flag (`--batch-size must be ...`) rather than the field.
    """
    fields = {f.name: f for f in cli_fields(cls)}
    given = {
        name: getattr(args, name)
        for name in fields
        if name not in overrides and hasattr(args, name)
    }
    try:
        return cls(**given, **overrides)
    except ConfigError as error:
        if type(error) is not ConfigError:  # a subclass keeps its own message and type
            raise
        message = str(error)
        for name in given:
            option = fields[name].default is not dataclasses.MISSING  # positionals keep names
            if option and _names(message, name):
                raise ConfigError(flag_of(fields[name]) + message[len(name) :]) from error
        raise


def _names(message: str, name: str) -> bool:
    """Whether `message` starts with the field name `name` as a word."""
    return message.startswith(name) and message[len(name) : len(name) + 1] in (" ", ":", "=")
