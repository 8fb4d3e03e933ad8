"""Shared fixtures: a tiny real configuration and test doubles for the expensive roles."""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.latency.base import LatencyModel, LatencyStats
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
    return MnasNetSpace(
        resolution=16,
        num_classes=10,
        in_channels=1,
        stem_channels=8,
        head_channels=32,
        base_widths=(8, 8, 8, 16, 16, 24, 32),
        base_repeats=(1, 1, 1, 1, 1, 1, 1),
    )


class HashAccuracyDouble(AccuracyEstimator):
    """Test double: a deterministic pseudo-accuracy from the block string, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def accuracy(self, arch: ArchSpec) -> float:
        self.calls += 1
        return 0.5 + (zlib.crc32(arch.to_string().encode()) % 1000) / 2000

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "hash_double"}


class ChannelLatencyDouble(LatencyModel):
    """Test double: latency grows with the channels and layers of the architecture."""

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return LatencyStats.predicted(sum(s.out_channels * s.repeats * s.expansion for s in arch.stages) / 100)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "channel_double"}


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY_OVERRIDES)
