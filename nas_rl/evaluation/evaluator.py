"""One architecture -> store lookup -> (miss) accuracy + latency -> reward -> store write.

The env calls this on its terminal step; profiling and report tools reuse it. Accuracy and latency are
cached by the store; the reward is recomputed from them on every call, so sweeps over the reward's target
share one store's evaluations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nas_rl._util import first_line
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.errors import EvaluationFailed
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import Evaluation, EvaluationStore
from nas_rl.latency.base import LatencyModel
from nas_rl.spaces.base import NETWORK_FIELDS


@dataclass
class Outcome:
    """What the env reports for one proposed architecture."""

    evaluation: Evaluation
    reward: float
    cached: bool
    seconds: float

    def info(self) -> dict[str, Any]:
        e = self.evaluation
        return {
            "arch": e.arch,
            "accuracy": e.accuracy,
            "latency_ms": e.latency_ms,
            "reward": self.reward,
            "cached": self.cached,
            "eval_seconds": self.seconds,
            "status": e.status,
            "error": e.error,
        }


class Evaluator:
    """Evaluates architectures through the store; picklable when its parts are.

    :param accuracy: the accuracy estimator.
    :param latency: the latency model.
    :param reward: the reward function of (accuracy, latency).
    :param store: the evaluation store (cache and history).
    :param run_id: the history rows this evaluator writes are tagged with it.
    """

    def __init__(
        self,
        accuracy: AccuracyEstimator,
        latency: LatencyModel,
        reward: MnasReward,
        store: EvaluationStore,
        run_id: str = "default",
    ) -> None:
        self.accuracy = accuracy
        self.latency = latency
        self.reward = reward
        self.store = store
        self.run_id = run_id
        self._fingerprints: dict[tuple, str] = {}

    def settings(self, arch: ArchSpec) -> dict[str, Any]:
        """Everything besides the block string that decides this architecture's accuracy and latency."""
        return {
            "network": {name: getattr(arch, name) for name in NETWORK_FIELDS},
            "accuracy": self.accuracy.fingerprint(),
            "latency": self.latency.fingerprint(),
        }

    def fingerprint(self, arch: ArchSpec) -> str:
        key = tuple(getattr(arch, name) for name in NETWORK_FIELDS)
        if key not in self._fingerprints:
            self._fingerprints[key] = self.store.register_fingerprint(self.settings(arch))
        return self._fingerprints[key]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fingerprints": {}}

    def evaluate(self, arch: ArchSpec) -> Outcome:
        start = time.perf_counter()
        text, fingerprint = arch.to_string(), self.fingerprint(arch)
        evaluation = self.store.lookup(text, fingerprint)
        cached = evaluation is not None
        if evaluation is None:
            evaluation = self.store.add(self._evaluate(arch, text, fingerprint))
        reward = self.reward_of(evaluation)
        seconds = time.perf_counter() - start
        self.store.add_episode(self.run_id, evaluation, cached, reward, seconds)
        return Outcome(evaluation, reward, cached, seconds)

    def reward_of(self, evaluation: Evaluation) -> float:
        if evaluation.status != "ok":
            return 0.0
        assert evaluation.accuracy is not None and evaluation.latency_ms is not None  # an ok evaluation has both
        return self.reward(evaluation.accuracy, evaluation.latency_ms)

    def _evaluate(self, arch: ArchSpec, text: str, fingerprint: str) -> Evaluation:
        evaluation = Evaluation(arch=text, fingerprint=fingerprint, status="ok")
        start = time.perf_counter()
        try:
            evaluation.accuracy = float(self.accuracy.accuracy(arch))
            evaluation.accuracy_seconds = time.perf_counter() - start
            stats = self.latency.measure(arch)
            evaluation.latency_seconds = time.perf_counter() - start - evaluation.accuracy_seconds
        except EvaluationFailed as failure:
            evaluation.status, evaluation.error = "failed", str(failure)
        except RuntimeError as failure:  # e.g. a torch kernel refusing a shape: the candidate fails, not the search
            evaluation.status, evaluation.error = "failed", f"{type(failure).__name__}: {first_line(failure, 'no message')}"
        else:
            evaluation.latency_ms = stats.median_ms
            evaluation.latency_mean_ms = stats.mean_ms
            evaluation.latency_std_ms = stats.std_ms
            evaluation.latency_min_ms = stats.min_ms
            evaluation.latency_max_ms = stats.max_ms
            evaluation.latency_runs = stats.runs
            evaluation.reward = self.reward(evaluation.accuracy, evaluation.latency_ms)
        evaluation.eval_seconds = time.perf_counter() - start
        return evaluation
