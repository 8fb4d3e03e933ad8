"""A tiny real configuration: a search that takes seconds."""

from __future__ import annotations

from nas_rl.spaces.mnasnet import MnasNetSpace

#: Hydra overrides for a real search that takes seconds: tiny networks, a sliver of an epoch, short timing.
TINY_OVERRIDES = [
    "search_space.resolution=16",
    "search_space.stem_channels=8",
    "search_space.head_channels=32",
    "search_space.base_widths=[8,8,8,16,16,24,32]",
    "search_space.base_repeats=[1,1,1,1,1,1,1]",
    "accuracy.epochs=0.1",
    "latency.min_seconds=0.1",
    "latency.min_runs=10",
    "latency.warmup_min_seconds=0.05",
]


def tiny_space() -> MnasNetSpace:
    """The MnasNet space with seven one-layer blocks of 8-32 channels, at 16x16 grey digits."""
    return MnasNetSpace(
        resolution=16,
        num_classes=10,
        in_channels=1,
        stem_channels=8,
        head_channels=32,
        base_widths=(8, 8, 8, 16, 16, 24, 32),
        base_repeats=(1, 1, 1, 1, 1, 1, 1),
    )
