"""MaskablePPO with advantages scaled by the spread of the search's returns so far, not by each minibatch's own."""

from __future__ import annotations

from typing import Any

import numpy as np
from sb3_contrib import MaskablePPO
from stable_baselines3.common.running_mean_std import RunningMeanStd

from nas_rl.errors import ConfigError


class SearchScaledMaskablePPO(MaskablePPO):
    """MaskablePPO whose advantages are centred per rollout and divided by the standard deviation of every return
    seen since the search began (SB3's running statistics), instead of each minibatch's own.

    With the reward at an episode's last token, gamma 1 and GAE lambda 1, an architecture's return is its reward,
    so the scale is the spread of the rewards found so far. A converging search proposes near-identical
    architectures: per-minibatch normalisation blows their tiny differences, mostly critic error, up to unit
    spread and the policy drifts off what it found; here they stay as small as they are, and the policy settles.

    Takes MaskablePPO's arguments, except ``normalize_advantage``, which this scaling replaces.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "normalize_advantage" in kwargs:
            raise ConfigError(f"normalize_advantage={kwargs['normalize_advantage']!r} is not accepted by "
                              f"{type(self).__name__}: it scales advantages by the returns' running spread instead; "
                              "use sb3_contrib.MaskablePPO for per-minibatch normalisation")  # fmt: skip
        super().__init__(*args, **{**kwargs, "normalize_advantage": False})
        self.return_spread = RunningMeanStd(epsilon=1e-8, shape=())  # its prior (variance 1) weighs next to nothing

    def train(self) -> None:
        buffer = self.rollout_buffer
        self.return_spread.update(buffer.returns.ravel())
        spread = float(np.sqrt(self.return_spread.var))
        centred = buffer.advantages - buffer.advantages.mean()
        # Returns that agree to 1e-4 (of 1, or of their size) have not differed yet (say every architecture
        # failed): nothing to learn from, and dividing by their rounding error would amplify noise.
        same = spread <= 1e-4 * max(1.0, abs(float(self.return_spread.mean)))
        buffer.advantages = (np.zeros_like(centred) if same else centred / spread).astype(np.float32)
        self.logger.record("train/return_spread", spread)
        super().train()
