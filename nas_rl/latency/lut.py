"""``latency=lut``: an architecture's latency as the sum of its pieces in a device's latency table, plus overhead.

The table (:mod:`nas_rl.latency.latency_table`, written by ``nas-rl-profile``) holds the latency of every stem, layer and
head configuration the search space can produce, each measured alone. A whole network costs a little more than
the sum of its pieces measured alone (per-invoke work, and caches that a lone layer keeps warm between runs),
so the prediction adds an overhead fitted on the table's whole-network samples when it is loaded.
A prediction costs tens of microseconds.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from nas_rl._util import clear_keras_session
from nas_rl.arch import ArchSpec
from nas_rl.devices.base import Backend, DeviceLost
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.latency.device import resolve_backend
from nas_rl.latency.latency_table import (
    LatencyTable,
    TableTarget,
    check_device,
    check_target,
    table_path,
    table_target,
)
from nas_rl.latency.layers import (
    Entry,
    entry_cost,
    entry_model,
    network_entries,
    space_entries,
)

if TYPE_CHECKING:
    from nas_rl.latency.litert import LiteRTLatency

#: What a lookup does when the table lacks one of the architecture's entries.
ON_MISS = ("fail", "measure")
#: How the per-network overhead is fitted on the table's whole-network samples (measured vs sum of entries):
#: ``none`` adds nothing; ``constant`` adds the median difference; ``linear`` fits measured = a + b * sum by
#: least squares (b absorbs effects that grow with the network, such as weights no longer warm in cache).
OVERHEADS = ("none", "constant", "linear")


class LookupTableLatency(LatencyModel):
    """Latency predicted from a device's latency table: the sum of the architecture's entries plus the overhead.

    :param space: the search space; the table must have been profiled for it.
    :param resolution: deployment input height = width; the table must have been profiled at it.
    :param path: the table file; ``None``: ``directory`` / the default file name of these settings (the one
        ``nas-rl-profile`` writes).
    :param directory: where default-named tables live.
    :param device: the device the table must describe: the configured device (``${device}``: its name, threads,
        precision and description), or a name of this computer's CPU with ``threads`` and ``precision``.
    :param threads: the interpreter threads the table must have been measured with; ``None``: the device's.
    :param precision: ``fp32`` or ``int8``, as the table's; ``None``: the device's.
    :param on_miss: ``fail``: an entry missing from the table stops the run with a message saying how to
        complete the table; ``measure``: measure it on the device, append it to the table and go on (needs the
        device to be the table's: the same description).
    :param overhead: one of :data:`OVERHEADS`.
    :param allow_other_device: use a table measured on a device described otherwise than the configured one
        (another CPU model, phone, runtime or converter version), with a warning; by default such a table is
        refused, naming both devices.
    :raises ConfigError: the table is missing, not a table, half-written, corrupt, built for other settings or
        measured on another device.
    """

    def __init__(
        self,
        space: Any = None,
        resolution: int | None = None,
        path: str | os.PathLike[str] | None = None,
        directory: str | os.PathLike[str] = "luts",
        device: Backend | str = "host-cpu",
        threads: int | None = None,
        precision: str | None = None,
        on_miss: str = "fail",
        overhead: str = "linear",
        allow_other_device: bool = False,
    ) -> None:
        _check_choice("on_miss", on_miss, ON_MISS)
        _check_choice("overhead", overhead, OVERHEADS)
        self.space = space
        self.on_miss = on_miss
        self.backend = resolve_backend(device, threads, precision)
        self.target: TableTarget = table_target(space, resolution, self.backend.name, self.backend.threads,
                                                self.backend.precision)  # fmt: skip
        self.resolution: int = self.target.input_shape[1]  # table_target refused a missing resolution
        self.table = LatencyTable.read(table_path(path, directory, self.target))
        check_target(self.table, self.target)
        check_device(self.table, self.backend.describe(), allow_other_device)
        if on_miss == "measure":
            self._check_measurable()
        self.overhead = overhead
        self._medians = {key: row["median_ms"] for key, row in self.table.entries.items() if "error" not in row}
        self.coefficients = fit_overhead(self, overhead)

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return LatencyStats.predicted(self.predict(self.entries_ms(arch)))

    def tables(self) -> list[LatencyTable]:
        return [self.table]

    def predict(self, entries_ms: list[float]) -> float:
        """Overhead model applied to the entry latencies of one architecture."""
        intercept, slope = self.coefficients
        return float(intercept + slope * sum(entries_ms))

    def entries_ms(self, arch: ArchSpec) -> list[float]:
        """The table latency (median, ms) of each entry of ``arch``, in network order."""
        medians = self._medians
        values = []
        for entry in network_entries(arch, self.resolution):
            value = medians.get(entry.key)
            if value is None:  # a miss, or an entry that failed when profiled
                value = medians[entry.key] = self.entry_stats(entry, arch).median_ms
            values.append(value)
        return values

    def entry_rows(self, arch: ArchSpec) -> list[dict[str, Any]]:
        """The table rows of the entries of ``arch`` (measuring or refusing misses as configured)."""
        rows = []
        for entry in network_entries(arch, self.resolution):
            self.entry_stats(entry, arch)
            rows.append(self.table.entries[entry.key])
        return rows

    def entry_stats(self, entry: Entry, arch: ArchSpec) -> LatencyStats:
        stats = self.table.stats(entry.key)
        if stats is not None:
            return stats
        row = self.table.entries.get(entry.key)
        if row is not None:  # profiled, but it could not be converted or run: so could not the network
            raise EvaluationFailed(f"latency table entry {entry.key} failed when profiled: {row['error']}")
        if self.on_miss == "fail":
            raise ConfigError(self._miss_message(entry, arch))
        self._measure_miss(entry)
        return self.entry_stats(entry, arch)

    def fingerprint(self) -> dict[str, Any]:
        header = self.table.header
        return {
            "kind": "lut",
            "table_id": self.table.table_id,
            "device": header["device"],
            "input_shape": header["input_shape"],
            "overhead": self.overhead,
            "coefficients": [round(c, 9) for c in self.coefficients],
        }

    def __repr__(self) -> str:
        return f"LookupTableLatency({self.table.describe()}, overhead={self.overhead!r})"

    def _check_measurable(self) -> None:
        device = self.table.header["device"]
        here = self.backend.describe().as_dict()
        if here != device:
            differing = ", ".join(
                f"{k}: table {device.get(k)!r}, here {v!r}" for k, v in here.items() if device.get(k) != v
            ) or "the fields they have"
            raise ConfigError(
                f"on_miss='measure' is not accepted for latency table {self.table.path}: the configured device is "
                f"not the table's device ({differing}); accepted: on_miss='fail', or measure on the table's device"
            )

    def _measure_miss(self, entry: Entry) -> None:
        from nas_rl.latency.litert import LiteRTLatency

        header = self.table.header
        model = LiteRTLatency(device=self.backend, conversion=header.get("conversion", "saved_model"),
                              **header["layer_timing"])  # fmt: skip
        try:
            self.table.append(measure_entry(entry, model))
        finally:
            clear_keras_session()

    def _miss_message(self, entry: Entry, arch: ArchSpec) -> str:
        try:
            total = len(space_entries(self.space, self.resolution))
            holds = f"it holds {len(self.table.entries)} of the {total} entries of this search space"
        except ConfigError:
            holds = f"it holds {len(self.table.entries)} entries"
        return (
            f"latency table {self.table.path} has no entry {entry.key} (needed by {arch.to_string()}); {holds}. "
            "Accepted: a complete table (run nas-rl-profile again with the same settings: it resumes), or "
            "latency.on_miss=measure to measure missing entries on this device"
        )


def fit_overhead(model: LookupTableLatency, overhead: str) -> tuple[float, float]:
    """``(intercept, slope)`` of measured = intercept + slope * (sum of entries) on the table's samples.

    Samples with an entry the table lacks are left out; with too few samples the fit falls back to a simpler
    form (``linear`` needs 3, ``constant`` 1), down to ``(0, 1)``.
    """
    if overhead == "none":
        return 0.0, 1.0
    sums, measured = [], []
    for arch, row in model.table.network_archs(model.space):
        keys = [entry.key for entry in network_entries(arch, model.resolution)]
        stats = [model.table.stats(key) for key in keys]
        if all(s is not None for s in stats):
            sums.append(sum(s.median_ms for s in stats if s is not None))
            measured.append(float(row["median_ms"]))
    x, y = np.asarray(sums), np.asarray(measured)
    if overhead == "linear" and len(x) >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        return float(intercept), float(slope)
    if len(x) >= 1:
        return float(np.median(y - x)), 1.0
    return 0.0, 1.0


def _check_choice(key: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is not accepted: use {', '.join(repr(a) for a in accepted)}")


def measure_entry(entry: Entry, model: LiteRTLatency) -> dict[str, Any]:
    """The table row of one entry: its statistics, or the reason it could not be measured.

    :raises DeviceLost: the device stopped answering (that is no property of the entry: nothing is written).
    """
    start = time.perf_counter()
    row: dict[str, Any] = {"row": "entry", "key": entry.key, "config": entry.describe()}
    row["macs"], row["params"] = entry_cost(entry)
    try:
        row.update(model.measure_keras(entry_model(entry)).as_dict())
    except DeviceLost:
        raise
    except EvaluationFailed as failure:
        row["error"] = str(failure)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row
