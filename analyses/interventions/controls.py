"""Random control heads: the one rule every top-k-vs-random comparison uses.

Layer-matched: as many heads in each layer as the top set has there, drawn without replacement
from the heads outside the top set (and outside `exclude`). A layer with too few such heads takes
the rest from the nearest layers (lower layer first on ties), so a top set that fills a layer
still gets a control as close to it in depth as the model allows. Deterministic under `seed`.
Sweeps, retrieval masking and the induction check all draw their controls here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from probes.core.errors import HeadlabError

Head = tuple[int, int]


class ControlError(HeadlabError, ValueError):
    """The model has too few heads outside the top set for a control of the same size."""


def layer_matched_random_heads(
    top: Sequence[Head], n_layers: int, n_heads: int, seed: int, exclude: Sequence[Head] = ()
) -> tuple[Head, ...]:
    """Random heads matching `top` layer by layer (see the module docstring), sorted."""
    rng = random.Random(seed)
    taken = set(top) | set(exclude)
    free = {
        layer: [h for h in range(n_heads) if (layer, h) not in taken] for layer in range(n_layers)
    }
    if sum(map(len, free.values())) < len(top):
        raise ControlError(
            f"cannot draw {len(top)} random heads outside the {len(taken)} excluded ones: the "
            f"model has {n_layers * n_heads} heads; use a smaller k"
        )
    chosen: list[Head] = []
    shortfall: list[int] = []
    for layer, need in sorted(Counter(layer for layer, _ in top).items()):
        if not 0 <= layer < n_layers:
            raise ControlError(f"head ({layer}, ·) is outside the model's {n_layers} layers")
        picked = rng.sample(free[layer], min(need, len(free[layer])))
        free[layer] = [h for h in free[layer] if h not in picked]
        chosen += [(layer, h) for h in picked]
        shortfall += [layer] * (need - len(picked))
    for layer in shortfall:
        nearest = min((lay for lay in free if free[lay]), key=lambda lay: (abs(lay - layer), lay))
        head = rng.choice(free[nearest])
        free[nearest].remove(head)
        chosen.append((nearest, head))
    return tuple(sorted(chosen))
