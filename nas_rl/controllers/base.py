"""The Controller role: drives a NasEnv for a budget of proposed architectures."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

#: Called with the terminal step's ``info`` for every architecture the controller proposes.
OnEvaluation = Callable[[dict[str, Any]], None]


class Controller(ABC):
    """Proposes architectures through the env until ``budget`` of them were evaluated (cache hits count).

    ``save``/``load`` hold what the controller learned, so an interrupted search resumes from its last
    checkpoint; the evaluations themselves live in the store and are never lost.
    """

    @abstractmethod
    def search(
        self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation, log_dir: Path | None = None
    ) -> None:
        """Run the search; ``on_evaluation`` sees every terminal ``info`` in order."""

    def save(self, path: Path) -> None:
        """Write the controller's state under ``path`` (a file stem); stateless controllers write nothing."""
        return None

    def load(self, path: Path) -> bool:
        """Restore the state ``save`` wrote; False if there is none."""
        return False


def play_tokens(env: gym.Env, tokens: Sequence[int]) -> dict[str, Any]:
    """Propose one architecture by stepping its tokens through the env; returns the terminal ``info``."""
    env.reset()
    info: dict[str, Any] = {}
    for token in tokens:
        _, _, terminated, _, info = env.step(int(token))
    if not terminated:
        raise RuntimeError(f"{len(tokens)} tokens did not end the episode")
    return info
