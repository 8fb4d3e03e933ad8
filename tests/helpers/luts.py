"""Synthetic latency tables: made-up latencies of every entry of a space, written in the profiler's format."""

from __future__ import annotations

import json
from pathlib import Path

from nas_rl.latency.device import host_cpu
from nas_rl.latency.latency_table import LatencyTable, table_target
from nas_rl.latency.layers import network_entries, space_entries
from nas_rl.spaces.mnasnet import MnasNetSpace

RESOLUTION = 16
#: The synthetic device: whole networks cost 1.1 x the sum of their entries plus 0.05 ms.
SLOPE, INTERCEPT = 1.1, 0.05


def small_space(**changes) -> MnasNetSpace:
    """tests/helpers/tiny.py's tiny space (seven one-layer blocks of 8-32 channels), at resolution 16."""
    settings = dict(resolution=RESOLUTION, num_classes=10, in_channels=1, stem_channels=8, head_channels=32,
                    base_widths=(8, 8, 8, 16, 16, 24, 32), base_repeats=(1, 1, 1, 1, 1, 1, 1))  # fmt: skip
    return MnasNetSpace(**{**settings, **changes})


def entry_ms(key: str) -> float:
    """Made-up latency of an entry: deterministic, positive, different per key."""
    return 0.001 + (sum(key.encode()) % 97) / 10_000


def write_synthetic_table(path: Path, space: MnasNetSpace, networks: int = 30, precision: str = "fp32",
                          skip: tuple[str, ...] = (), resolution: int = RESOLUTION) -> LatencyTable:  # fmt: skip
    """A complete table of ``space`` (but for the ``skip`` keys) and ``networks`` samples of the synthetic device."""
    device = host_cpu(precision=precision)
    target = table_target(space, resolution, device.name, device.threads, device.precision)
    header = {"device": device.as_dict(), "input_shape": list(target.input_shape), "space": target.space,
              "layer_timing": {}, "network_timing": {}, "conversion": "frozen_graph", "network_seed": 0}  # fmt: skip
    rows = []
    for entry in space_entries(space, resolution):
        if entry.key in skip:
            continue
        ms = entry_ms(entry.key)
        macs = entry.layer.in_channels * entry.layer.out_channels * entry.height * entry.width
        stats = {"median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "max_ms": ms, "runs": 20}
        rows.append({"row": "entry", "key": entry.key, "config": entry.describe(), "macs": macs, "params": macs // 10,
                     **stats})  # fmt: skip
    for index, arch in enumerate(space.sample_archs(0, networks)):
        ms = INTERCEPT + SLOPE * sum(entry_ms(e.key) for e in network_entries(arch, resolution))
        rows.append({"row": "network", "index": index, "arch": arch.to_string(), "median_ms": ms, "mean_ms": ms,
                     "std_ms": 0.0, "min_ms": ms, "max_ms": ms, "runs": 50})  # fmt: skip
    LatencyTable.create(path, header)
    with open(path, "a") as handle:  # one write: the profiler's per-row fsync is for crashes, not tests
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return LatencyTable.read(path)
