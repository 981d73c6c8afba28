"""Dequantize a GGUF file once and keep a plain safetensors copy that reloads in about a second.

transformers reads GGUF (via the `gguf` package) but dequantizing takes 10-40 s and the result
cannot be saved as is: its config carries a `quantization_config` and no `architectures`.
We rebuild the model from a clean config, load the dequantized state dict, and save it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "HEADLAB_CACHE"
CONVERTED_MARK = "headlab-provenance.json"


def default_cache_dir() -> Path:
    """Where converted weights live: $HEADLAB_CACHE, else ~/.cache/headlab (read at call time)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "headlab"


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(cache_dir: Path, name: str) -> Path:
    return cache_dir / "models" / name


def read_conversion_record(directory: Path) -> dict | None:
    """Provenance written by `convert_gguf`; None when the directory is not a finished copy."""
    mark = directory / CONVERTED_MARK
    if not mark.is_file() or not (directory / "model.safetensors").is_file():
        return None
    try:
        return json.loads(mark.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def convert_gguf(gguf_path: Path, target: Path, extra_record: dict) -> dict:
    """Dequantize `gguf_path` into a safetensors model directory at `target`, atomically.

    The copy is built in a temporary sibling directory and renamed into place, so a killed
    conversion never leaves a directory that looks finished.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights_sha256 = sha256_file(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(quantized).__name__]
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(quantized.state_dict(), strict=True)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        clean.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        record = {
            **extra_record,
            "weights_file": gguf_path.name,
            "weights_sha256": weights_sha256,
            "weights_bytes": gguf_path.stat().st_size,
        }
        (staging / CONVERTED_MARK).write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record
