"""Any Stable-Baselines3 / sb3-contrib algorithm as a controller, stopped after a budget of architectures."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from nas_rl._util import atomic_write, is_int
from nas_rl.controllers.base import Controller, OnEvaluation
from nas_rl.errors import ConfigError, require
from nas_rl.evaluation.evaluator import Evaluator

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
    :param vec_env: ``dummy`` (one process, the copies share the env's evaluator; on a cluster, ``cluster=dask``, the
        candidates that end on one step are evaluated there at once) or ``subproc`` (not with a cluster).
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
        evaluator = _evaluator(env)
        if self.vec_env == "subproc":
            if evaluator is not None and evaluator.executor.concurrent:
                raise ConfigError(
                    "controller.vec_env='subproc' is not accepted with cluster=dask: the driver alone submits and "
                    "stores evaluations; use controller.vec_env=dummy (the cluster evaluates a step's n_envs "
                    "candidates at once)"
                )
            # Each worker unpickles its own copy of the env (the store reconnects to the same file per process).
            return StoppingSubprocVecEnv([lambda: StopInInfo(env)] * self.n_envs)
        return BatchingDummyVecEnv([functools.partial(_same, slot) for slot in _dummy_slots(env, self.n_envs)],
                                   evaluator)  # fmt: skip

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


class BatchingDummyVecEnv(DummyVecEnv):
    """A DummyVecEnv whose envs' candidates are evaluated together: before a step on which episodes end (all of
    them at once, episodes having the space's fixed length), their architectures are started on the evaluator and
    waited for, each stored as it comes back; each env's terminal step then finds its answer (reported as fresh,
    ``cached=False``, the first time). The rollout waits only for its own step's batch. On an evaluator that
    evaluates one at a time this is a plain DummyVecEnv.

    :param env_fns: the slots' env functions.
    :param evaluator: the evaluator the slots share; None (an env other than nas-rl's): no batching.
    """

    def __init__(self, env_fns: list, evaluator: Evaluator | None) -> None:
        super().__init__(env_fns)
        self.evaluator = evaluator if evaluator is not None and evaluator.executor.concurrent else None

    def step_wait(self) -> VecEnvStepReturn:
        if self.evaluator is not None:
            archs = [arch for env, action in zip(self.envs, self.actions)
                     if (arch := env.get_wrapper_attr("arch_after")(action)) is not None]  # fmt: skip
            if archs:
                self.evaluator.start(archs)
                self.evaluator.finish(archs)
        return super().step_wait()


#: The info key that carries a search-stopping error out of a SubprocVecEnv worker.
STOP_KEY = "nas_rl_stop"


class StopInInfo(gym.Wrapper):
    """In a SubprocVecEnv worker: an error that stops the search (a :class:`~nas_rl.errors.ConfigError` such as
    ``RepeatedFailures``) goes back to the driver in the step's info, which raises it there as one line (SB3's
    worker would die on it, printing a traceback, and the driver would see only a broken pipe)."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        try:
            return self.env.step(action)
        except ConfigError as error:
            observation, info = self.env.reset()
            return observation, 0.0, True, False, {**info, STOP_KEY: error}


class StoppingSubprocVecEnv(SubprocVecEnv):
    """A SubprocVecEnv that raises, in the driver, the error a :class:`StopInInfo` worker sent back."""

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = super().step_wait()
        for info in infos:
            if STOP_KEY in info:
                raise info[STOP_KEY]
        return observations, rewards, dones, infos


def _evaluator(env: gym.Env) -> Evaluator | None:
    try:
        return env.get_wrapper_attr("evaluator")
    except AttributeError:  # an env other than nas-rl's
        return None


def _dummy_slots(env: gym.Env, n_envs: int) -> list[gym.Env]:
    """``env`` and ``n_envs - 1`` copies of it for a one-process vector env (SB3 refuses one instance twice).

    The copies share ``env``'s evaluator, its executor and the search space, so every slot writes to the same
    store (an in-memory one included) and answers with the same estimators; only the episode state (tokens,
    position, random generator) is per slot. The slots are stepped one after another, so sharing is safe. (The
    executor is reachable apart from the evaluator too: ``gym.make(id, executor=...)`` keeps it in
    ``env.unwrapped.spec.kwargs``.)
    """
    shared = {}
    for name in ("evaluator", "search_space"):
        try:
            shared[name] = env.get_wrapper_attr(name)
        except AttributeError:  # an env other than nas-rl's: plain copies
            pass
    if "evaluator" in shared:
        shared["executor"] = shared["evaluator"].executor
    return [env] + [copy.deepcopy(env, {id(part): part for part in shared.values()}) for _ in range(n_envs - 1)]


def _same(env: gym.Env) -> gym.Env:
    """``env`` itself: the env function of a DummyVecEnv slot that already exists."""
    return env
