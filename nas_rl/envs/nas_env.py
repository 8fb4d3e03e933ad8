"""NasEnv: architecture search as a Gymnasium environment, one decision (token) per step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.spaces.base import SearchSpace

#: What an action outside the valid choices of the current decision does (unmasked algorithms send them).
INVALID_ACTION_POLICIES = ("wrap", "clip")


class NasEnv(gym.Env):
    """Each step chooses one token; the last token's step evaluates the decoded architecture.

    Observation: ``tokens`` (0 = not chosen yet, else choice + 1) and ``position`` (index of the next
    decision; ``L`` once done). Actions index the choices of the current decision; ``action_masks()``
    marks the valid ones. An invalid action is mapped into range by ``invalid_action``: ``wrap`` takes it
    modulo the number of valid choices, ``clip`` takes the last valid choice. Non-terminal steps pay 0;
    the terminal step pays the reward and reports the evaluation in ``info``.

    :param search_space: the decisions and their decoding.
    :param evaluator: accuracy, latency, reward and store.
    :param invalid_action: ``wrap`` or ``clip``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self, search_space: SearchSpace, evaluator: Evaluator, invalid_action: str = "wrap", render_mode: str | None = None
    ) -> None:
        if invalid_action not in INVALID_ACTION_POLICIES:
            raise ConfigError(
                f"env.invalid_action={invalid_action!r} is not accepted: use one of {INVALID_ACTION_POLICIES}"
            )
        self.search_space = search_space
        self.evaluator = evaluator
        self.invalid_action = invalid_action
        self.render_mode = render_mode
        length, width = search_space.num_decisions, search_space.max_choices
        self.action_space = spaces.Discrete(width)
        self.observation_space = spaces.Dict(
            {
                "tokens": spaces.MultiDiscrete(np.full(length, width + 1, dtype=np.int64)),
                "position": spaces.Discrete(length + 1),
            }
        )
        self._tokens = np.zeros(length, dtype=np.int64)
        self._position = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._tokens[:] = 0
        self._position = 0
        return self._observation(), {}

    def step(self, action):
        if self._position >= self.search_space.num_decisions:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        valid = self.search_space.num_choices(self._position)
        choice = int(action)
        if not 0 <= choice < valid:
            choice = choice % valid if self.invalid_action == "wrap" else min(max(choice, 0), valid - 1)
        self._tokens[self._position] = choice + 1
        self._position += 1
        if self._position < self.search_space.num_decisions:
            return self._observation(), 0.0, False, False, {}
        tokens = tuple(int(t) - 1 for t in self._tokens)
        outcome = self.evaluator.evaluate(self.search_space.decode(tokens))
        info = {**outcome.info(), "tokens": tokens}
        return self._observation(), float(outcome.reward), True, False, info

    def action_masks(self) -> np.ndarray:
        """Valid choices at the current position (all False once the episode is over is avoided: all True)."""
        if self._position >= self.search_space.num_decisions:
            return np.ones(self.search_space.max_choices, dtype=bool)
        return self.search_space.action_mask(self._position)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        chosen = self._tokens[: self._position] - 1
        return f"position {self._position}/{self.search_space.num_decisions}: tokens {chosen.tolist()}"

    def _observation(self) -> dict[str, Any]:
        return {"tokens": self._tokens.copy(), "position": self._position}

    def close(self) -> None:
        self.evaluator.store.close()
