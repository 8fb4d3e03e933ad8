"""The Controller role: drives a NasEnv for a budget of proposed architectures."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from nas_rl.errors import require

#: Called with the terminal step's ``info`` for every architecture the controller proposes.
OnEvaluation = Callable[[dict[str, Any]], None]


class Controller(ABC):
    """Proposes architectures through the env until ``budget`` of them were evaluated (cache hits count).

    ``save``/``load`` hold what the controller learned, so an interrupted search resumes from its last
    checkpoint; the evaluations themselves live in the store and are never lost.
    """

    #: Architectures it keeps in evaluation at once (``controller.n_envs``): on a cluster, the workers it can use.
    n_envs: int = 1

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


def propose_in_flight(
    env: gym.Env,
    budget: int,
    n_envs: int,
    propose: Callable[[int], Sequence[int]],
    on_result: Callable[[tuple[int, ...], dict[str, Any]], None],
) -> None:
    """Propose ``budget`` architectures, keeping up to ``n_envs`` of them in evaluation at once.

    ``propose(in_flight)`` returns the tokens of the next architecture (``in_flight``: how many proposed ones
    are still in evaluation); ``on_result(tokens, info)`` gets each one's terminal ``info`` as its evaluation
    comes back, in the order they finish. On an evaluator that evaluates one at a time (``cluster=local``) the
    architectures are played in the order they were proposed; with ``n_envs=1``, one after another as before.
    """
    evaluator = env.get_wrapper_attr("evaluator")
    space = env.get_wrapper_attr("search_space")
    pending: list[tuple[tuple[int, ...], Any]] = []  # (tokens, arch), in proposal order
    proposed = 0
    while proposed < budget or pending:
        while proposed < budget and len(pending) < n_envs:
            tokens = tuple(int(t) for t in propose(len(pending)))
            arch = space.decode(tokens)
            evaluator.start([arch])
            pending.append((tokens, arch))
            proposed += 1
        ready = set(evaluator.finish([arch for _, arch in pending], first=True))
        for item in [item for item in pending if item[1] in ready]:
            pending.remove(item)
            on_result(item[0], play_tokens(env, item[0]))


def check_n_envs(n_envs: Any) -> int:
    require(isinstance(n_envs, int) and not isinstance(n_envs, bool) and n_envs >= 1, "n_envs", n_envs,
            "an integer >= 1 (architectures in evaluation at once)")  # fmt: skip
    return int(n_envs)
