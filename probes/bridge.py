"""The model adapter: the only module that touches TransformerLens / transformers internals.

Everything that runs a model goes through here, so that a library upgrade breaks one file:

- `hooked(model, hooks)`: the one forward context — inference mode (or grad), the hooks attached,
  each attention module's cached pattern released as soon as it finishes (the memory guard
  `tests/probes/engine/test_runner.py` proves), and optionally the first blocks skipped.
- `forward(...)`: one pass in that context.
- `attached(model, hooks)`: hooks on the bridge for a `with` block, for every forward pass inside
  it (what `hooked` attaches them with; interventions used as context managers use it too).
- The fast path's hooks into Hugging Face: the model under the bridge with its wrappers swapped
  out, a registered attention function, SDPA, the decoder-layer list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import torch

from probes.core.types import Hook

if TYPE_CHECKING:
    from probes.models import LoadedModel


@contextmanager
def hooked(
    model: LoadedModel,
    fwd_hooks: Sequence[Hook] = (),
    *,
    grad: bool = False,
    skip_blocks_before: int = 0,
) -> Iterator[Any]:
    """The one forward context; yields the bridge to call.

    Inference mode unless `grad` (attribution patching needs a graph); `fwd_hooks` attached for
    the duration; every attention module's cached pattern dropped as it finishes, so no layer's
    T×T pattern outlives its layer; blocks before `skip_blocks_before` pass their input through.
    """
    bridge = model.bridge
    with ExitStack() as stack:
        stack.enter_context(torch.enable_grad() if grad else torch.inference_mode())
        if skip_blocks_before:
            stack.enter_context(skipping_blocks(bridge, skip_blocks_before))
        stack.enter_context(attached(model, fwd_hooks))
        stack.enter_context(patterns_released_after_each_layer(bridge))
        yield bridge


@contextmanager
def attached(model: LoadedModel, fwd_hooks: Sequence[Hook]) -> Iterator[None]:
    """`fwd_hooks` attached to the bridge until the block ends; hooks attached before it stay.

    Blocks nest: an inner block's hooks on the same hook point run after the outer block's. While
    any are attached the engine takes the bridge path (the fast path would not run them).
    """
    with model.bridge.hooks(fwd_hooks=list(fwd_hooks)):
        yield


def forward(
    model: LoadedModel,
    tokens: torch.Tensor,
    fwd_hooks: Sequence[Hook] = (),
    *,
    attention_mask: torch.Tensor | None = None,
    return_type: str | None = "logits",
    skip_blocks_before: int = 0,
    **kwargs: Any,
) -> Any:
    """One hooked forward pass in `hooked`'s context: logits by default, None for
    `return_type=None`, (logits, cache) for "logits_and_cache". `tokens` may be a residual
    stream with `start_at_layer=L` in `kwargs` (then pass `skip_blocks_before=L` too)."""
    with hooked(model, fwd_hooks, skip_blocks_before=skip_blocks_before) as bridge:
        return bridge(tokens, attention_mask=attention_mask, return_type=return_type, **kwargs)


def hooked_points(model: LoadedModel) -> list[str]:
    """Bridge hook points with forward hooks attached (interventions, planted patterns)."""
    return [name for name, point in model.bridge.hook_dict.items() if point._forward_hooks]


def vocab_size(model: LoadedModel) -> int:
    """Size of the model's unembedding."""
    return int(model.bridge.cfg.d_vocab)


