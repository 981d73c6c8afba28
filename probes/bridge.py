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
from jaxtyping import Bool

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


def register_attention(name: str, function: Callable[..., Any], chunked: bool = True) -> None:
    """Register `function` as a transformers attention implementation called `name`. With
    `chunked`, `chunked_mask` is its mask builder: the function receives a `ChunkedMask`, never a
    T×T mask; otherwise it gets SDPA's own mask (None where plain causal attention needs none)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, chunked_mask if chunked else sdpa_mask)


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


# --- the fast path's attention mask: a rule evaluated per block, never a T×T tensor ----------


class ChunkedMask:
    """A decoder's attention mask kept as the rule transformers would have expanded into a
    [batch, 1, T, T] tensor (4 GiB of fp32 at 32k tokens): `block` evaluates it on one chunk of
    queries × a band of keys, and `key_band` says which keys a chunk can see at all.

    The rule is the model's mask function (causal, sliding window, ...) and the padding mask.
    When the rule is causal with at most a sliding window ANDed on (every decoder-only text
    model), queries q_start…q_stop−1 see only keys in [q_stop − window − (q_stop − q_start) + 1,
    q_stop); a rule ORed with anything else (bidirectional image blocks) may see any key.
    """

    def __init__(self, arguments: dict[str, Any], padding: torch.Tensor | None) -> None:
        """`arguments`: what transformers passed the mask builder (sdpa_mask's)."""
        self.sdpa_arguments, self.padding = arguments, padding
        self.batch_size, self.kv_length = arguments["batch_size"], arguments["kv_length"]
        self.q_offset, self.kv_offset = arguments["q_offset"], arguments["kv_offset"]
        self.mask_function = mask_function = arguments["mask_function"]
        self.use_vmap, self.device = arguments["use_vmap"], torch.device(arguments["device"])
        leaves, has_or = _mask_leaves(mask_function)
        names = [getattr(leaf, "__qualname__", "") for leaf in leaves]
        self.causal = not has_or and "causal_mask_function" in names
        overlay = "sliding_window_overlay.<locals>.inner_mask"  # keys kv > q − window
        overlays = [leaf for leaf, name in zip(leaves, names, strict=True) if name == overlay]
        windows = [_closure_value(leaf, "sliding_window") for leaf in overlays]
        self.window: int | None = min(windows) if self.causal and windows else None
        # Only causal ∩ sliding window, no padding: a chunk's masked keys are its first and last
        # few columns, so the middle of the band needs no masking.
        plain = {"causal_mask_function", overlay}
        self.simple = self.causal and padding is None and set(names) <= plain

    def key_band(self, q_start: int, q_stop: int) -> tuple[int, int]:
        """Keys [k_start, k_stop) that queries q_start…q_stop−1 may see; all others get zero."""
        if not self.causal:
            return 0, self.kv_length
        last = q_stop - 1 + self.q_offset - self.kv_offset  # the last query, in key indices
        k_stop = max(0, min(self.kv_length, last + 1))
        first = q_start + self.q_offset - self.kv_offset
        k_start = 0 if self.window is None else max(0, first - self.window + 1)
        return min(k_start, k_stop), k_stop

    def masked_spans(
        self, q_start: int, q_stop: int, k_start: int, k_stop: int
    ) -> list[tuple[int, int]]:
        """Key spans inside the band where some key may be masked (the rest is all visible)."""
        if not self.simple:
            return [(k_start, k_stop)]
        n_rows = q_stop - q_start
        spans = [(max(k_start, k_stop - n_rows), k_stop)]  # the causal diagonal
        if self.window is not None:
            spans.append((k_start, min(k_stop, k_start + n_rows)))  # the window's far edge
        return spans

    def block(
        self, q_start: int, q_stop: int, k_start: int, k_stop: int
    ) -> Bool[torch.Tensor, "batch 1 q_chunk k_band"]:
        """The mask on queries q_start…q_stop−1 × keys k_start…k_stop−1 (True: attend)."""
        from transformers.masking_utils import (
            TransformGetItemToIndex,
            _non_vmap_expansion_sdpa,
            _vmap_expansion_sdpa,
        )

        device = self.device
        batch = torch.arange(self.batch_size, device=device)
        head = torch.arange(1, device=device)
        queries = torch.arange(q_start, q_stop, device=device) + self.q_offset
        keys = torch.arange(k_start, k_stop, device=device) + self.kv_offset
        if self.use_vmap:  # custom rules that are not index arithmetic
            with TransformGetItemToIndex():
                mask = _vmap_expansion_sdpa(self.mask_function)(batch, head, queries, keys)
        else:
            mask = self.mask_function(*_non_vmap_expansion_sdpa(batch, head, queries, keys))
        if self.padding is not None:
            mask = mask & self.padding[:, None, None, keys]
        return mask.expand(self.batch_size, 1, q_stop - q_start, k_stop - k_start)

    def for_sdpa(self) -> torch.Tensor | None:
        """The mask transformers' SDPA would have been given (for layers that read no rows)."""
        from transformers.masking_utils import sdpa_mask

        return sdpa_mask(**self.sdpa_arguments)


def chunked_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable[..., Any] | None = None,
    attention_mask: torch.Tensor | None = None,
    use_vmap: bool = False,
    **kwargs: Any,
) -> ChunkedMask:
    """A transformers mask interface (sdpa_mask's signature) that builds no tensor."""
    from transformers.masking_utils import causal_mask_function, prepare_padding_mask

    rule = mask_function if mask_function is not None else causal_mask_function
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    if padding is not None:
        padding = padding.bool()
        if bool(padding.all()):
            padding = None
    arguments = dict(
        {"device": "cpu"},
        **kwargs,
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        mask_function=rule,
        attention_mask=attention_mask,
        use_vmap=use_vmap,
    )
    return ChunkedMask(arguments, padding)


def _mask_leaves(function: Callable[..., Any]) -> tuple[list[Callable[..., Any]], bool]:
    """The mask functions a transformers and_masks/or_masks composition is made of, and whether
    any or_masks is among them (which may let a query see past the causal band)."""
    name = getattr(function, "__name__", "")
    if name not in ("and_mask", "or_mask"):
        return [function], False
    parts = _closure_value(function, "mask_functions") or ()
    leaves: list[Callable[..., Any]] = []
    has_or = name == "or_mask"
    for part in parts:
        more, nested_or = _mask_leaves(part)
        leaves += more
        has_or = has_or or nested_or
    return leaves, has_or


def _closure_value(function: Callable[..., Any], variable: str) -> Any:
    """The value of a closure's free variable `variable`, or None."""
    code, cells = getattr(function, "__code__", None), getattr(function, "__closure__", None)
    if code is None or cells is None or variable not in code.co_freevars:
        return None
    return cells[code.co_freevars.index(variable)].cell_contents
