"""Latency looked up in a tabular benchmark: the LiteRT measurement recorded on the table's device."""

from __future__ import annotations

import os
from typing import Any

from nas_rl.arch import ArchSpec
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.tabular.table import Table, check_space, load_table


class TabularLatency(LatencyModel):
    """The table's latency statistics of an architecture, measured on the device its ``meta.device`` describes.

    :param table: a shipped table's name (``nas_rl/tabular/data/<name>.npz``) or the path of a packed table.
    :param space: the search space the run uses; when given it must be the table's (checked at construction).
    """

    def __init__(self, table: str | os.PathLike[str], space: Any = None) -> None:
        self.table_ref = str(table)
        self.table: Table = load_table(table, key="latency.table")
        check_space(self.table, space, "latency.table")

    def measure(self, arch: ArchSpec) -> LatencyStats:
        index = self.table.evaluated_row(arch)
        return self.table.latency(index)

    def fingerprint(self) -> dict[str, Any]:
        recipe = self.table.meta["recipe"]["latency"]
        return {"kind": "tabular", **self.table.fingerprint(), "device": self.table.device, "recipe": recipe}

    def __repr__(self) -> str:
        return f"TabularLatency(table={self.table.name!r}, device={self.table.device.get('name')!r})"
