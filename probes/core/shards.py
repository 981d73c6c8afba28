"""How a scan is cut into shards: contiguous runs of each pass's batches (torch-free).

A pass's prompts are batched the same way whatever runs them (probes.engine.passes.batches), so
shard `index` of `count` computes exactly the batches an unsharded scan computes at those
places, and the per-batch states fold back in batch order to the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.core.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    """Shard `index` (from 0) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index} of {self.count} does not exist")

    def batches(self, n_batches: int) -> range:
        """The batches of a pass of `n_batches` this shard computes (near-equal runs)."""
        return range(
            n_batches * self.index // self.count, n_batches * (self.index + 1) // self.count
        )


def n_batches(n_prompts: int, batch_size: int) -> int:
    return -(-n_prompts // batch_size)


def shard_prompts(n_prompts: int, batch_size: int, shard: Shard) -> int:
    """How many of a pass's `n_prompts` fall in `shard`'s batches (every batch is full but the
    last)."""
    return sum(
        min(batch_size, n_prompts - batch * batch_size)
        for batch in shard.batches(n_batches(n_prompts, batch_size))
    )
