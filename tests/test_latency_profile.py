"""Profiling on the real LiteRT path: a one-block space at 16x16 (6 table entries), short timings.

Everything but the Keras shape check is slow (real LiteRT measurement or a subprocess run of the entry point).
Covers: profiling end to end and resuming after an interruption (and after a half-written last row), lookups
on the measured table, measuring a miss into the table, int8 tables, the report on a few architectures, and the
``nas-rl-profile`` entry point (including its refusal of another device's table).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas_rl.latency.device import host_cpu
from nas_rl.latency.latency_table import LatencyTable
from nas_rl.latency.layers import entry_model, network_entries, space_entries
from nas_rl.latency.lut import LookupTableLatency
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.tools.profile import profile_device

RESOLUTION = 16
#: One block of one layer, 8 -> 16 channels: stem, the four conv ops, head = 6 entries; 4 distinct networks.
MICRO = dict(resolution=RESOLUTION, num_classes=10, in_channels=1, stem_channels=8, head_channels=16,
             base_widths=(16,), base_repeats=(1,), strides=(1,), width_multipliers=(1.0,), layer_offsets=(0,),
             kernels=(3,), se_ratios=(0.0,))  # fmt: skip
MICRO_OVERRIDES = [
    f"resolution={RESOLUTION}", "search_space.num_classes=10", "search_space.in_channels=1",
    "search_space.stem_channels=8", "search_space.head_channels=16", "search_space.base_widths=[16]",
    "search_space.base_repeats=[1]", "search_space.strides=[1]", "search_space.width_multipliers=[1.0]",
    "search_space.layer_offsets=[0]", "search_space.kernels=[3]", "search_space.se_ratios=[0.0]",
]  # fmt: skip
LAYER_TIMING = {"warmup_min_seconds": 0.01, "min_runs": 5, "min_seconds": 0.02}
NETWORK_TIMING = {"warmup_min_seconds": 0.02, "min_runs": 10, "min_seconds": 0.05}
QUICK_OVERRIDES = [f"profile.layer_timing.{k}={v}" for k, v in LAYER_TIMING.items()] + [
    f"profile.network_timing.{k}={v}" for k, v in NETWORK_TIMING.items()
]


def micro_space() -> MnasNetSpace:
    return MnasNetSpace(**MICRO)


def profile(path: Path, networks: int = 3, precision: str = "fp32", passes: int = 1):
    return profile_device(micro_space(), host_cpu(precision=precision), RESOLUTION, path, networks=networks,
                          layer_timing=LAYER_TIMING, network_timing=NETWORK_TIMING, progress=False, passes=passes,
                          refine_min_ms=0.0)  # fmt: skip


class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Profile, interrupted after 3 entries with a half-written row left behind (a kill), then resumed with a
    second pass over every entry."""
    import nas_rl.tools.profile as profile_module

    path = tmp_path_factory.mktemp("tables") / "micro.jsonl"
    real_measure, calls = profile_module.measure_entry, []

    def measure_three(entry, model):
        if len(calls) == 3:
            raise _Interrupt
        calls.append(entry.key)
        return real_measure(entry, model)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(profile_module, "measure_entry", measure_three)
        with pytest.raises(_Interrupt):
            profile(path)
    before = path.read_text()
    with open(path, "a") as handle:
        handle.write('{"row": "entry", "key": "layer:half-wri')
    result = profile(path, passes=2)
    return {"path": path, "before": before, "first_keys": calls, "result": result}


@pytest.mark.slow  # real LiteRT measurement
def test_profile_measures_every_entry_and_the_network_samples(interrupted_then_resumed: dict) -> None:
    table = LatencyTable.read(interrupted_then_resumed["path"])
    entries = space_entries(micro_space(), RESOLUTION)
    assert len(entries) == 6 and set(table.entries) == {e.key for e in entries}
    assert all(row["median_ms"] > 0 and row["runs"] >= 5 and row["macs"] > 0 for row in table.entries.values())
    assert len(table.network_samples()) == 3 and all(row["runs"] >= 10 for row in table.network_samples())
    header = table.header
    assert header["device"] == host_cpu().as_dict() and header["input_shape"] == [1, RESOLUTION, RESOLUTION, 1]
    assert header["space"] == micro_space().fingerprint() and header["layer_timing"]["min_seconds"] == 0.02


@pytest.mark.slow  # real LiteRT measurement
def test_resumed_profile_keeps_what_was_measured_and_measures_only_the_rest(interrupted_then_resumed: dict) -> None:
    run = interrupted_then_resumed
    assert run["result"].entries_measured == 6 - 3 + 6 and run["result"].networks_measured == 3 + 3  # + 2nd pass
    text = run["path"].read_text()
    assert text.startswith(run["before"]) and "half-wri" not in text  # the partial row was cut, nothing redone
    assert [json.loads(line)["key"] for line in run["before"].splitlines()[1:]] == run["first_keys"]
    table = LatencyTable.read(run["path"])
    assert set(table.measurements.values()) == {2} and table.network_measurements == {0: 2, 1: 2, 2: 2}
    rows = [json.loads(line) for line in text.splitlines()[1:]]
    for index, sample in table.networks.items():  # the quieter of the two passes is the sample
        assert sample["median_ms"] == min(r["median_ms"] for r in rows if r["row"] == "network" and r["index"] == index)
    again = profile(run["path"], passes=2)
    assert again.entries_measured == 0 and again.networks_measured == 0


