"""Uniform random search through the env: every decision drawn uniformly among its choices."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from nas_rl.controllers.base import Controller, OnEvaluation, play_tokens


class RandomSearch(Controller):
    """The baseline every controller must beat."""

    def search(
        self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation, log_dir: Path | None = None
    ) -> None:
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        space = env.get_wrapper_attr("search_space")
        for _ in range(budget):
            on_evaluation(play_tokens(env, space.sample(rng)))
