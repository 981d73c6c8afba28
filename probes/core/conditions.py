"""How probes encode the `condition` of a row (the results schema will own these)."""

from __future__ import annotations

import json


def token_condition(prompt_id: str, token: str) -> str:
    """`condition` of a per-token row: which prompt and which token (JSON, any text works)."""
    return json.dumps({"prompt": prompt_id, "token": token}, sort_keys=True)


def attention_condition(prompt_id: str, key_block: int) -> str:
    """The `condition` of an attention row: which prompt, which key block (JSON, any id works)."""
    return json.dumps({"prompt": prompt_id, "key_block": key_block}, sort_keys=True)
