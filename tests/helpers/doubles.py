"""Test doubles for the expensive roles: accuracy and latency."""

from __future__ import annotations

import os
import time
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


class SlowAccuracyDouble(HashAccuracyDouble):
    """Test double: the hash pseudo-accuracy after ``seconds`` of pretend training. With ``started``, each call
    first appends its process id to that file, so a test sees who evaluated and when one is mid-evaluation."""

    def __init__(self, seconds: float, started: str | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = started

    def accuracy(self, arch: ArchSpec) -> float:
        if self.started is not None:
            with open(self.started, "a") as handle:
                handle.write(f"{os.getpid()}\n")
        time.sleep(self.seconds)
        return super().accuracy(arch)


class RaisingAccuracyDouble(AccuracyEstimator):
    """Test double: every evaluation raises the RuntimeError of a broken setup (a GPU gone). It takes and ignores
    any settings, so it can replace an accuracy section's ``_target_`` on the command line."""

    MESSAGE = "CUDA error: an illegal memory access was encountered (test double)"

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def accuracy(self, arch: ArchSpec) -> float:
        raise RuntimeError(self.MESSAGE)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "raising_double"}
