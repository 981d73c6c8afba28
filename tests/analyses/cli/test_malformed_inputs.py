"""Property-based: malformed prompt JSONL, plan TOML and `--param` strings always end in one
`headlab: error:` line, exit status 2, and nothing written under the data directory.

Every generated input is malformed by construction (a defect is planted among valid parts), so
the CLI must refuse it before any model work; hypothesis searches for one it does not.
"""

import contextlib
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyses.cli import main as cli

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
WORDS = st.lists(st.sampled_from(["the", "cat", "went", "to", "park", "é", "中"]), min_size=1)


def run(argv: list[str]) -> tuple[int, str, list[str]]:
    """Exit code, stderr and what the run left under its data directory."""
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main([*argv, "--data", str(data)])
        left = sorted(str(p.relative_to(data)) for p in data.rglob("*")) if data.exists() else []
        return code, err.getvalue(), left


def assert_refused(code: int, err: str, left: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("headlab: error: "), err
    assert "Traceback" not in err
    assert left == [], left


# --- prompt files ----------------------------------------------------------------------------

valid_line = st.builds(lambda words: json.dumps({"text": " ".join(words)}), WORDS)
bad_line = st.one_of(
    st.text(min_size=1).filter(lambda t: t.strip() and not _is_json_object(t)),
    st.sampled_from(["[1, 2]", "3", '"just text"', "null", "{", '{"text": }']),
    st.builds(
        lambda v: json.dumps({"text": v}), st.one_of(st.integers(), st.none(), st.lists(st.text()))
    ),
    st.builds(lambda s: json.dumps({"txt": s}), st.text()),
    st.builds(lambda ws: json.dumps({"text": ws}), st.sampled_from(["", " ", "\n\t"])),
    st.just('{"text": "a \\ud800 lone surrogate"}'),
)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@SETTINGS
@given(
    before=st.lists(valid_line, max_size=3), bad=bad_line, after=st.lists(valid_line, max_size=3)
)
def test_a_malformed_prompt_file_is_refused_naming_its_line(before, bad, after):
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "prompts.jsonl"
        path.write_text("\n".join([*before, bad, *after]) + "\n", encoding="utf-8")
        code, err, left = run(["scan", "--model", "tiny-random", "--prompts", str(path)])
        assert_refused(code, err, left)
        if bad.strip():
            assert f"prompts.jsonl:{len(before) + 1}" in err or "prompts.jsonl" in err


@SETTINGS
@given(
    ids=st.lists(st.sampled_from(["a", "b"]), min_size=2, max_size=4).filter(
        lambda ids: len(set(ids)) < len(ids)
    )
)
def test_duplicate_prompt_ids_are_refused(ids):
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "prompts.jsonl"
        path.write_text("\n".join(json.dumps({"id": i, "text": "the cat"}) for i in ids) + "\n")
        assert_refused(*run(["scan", "--model", "tiny-random", "--prompts", str(path)]))


# --- --param strings -------------------------------------------------------------------------

bad_param = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1),  # no "=": not PROBE.NAME=VALUE
    st.builds(
        "{}={}".format, st.sampled_from(["sink", "sink.", ".epsilon", "nope.epsilon"]), st.text()
    ),
    st.builds("sink.{}={}".format, st.sampled_from(["nope", "epsilonn", ""]), st.text()),
    st.builds(
        "sink.epsilon={}".format,
        st.one_of(
            st.text(alphabet="abcxyz!", min_size=1),
            st.floats(max_value=-1e-9, allow_nan=False).map(str),
            st.floats(min_value=1.0, allow_infinity=False, allow_nan=False).map(str),
        ),
    ),
    st.builds(
        "sink.n_positions={}".format,
        st.one_of(st.integers(max_value=0).map(str), st.sampled_from(["1.5", "x", "", "true"])),
    ),
    st.builds("detectors.half_len={}".format, st.integers(max_value=1).map(str)),
)


@SETTINGS
@given(param=bad_param)
def test_a_malformed_param_is_refused_before_any_work(param):
    argv = ["scan", "--model", "tiny-random", "--probes", "sink,detectors", "--param", param]
    assert_refused(*run(argv))


# --- plan TOML -------------------------------------------------------------------------------

PLAN_HEAD = 'model = "tiny-random"\n[tasks.lm]\nn_prompts = 1\n'
toml_scalar = st.one_of(
    st.integers(-5, 5).map(str), st.sampled_from(['"zero"', "true", "1.5", '"x"', "[]", "[1, 2]"])
)
bad_plan = st.one_of(
    st.builds("single_head = {}\n".format, toml_scalar),  # a value where a table belongs
    st.builds("[single_head]\nmodes = {}\n".format, st.sampled_from(['["nope"]', "[1]", "true"])),
    st.builds("[single_head]\nlayers = {}\n".format, st.sampled_from(['["a"]', "[1.5]", "[true]"])),
    st.builds("[[top_k]]\nmetric = {}\nk = [1]\n".format, st.sampled_from(["1", "true", "[]"])),
    st.builds('[[top_k]]\nmetric = "alpha"\nk = {}\n'.format, st.sampled_from(['["1"]', "[1.5]"])),
    st.builds(
        "[[strength]]\nkind = {}\nvalues = [1.0]\nheads = [[0, 0]]\n".format,
        st.sampled_from(['"nope"', "1", '"scale "']),
    ),
    st.builds(
        "batch_size = {}\n[single_head]\n".format, st.sampled_from(["0", '"8"', "1.5", "-1"])
    ),
    st.builds("name = {}\n[single_head]\n".format, st.sampled_from(['"a/b"', '""', "1", '"../x"'])),
    st.builds("{} = 1\n[single_head]\n".format, st.sampled_from(["nope", "Model", "task"])),
    st.text(alphabet="[]=\"'.\n abc", min_size=1),  # mostly not TOML at all
)


@SETTINGS
@given(body=bad_plan)
def test_a_malformed_plan_is_refused_before_its_run_exists(body):
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "plan.toml"
        path.write_text(PLAN_HEAD + body, encoding="utf-8")
        code, err, left = run(["sweep", "--plan", str(path), "--quiet"])
        assert_refused(code, err, left)
