"""The reward of ``envs/Tabular-v0.yaml``: the MnasNet reward with its target in the middle of a table's latencies."""

from __future__ import annotations

import os

from nas_rl.reward import MnasReward
from nas_rl.tabular.table import Table, load_table


def latency_midrange(table: Table) -> float:
    """The middle of the table's latency range: (fastest + slowest median latency) / 2, in ms."""
    low, high = table.latency_range()
    return (low + high) / 2


def table_reward(
    table: str | os.PathLike[str], target_ms: float | None = None, alpha: float = -0.07, beta: float = -0.07
) -> MnasReward:
    """The MnasNet reward at ``target_ms``, or (None) at :func:`latency_midrange` of ``table``."""
    if target_ms is None:
        target_ms = latency_midrange(load_table(table, "reward.table"))
    return MnasReward(target_ms=float(target_ms), alpha=alpha, beta=beta)
