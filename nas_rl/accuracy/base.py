"""The AccuracyEstimator role: ArchSpec -> accuracy in [0, 1]."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from nas_rl.arch import ArchSpec

if TYPE_CHECKING:
    import torch


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


@runtime_checkable
class TrainableEstimator(Protocol):
    """An estimator whose accuracy comes from a network it can hand over: what the export of a run's best
    architecture needs (proxy training retrains it; a supernet extracts its subnet)."""

    #: The channel multiplier of the network :meth:`train` returns against the searched architecture.
    width_multiplier: float

    def train(self, arch: ArchSpec) -> tuple[torch.nn.Module, float]:
        """The trained network of ``arch`` (eval mode) and its validation accuracy."""
        ...

    def validation_images(self) -> np.ndarray:
        """The validation images the accuracy was measured on, NCHW float32, at the training resolution."""
        ...
