"""Where evaluations run: in this process one after another (``cluster=local``), or on a Dask cluster
(``cluster=dask``, :mod:`nas_rl.evaluation.cluster`).

The :class:`~nas_rl.evaluation.evaluator.Evaluator` is the driver: it decides what needs evaluating (store
lookups, claims, work already in flight) and alone writes the store. An executor only runs the functions of
:mod:`nas_rl.evaluation.tasks` on a candidate's data and hands each evaluation back as it finishes. In this
process they get the driver's role objects; a Dask cluster's workers get each role's config instead (data, from
:meth:`Executor.describe_role`) and build the role from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.evaluation import tasks
from nas_rl.evaluation.store import Evaluation
from nas_rl.latency.base import LatencyModel

K = TypeVar("K")


class Executor(ABC):
    """Runs evaluations of candidates, each a pure function of data (:mod:`~nas_rl.evaluation.tasks`).

    Usable as a context manager (:meth:`close` on exit).
    """

    #: Whether it evaluates several candidates at once: the evaluator then starts a batch's misses together.
    concurrent: bool = False

    def describe_role(self, role: Any, config: Any, key: str = "role") -> None:
        """``role`` (an accuracy estimator or latency model) was built from ``config``, its section (``key``):
        an executor whose workers build the roles themselves sends that instead of the object. Here: nothing."""
        return None

    @abstractmethod
    def submit(self, arch: ArchSpec, fingerprint: str, accuracy: AccuracyEstimator, latency: LatencyModel) -> Any:
        """Start (or queue) the evaluation of ``arch``; returns a handle for :meth:`as_completed`."""

    @abstractmethod
    def as_completed(self, handles: Mapping[K, Any]) -> Iterator[tuple[K, Evaluation]]:
        """Each handle's key with its evaluation (without a reward), as each finishes; every one is yielded once."""

    def cancel(self, handles: Iterable[Any]) -> None:
        """Give up evaluations no one will wait for (a search that stopped)."""
        return None

    def close(self) -> None:
        """Release what the executor holds (a cluster it started, its connection)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Evaluates in the driver's process, one candidate at a time, when its result is asked for (the default)."""

    def submit(self, arch: ArchSpec, fingerprint: str, accuracy: AccuracyEstimator, latency: LatencyModel) -> Any:
        return (arch, fingerprint, accuracy, latency)

    def as_completed(self, handles: Mapping[K, Any]) -> Iterator[tuple[K, Evaluation]]:
        for key, handle in handles.items():
            yield key, tasks.evaluate(*handle)
