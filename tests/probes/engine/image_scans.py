"""What the image-engine tests of every architecture share: the committed image prompts, a scan
of them with planted heads, and a metric's value per head."""

from pathlib import Path

import headlab as hl
from tests import planting

ROOT = Path(__file__).resolve().parents[3]
IMAGE_PROMPTS = ROOT / "data" / "prompts" / "images" / "images.jsonl"
PARAMS = {"divergence": {"answer_tokens": 3, "top_k": 2}}


def scan(model, prompts=IMAGE_PROMPTS, plants=(), probes=("divergence", "sink")):
    params = {name: PARAMS[name] for name in probes if name in PARAMS}
    with planting.planted(model, plants):
        return hl.scan(model, prompts, probes=list(probes), params=params)


def per_head(table, metric):
    rows = table[table.metric == metric]
    return {(int(r.layer), int(r["head"])): r.value for _, r in rows.iterrows()}
