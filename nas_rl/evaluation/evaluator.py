"""One architecture -> store lookup -> (miss) accuracy + latency -> reward -> store write.

The env calls this on its terminal step; profiling and report tools reuse it. Accuracy and latency are
cached by the store; the reward is recomputed from them on every call, so sweeps over the reward's target
share one store's evaluations. An architecture another process is evaluating (a claim in the store) is
waited for, not evaluated again. A run of failed evaluations in a row stops the search (:class:`RepeatedFailures`).

The evaluations themselves run on an :class:`~nas_rl.evaluation.executor.Executor`; the evaluator is the driver,
the only one to read and write the store. With a concurrent executor (a Dask cluster) a controller first
:meth:`~Evaluator.start`\ s a batch of architectures (their misses are submitted together) and
:meth:`~Evaluator.finish`\ es them (each stored as it comes back); the env's terminal step then finds its
answer, reported as fresh (``cached=False``) the first time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nas_rl._util import first_line, is_int
from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, require
from nas_rl.evaluation.executor import Executor, LocalExecutor
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import Evaluation, EvaluationStore
from nas_rl.latency.base import LatencyModel
from nas_rl.spaces.base import NETWORK_FIELDS

#: An evaluation's key in the store: (block string, fingerprint).
Key = tuple[str, str]


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
    :param executor: where evaluations run; None: in this process, one at a time (:class:`LocalExecutor`). The
        caller that made it closes it.
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
        executor: Executor | None = None,
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
        self.executor = executor or LocalExecutor()
        self._fingerprints: dict[tuple, str] = {}
        self._failures_in_a_row = 0
        self._in_flight: dict[Key, Any] = {}  # started here, not back yet: key -> the executor's handle
        self._fresh: dict[Key, Evaluation] = {}  # back and stored, not yet reported by evaluate()

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
        return {**self.__dict__, "_fingerprints": {}, "_in_flight": {}, "_fresh": {}}

    def key(self, arch: ArchSpec) -> Key:
        return arch.to_string(), self.fingerprint(arch)

    def evaluate(self, arch: ArchSpec) -> Outcome:
        start = time.perf_counter()
        text, fingerprint = key = self.key(arch)
        if key in self._in_flight:
            self._collect([key])
        evaluation = self._fresh.pop(key, None)
        if evaluation is not None:  # started by start(): this is its first report
            cached, seconds = False, max(time.perf_counter() - start, evaluation.eval_seconds or 0.0)
        else:
            evaluation, cached = self._stored_or_evaluated(arch, text, fingerprint)
            seconds = time.perf_counter() - start
        reward = self.reward_of(evaluation)
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
                return self._evaluate_now(arch, text, fingerprint), False
            if self.store.claim(text, fingerprint, self.claim_timeout_s):
                try:
                    return self._evaluate_now(arch, text, fingerprint), False
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

    def _evaluate_now(self, arch: ArchSpec, text: str, fingerprint: str) -> Evaluation:
        """Evaluate ``arch`` on the executor, wait for it and store it."""
        handle = self.executor.submit(arch, fingerprint, self.accuracy, self.latency)
        for _, evaluation in self.executor.as_completed({(text, fingerprint): handle}):
            return self._stored(evaluation)
        raise AssertionError("the executor returned no evaluation")  # as_completed yields every handle

    def _stored(self, evaluation: Evaluation) -> Evaluation:
        """``evaluation`` with its reward, as the store keeps it (which ends this process's claim on it)."""
        evaluation.reward = self.reward_of(evaluation) if evaluation.status == "ok" else None
        return self.store.add(evaluation)

    # Batches: evaluating several architectures at once on a concurrent executor -------------------------------

    def start(self, archs: Iterable[ArchSpec]) -> None:
        """Submit the evaluations ``archs`` will need, together: those not stored, not already in flight here,
        and not claimed by another process (which :meth:`evaluate` waits for). Each is claimed in the store
        first. Nothing happens on an executor that evaluates one at a time (``evaluate`` does it then)."""
        if not self.executor.concurrent:
            return
        for arch in archs:
            text, fingerprint = key = self.key(arch)
            if key in self._in_flight or key in self._fresh or self.store.lookup(text, fingerprint) is not None:
                continue
            if self.store.shared and not self.store.claim(text, fingerprint, self.claim_timeout_s):
                continue
            try:
                self._in_flight[key] = self.executor.submit(arch, fingerprint, self.accuracy, self.latency)
            except BaseException:
                self.store.release(text, fingerprint)
                raise

    def finish(self, archs: Iterable[ArchSpec], first: bool = False) -> list[ArchSpec]:
        """Wait for the evaluations of ``archs`` that :meth:`start` submitted, storing each as it comes back:
        for all of them, or with ``first`` for the first one (not at all when one needs no waiting). Returns
        the architectures of ``archs`` whose answer :meth:`evaluate` now has without waiting on this process."""
        archs = list(archs)
        keys = [self.key(arch) for arch in archs]
        waiting = list(dict.fromkeys(key for key in keys if key in self._in_flight))
        if waiting and not (first and len(waiting) < len(set(keys))):
            self._collect(waiting, first)
        return [arch for arch, key in zip(archs, keys) if key not in self._in_flight]

    def _collect(self, keys: list[Key], first: bool = False) -> None:
        """Store the evaluations in flight under ``keys`` as each finishes (only the first with ``first``)."""
        handles = {key: self._in_flight[key] for key in keys}
        for key, evaluation in self.executor.as_completed(handles):
            self._fresh[key] = self._stored(evaluation)
            del self._in_flight[key]
            if first:
                return

    def cancel(self) -> None:
        """Give up the evaluations in flight (a search that stopped) and end their claims in the store."""
        in_flight, self._in_flight = self._in_flight, {}
        self._fresh.clear()
        if not in_flight:
            return
        self.executor.cancel(in_flight.values())
        for text, fingerprint in in_flight:
            self.store.release(text, fingerprint)

    def close(self) -> None:
        """Cancel what is in flight and close this process's store connection (the executor is its maker's)."""
        self.cancel()
        self.store.close()