@contextmanager
def patterns_released_after_each_layer(bridge: torch.nn.Module) -> Iterator[None]:
    """Some bridge attention classes keep their last pattern on the module (`_pattern`, e.g.
    GPT-2's joint-QKV attention), which would keep every layer's T×T pattern alive. Drop it as
    soon as each attention module finishes."""

    def release(module: torch.nn.Module, inputs: object, output: object) -> None:
        module._pattern = None  # type: ignore[assignment]  # torch types attributes as Tensor | Module

    handles = [
        module.register_forward_hook(release)
        for module in bridge.modules()
        if hasattr(module, "_pattern")
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _pass_through(*args: Any, **kwargs: Any) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextmanager
def skipping_blocks(bridge: Any, first: int) -> Iterator[None]:
    """Blocks before `first` return their input untouched (and fire no hooks) inside the block.

    TransformerBridge's `start_at_layer` swaps the given residual in at block L but still runs
    blocks 0..L-1 on it first (TransformerLens 4.3, `_setup_start_at_layer`), so on its own it
    saves nothing; this turns those blocks into pass-throughs for the duration.
    """
    skipped = list(bridge.blocks)[:first]
    for block in skipped:
        # An instance attribute shadows the class's forward. object.__setattr__, because the
        # bridge's own __setattr__ would forward the assignment to the wrapped HF module.
        object.__setattr__(block, "forward", _pass_through)
    try:
        yield
    finally:
        for block in skipped:
            object.__delattr__(block, "forward")


def last_logits_only(model: LoadedModel) -> dict[str, int]:
    """Forward kwargs asking the HF model for the last position's logits only when it can
    (`logits_to_keep`): a prefill's logits are thrown away, and a 262k-word unembedding over
    every prompt position (Gemma 3) costs more than the layers."""
    method = getattr(getattr(model.bridge, "original_model", None), "forward", None)
    if method is not None and "logits_to_keep" in inspect.signature(method).parameters:
        return {"logits_to_keep": 1}
    return {}


# --- the fast path's access to the Hugging Face model under the bridge ----------------------


def hf_model(model: LoadedModel) -> torch.nn.Module:
    """The Hugging Face model the bridge wraps."""
    return model.bridge.original_model


def register_attention(name: str, function: Callable[..., Any]) -> None:
    """Register `function` as a transformers attention implementation called `name` (with SDPA's
    mask builder)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)


def sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' own SDPA attention function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


@contextmanager
def unbridged_model(model: LoadedModel, attention: str) -> Iterator[torch.nn.Module]:
    """The Hugging Face model with the bridge's wrappers swapped out and `attention` as its
    attention implementation, under inference mode, for the duration."""
    root = hf_model(model)
    with torch.inference_mode(), unbridged(root), attention_implementation(root.config, attention):
        yield root


@contextmanager
def unbridged(root: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily put the original Hugging Face modules back where the bridge wrapped them."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def restore_originals(parent: torch.nn.Module) -> None:
        for name, child in list(parent.named_children()):
            original = getattr(child, "original_component", None)
            if isinstance(original, torch.nn.Module):
                swapped.append((parent, name, child))
                setattr(parent, name, original)
                child = original
            restore_originals(child)

    restore_originals(root)
    try:
        yield root
    finally:
        for parent, name, wrapper in reversed(swapped):
            setattr(parent, name, wrapper)


@contextmanager
def attention_implementation(config: Any, name: str) -> Iterator[None]:
    """Set a HF config's attention implementation (and its sub-configs') for the duration."""
    configs = [config, *(c for c in vars(config).values() if hasattr(c, "_attn_implementation"))]
    previous = [c._attn_implementation for c in configs]
    for each in configs:
        each._attn_implementation = name
    try:
        yield
    finally:
        for each, value in zip(configs, previous, strict=True):
            each._attn_implementation = value


def use_sdpa(hf: torch.nn.Module) -> None:
    """Make a plain (unbridged) Hugging Face model use SDPA attention from now on."""
    config: Any = hf.config
    config._attn_implementation = "sdpa"


def decoder_layers(hf: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder-layer list of a causal LM (`model.layers` for Llama, Gemma, Qwen, Mistral;
    a vision-language model's text model: `language_model`, Idefics3's `text_model`)."""
    base = getattr(hf, "model", hf)
    base = getattr(base, "language_model", None) or getattr(base, "text_model", base)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise NotImplementedError(
            f"the fast path does not know where {type(hf).__name__} keeps its layers; "
            "use the bridge path (path='bridge')"
        )
    return layers
