"""Accuracy looked up in a tabular benchmark: the proxy-trained accuracy recorded when the table was built."""

from __future__ import annotations

import os
from typing import Any

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.tabular.table import Table, check_space, load_table


class TabularAccuracy(AccuracyEstimator):
    """The table's accuracy of an architecture (by its block string and network settings), without training.

    An architecture whose evaluation failed when the table was built fails again here
    (:class:`~nas_rl.errors.EvaluationFailed` with the recorded reason), so the env pays it 0 as it would have.

    :param table: a shipped table's name (``nas_rl/tabular/data/<name>.npz``) or the path of a packed table.
    :param space: the search space the run uses; when given it must be the table's (checked at construction).
    """

    def __init__(self, table: str | os.PathLike[str], space: Any = None) -> None:
        self.table_ref = str(table)
        self.table: Table = load_table(table, key="accuracy.table")
        check_space(self.table, space, "accuracy.table")

    def accuracy(self, arch: ArchSpec) -> float:
        index = self.table.evaluated_row(arch)
        return self.table.accuracy(index)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "tabular", **self.table.fingerprint(), "recipe": self.table.meta["recipe"]["accuracy"]}
