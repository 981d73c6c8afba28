"""Vision: what a vision-language model's heads do with the image. VHD (how much each head's
output depends on the image, at the answer's tokens), attention over the image drawn on the
picture, and visual sink tokens."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, figures, frames, ui
from dashboard.figures.images import image_overlay
from dashboard.frames import vision
from probes.core import definitions, schema

IMAGE_SCAN = (
    "headlab scan --model tiny-random-llava --prompts data/prompts/images/images.jsonl "
    "--probes divergence,sink,image_attention"
)


def head_map(
    values: pd.DataFrame, family: str, metric: str, title: str, key: str, **scale: float
) -> None:
    """A clickable layer × head map of one stored metric, labelled by its definition."""
    ui.head_map_chart(
        figures.head_heatmap(
            values,
            n_layers=n_layers,
            n_heads=n_heads,
            title=title,
            **scale,
            value_label=definitions.label(family, metric),
            definition=definitions.hover(family, metric),
        ),
        key=key,
    )


st.title("Vision-language heads")
context = ui.run_context()
table, (n_layers, n_heads) = context.table, context.shape
prompts = vision.image_prompts(
    data.side_table(context.root, context.run_id, schema.IMAGE_PROMPTS_TABLE)
)
vhd = frames.head_values(table, "divergence", "vhd")
if vhd.empty and not prompts:
    ui.missing("image-prompt results", f"{IMAGE_SCAN} --data {context.root}")
    st.stop()
if context.model.startswith("tiny-random"):
    st.warning(
        f"{context.model} has random weights: it proves the code paths, but its heads have no "
        "reason to look at the object in the image, so these maps are noise. On a real "
        "checkpoint (e.g. llava-hf/llava-1.5-7b-hf) the papers report VHD concentrated in a "
        "minority of heads (He et al. 2025) and visual sink tokens that carry little of the "
        "image's content (Kang et al. 2025)."
    )

st.subheader("Vision-aware head divergence (VHD)")
if vhd.empty:
    ui.missing("VHD", f"{IMAGE_SCAN} --data {context.root}")
else:
    head_map(vhd, "divergence", "vhd", "VHD per head — click a head to open it", key="vision_vhd")
    tokens = frames.token_rows(table, "divergence", ["t_vhd"])
    if not tokens.empty:
        prompt_id = st.selectbox(
            "prompt", sorted(tokens["prompt"].unique()), key="vision_tvhd_prompt"
        )
        text, series = frames.prompt_series(tokens, prompt_id)
        scored = [i for i, value in enumerate(series["t_vhd"]) if value is not None] or [0]
        # Only the answer's tokens have a T-VHD: draw them, not the whole prompt.
        text = text[scored[0] : scored[-1] + 1]
        series = {name: v[scored[0] : scored[-1] + 1] for name, v in series.items()}
        answers = data.side_table(context.root, context.run_id, schema.DIVERGENCE_ANSWERS_TABLE)
        caption = vision.answer_caption(answers, prompt_id)
        if caption:
            st.caption(caption)
        st.plotly_chart(
            figures.token_series(
                series,
                text,
                title="T-VHD at each answer token (mean of the top-k heads' VHD)",
                y_label=definitions.label("divergence", "t_vhd"),
                first_position=scored[0],
            ),
            key="vision_tvhd",
        )

st.subheader("Attention over the image")
if not prompts:
    ui.missing("per-patch attention", f"{IMAGE_SCAN} --data {context.root}")
    st.stop()
attention = data.side_table(context.root, context.run_id, schema.IMAGE_ATTENTION_TABLE)
left, right = st.columns([3, 2])
with left:
    chosen = prompts[st.selectbox("image prompt", list(prompts), key="vision_prompt")]
    scope = st.radio(
        "heads",
        ["one head", "mean over a layer's heads", "mean over every head"],
        horizontal=True,
        key="vision_scope",
    )
    layer = head = None
    if scope == "one head":
        layer, head = ui.select_head(n_layers, n_heads, "vision")
    elif scope.startswith("mean over a layer"):
        layer = st.selectbox("layer", range(n_layers), key="vision_layer_only")
    outline = st.toggle("outline the visual sink tokens (sink probe)", value=True, key="vision_ol")
    stretch = st.toggle(
        "stretch colours to the smallest weight shown",
        key="vision_stretch",
        help="off: the colour scale starts at 0, so near-uniform attention looks uniform",
    )
    weights = vision.token_weights(attention, chosen.prompt, layer, head)
    marked = vision.visual_sink_tokens(table, chosen) if outline else []
    who = "every head" if layer is None else f"L{layer}" + (f"H{head}" if head is not None else "")
    views = [v for v in chosen.boxes["view"].unique() if v]
    if not views:
        st.info(
            "headlab knows no patch geometry for this architecture; the attention per image "
            "token is drawn as bars instead."
        )
        st.bar_chart(weights)
    for view in views:
        st.plotly_chart(
            image_overlay(
                chosen,
                weights,
                view=view,
                title=f"{chosen.image}: attention of the text after the image, {who}"
                + (f" ({view})" if len(views) > 1 else ""),
                value_label="attention per token",
                marked=marked,
                zmin=float(weights.min()) if stretch and len(weights) else 0.0,
            ),
            key=f"vision_overlay_{view}",
        )
    if marked:
        st.caption(
            f"Outlined: the visual sink tokens {marked} (image-token index; largest α averaged "
            "over every head first)."
        )
with right:
    share = frames.head_values(table, "image_attention", "image_share")
    if not share.empty:
        title = "share of text attention on the image"
        head_map(share, "image_attention", "image_share", title, key="vision_share", zmin=0, zmax=1)
    sinks = frames.head_values(table, "sink", "visual_sink_alpha")
    if not sinks.empty:
        head_map(
            sinks,
            "sink",
            "visual_sink_alpha",
            "largest α on an image token (visual sinks)",
            key="vision_sinks",
        )
