"""The AccuracyEstimator role: ArchSpec -> accuracy in [0, 1]."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from nas_rl.arch import ArchSpec


class AccuracyEstimator(ABC):
    """Estimates the accuracy of an architecture (proxy training, lookup table, zero-cost proxy).

    ``fingerprint()`` returns every setting that changes the answer; the store keys its cache by it.
    """

    @abstractmethod
    def accuracy(self, arch: ArchSpec) -> float:
        """Accuracy in [0, 1]; raises :class:`nas_rl.errors.EvaluationFailed` when training diverges."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-serialisable settings that identify this estimator's answers."""