def test_entry_models_have_the_sizes_the_table_assumes() -> None:
    space = MnasNetSpace(**{**MICRO, "base_widths": (16, 24), "base_repeats": (1, 2), "strides": (2, 2)})
    for arch in space.sample_archs(0, 2):
        for entry in network_entries(arch, 15):  # odd sizes: stride-2 rounding must agree with Keras
            output = entry_model(entry).outputs[0].shape
            if entry.kind != "head":
                assert tuple(output[1:3]) == entry.output_size, entry.key


@pytest.mark.slow  # real LiteRT measurement
def test_lut_on_a_measured_table_and_measuring_a_miss_into_it(interrupted_then_resumed: dict, tmp_path: Path) -> None:
    source = interrupted_then_resumed["path"]
    arch = micro_space().sample_archs(5, 1)[0]
    model = LookupTableLatency(micro_space(), RESOLUTION, source)
    assert model.latency_ms(arch) > 0 and model.coefficients != (0.0, 1.0)
    missing = network_entries(arch, RESOLUTION)[1].key
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line for line in source.read_text().splitlines(True) if missing not in line))
    measuring = LookupTableLatency(micro_space(), RESOLUTION, path, on_miss="measure", overhead="none")
    assert measuring.latency_ms(arch) > 0
    assert LatencyTable.read(path).stats(missing).median_ms > 0  # written to the file for the next run


@pytest.mark.slow  # real LiteRT measurement
def test_int8_table_is_measured_quantized_and_refused_for_fp32(tmp_path: Path) -> None:
    from nas_rl.errors import ConfigError

    result = profile(tmp_path / "int8.jsonl", networks=1, precision="int8")
    table = result.table
    assert table.header["device"]["precision"] == "int8" and result.entries_measured == 6
    assert all("error" not in row and row["median_ms"] > 0 for row in table.entries.values())
    arch = micro_space().sample_archs(3, 1)[0]
    assert LookupTableLatency(micro_space(), RESOLUTION, table.path, precision="int8").latency_ms(arch) > 0
    with pytest.raises(ConfigError, match="precision: table has 'int8', this run asks for 'fp32'"):
        LookupTableLatency(micro_space(), RESOLUTION, table.path)


@pytest.mark.slow  # real LiteRT measurement
def test_report_compares_every_model_on_held_out_architectures(interrupted_then_resumed: dict, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module

    from nas_rl.tools.latency_report import run_report

    overrides = MICRO_OVERRIDES + [
        f"table={interrupted_then_resumed['path']}", "models.predictor.min_samples=3", "report.samples=3",
        "report.passes=2", "report.progress=false", "reference.min_seconds=0.05", "reference.warmup_min_seconds=0.02",
    ]  # fmt: skip
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("latency_report", overrides=overrides)
    scores = run_report(cfg, tmp_path)
    assert [s["model"] for s in scores] == ["lut", "predictor", "flops"]
    assert all(s["n"] == 3 and 0 <= s["within_10pct"] <= 1 and s["mape_pct"] >= 0 for s in scores)
    for name in ("report.csv", "report.md", "predictions.csv", "repeatability.csv", "predicted_vs_measured.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "Kendall" in (tmp_path / "report.md").read_text()
    predictions = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 4 and "lut_ms" in predictions[0] and "measured_ms" in predictions[0]
    with open(tmp_path / "predictions.csv", newline="") as handle:
        measured = [(float(r["measured_ms"]), float(r["pass1_ms"]), float(r["pass2_ms"])) for r in csv.DictReader(handle)]
    assert all(kept == min(first, second) for kept, first, second in measured)
    assert len((tmp_path / "repeatability.csv").read_text().splitlines()) == 1 + 3
    assert "3 architectures measured twice" in (tmp_path / "report.md").read_text()
    # a killed report leaves predictions.partial.jsonl; either file lets a new report reuse the measurements
    (tmp_path / "predictions.csv").rename(tmp_path / "predictions.partial.csv")
    rows = [dict(zip(predictions[0].split(","), line.split(","))) for line in predictions[1:]]
    (tmp_path / "predictions.partial.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("latency_report", overrides=overrides + [f"report.reuse={tmp_path}"])
    again = run_report(cfg, tmp_path / "again")
    assert [s["rmse_ms"] for s in again] == pytest.approx([s["rmse_ms"] for s in scores])


@pytest.mark.slow  # a subprocess run of the entry point
def test_profile_entry_point_writes_a_table_and_refuses_another_devices(tmp_path: Path) -> None:
    table = tmp_path / "cli.jsonl"
    command = [sys.executable, "-c", "from nas_rl.cli import profile_main; profile_main()", *MICRO_OVERRIDES,
               *QUICK_OVERRIDES, f"profile.table={table}", "profile.networks=1", "profile.progress=false",
               f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6/6 entries" in done.stdout and LatencyTable.read(table).network_samples()
    refused = subprocess.run([*command, "device.threads=2"], capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert "\n" not in message and str(table) in message and "threads: table has 1, this run asks for 2" in message


@pytest.mark.slow  # a subprocess run of the entry point
def test_profile_entry_point_names_valid_devices_on_a_typo() -> None:
    command = [sys.executable, "-c", "from nas_rl.cli import profile_main; profile_main()", "device=host_gpu"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "device=host_gpu is not accepted: device is one of adb, host_cpu" in done.stderr
    assert "Traceback" not in done.stderr
