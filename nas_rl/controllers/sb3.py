"""Any Stable-Baselines3 / sb3-contrib algorithm as a controller, stopped after a budget of architectures."""

from __future__ import annotations

import math
from typing import Any, Callable

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from nas_rl.controllers.base import Controller, OnEvaluation


class BudgetCallback(BaseCallback):
    """Reports every finished episode and stops training once ``budget`` architectures were proposed."""

    def __init__(self, budget: int, on_evaluation: OnEvaluation) -> None:
        super().__init__()
        self.budget = budget
        self.on_evaluation = on_evaluation
        self.proposed = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done and self.proposed < self.budget:
                self.proposed += 1
                self.on_evaluation(info)
                for key in ("reward", "accuracy", "latency_ms"):
                    if info.get(key) is not None:
                        self.logger.record_mean(f"nas/{key}", info[key])
        return self.proposed < self.budget


class SB3Controller(Controller):
    """Trains an SB3 algorithm on the env until the budget is spent.

    :param algorithm: a callable (a class, or a Hydra ``_partial_``) taking ``env`` and ``seed`` keyword
        arguments and returning an SB3 ``BaseAlgorithm``; its hyper-parameters are bound in the config.
    :param tensorboard_log: folder for SB3's TensorBoard logs, or None.
    """

    def __init__(self, algorithm: Callable[..., BaseAlgorithm], tensorboard_log: str | None = None) -> None:
        self.algorithm = algorithm
        self.tensorboard_log = tensorboard_log
        self.model: BaseAlgorithm | None = None

    def search(self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation) -> None:
        vec_env = DummyVecEnv([lambda: env])
        kwargs: dict[str, Any] = {"env": vec_env, "seed": seed, "verbose": 0}
        if self.tensorboard_log:
            kwargs["tensorboard_log"] = self.tensorboard_log
        self.model = self.algorithm(**kwargs)
        episode_length = env.get_wrapper_attr("search_space").num_decisions
        rollout = getattr(self.model, "n_steps", 1) * vec_env.num_envs
        # Enough timesteps for the budget plus one partial rollout; the callback stops at the budget.
        timesteps = (math.ceil(budget * episode_length / rollout) + 1) * rollout
        self.model.learn(total_timesteps=timesteps, callback=BudgetCallback(budget, on_evaluation))
