"""The Controller role: drives a NasEnv for a budget of proposed architectures."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import gymnasium as gym

#: Called with the terminal step's ``info`` for every architecture the controller proposes.
OnEvaluation = Callable[[dict[str, Any]], None]


class Controller(ABC):
    """Proposes architectures through the env until ``budget`` of them were evaluated (cache hits count)."""

    @abstractmethod
    def search(self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation) -> None:
        """Run the search; ``on_evaluation`` sees every terminal ``info`` in order."""
