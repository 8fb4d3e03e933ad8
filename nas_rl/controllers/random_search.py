"""Uniform random search through the env: every decision drawn uniformly among its valid choices."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from nas_rl.controllers.base import Controller, OnEvaluation


class RandomSearch(Controller):
    """The baseline every controller must beat."""

    def search(self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation) -> None:
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        masks = env.get_wrapper_attr("action_masks")
        for _ in range(budget):
            terminated, info = False, {}
            while not terminated:
                action = int(rng.choice(np.flatnonzero(masks())))
                _, _, terminated, _, info = env.step(action)
            on_evaluation(info)
            env.reset()
