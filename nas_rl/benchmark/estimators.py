"""A tabular benchmark as an accuracy estimator and a latency model: what was recorded when the table was built."""

from __future__ import annotations

import os
from typing import Any

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.benchmark.table import Table, open_table
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.spaces.base import SearchSpace


class TabularAccuracy(AccuracyEstimator):
    """The table's accuracy of an architecture (by its block string and network settings), without training.

    An architecture whose evaluation failed when the table was built fails again here
    (:class:`~nas_rl.errors.EvaluationFailed` with the recorded reason), so the env pays it 0 as it would have.

    :param table: a shipped table's name (``nas_rl/benchmark/data/<name>.npz``) or the path of a packed table.
    :param space: the search space the run uses; when given it must be the table's (checked at construction).
    """

    def __init__(self, table: str | os.PathLike[str], space: SearchSpace | None = None) -> None:
        self.table: Table = open_table(table, space, "accuracy.table")

    def accuracy(self, arch: ArchSpec) -> float:
        index = self.table.evaluated_row(arch)
        return self.table.accuracy(index)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "tabular", **self.table.fingerprint(), "recipe": self.table.meta["recipe"]["accuracy"]}


class TabularLatency(LatencyModel):
    """The table's latency statistics of an architecture, measured on the device its ``meta.device`` describes.

    :param table: a shipped table's name (``nas_rl/benchmark/data/<name>.npz``) or the path of a packed table.
    :param space: the search space the run uses; when given it must be the table's (checked at construction).
    """

    def __init__(self, table: str | os.PathLike[str], space: SearchSpace | None = None) -> None:
        self.table: Table = open_table(table, space, "latency.table")

    def measure(self, arch: ArchSpec) -> LatencyStats:
        index = self.table.evaluated_row(arch)
        return self.table.latency(index)

    def fingerprint(self) -> dict[str, Any]:
        recipe = self.table.meta["recipe"]["latency"]
        return {"kind": "tabular", **self.table.fingerprint(), "device": self.table.device, "recipe": recipe}

    def __repr__(self) -> str:
        return f"TabularLatency(table={self.table.name!r}, device={self.table.device.get('name')!r})"
