"""Profile a device for a search space: measure every entry of its lookup table, then whole-network samples.

Each entry (:mod:`nas_rl.latency.layers`) is built as its own small Keras model, converted and timed on the
configured device (the ``device`` group: this computer's CPU through LiteRT, or a phone over adb through
``benchmark_model``: the same profiler, only the backend differs) with short benchmark settings; then ``networks`` architectures drawn from the space are measured whole,
with full settings, to fit the per-network overhead and to train learned predictors. Every measurement is
appended to the table file as it completes, so a killed run resumes where it stopped; tqdm shows progress and
the time left.

Why one conversion per entry: conversion dominates (about 0.4-0.8 s per entry here, against 0.25 s of timing).
Converting several entries in one flatbuffer (a multi-signature SavedModel, one signature per entry, each
timed through its own subgraph) gives the same latencies but converts slower than one entry at a time (22 s
for 16 entries); what helps is skipping the SavedModel export (``conversion="frozen_graph"``, about 2x).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nas_rl._util import clear_keras_session
from nas_rl.devices.base import Backend, DeviceLost, DeviceSpec, describe
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.device import resolve_backend
from nas_rl.latency.latency_table import (
    LatencyTable,
    TableTarget,
    check_target,
    table_path,
    table_target,
)
from nas_rl.latency.layers import Entry, space_entries
from nas_rl.latency.litert import LiteRTLatency
from nas_rl.latency.lut import measure_entry

#: Benchmark settings of one entry: a short warm-up and 0.2 s of timed runs keep the table within minutes.
#: Runs during which the OS descheduled the thread are left out (see ``benchmark_tflite``): a profile takes
#: many minutes, and one busy moment on a shared machine would otherwise inflate an entry for good.
LAYER_TIMING = {"warmup_min_runs": 1, "warmup_min_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2,
                "drop_preempted": True}  # fmt: skip
#: Benchmark settings of a whole network: those of ``benchmark_model`` (and of ``latency=litert``).
NETWORK_TIMING = {"warmup_min_runs": 1, "warmup_min_seconds": 0.5, "min_runs": 50, "min_seconds": 1.0,
                  "drop_preempted": True, "rounds": 3}  # fmt: skip
#: Entries measured between two clears of Keras' global state (a clear costs as much as a conversion).
CLEAR_EVERY = 20


@dataclass
class ProfileResult:
    """What a profiling run left in the table, and what it took."""

    table: LatencyTable
    entries_total: int
    entries_measured: int
    networks_measured: int
    seconds: float


def profile_device(
    space: Any,
    device: Backend | DeviceSpec,
    resolution: int,
    path: str | Path | None = None,
    directory: str | Path = "luts",
    networks: int = 30,
    network_seed: int = 0,
    layer_timing: dict[str, Any] | None = None,
    network_timing: dict[str, Any] | None = None,
    conversion: str = "frozen_graph",
    progress: bool = True,
    passes: int = 1,
    refine_min_ms: float = 0.0,
) -> ProfileResult:
    """Measure what the table at ``path`` still lacks for ``space`` on ``device``; create the file if needed.

    :param space: a factorized search space (``stage_choices()``).
    :param device: the device to measure on (a backend; a :class:`DeviceSpec` stands for this computer's CPU).
    :param resolution: deployment input height = width.
    :param path: the table file; ``None``: ``directory`` / the default name of these settings.
    :param networks: whole-network samples the table should hold (draws 0 .. networks - 1 of ``network_seed``).
    :param layer_timing: benchmark settings of an entry (default :data:`LAYER_TIMING`).
    :param network_timing: benchmark settings of a whole network (default :data:`NETWORK_TIMING`).
    :param conversion: how models reach the converter (see :data:`nas_rl.latency.litert.CONVERSIONS`).
    :param passes: measure the entries of at least ``refine_min_ms``, and every whole network, this many times
        in all, in separate passes (minutes apart); the table keeps the lowest median. Large layers are the ones
        a busy neighbour slows most (they live in the shared cache), and they make most of a network's latency;
        the whole networks are what the overhead and the predictors are fitted to, so a slow moment during one
        of them would bias every prediction.
    :param refine_min_ms: the latency from which an entry is measured ``passes`` times.
    :raises ConfigError: an existing file at ``path`` was built for other settings, or on another device (named in
        the message).
    :raises DeviceLost: the device stopped answering; the table keeps every row written so far.
    """
    start = time.perf_counter()
    for key, value, lowest in (("networks", networks, 0), ("passes", passes, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise ConfigError(f"{key}={value!r} is not accepted: use an integer >= {lowest}")
    layer_timing = {**LAYER_TIMING, **(layer_timing or {})}
    network_timing = {**NETWORK_TIMING, **(network_timing or {})}
    backend = resolve_backend(device)
    target = table_target(space, resolution, backend.name, backend.threads, backend.precision)
    path = table_path(path, directory, target)
    header = {
        "device": backend.describe().as_dict(),
        "input_shape": list(target.input_shape),
        "space": target.space,
        "layer_timing": layer_timing,
        "network_timing": network_timing,
        "conversion": conversion,
        "network_seed": int(network_seed),
    }
    table = _open_for_profiling(path, header, target)
    entries = space_entries(space, resolution)
    todo = [entry for entry in entries if entry.key not in table.entries]
    layer_model = LiteRTLatency(device=backend, conversion=conversion, **layer_timing)
    measured = _measure_entries(table, todo, layer_model, "entries", progress)
    for number in range(2, passes + 1):
        again = [e for e in entries if table.measurements.get(e.key, 0) < number and _costs(table, e, refine_min_ms)]
        measured += _measure_entries(table, again, layer_model, f"pass {number}", progress)
    drawn = space.sample_archs(network_seed, networks)
    network_model = LiteRTLatency(device=backend, resolution=resolution, in_channels=target.input_shape[3],
                                  conversion=conversion, **network_timing)  # fmt: skip
    networks_measured = 0
    for number in range(1, passes + 1):
        unmeasured = [index for index in range(networks) if table.network_measurements.get(index, 0) < number]
        label = "networks" if number == 1 else f"networks, pass {number}"
        for index in tqdm(unmeasured, desc=label, unit="net", disable=not progress, dynamic_ncols=True):
            table.append(measure_network(index, drawn[index], network_model))
        networks_measured += len(unmeasured)
    return ProfileResult(table, len(entries), measured, networks_measured, time.perf_counter() - start)


def _costs(table: LatencyTable, entry: Entry, refine_min_ms: float) -> bool:
    stats = table.stats(entry.key)
    return stats is not None and stats.median_ms >= refine_min_ms


def _measure_entries(
    table: LatencyTable, entries: list[Entry], model: LiteRTLatency, label: str, progress: bool
) -> int:
    for count, entry in enumerate(tqdm(entries, desc=label, unit="entry", disable=not progress, dynamic_ncols=True)):
        table.append(measure_entry(entry, model))
        if count % CLEAR_EVERY == CLEAR_EVERY - 1:
            clear_keras_session()  # Keras' global state grows with every model; clearing costs ~0.3 s (a gc)
    clear_keras_session()
    return len(entries)


def _open_for_profiling(path: Path, header: dict[str, Any], target: TableTarget) -> LatencyTable:
    if not path.exists():
        return LatencyTable.create(path, header)
    table = LatencyTable.read(path, repair=True)
    check_target(table, target)
    for key in ("device", "layer_timing", "network_timing", "conversion", "network_seed"):
        have, want = table.header.get(key), header[key]
        if have != want:
            shown = (describe(have), describe(want)) if key == "device" and isinstance(have, dict) else (have, want)
            raise ConfigError(
                f"latency table {path} was profiled with {key}={shown[0]!r}; this run has {key}={shown[1]!r}. "
                "Accepted: the same settings to resume it, or another table path (profile.table=...) for a new table"
            )
    return table


def measure_network(index: int, arch: Any, model: LiteRTLatency) -> dict[str, Any]:
    """The table row of the ``index``-th drawn architecture, measured whole.

    :raises DeviceLost: the device stopped answering (nothing is written).
    """
    start = time.perf_counter()
    row: dict[str, Any] = {"row": "network", "index": index, "arch": arch.to_string()}
    try:
        row.update(model.measure(arch).as_dict())
    except DeviceLost:
        raise
    except EvaluationFailed as failure:
        row["error"] = str(failure)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def run_profile(cfg: Any) -> ProfileResult:
    """``nas-rl-profile``: build search space and device from the composed config, profile, print a summary."""
    from nas_rl.config import build

    space = build(cfg.search_space, "search_space")
    device = resolve_backend(build(cfg.device, "device"))
    print(f"profiling {device.describe().describe()} for {type(space).__name__} at {cfg.resolution}x{cfg.resolution}")
    try:
        result = _profile(cfg, space, device)
    except DeviceLost as lost:
        raise ConfigError(
            f"{lost}. The table keeps every measurement written so far: run the same command again to resume"
        ) from None
    table = result.table
    failed = sum("error" in row for row in table.entries.values())
    print(
        f"table {table.path}: {len(table.entries)}/{result.entries_total} entries ({failed} failed), "
        f"{len(table.network_samples())} whole-network samples; this run measured {result.entries_measured} "
        f"entries and {result.networks_measured} networks in {result.seconds:.0f} s"
    )
    return result


def _profile(cfg: Any, space: Any, device: Backend) -> ProfileResult:
    settings = cfg.profile
    return profile_device(
        space,
        device,
        int(cfg.resolution),
        path=settings.table,
        directory=settings.directory,
        networks=int(settings.networks),
        network_seed=int(settings.network_seed),
        layer_timing=dict(settings.layer_timing),
        network_timing=dict(settings.network_timing),
        conversion=str(settings.conversion),
        progress=bool(settings.progress),
        passes=int(settings.passes),
        refine_min_ms=float(settings.refine_min_ms),
    )
