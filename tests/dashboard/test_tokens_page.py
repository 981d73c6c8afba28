"""The token view: its HTML (escaped, self-contained), the top-keys frames, the page under
AppTest on the fixture runs, and a typed prompt computed in a subprocess."""

from __future__ import annotations

import json
import re
from itertools import product

import pandas as pd
import pytest

from analyses.results import store
from dashboard import frames, tokens_view, typed
from probes.core import schema
from tests.dashboard import fixture_runs as fx
from tests.dashboard import fixture_top_keys as ftk
from tests.dashboard.test_app import open_page, rerun, texts

# --- the HTML ---------------------------------------------------------------------------------


def view_data(html: str) -> dict:
    """The JSON the view's script reads."""
    match = re.search(r'<script type="application/json" id="tv-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match[1])


def prompt_of(name: str) -> frames.TopKeysPrompt:
    return frames.TopKeysPrompt(name, tuple(ftk.TOP_KEYS_TOKENS[name]), ftk.TOP_KEYS_K)


def heads_of(name: str, heads) -> list[frames.HeadTopKeys]:
    table = ftk.top_keys_tables()[schema.TOP_KEYS_TABLE]
    table = table.assign(keys=table["keys"].map(tuple), weights=table["weights"].map(tuple))
    return frames.head_top_keys(table, prompt_of(name), heads)


def test_markup_in_tokens_cannot_leave_the_data_script():
    html = tokens_view.view_html(prompt_of("html"), heads_of("html", [(0, 0)]))
    start = html.index('id="tv-data">')
    stored = html[start : html.index("</script>", start)]
    assert "<" not in stored[len('id="tv-data">') :] and "&" not in stored
    assert html.count("</script>") == 2  # the data's and the view script's, nothing injected
    assert "<img" not in html and "<b>" not in html and "<!--" not in html
    assert view_data(html)["tokens"] == ftk.HTML_TOKENS  # and the text arrives intact
    assert tokens_view.script_json(["\u2028</script>"]) == '["\\u2028\\u003c/script\\u003e"]'


def test_the_view_is_self_contained():
    html = tokens_view.view_html(prompt_of("prose"), heads_of("prose", [(0, 0), (2, 3)]))
    assert not re.search(r"\b(src|href)\s*=", html)  # no script, style or font is fetched
    assert "http" not in html and "@import" not in html
    assert "textContent" in html and "innerHTML" not in html


def test_the_view_carries_each_heads_keys_and_weights():
    data = view_data(tokens_view.view_html(prompt_of("html"), heads_of("html", [(2, 3), (1, 0)])))
    assert [head["label"] for head in data["heads"]] == ["L2H3", "L1H0"]
    assert data["k"] == 2
    bos = data["heads"][0]
    assert bos["keys"][:5] == [0, 0, 1, 0, 2]  # query 0: (0); 1: (0, 1); 2: (0, 2)
    assert bos["weights"][:5] == pytest.approx([1.0, 0.8, 0.2, 0.8, 0.2], abs=1 / 510)


# --- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "k"), [(1, 2), (7, 2), (10, 8), (300, 8), (5, 64)])
def test_entry_offsets_count_min_k_q_plus_1_entries_per_query(length, k):
    counts = [min(k, q + 1) for q in range(length)]
    assert [frames.entry_offset(q, k) for q in range(length + 1)] == [
        sum(counts[:q]) for q in range(length + 1)
    ]


def test_a_head_row_of_the_wrong_size_is_a_schema_error():
    table = pd.DataFrame(
        [{"prompt": "html", "layer": 0, "head": 0, "keys": [0, 1], "weights": [1]}]
    )
    with pytest.raises(schema.SchemaError, match="expected 23"):
        frames.head_top_keys(table, prompt_of("html"), [(0, 0)])


def test_heads_read_back_per_query():
    (bos,) = heads_of("prose", [(2, 3)])
    assert bos.of_query(0, 2) == [(0, 1.0)]
    assert [key for key, _ in bos.of_query(40, 2)] == [0, 40]


# --- the page -----------------------------------------------------------------------------


def iframes(app) -> list[str]:
    return [element.proto.srcdoc for element in app.get("iframe")]


def test_the_page_draws_the_chosen_heads_on_the_prompt_in_the_url(fixture_data):
    app = open_page(
        fixture_data,
        "tokens",
        query={"layer": "2", "head": "3", "more": "L0H0,L9H9", "prompt": "prose"},
    )
    assert not app.error
    (html,) = iframes(app)
    data = view_data(html)
    assert [head["label"] for head in data["heads"]] == ["L2H3", "L0H0"]  # L9H9 is no head
    assert data["tokens"] == ftk.PROSE_TOKENS
    assert app.selectbox(key="tokens_prompt").value == "prose"
    assert "325 tokens of 'prose'" in texts(app)

    app.multiselect(key="tokens_more").set_value(["L1H1", "L0H2", "L2H0"])
    app.selectbox(key="tokens_prompt").set_value("html")
    rerun(app)
    data = view_data(iframes(app)[0])
    assert [head["label"] for head in data["heads"]] == ["L2H3", "L1H1", "L0H2", "L2H0"]
    assert data["tokens"] == ftk.HTML_TOKENS
    assert app.query_params["more"] == "L1H1,L0H2,L2H0"


def test_a_run_without_top_keys_says_what_to_run(fixture_data):
    app = open_page(fixture_data, "tokens", query={"run": "toy-b"})
    assert not iframes(app)
    assert any(code.value.startswith("headlab scan --probes top_keys") for code in app.code)
    assert "in this run" in texts(app)


def test_an_empty_data_directory_shows_what_to_run(tmp_path):
    app = open_page(tmp_path / "data", "tokens")
    assert not iframes(app) and "does not exist" in texts(app)


# --- typed prompts --------------------------------------------------------------------------


def test_the_subprocess_is_a_top_keys_scan_of_the_runs_model(tmp_path):
    command = typed.command("smollm2-135m", "bfloat16", tmp_path / "p.jsonl", tmp_path, 4)
    assert command[1:4] == ["-m", "analyses.cli", "scan"]
    flags = dict(zip(command[4::2], command[5::2], strict=True))
    assert flags["--model"] == "smollm2-135m" and flags["--dtype"] == "bfloat16"
    assert flags["--probes"] == "top_keys" and flags["--param"] == "top_keys.k=4"


def test_one_line_errors_and_progress_from_the_scans_stderr():
    stderr = "scan x:  50%|#####     | 16/32 [00:01<00:01]\rscan x: 100%|##| 32/32 [00:02<00:00]"
    assert typed.progress_of(stderr) == 1.0 and typed.progress_of("loading") is None
    assert typed.error_line("noise\nheadlab: error: unknown model 'toy'\n", 2) == (
        "unknown model 'toy'"
    )
    assert (
        typed.error_line("Traceback ...\nValueError: bad\n", 1) == "ValueError: bad (exit status 1)"
    )
    assert "status 3" in typed.error_line("", 3)


def test_a_typed_prompt_on_a_model_that_cannot_load_shows_one_line(fixture_data):
    app = open_page(fixture_data, "tokens")
    app.radio(key="tokens_source").set_value("type a prompt")
    rerun(app)
    app.text_area(key="tokens_text").set_value("the cat sat on the mat")
    app.button(key="tokens_compute").click()
    rerun(app)
    (error,) = app.error
    assert error.value.startswith("Could not compute the view: ") and "toy" in error.value
    assert "\n" not in error.value and not iframes(app)


def test_a_typed_prompt_is_computed_in_a_subprocess_and_drawn(tmp_path):
    """The run's model is tiny-random: the subprocess scans the typed text with it."""
    config = {"model": "tiny-random", "dtype": "float32"}
    manifest = {**fx.manifest("tiny-random", 2, 4, {"sink": {}}), "config": config}
    rows = [
        {"probe": "sink", "metric": "alpha", "layer": a, "head": b, "position": 0, "value": 0.5}
        for a, b in product(range(2), range(4))
    ]
    store.write_run(tmp_path, "tiny", pd.DataFrame(rows).assign(model="tiny-random"), manifest)
    app = open_page(tmp_path, "tokens", query={"layer": "1", "head": "2", "more": "L0H0"})
    app.radio(key="tokens_source").set_value("type a prompt")
    rerun(app)
    app.text_area(key="tokens_text").set_value("mary gave the ball to john and the cat sat")
    app.number_input(key="tokens_k").set_value(3)
    app.button(key="tokens_compute").click()
    app.run(timeout=300)
    assert not app.exception and not app.error, [e.value for e in app.error]
    data = view_data(iframes(app)[0])
    assert data["tokens"] == [
        "<bos>",
        "mary",
        "gave",
        "the",
        "ball",
        "to",
        "john",
        "and",
        "the",
        "cat",
        "<unk>",
    ]  # fmt: skip (the tiny word tokenizer's)
    assert [head["label"] for head in data["heads"]] == ["L1H2", "L0H0"]
    assert data["k"] == 3 and len(data["heads"][0]["keys"]) == frames.entry_offset(11, 3)
    assert "computed in" in texts(app)
