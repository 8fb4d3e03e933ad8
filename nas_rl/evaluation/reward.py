"""The MnasNet reward: ACC * (LAT / T) ** w, with w = alpha if LAT <= T else beta (Tan et al. 2019, eq. 2).

The paper's constraints are ``conf/reward/soft.yaml`` (alpha = beta = -0.07) and ``hard.yaml`` (alpha = 0, beta = -1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from nas_rl.benchmark.table import Table, load_table
from nas_rl.errors import ConfigError


@dataclass(frozen=True)
class MnasReward:
    """Pure reward of (accuracy, latency_ms) against a target latency ``target_ms``.

    :param target_ms: the target latency T in milliseconds (> 0).
    :param alpha: exponent when the latency meets the target.
    :param beta: exponent when the latency exceeds the target.
    """

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        if not (isinstance(self.target_ms, (int, float)) and math.isfinite(self.target_ms) and self.target_ms > 0):
            raise ConfigError(f"target_ms={self.target_ms} is not accepted: use a latency in ms > 0")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value <= 0):
                raise ConfigError(f"{name}={value} is not accepted: use a finite number <= 0")

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if latency_ms <= 0 or not math.isfinite(latency_ms):
            raise ValueError(f"latency must be a positive finite number of ms, got {latency_ms}")
        exponent = self.alpha if latency_ms <= self.target_ms else self.beta
        return float(accuracy * (latency_ms / self.target_ms) ** exponent)


def latency_midrange(table: Table) -> float:
    """The middle of the table's latency range: (fastest + slowest median latency) / 2, in ms."""
    low, high = table.latency_range()
    return (low + high) / 2


def table_reward(
    table: str | os.PathLike[str], target_ms: float | None = None, alpha: float = -0.07, beta: float = -0.07
) -> MnasReward:
    """The reward of ``envs/Tabular-v0.yaml``: the MnasNet reward at ``target_ms``, or (None) at
    :func:`latency_midrange` of ``table``."""
    if target_ms is None:
        target_ms = latency_midrange(load_table(table, "reward.table"))
    return MnasReward(target_ms=float(target_ms), alpha=alpha, beta=beta)
