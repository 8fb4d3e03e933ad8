"""The LatencyModel role: ArchSpec -> latency in ms on one named device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from nas_rl.arch import ArchSpec
from nas_rl.devices.base import LatencyStats as LatencyStats  # the statistics a device's benchmark returns

if TYPE_CHECKING:
    from nas_rl.latency.latency_table import LatencyTable


class LatencyModel(ABC):
    """Measures or predicts the latency of an architecture on one device.

    ``fingerprint()`` returns every setting that changes the answer (device, threads, precision, input
    shape, ...): the evaluation store keys its cache by it.
    """

    @abstractmethod
    def measure(self, arch: ArchSpec) -> LatencyStats:
        """Latency statistics of ``arch``; raises :class:`nas_rl.errors.EvaluationFailed` if it cannot."""

    def latency_ms(self, arch: ArchSpec) -> float:
        return self.measure(arch).median_ms

    def tables(self) -> list[LatencyTable]:
        """The measured latency tables this model answers from (the latency report checks that the
        architectures it holds out are not among their samples); none for a model that measures."""
        return []

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-serialisable settings that identify this model's answers."""
