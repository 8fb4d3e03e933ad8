"""Uniform random search through the env: every decision drawn uniformly among its choices."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from nas_rl.controllers.base import Controller, OnEvaluation, check_n_envs, propose_in_flight


class RandomSearch(Controller):
    """The baseline every controller must beat.

    :param n_envs: architectures in evaluation at once (on a cluster, ``cluster=dask``; evaluated one after
        another otherwise): a new one is drawn as soon as one comes back.
    """

    def __init__(self, n_envs: int = 1) -> None:
        self.n_envs = check_n_envs(n_envs)

    def search(
        self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation, log_dir: Path | None = None
    ) -> None:
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        space = env.get_wrapper_attr("search_space")
        propose_in_flight(env, budget, self.n_envs, lambda _: space.sample(rng), lambda _, info: on_evaluation(info))
