"""``nas-rl-profile device=adb`` builds a latency table on the phone, resumably: the same profiler, another backend.

The phone is ``AdbDouble`` (its ``benchmark_model`` runs the pushed flatbuffers in the real LiteRT interpreter and
prints benchmark_model's output, which the backend parses). A one-block space at 16x16: 6 entries, short timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas_rl.config import build
from nas_rl.devices.adb import AdbPhone
from nas_rl.errors import ConfigError
from nas_rl.latency.latency_table import LatencyTable
from nas_rl.latency.layers import network_entries
from nas_rl.latency.lut import LookupTableLatency
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.tools.profile import run_profile
from tests.helpers.doubles import AdbDouble

pytestmark = pytest.mark.slow  # real TFLite conversion and LiteRT runs (through the double)

RESOLUTION = 16
MICRO = dict(resolution=RESOLUTION, num_classes=10, in_channels=1, stem_channels=8, head_channels=16,
             base_widths=(16,), base_repeats=(1,), strides=(1,), width_multipliers=(1.0,), layer_offsets=(0,),
             kernels=(3,), se_ratios=(0.0,))  # fmt: skip
SPACE = [f"search_space.{key}={list(value) if isinstance(value, tuple) else value}" for key, value in MICRO.items()]
QUICK = [f"profile.{phase}.{key}={value}" for phase in ("layer_timing", "network_timing")
         for key, value in (("warmup_min_seconds", 0.0), ("min_runs", 5), ("min_seconds", 0.01))]  # fmt: skip
DOUBLE = "+device.client={_target_: tests.helpers.doubles.AdbDouble}"


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        return hydra_compose(name, overrides=overrides)


@pytest.fixture(scope="module")
def phone_table(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``nas-rl-profile device=adb``, the phone unplugged after 3 measurements, then the same command again."""
    path = tmp_path_factory.mktemp("phone") / "phone.jsonl"
    overrides = [*SPACE, f"resolution={RESOLUTION}", *QUICK, "device=adb", DOUBLE, f"profile.table={path}",
                 "profile.networks=1", "profile.passes=1", "profile.progress=false"]  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        run_profile(compose("profile", [*overrides, "+device.client.unplug_after_runs=3"]))
    before = path.read_text()
    result = run_profile(compose("profile", overrides))
    return {"path": path, "lost": str(raised.value), "before": before, "result": result}


def test_a_phone_unplugged_mid_profile_stops_it_in_one_line_keeping_what_was_measured(phone_table: dict) -> None:
    message = phone_table["lost"]
    assert "\n" not in message and "adb device double-1 stopped answering while running benchmark_model" in message
    assert "run the same command again to resume" in message
    rows = [json.loads(line) for line in phone_table["before"].splitlines()[1:]]
    assert len(rows) == 3 and all("error" not in row and row["median_ms"] > 0 for row in rows)


def test_profiling_again_resumes_and_completes_the_phones_table(phone_table: dict) -> None:
    result, path = phone_table["result"], phone_table["path"]
    assert result.entries_measured == 3 and result.networks_measured == 1  # only what was missing
    assert path.read_text().startswith(phone_table["before"])
    table = LatencyTable.read(path)
    assert len(table.entries) == 6 and len(table.network_samples()) == 1
    assert table.header["device"] == AdbPhone(client=AdbDouble()).describe().as_dict()
    assert all(row["temperature_c"] == 41.5 and row["runs"] >= 5 for row in table.entries.values())


def test_the_phones_table_serves_a_search_on_the_phone_and_is_refused_on_this_cpu(phone_table: dict) -> None:
    path = phone_table["path"]
    arch = MnasNetSpace(**MICRO).sample_archs(4, 1)[0]
    cfg = compose("config", [*SPACE, "device=adb", DOUBLE, "latency=lut", f"latency.path={path}"])
    assert build(cfg.latency, "latency").latency_ms(arch) > 0
    host = compose("config", [*SPACE, "latency=lut", f"latency.path={path}"])
    with pytest.raises(ConfigError, match="device: table has 'android', this run asks for 'host-cpu'"):
        build(host.latency, "latency")


def test_an_entry_missing_from_the_phones_table_is_measured_on_the_phone(phone_table: dict, tmp_path: Path) -> None:
    arch = MnasNetSpace(**MICRO).sample_archs(5, 1)[0]
    missing = network_entries(arch, RESOLUTION)[1].key
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line for line in phone_table["path"].read_text().splitlines(True) if missing not in line))
    double = AdbDouble()
    model = LookupTableLatency(MnasNetSpace(**MICRO), RESOLUTION, path, device=AdbPhone(client=double),
                               on_miss="measure", overhead="none")  # fmt: skip
    assert model.latency_ms(arch) > 0
    assert any("--graph=" in command for command in double.commands)  # measured there, not here
    assert LatencyTable.read(path).entries[missing]["temperature_c"] == 41.5
