"""A real Android phone over adb: runs only when NAS_RL_ADB_SERIAL names one (``adb devices`` lists it).

The phone needs LiteRT's ``benchmark_model`` at NAS_RL_ADB_BENCHMARK_MODEL (default
``/data/local/tmp/benchmark_model``), pushed and made executable (README: "Measure on your phone").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nas_rl.devices.adb import AdbPhone
from nas_rl.latency.latency_table import LatencyTable
from nas_rl.latency.litert import LiteRTLatency
from nas_rl.latency.lut import LookupTableLatency
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.tools.profile import profile_device

SERIAL = os.environ.get("NAS_RL_ADB_SERIAL")
BINARY = os.environ.get("NAS_RL_ADB_BENCHMARK_MODEL", "/data/local/tmp/benchmark_model")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SERIAL, reason="no phone: set NAS_RL_ADB_SERIAL to a serial `adb devices` lists"),
]

MICRO = dict(resolution=16, num_classes=10, in_channels=1, stem_channels=8, head_channels=16, base_widths=(16,),
             base_repeats=(1,), strides=(1,), width_multipliers=(1.0,), layer_offsets=(0,), kernels=(3,),
             se_ratios=(0.0,))  # fmt: skip
QUICK = {"warmup_min_runs": 1, "warmup_min_seconds": 0.05, "min_runs": 10, "min_seconds": 0.05}


def test_the_phone_is_described_and_measures_a_network() -> None:
    phone = AdbPhone(serial=SERIAL, benchmark_model=BINARY)
    spec = phone.describe()
    assert spec.cpu_model != "unknown" and spec.runtime.startswith("benchmark_model ")
    model = LiteRTLatency(device=phone, resolution=16, in_channels=1, conversion="frozen_graph", **QUICK)
    stats = model.measure(MnasNetSpace(**MICRO).sample_arch(np.random.default_rng(0)))
    assert stats.runs >= 10 and 0 < stats.min_ms <= stats.median_ms <= stats.max_ms


def test_a_lookup_table_is_profiled_on_the_phone_and_answers_for_it(tmp_path: Path) -> None:
    phone = AdbPhone(serial=SERIAL, benchmark_model=BINARY, cooldown_s=0.1)
    space = MnasNetSpace(**MICRO)
    result = profile_device(space, phone, 16, tmp_path / "phone.jsonl", networks=2, layer_timing=QUICK,
                            network_timing=QUICK, progress=False)  # fmt: skip
    table = LatencyTable.read(result.table.path)
    assert len(table.entries) == 6 and table.header["device"] == phone.describe().as_dict()
    lut = LookupTableLatency(space, 16, result.table.path, device=phone)
    assert lut.latency_ms(space.sample_archs(3, 1)[0]) > 0
