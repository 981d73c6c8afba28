"""Token view: where heads attend, token by token, on a stored prompt or on one typed here."""

from __future__ import annotations

from itertools import product

import streamlit as st

from dashboard import frames, tokens_view, typed, ui
from probes.core.heads import Head

TYPED_KEY = "tokens_typed"  # (model, text, k, TypedResult) of the last typed prompt computed
SOURCES = ("stored in this run", "type a prompt")

st.title("Token view")
context = ui.run_context()
n_layers, n_heads = context.shape
if n_layers == 0:
    ui.missing("per-head scores", ui.scan_command(context.root))
    st.stop()
layer, head = ui.select_head(n_layers, n_heads, "tokens")
st.query_params.update({"layer": str(layer), "head": str(head)})
first = Head(layer, head)
others = [str(Head(a, b)) for a, b in product(range(n_layers), range(n_heads)) if (a, b) != first]
chosen = st.session_state.get("tokens_more")
if chosen is None:  # `?more=L1H2,L3H0` in a shared link
    chosen = str(st.query_params.get("more", "")).split(",")
st.session_state["tokens_more"] = [name for name in chosen if name in others]  # e.g. now first
more = st.multiselect(
    "more heads side by side",
    others,
    key="tokens_more",
    max_selections=tokens_view.MAX_HEADS - 1,
    help="every panel shows the same tokens; hovering a token in one lights all of them",
)
heads = [first, *(Head.of(name) for name in more)]
st.query_params["more"] = ",".join(more)
source = st.radio("prompt", SOURCES, horizontal=True, key="tokens_source")

if source == SOURCES[0]:
    tokens_view.token_view(context.root, context.run_id, heads, key="tokens")
    st.stop()

config = context.manifest.get("config") or {}
model = str(config.get("model") or context.model)
dtype = str(config.get("dtype") or "float32")
text = st.text_area(
    "prompt text",
    key="tokens_text",
    height=120,
    max_chars=typed.MAX_CHARS,
    placeholder="The capital of France is Paris. The capital of Italy is",
)
left, right = st.columns([1, 3])
k = int(left.number_input("keys per query", 1, 64, 8, key="tokens_k"))
right.caption(
    f"Computed by `headlab scan --probes top_keys` in a subprocess with this run's model "
    f"(`{model}`, {dtype}, on the CPU); the dashboard itself never loads a model."
)
if st.button(f"compute the view with {model}", key="tokens_compute", type="primary"):
    bar = st.progress(0.0, text=f"starting a scan with {model} …")

    def progress(phase: str, fraction: float | None) -> None:
        done = "" if fraction is None else f" {fraction:.0%}"
        bar.progress(fraction or 0.0, text=f"{phase} …{done}")

    try:
        result = typed.compute(text, model, dtype, k, on_progress=progress)
    except typed.TypedPromptError as error:
        bar.empty()
        st.session_state.pop(TYPED_KEY, None)
        st.error(f"Could not compute the view: {error}")
    else:
        bar.empty()
        st.session_state[TYPED_KEY] = (model, text, k, result)

computed = st.session_state.get(TYPED_KEY)
if computed is None or computed[0] != model:
    st.stop()
_, computed_text, computed_k, result = computed
prompt = frames.top_keys_prompts(result.prompts)[typed.PROMPT_ID]
if (computed_text, computed_k) != (text, k):
    st.caption("The prompt or k changed since: press the button to compute it again.")
tokens_view.render(prompt, frames.head_top_keys(result.top_keys, prompt, heads))
st.caption(f"computed in {result.seconds:.1f} s")
