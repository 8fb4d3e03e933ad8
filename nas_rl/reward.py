"""The MnasNet reward: ACC * (LAT / T) ** w, with w = alpha if LAT <= T else beta (Tan et al. 2019, eq. 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas_rl.errors import ConfigError

#: Constraint presets from the paper: soft (alpha = beta = -0.07) and hard (alpha = 0, beta = -1).
CONSTRAINTS = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}


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
            raise ConfigError(f"reward.target_ms={self.target_ms} is not accepted: use a latency in ms > 0")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value <= 0):
                raise ConfigError(f"reward.{name}={value} is not accepted: use a finite number <= 0")

    @classmethod
    def preset(cls, constraint: str, target_ms: float) -> MnasReward:
        """The paper's ``soft`` or ``hard`` constraint at ``target_ms``."""
        if constraint not in CONSTRAINTS:
            raise ConfigError(f"reward.constraint={constraint!r} is not accepted: use one of {sorted(CONSTRAINTS)}")
        alpha, beta = CONSTRAINTS[constraint]
        return cls(target_ms=target_ms, alpha=alpha, beta=beta)

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if latency_ms <= 0 or not math.isfinite(latency_ms):
            raise ValueError(f"latency must be a positive finite number of ms, got {latency_ms}")
        exponent = self.alpha if latency_ms <= self.target_ms else self.beta
        return float(accuracy * (latency_ms / self.target_ms) ** exponent)
