"""One architecture -> store lookup -> (miss) accuracy + latency -> reward -> store write.

The env calls this on its terminal step; profiling and report tools reuse it. Accuracy and latency are
cached by the store; the reward is recomputed from them on every call, so sweeps over the reward's target
share one store's evaluations. An architecture another process is evaluating (a claim in the store) is
waited for, not evaluated again. A run of failed evaluations in a row stops the search (:class:`RepeatedFailures`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nas_rl._util import first_line, is_int
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed, require
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import Evaluation, EvaluationStore
from nas_rl.latency.base import LatencyModel
from nas_rl.spaces.base import NETWORK_FIELDS


class RepeatedFailures(ConfigError):
    """Every one of the last ``max_consecutive_failures`` fresh evaluations failed: the search stops (a setup fault,
    such as a device gone or a dataset the networks cannot train on, rather than bad candidates)."""


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
    :param max_consecutive_failures: raise :class:`RepeatedFailures` (quoting the last error) when this many
        evaluations in a row failed; answers from the store neither count nor reset the count. 0 or None: never.
    :param claim_timeout_s: this evaluator's claim on an architecture it is evaluating (which another process
        waits on instead of repeating the work) is renewed every ``claim_timeout_s / 4`` seconds; if its process
        is killed, another process on the same host takes it over at once, one elsewhere once it has not been
        renewed for ``claim_timeout_s``.
    """

    def __init__(
        self,
        accuracy: AccuracyEstimator,
        latency: LatencyModel,
        reward: MnasReward,
        store: EvaluationStore,
        run_id: str = "default",
        max_consecutive_failures: int | None = 10,
        claim_timeout_s: float = 60.0,
    ) -> None:
        limit, accepted = max_consecutive_failures, "an integer >= 0 (0 or null: never stop)"
        require(limit is None or (is_int(limit) and limit >= 0), "max_consecutive_failures", limit, accepted)
        timeout_ok = isinstance(claim_timeout_s, (int, float)) and not isinstance(claim_timeout_s, bool)
        require(timeout_ok and claim_timeout_s > 0, "claim_timeout_s", claim_timeout_s, "a number of seconds > 0")
        self.accuracy = accuracy
        self.latency = latency
        self.reward = reward
        self.store = store
        self.run_id = run_id
        self.max_consecutive_failures = max_consecutive_failures or 0
        self.claim_timeout_s = float(claim_timeout_s)
        self._fingerprints: dict[tuple, str] = {}
        self._failures_in_a_row = 0

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
        evaluation, cached = self._stored_or_evaluated(arch, text, fingerprint)
        reward = self.reward_of(evaluation)
        seconds = time.perf_counter() - start
        self.store.add_episode(self.run_id, evaluation, cached, reward, seconds)
        if not cached:
            self._count(evaluation)
        return Outcome(evaluation, reward, cached, seconds)

    def _stored_or_evaluated(self, arch: ArchSpec, text: str, fingerprint: str) -> tuple[Evaluation, bool]:
        """The stored evaluation (waiting for one in flight in another process), or a fresh one; and whether it
        came from the store."""
        while True:
            evaluation = self.store.lookup(text, fingerprint)
            if evaluation is not None:
                return evaluation, True
            if not self.store.shared:  # no other process sees it: nothing to claim
                return self.store.add(self._evaluate(arch, text, fingerprint)), False
            if self.store.claim(text, fingerprint, self.claim_timeout_s):
                try:
                    return self.store.add(self._evaluate(arch, text, fingerprint)), False
                finally:
                    self.store.release(text, fingerprint)  # after an exception: a waiting process takes it over
            evaluation = self.store.wait_for(text, fingerprint)
            if evaluation is not None:
                return evaluation, True
            # The claim ended without a result, or went stale: claim it.

    def _count(self, evaluation: Evaluation) -> None:
        """Count a fresh evaluation towards :class:`RepeatedFailures`."""
        if evaluation.status == "ok":
            self._failures_in_a_row = 0
            return
        self._failures_in_a_row += 1
        limit = self.max_consecutive_failures
        if limit and self._failures_in_a_row >= limit:
            raise RepeatedFailures(
                f"the search stopped: the last {self._failures_in_a_row} evaluations all failed, the last one with: "
                f"{first_line(evaluation.error or '', 'no reason given')} (evaluator.max_consecutive_failures={limit}; "
                "0 or null never stops)"
            )

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
