"""The token-level attention view: real tokens as wrapping text, one panel per head; hover a
query token to colour the keys it attends to by weight (or, in "key" mode, hover a key to colour
the queries that attend to it); click pins the token; the panels scroll together.

Self-contained HTML: the script and style are inlined from dashboard/assets/, nothing is
fetched (no CDN), and the data travel as JSON inside a `<script type="application/json">` with
`<`, `>` and `&` escaped, so no token text can close it; the script writes token text with
`textContent` only. Rendered with `st.iframe` (the successor of `components.v1.html`).

`token_view(root, run_id, heads)` draws a stored run's top keys (probes/families/top_keys.py) and
is what a head page calls; `render(prompt, heads)` draws data already loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import streamlit as st

from dashboard import data, ui
from dashboard.frames import HeadTopKeys, TopKeysPrompt

ASSETS = Path(__file__).resolve().parent / "assets"
PANEL_HEIGHT = 480  # px of scrolling text per panel
MAX_COLUMNS = 3  # panels side by side; more heads wrap to a new row
MAX_HEADS = 8


@cache
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def script_json(payload: object) -> str:
    """`payload` as JSON that is safe inside a <script> element: no `<`, `>` or `&` left, so
    neither `</script>` nor `<!--` can appear; U+2028/2029 are escaped as all non-ASCII is."""
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def payload(prompt: TopKeysPrompt, heads: Sequence[HeadTopKeys]) -> dict[str, object]:
    """What the page's script reads: tokens, k, and per head its flat keys and weights."""
    return {
        "prompt": prompt.prompt,
        "tokens": list(prompt.text),
        "k": prompt.k,
        "heads": [
            {
                "label": head.name,
                "keys": list(head.keys),
                "weights": [round(weight, 4) for weight in head.weights],
            }
            for head in heads
        ],
    }


def columns(n_heads: int) -> int:
    return max(1, min(n_heads, MAX_COLUMNS))


def view_html(
    prompt: TopKeysPrompt, heads: Sequence[HeadTopKeys], panel_height: int = PANEL_HEIGHT
) -> str:
    """The whole view as one self-contained HTML document."""
    style = f":root {{ --tv-columns: {columns(len(heads))}; --tv-height: {int(panel_height)}px; }}"
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            f"<style>{_asset('token_view.css')}\n{style}</style></head><body>",
            '<div class="tv-bar">',
            '<label><input type="radio" name="tv-mode" value="query" checked> hover a query: '
            "colour the keys it attends to</label>",
            '<label><input type="radio" name="tv-mode" value="key"> hover a key: colour the '
            "queries that attend to it</label>",
            '<label><input type="checkbox" id="tv-sqrt"> √ weight (faint weights show)</label>',
            '<label><input type="checkbox" id="tv-sync" checked> scroll together</label>',
            '<span class="tv-legend">0 <span class="tv-scale"></span> 1</span>',
            '<span id="tv-status">hover a token; click to pin</span>',
            '</div><div class="tv-grid" id="tv-grid"></div>',
            f'<script type="application/json" id="tv-data">{script_json(payload(prompt, heads))}',
            "</script>",
            f"<script>{_asset('token_view.js')}</script>",
            "</body></html>",
        ]
    )


def render(
    prompt: TopKeysPrompt,
    heads: Sequence[HeadTopKeys],
    *,
    panel_height: int = PANEL_HEIGHT,
) -> None:
    """Draw the view of `heads` on `prompt` (data already loaded)."""
    if not heads:
        st.info("Pick at least one head.")
        return
    st.caption(
        f"{prompt.length} tokens of {prompt.prompt!r}; each query keeps its top {prompt.k} keys "
        "(the colour is the attention weight A[query, key]; weights outside a query's top "
        f"{prompt.k} are not stored)"
    )
    st.iframe(view_html(prompt, heads, panel_height), alt="token-level attention view")


def token_view(
    root: Path,
    run_id: str,
    heads: Sequence[tuple[int, int]],
    prompt: str | None = None,
    *,
    key: str = "token_view",
) -> bool:
    """The token view of `heads` on a prompt stored in run `run_id` under `root` (a prompt
    picker when `prompt` is None and the run stores several). Returns False, after saying
    which command stores them, when the run has none."""
    prompts = data.top_keys_prompts(root, run_id)
    if not prompts:
        ui.missing(
            "token-level attention (top keys per query)",
            ui.scan_command(root, "top_keys") + " --param top_keys.n_prompts=2",
        )
        return False
    if prompt is None:  # a picker, starting from `?prompt=` when the URL names a stored one
        ids = sorted(prompts)
        named = st.query_params.get("prompt")
        index = ids.index(named) if named in ids else 0
        prompt = str(st.selectbox("stored prompt", ids, index=index, key=f"{key}_prompt"))
        st.query_params["prompt"] = prompt
    if prompt not in prompts:
        st.info(f"Run {run_id!r} stores no top keys for prompt {prompt!r}.")
        return False
    wanted = list(dict.fromkeys(heads))[:MAX_HEADS]
    found = data.head_top_keys(root, run_id, prompts[prompt], wanted)
    absent = sorted(set(wanted) - {(h.layer, h.head) for h in found})
    if absent:
        missing = ", ".join(f"L{layer}H{head}" for layer, head in absent)
        st.info(f"No top keys stored for {missing} on {prompt!r}.")
    render(prompts[prompt], found)
    return True
