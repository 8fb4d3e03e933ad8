"""Regularized evolution (Real et al. 2019, "aging evolution") through the env and its store."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from nas_rl._util import write_text_atomically
from nas_rl.controllers.base import Controller, OnEvaluation, check_n_envs, propose_in_flight
from nas_rl.errors import ConfigError

log = logging.getLogger(__name__)


class RegularizedEvolution(Controller):
    """Tournament selection, one-decision mutation, and removal of the oldest member.

    The first ``population_size`` architectures are random; afterwards each step samples ``sample_size``
    members, mutates the best of them (one decision changed) and replaces the oldest member with the child.
    A search of at most ``population_size`` architectures is therefore random search (a warning says so).

    With ``n_envs`` > 1 it is asynchronous, as in the paper's distributed setting: ``n_envs`` children are in
    evaluation at once (on a cluster, ``cluster=dask``), and a new one is bred from the population as soon as one
    comes back.

    :param population_size: members kept alive (P in the paper).
    :param sample_size: tournament size (S in the paper).
    :param n_envs: architectures in evaluation at once.
    """

    def __init__(self, population_size: int = 20, sample_size: int = 5, n_envs: int = 1) -> None:
        if population_size < 2:
            raise ConfigError(f"population_size={population_size} is not accepted: use an integer >= 2")
        if not 1 <= sample_size <= population_size:
            raise ConfigError(
                f"sample_size={sample_size} is not accepted: use an integer in [1, population_size]"
            )
        self.population_size = population_size
        self.sample_size = sample_size
        self.n_envs = check_n_envs(n_envs)
        self.population: deque[tuple[tuple[int, ...], float]] = deque()

    def search(
        self, env: gym.Env, budget: int, seed: int, on_evaluation: OnEvaluation, log_dir: Path | None = None
    ) -> None:
        if len(self.population) + budget <= self.population_size:
            log.warning(
                "controller=evolution: search.budget=%d fills at most the population (controller.population_size"
                "=%d%s): every architecture is a random sample, nothing is mutated; raise search.budget (e.g. 10 x "
                "population_size) or lower controller.population_size",
                budget, self.population_size, f", {len(self.population)} restored" if self.population else "",
            )  # fmt: skip
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        space = env.get_wrapper_attr("search_space")

        def propose(in_flight: int) -> Sequence[int]:
            # Random until the population (with the members in evaluation) is full, then mutation.
            if len(self.population) + in_flight < self.population_size or len(self.population) < self.sample_size:
                return space.sample(rng)
            return space.mutate(self.tournament(rng), rng)

        def on_result(tokens: tuple[int, ...], info: dict[str, Any]) -> None:
            self.population.append((tokens, float(info["reward"])))
            if len(self.population) > self.population_size:
                self.population.popleft()  # the oldest, not the worst: aging evolution
            on_evaluation(info)

        propose_in_flight(env, budget, self.n_envs, propose, on_result)

    def tournament(self, rng: np.random.Generator) -> tuple[int, ...]:
        """The tokens of the best (highest reward; first drawn on ties) of ``sample_size`` distinct members."""
        picks = rng.choice(len(self.population), size=self.sample_size, replace=False)
        return max((self.population[int(i)] for i in picks), key=lambda member: member[1])[0]

    def save(self, path: Path) -> None:
        members = [{"tokens": list(tokens), "reward": reward} for tokens, reward in self.population]
        write_text_atomically(path.with_suffix(".json"), json.dumps({"population": members}))

    def load(self, path: Path) -> bool:
        file = path.with_suffix(".json")
        if not file.exists():
            return False
        members = json.loads(file.read_text())["population"]
        self.population = deque((tuple(m["tokens"]), float(m["reward"])) for m in members)
        return True
