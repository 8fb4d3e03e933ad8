"""Any Stable-Baselines3 / sb3-contrib algorithm as a controller, stopped after a budget of architectures."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from nas_rl._util import atomic_write, is_int
from nas_rl.controllers.base import Controller, OnEvaluation
from nas_rl.errors import ConfigError, require

VEC_ENVS = ("dummy", "subproc")


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
        return self.proposed < self.budget


class SB3Controller(Controller):
    """Trains an SB3 algorithm on the env until the budget is spent.

    :param algorithm: a callable (a class, or a Hydra ``_partial_``) taking ``env``, ``seed``, ``verbose`` and
        ``tensorboard_log`` keyword arguments and returning an SB3 ``BaseAlgorithm``; its hyper-parameters
        are bound in the config.
    :param n_envs: envs stepped together, each a copy of the given env on the same store; with
        ``vec_env=subproc`` their candidates are evaluated in parallel processes. The last step may finish up
        to ``n_envs - 1`` architectures past the budget: they are kept in the store, not reported.
    :param vec_env: ``dummy`` (one process, the copies share the env's evaluator) or ``subproc``.
    :param rollout_archs: architectures per env per rollout of an on-policy algorithm: sets its ``n_steps`` to
        this many episodes of the env's space (42 tokens in the MnasNet space, 5 in the tabular one), so one
        config means the same in every space. None: the algorithm's own ``n_steps``.
    :param minibatch_archs: architectures per minibatch (sets ``batch_size``); None: the algorithm's own.
    """

    def __init__(
        self,
        algorithm: Callable[..., BaseAlgorithm],
        n_envs: int = 1,
        vec_env: str = "dummy",
        rollout_archs: int | None = None,
        minibatch_archs: int | None = None,
    ) -> None:
        if n_envs < 1:
            raise ConfigError(f"n_envs={n_envs} is not accepted: use an integer >= 1")
        if vec_env not in VEC_ENVS:
            raise ConfigError(f"vec_env={vec_env!r} is not accepted: use one of {VEC_ENVS}")
        for key, value in (("rollout_archs", rollout_archs), ("minibatch_archs", minibatch_archs)):
            require(value is None or (is_int(value) and value >= 1), key, value, "an integer >= 1 or null")
        self.algorithm = algorithm
        self.n_envs = n_envs
        self.vec_env = vec_env
        self.rollout_archs = rollout_archs
        self.minibatch_archs = minibatch_archs
        self.model: BaseAlgorithm | None = None
        self._checkpoint: Path | None = None

    def _vectorize(self, env: gym.Env) -> VecEnv:
        if self.vec_env == "subproc":
            # Each worker unpickles its own copy of the env (the store reconnects to the same file per process).
            return SubprocVecEnv([lambda: env] * self.n_envs)
        return DummyVecEnv([functools.partial(_same, slot) for slot in _dummy_slots(env, self.n_envs)])

    def search(
        self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation, log_dir: Path | None = None
    ) -> None:
        vec_env = self._vectorize(env)
        episode_length = env.get_wrapper_attr("search_space").num_decisions
        sizes = {}
        if self.rollout_archs is not None:
            sizes["n_steps"] = self.rollout_archs * episode_length
        if self.minibatch_archs is not None:
            sizes["batch_size"] = self.minibatch_archs * episode_length
        try:
            self.model = self._restore(vec_env) or self.algorithm(
                env=vec_env, seed=seed, verbose=0, tensorboard_log=str(log_dir) if log_dir else None, **sizes
            )
            rollout = getattr(self.model, "n_steps", 1) * vec_env.num_envs
            # Enough timesteps for the budget plus one partial rollout; the callback stops at the budget.
            timesteps = (math.ceil(budget * episode_length / rollout) + 1) * rollout
            self.model.learn(
                total_timesteps=timesteps,
                callback=BudgetCallback(budget, on_evaluation),
                log_interval=1,  # every update: a short search makes few (A2C's own default logs every 100th)
                reset_num_timesteps=self._checkpoint is None,
                tb_log_name="controller",
            )
            # SB3 writes an update's losses at the start of the next one: the last update's would be lost.
            self.model.logger.dump(self.model.num_timesteps)
        finally:
            vec_env.close()

    def _restore(self, vec_env: VecEnv) -> BaseAlgorithm | None:
        if self._checkpoint is None:
            return None
        algorithm_class = getattr(self.algorithm, "func", self.algorithm)
        return algorithm_class.load(self._checkpoint, env=vec_env)  # type: ignore[union-attr]

    def save(self, path: Path) -> None:
        if self.model is not None:
            with atomic_write(path.with_suffix(".zip")) as temporary:
                self.model.save(temporary)

    def load(self, path: Path) -> bool:
        file = path.with_suffix(".zip")
        self._checkpoint = file if file.exists() else None
        return self._checkpoint is not None


def _dummy_slots(env: gym.Env, n_envs: int) -> list[gym.Env]:
    """``env`` and ``n_envs - 1`` copies of it for a one-process vector env (SB3 refuses one instance twice).

    The copies share ``env``'s evaluator and search space, so every slot writes to the same store (an
    in-memory one included) and answers with the same estimators; only the episode state (tokens, position,
    random generator) is per slot. The slots are stepped one after another, so sharing is safe.
    """
    shared = {}
    for name in ("evaluator", "search_space"):
        try:
            shared[name] = env.get_wrapper_attr(name)
        except AttributeError:  # an env other than nas-rl's: plain copies
            pass
    return [env] + [copy.deepcopy(env, {id(part): part for part in shared.values()}) for _ in range(n_envs - 1)]


def _same(env: gym.Env) -> gym.Env:
    """``env`` itself: the env function of a DummyVecEnv slot that already exists."""
    return env
