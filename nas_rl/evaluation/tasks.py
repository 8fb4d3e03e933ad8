"""What a worker runs: pure functions of data that evaluate one candidate and return its evaluation's fields.

They never open the store (the driver writes what they return) and import nothing heavy themselves: the
accuracy estimator and the latency model arrive as arguments (unpickled by :func:`load_role` on the worker that
first needs them), so a board that only measures latency needs only what its latency model imports.
Every executor runs these same functions, in the driver's process (``cluster=local``) or on Dask workers.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import asdict
from typing import Any

from nas_rl._util import first_line
from nas_rl.arch import ArchSpec
from nas_rl.errors import EvaluationFailed
from nas_rl.evaluation.store import Evaluation

#: An evaluation's fields as a plain dict (what a remote task returns: data the scheduler never needs to import).
Fields = dict[str, Any]


def evaluate(arch: ArchSpec, fingerprint: str, accuracy: Any, latency: Any) -> Evaluation:
    """Accuracy, then latency (not measured when accuracy failed); the reward is the driver's to compute.

    An :class:`~nas_rl.errors.EvaluationFailed` or a ``RuntimeError`` (a torch kernel refusing a shape) makes the
    candidate ``failed`` with its reason, not the search; any other exception is a bug and propagates.
    """
    return with_latency(accuracy_part(arch, fingerprint, accuracy), arch, latency)


def accuracy_part(arch: ArchSpec, fingerprint: str, accuracy: Any) -> Evaluation:
    """The evaluation as far as accuracy: ``ok`` with ``accuracy``, or ``failed`` with the reason."""
    evaluation = Evaluation(arch=arch.to_string(), fingerprint=fingerprint, status="ok")
    start = time.perf_counter()
    try:
        evaluation.accuracy = float(accuracy.accuracy(arch))
        evaluation.accuracy_seconds = time.perf_counter() - start
    except (EvaluationFailed, RuntimeError) as failure:
        _record(evaluation, failure)
    evaluation.eval_seconds = time.perf_counter() - start
    return evaluation


def with_latency(evaluation: Evaluation, arch: ArchSpec, latency: Any) -> Evaluation:
    """``evaluation`` (from :func:`accuracy_part`) completed with the latency statistics, unless it failed."""
    if evaluation.status != "ok":
        return evaluation
    start = time.perf_counter()
    try:
        stats = latency.measure(arch)
        evaluation.latency_seconds = time.perf_counter() - start
    except (EvaluationFailed, RuntimeError) as failure:
        _record(evaluation, failure)
    else:
        evaluation.latency_ms = stats.median_ms
        evaluation.latency_mean_ms = stats.mean_ms
        evaluation.latency_std_ms = stats.std_ms
        evaluation.latency_min_ms = stats.min_ms
        evaluation.latency_max_ms = stats.max_ms
        evaluation.latency_runs = stats.runs
    evaluation.eval_seconds = (evaluation.eval_seconds or 0.0) + time.perf_counter() - start
    return evaluation


def _record(evaluation: Evaluation, failure: Exception) -> None:
    """Mark ``evaluation`` failed with the reason: the candidate fails, not the search."""
    evaluation.status = "failed"
    if isinstance(failure, EvaluationFailed):
        evaluation.error = str(failure)
    else:  # e.g. a torch kernel refusing a shape
        evaluation.error = f"{type(failure).__name__}: {first_line(failure, 'no message')}"


# On a worker: the arguments are data (a block string, the network settings, the fingerprint, the roles).


def load_role(blob: bytes) -> Any:
    """A role (accuracy estimator, latency model) from the driver's pickle; kept in the worker's memory by Dask
    for every later task there (its caches, such as resized datasets, with it)."""
    return pickle.loads(blob)


def remote_evaluate(arch: str, network: dict[str, int], fingerprint: str, accuracy: Any, latency: Any) -> Fields:
    """:func:`evaluate` on a worker."""
    return asdict(evaluate(ArchSpec.from_string(arch, **network), fingerprint, accuracy, latency))


def remote_accuracy(arch: str, network: dict[str, int], fingerprint: str, accuracy: Any) -> Fields:
    """:func:`accuracy_part` on a worker (any worker that can train)."""
    return asdict(accuracy_part(ArchSpec.from_string(arch, **network), fingerprint, accuracy))


def remote_latency(partial: Fields, network: dict[str, int], latency: Any) -> Fields:
    """:func:`with_latency` on a worker (one holding the device's resource), after :func:`remote_accuracy`."""
    evaluation = Evaluation(**partial)
    return asdict(with_latency(evaluation, ArchSpec.from_string(evaluation.arch, **network), latency))
