"""The tabular env's fast path: every architecture answered from the table in memory, the store optional.

A tabular env is stepped by RL code at tens of thousands of steps per second (an episode of 5 tokens at 20k
steps/s is 4k architectures/s), where the plain :class:`~nas_rl.evaluation.evaluator.Evaluator` spends most of each
episode in SQLite (a cache lookup and a history row per architecture). :class:`TabularEvaluator` answers
from a dict instead and writes to the store only with ``history=True``.
"""

from __future__ import annotations

import time
from typing import Any

from nas_rl.arch import ArchSpec
from nas_rl.benchmark.estimators import TabularAccuracy, TabularLatency
from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator, Outcome
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import Evaluation, EvaluationStore, fingerprint_of


class TabularEvaluator(Evaluator):
    """An :class:`Evaluator` for ``accuracy=tabular`` and ``latency=tabular`` on one table.

    The outcome of an architecture is the one the plain evaluator would report with the same estimators
    (same accuracy, latency statistics, reward, status and failure reason, same store fingerprint), minus the
    SQLite round trips. ``cached`` is True when this evaluator was asked for the architecture before (what
    a private in-memory store would say).

    :param accuracy: a :class:`TabularAccuracy`.
    :param latency: a :class:`TabularLatency` on the same table.
    :param reward: the reward function of (accuracy, latency).
    :param store: written only with ``history=True``; never opened otherwise.
    :param run_id: tag of the history rows.
    :param history: False: keep no history (the fast path; a search run that reads its history back needs
        True). True: like :class:`Evaluator`, an evaluation row per architecture and an episode row per
        proposal, so the store remains the run's history.
    :param max_consecutive_failures: accepted for the plain evaluator's settings; a table's failed rows are
        answers, not faults, so they never stop a search.
    :param claim_timeout_s: as for :class:`Evaluator` (a table answers at once: nothing is claimed).
    """

    def __init__(
        self,
        accuracy: TabularAccuracy,
        latency: TabularLatency,
        reward: MnasReward,
        store: EvaluationStore,
        run_id: str = "default",
        history: bool = False,
        max_consecutive_failures: int | None = 10,
        claim_timeout_s: float = 60.0,
    ) -> None:
        if not isinstance(accuracy, TabularAccuracy) or not isinstance(latency, TabularLatency):
            raise ConfigError(
                f"the evaluator TabularEvaluator needs accuracy=tabular and latency=tabular, got "
                f"{type(accuracy).__name__} and {type(latency).__name__}; other estimators use the plain Evaluator"
            )
        if accuracy.table.digest != latency.table.digest:
            raise ConfigError(
                f"the evaluator TabularEvaluator got accuracy.table ({accuracy.table.path}) and latency.table ({latency.table.path}) are "
                "different tables; use one table for both"
            )
        super().__init__(accuracy, latency, reward, store, run_id, max_consecutive_failures, claim_timeout_s)
        self.table = accuracy.table
        self.history = bool(history)
        # arch -> [evaluation, reward, proposed before]; the space hands out the same ArchSpec objects.
        self._answers: dict[ArchSpec, list[Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_answers": {}}

    def evaluate(self, arch: ArchSpec) -> Outcome:
        start = time.perf_counter()
        answer = self._answers.get(arch)
        if answer is None:
            answer = self._answers[arch] = self._answer(arch)
        evaluation, reward, cached = answer
        answer[2] = True
        seconds = time.perf_counter() - start
        if self.history:
            self.store.add_episode(self.run_id, evaluation, cached, reward, seconds)
        return Outcome(evaluation, reward, cached, seconds)

    def _answer(self, arch: ArchSpec) -> list[Any]:
        """The table row of ``arch`` as the store would hold it (and, with history, as it does)."""
        index = self.table.row(arch)
        text = arch.to_string()
        fingerprint = self.fingerprint(arch) if self.history else fingerprint_of(self.settings(arch))
        if self.history:
            stored = self.store.lookup(text, fingerprint)
            if stored is not None:
                return [stored, self.reward_of(stored), True]
        evaluation = Evaluation(arch=text, fingerprint=fingerprint, status="ok", accuracy_seconds=0.0,
                                latency_seconds=0.0, eval_seconds=0.0)  # fmt: skip
        if self.table.ok(index):
            stats = self.table.latency(index)
            evaluation.accuracy = self.table.accuracy(index)
            evaluation.latency_ms = stats.median_ms
            evaluation.latency_mean_ms, evaluation.latency_std_ms = stats.mean_ms, stats.std_ms
            evaluation.latency_min_ms, evaluation.latency_max_ms = stats.min_ms, stats.max_ms
            evaluation.latency_runs = stats.runs
            evaluation.reward = self.reward(evaluation.accuracy, evaluation.latency_ms)
        else:
            evaluation.status = "failed"
            evaluation.error = self.table.failure(index)
        if self.history:
            evaluation = self.store.add(evaluation)
        return [evaluation, self.reward_of(evaluation), False]
