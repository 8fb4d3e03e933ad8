"""Test doubles for the expensive roles: accuracy and latency."""

from __future__ import annotations

import zlib
from typing import Any

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.latency.base import LatencyModel, LatencyStats


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
