"""``latency=flops``: the naive baseline, latency proportional to multiply-adds.

``latency_ms = macs * ms_per_mac``, with multiply-adds counted by torch (:func:`nas_rl.models.flops.multiply_adds`)
at the deployment resolution. ``ms_per_mac`` is given, or fitted (least squares through the origin) on the
whole-network samples of a device's latency table (whose entries record their multiply-adds, by the same
count). It ignores that depthwise convs, SE and memory traffic cost more per multiply-add than dense convs: the
latency report shows how much that matters.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np

from nas_rl.arch import ArchSpec
from nas_rl.devices.base import Backend
from nas_rl.errors import ConfigError
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.latency.device import resolve_backend
from nas_rl.latency.latency_table import (
    LatencyTable,
    check_device,
    check_target,
    table_path,
    table_target,
)
from nas_rl.latency.layers import network_entries


class FlopsLatency(LatencyModel):
    """Latency as multiply-adds times a constant.

    :param resolution: deployment input height = width, at which multiply-adds are counted.
    :param ms_per_mac: milliseconds per multiply-add; ``None``: fit it on the table's whole-network samples.
    :param space: the search space (to find and check the table when fitting).
    :param path: the table file; ``None``: ``directory`` / the default file name of these settings.
    :param directory: where default-named tables live.
    :param device: the device the table must describe: the configured device (``${device}``), or a name of this
        computer's CPU with ``threads`` and ``precision``.
    :param threads: the interpreter threads the table must have been measured with; ``None``: the device's.
    :param precision: ``fp32`` or ``int8``, as the table's; ``None``: the device's.
    :param allow_other_device: as :class:`~nas_rl.latency.lut.LookupTableLatency`'s (for fitting ``ms_per_mac``).
    """

    def __init__(
        self,
        resolution: int | None = None,
        ms_per_mac: float | None = None,
        space: Any = None,
        path: str | os.PathLike[str] | None = None,
        directory: str | os.PathLike[str] = "luts",
        device: Backend | str = "host-cpu",
        threads: int | None = None,
        precision: str | None = None,
        allow_other_device: bool = False,
    ) -> None:
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
            raise ConfigError(
                f"resolution={resolution!r} is not accepted: use the deployment input size (an integer >= 1)"
            )
        self.resolution = resolution
        self.table: LatencyTable | None = None
        if ms_per_mac is not None:
            if isinstance(ms_per_mac, bool) or not isinstance(ms_per_mac, (int, float)) or not ms_per_mac > 0:
                raise ConfigError(
                    f"ms_per_mac={ms_per_mac!r} is not accepted: use a positive number, or None to fit it"
                )
            self._ms_per_mac: float | None = float(ms_per_mac)
        else:
            backend = resolve_backend(device, threads, precision)
            target = table_target(space, resolution, backend.name, backend.threads, backend.precision)
            self.table = LatencyTable.read(table_path(path, directory, target))
            check_target(self.table, target)
            check_device(self.table, backend.describe(), allow_other_device)
            if not self.table.network_samples():
                raise ConfigError(
                    f"latency table {self.table.path} has no whole-network samples to fit ms_per_mac; accepted: a "
                    "table profiled with profile.networks >= 1, or latency.ms_per_mac=<number>"
                )
            self._ms_per_mac = None  # fitted on first use: counting multiply-adds builds torch networks
            self.space = space

    @property
    def ms_per_mac(self) -> float:
        if self._ms_per_mac is None:
            assert self.table is not None  # without a table, ms_per_mac was given
            samples = self.table.network_archs(self.space)
            macs = np.array([self._sample_macs(arch) for arch, _ in samples], float)
            measured = np.array([row["median_ms"] for _, row in samples], float)
            self._ms_per_mac = float(macs @ measured / (macs @ macs))
        return self._ms_per_mac

    def macs(self, arch: ArchSpec) -> int:
        return _multiply_adds(arch, self.resolution)

    def _sample_macs(self, arch: ArchSpec) -> int:
        """The table's entries record their multiply-adds (torch's count, which adds up to the network's):
        summing them is much faster than building the torch network."""
        assert self.table is not None
        rows = [self.table.entries.get(entry.key) for entry in network_entries(arch, self.resolution)]
        if all(row is not None and "macs" in row for row in rows):
            return int(sum(row["macs"] for row in rows if row is not None))
        return self.macs(arch)

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return LatencyStats.predicted(self.macs(arch) * self.ms_per_mac)

    def fingerprint(self) -> dict[str, Any]:
        source: dict[str, Any]
        if self.table is None:
            source = {"ms_per_mac": self._ms_per_mac}
        else:
            source = {"table_id": self.table.table_id, "networks": len(self.table.network_samples()),
                      "device": self.table.header["device"]}  # fmt: skip
        return {"kind": "flops", "resolution": self.resolution, **source}

    def tables(self) -> list[LatencyTable]:
        return [] if self.table is None else [self.table]

    def __repr__(self) -> str:
        source = "given" if self.table is None else f"fitted on {self.table.path}"
        return f"FlopsLatency(resolution={self.resolution}, ms_per_mac {source})"


@lru_cache(maxsize=4096)
def _multiply_adds(arch: ArchSpec, resolution: int) -> int:
    from nas_rl.models.flops import multiply_adds

    return multiply_adds(arch, resolution)
