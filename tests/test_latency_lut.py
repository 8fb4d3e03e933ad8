"""Latency tables without measuring: the table file, lookups, misses, refusals, predictors and report metrics.

Tables here are synthetic (made-up latencies of every entry of a small space), so these tests take seconds and
never load TensorFlow; tests/test_latency_profile.py builds real ones through LiteRT.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.base import LatencyStats
from nas_rl.latency.device import host_cpu
from nas_rl.latency.flops_latency import FlopsLatency
from nas_rl.latency.latency_table import LatencyTable, table_target
from nas_rl.latency.layers import network_entries, space_entries
from nas_rl.latency.lut import LookupTableLatency
from nas_rl.latency.predictor import LatencyPredictor
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.tools.latency_report import (
    compare,
    held_out_architectures,
    markdown,
    repeatability,
    score,
    summarise,
)
from tests.helpers.luts import INTERCEPT, RESOLUTION, SLOPE, entry_ms, small_space, write_synthetic_table


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    return write_synthetic_table(tmp_path / "table.jsonl", small_space()).path


def lut(path: Path, space: MnasNetSpace | None = None, **kwargs) -> LookupTableLatency:
    return LookupTableLatency(space or small_space(), kwargs.pop("resolution", RESOLUTION), path, **kwargs)


# --- which entries a network has ----------------------------------------------------------------------------


def test_default_space_has_1380_distinct_entries_covering_every_sampled_network() -> None:
    space = MnasNetSpace(resolution=224)
    entries = space_entries(space, 224)
    keys = {entry.key for entry in entries}
    assert len(entries) == len(keys) == 1380  # 1376 layers, 1 stem, 3 heads (one per last-block width)
    for arch in space.sample_archs(7, 200):
        assert {entry.key for entry in network_entries(arch, 224)} <= keys


def test_entry_keys_normalise_skip_where_shapes_differ() -> None:
    with_skip = ArchSpec.from_string("ir_r1_k3_s2_e3_c16", stem_channels=8, head_channels=32, num_classes=10)
    without = ArchSpec.from_string("ir_r1_k3_s2_e3_c16_noskip", stem_channels=8, head_channels=32, num_classes=10)
    assert [e.key for e in network_entries(with_skip, 32)] == [e.key for e in network_entries(without, 32)]
    assert [e.key for e in network_entries(with_skip, 32)][1] == "layer:ir_k3_s2_e3_i8_o16_se0_nores@16x16"


def test_entry_costs_add_up_to_the_networks_multiply_adds() -> None:
    from nas_rl.latency.layers import entry_cost
    from nas_rl.models.flops import multiply_adds, parameter_count

    space = small_space(se_ratios=(0.25,))
    for arch in space.sample_archs(3, 1):
        costs = [entry_cost(entry) for entry in network_entries(arch, RESOLUTION)]
        assert sum(c[0] for c in costs) == multiply_adds(arch, RESOLUTION)
        assert sum(c[1] for c in costs) == parameter_count(arch)


# --- lookup ---------------------------------------------------------------------------------------------------


def test_lut_predicts_the_sum_of_entries_plus_the_fitted_overhead(table_file: Path) -> None:
    space = small_space()
    arch = space.sample_archs(123, 1)[0]
    total = sum(entry_ms(e.key) for e in network_entries(arch, RESOLUTION))
    assert lut(table_file, overhead="none").latency_ms(arch) == pytest.approx(total)
    model = lut(table_file)  # linear: recovers the synthetic device's slope and intercept
    assert model.coefficients == pytest.approx((INTERCEPT, SLOPE), rel=1e-6)
    stats = model.measure(arch)
    assert stats.median_ms == pytest.approx(INTERCEPT + SLOPE * total) and stats.runs == 0
    assert lut(table_file, overhead="constant").coefficients[1] == 1.0


def test_lut_fingerprint_and_pickle(table_file: Path) -> None:
    model = lut(table_file)
    fingerprint = model.fingerprint()
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert fingerprint["kind"] == "lut" and fingerprint["device"]["precision"] == "fp32"
    clone = pickle.loads(pickle.dumps(model))
    archs = small_space().sample_archs(5, 5)
    assert [clone.latency_ms(a) for a in archs] == [model.latency_ms(a) for a in archs]


def test_missing_entry_fails_with_how_to_complete_the_table(tmp_path: Path) -> None:
    space = small_space()
    arch = space.sample_archs(11, 1)[0]
    missing = network_entries(arch, RESOLUTION)[3].key
    path = write_synthetic_table(tmp_path / "t.jsonl", space, skip=(missing,)).path
    with pytest.raises(ConfigError) as raised:
        lut(path).latency_ms(arch)
    message = str(raised.value)
    assert str(path) in message and missing in message and "nas-rl-profile" in message and "on_miss=measure" in message
    assert f"of the {len(space_entries(space, RESOLUTION))} entries" in message


def test_entry_that_failed_to_profile_fails_the_architecture(tmp_path: Path) -> None:
    space = small_space()
    arch = space.sample_archs(12, 1)[0]
    key = network_entries(arch, RESOLUTION)[2].key
    path = write_synthetic_table(tmp_path / "t.jsonl", space, skip=(key,)).path
    LatencyTable.read(path).append({"row": "entry", "key": key, "config": {}, "error": "TFLite conversion failed: X"})
    with pytest.raises(EvaluationFailed, match="TFLite conversion failed: X"):
        lut(path).latency_ms(arch)


def test_on_miss_measure_refuses_a_table_of_another_computer(tmp_path: Path) -> None:
    table = write_synthetic_table(tmp_path / "t.jsonl", small_space())
    text = table.path.read_text().replace(json.dumps(host_cpu().cpu_model), json.dumps("Other CPU 9000"), 1)
    table.path.write_text(text)
    with pytest.warns(UserWarning, match="measured on another device"):  # lookups are allowed, knowingly
        assert lut(table.path, allow_other_device=True).latency_ms(small_space().sample_archs(1, 1)[0]) > 0
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="cpu_model: table 'Other CPU 9000'"):
        lut(table.path, on_miss="measure", allow_other_device=True)  # measuring here into it is not


def test_an_entry_measured_again_keeps_its_lowest_median(table_file: Path) -> None:
    table = LatencyTable.read(table_file)
    key = next(iter(table.entries))
    first = table.stats(key).median_ms
    row = {**table.entries[key], "median_ms": first / 2, "min_ms": first / 2}
    table.append({**row, "median_ms": first * 3})  # a measurement slowed by a busy neighbour: ignored
    table.append(row)
    table.append({"row": "entry", "key": key, "config": {}, "error": "LiteRT benchmark failed: later"})
    reread = LatencyTable.read(table_file)
    assert reread.stats(key).median_ms == first / 2 and reread.measurements[key] == 4


def test_a_network_measured_again_keeps_its_lowest_median_and_must_be_the_same_architecture(table_file: Path) -> None:
    table = LatencyTable.read(table_file)
    sample = table.networks[0]
    table.append({**sample, "median_ms": sample["median_ms"] * 2})  # a slowed second pass: ignored
    table.append({**sample, "median_ms": sample["median_ms"] / 2})
    reread = LatencyTable.read(table_file)
    assert reread.networks[0]["median_ms"] == sample["median_ms"] / 2 and reread.network_measurements[0] == 3
    assert reread.network_measurements[1] == 1 and len(reread.network_samples()) == 30
    with open(table_file, "a") as handle:
        handle.write(json.dumps({**sample, "arch": table.networks[1]["arch"]}) + "\n")
    with pytest.raises(ConfigError, match="is corrupt: ValueError: network 0 is"):
        LatencyTable.read(table_file)


# --- refusals: another device, threads, precision, input shape or space; bad files -----------------------------


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"device": "pixel-4"}, "device: table has 'host-cpu', this run asks for 'pixel-4'"),
        ({"threads": 4}, "threads: table has 1, this run asks for 4"),
        ({"precision": "int8"}, "precision: table has 'fp32', this run asks for 'int8'"),
        ({"resolution": 32}, "input_shape: table has [1, 16, 16, 1], this run asks for [1, 32, 32, 1]"),
        ({"space": small_space(kernels=(3, 7))}, "kernels=[3, 5] vs [3, 7]"),
        ({"space": small_space(in_channels=3)}, "in_channels=1 vs 3"),
    ],
)
def test_table_built_for_other_settings_is_refused_naming_both(table_file: Path, kwargs: dict, phrase: str) -> None:
    space = kwargs.pop("space", None)
    for make in (lut, lambda p, s, **k: LatencyPredictor(s or small_space(), k.pop("resolution", RESOLUTION), p, **k)):
        with pytest.raises(ConfigError) as raised:
            make(table_file, space, **dict(kwargs))
        assert phrase in str(raised.value) and str(table_file) in str(raised.value)


def test_training_resolution_of_the_space_does_not_matter(table_file: Path) -> None:
    assert lut(table_file, small_space(resolution=64)).latency_ms(small_space().sample_archs(2, 1)[0]) > 0


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (lambda text: text[:-20], "is a nas-rl latency table whose last line"),
        (lambda text: text.replace('"row": "entry"', '"row": "entry", "median_ms": }', 1), "line 2 is not JSON"),
        (lambda text: "", "is empty"),
        (lambda text: '{"hello": 1}\n' + text, "is not a nas-rl latency table"),
        (lambda text: text.replace('"median_ms": 0.', '"median_ms": -0.', 1), "corrupt"),
        (lambda text: text.replace('"version": 1', '"version": 99'), "format version 99"),
        (lambda text: text + '{"row": "mystery"}\n', "unknown row type 'mystery'"),
    ],
)
def test_corrupt_or_truncated_table_is_a_clear_error_naming_the_file(table_file: Path, damage, phrase: str) -> None:
    table_file.write_text(damage(table_file.read_text()))
    with pytest.raises(ConfigError) as raised:
        lut(table_file)
    assert phrase in str(raised.value) and str(table_file) in str(raised.value)


def test_missing_table_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist.*nas-rl-profile"):
        lut(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match=r"resolution=None"):
        LookupTableLatency(small_space(), None, tmp_path / "nope.jsonl")


def test_default_path_is_the_name_the_profiler_gives(tmp_path: Path) -> None:
    space = small_space()
    target = table_target(space, RESOLUTION, "host-cpu", 1, "fp32")
    write_synthetic_table(tmp_path / target.file_name(), space)
    assert target.file_name().startswith("host-cpu-fp32-1t-mnasnet-16x16x1-")
    assert LookupTableLatency(space, RESOLUTION, directory=tmp_path).table.path == tmp_path / target.file_name()


# --- learned predictor and FLOPs baseline ------------------------------------------------------------------------


@pytest.mark.parametrize("regressor", ["ridge", "linear", "gbr"])
def test_predictor_learns_the_synthetic_device(table_file: Path, regressor: str) -> None:
    model = LatencyPredictor(small_space(), RESOLUTION, table_file, regressor=regressor, log=regressor != "gbr")
    held_out = small_space().sample_archs(99, 20)
    sums = [sum(entry_ms(e.key) for e in network_entries(arch, RESOLUTION)) for arch in held_out]
    measured = INTERCEPT + SLOPE * np.array(sums)
    predicted = np.array([model.latency_ms(a) for a in held_out])
    assert np.median(np.abs(predicted / measured - 1)) < (0.05 if regressor != "gbr" else 0.15)
    fingerprint = model.fingerprint()
    assert fingerprint["kind"] == "predictor" and fingerprint["samples"] == 30 and fingerprint["regressor"] == regressor
    assert json.loads(json.dumps(fingerprint)) == fingerprint


def test_predictor_refuses_too_few_samples_unknown_regressors_and_features(tmp_path: Path) -> None:
    path = write_synthetic_table(tmp_path / "t.jsonl", small_space(), networks=4).path
    with pytest.raises(ConfigError, match="has 4 whole-network samples.*profile.networks="):
        LatencyPredictor(small_space(), RESOLUTION, path)
    with pytest.raises(ConfigError, match="regressor='svm'.*gbr, linear, ridge"):
        LatencyPredictor(small_space(), RESOLUTION, path, regressor="svm", min_samples=2)
    with pytest.raises(ConfigError, match="features="):
        LatencyPredictor(small_space(), RESOLUTION, path, features=["lut_ms", "colour"], min_samples=2)
    assert LatencyPredictor(small_space(), RESOLUTION, path, min_samples=4).latency_ms(
        small_space().sample_archs(1, 1)[0]) > 0  # fmt: skip


def test_flops_baseline_is_macs_times_a_fitted_constant(tmp_path: Path) -> None:
    from nas_rl.models.flops import multiply_adds

    table_file = write_synthetic_table(tmp_path / "t.jsonl", small_space(), networks=4).path
    arch = small_space().sample_archs(5, 1)[0]
    given = FlopsLatency(RESOLUTION, ms_per_mac=1e-6)
    assert given.latency_ms(arch) == pytest.approx(multiply_adds(arch, RESOLUTION) * 1e-6)
    fitted = FlopsLatency(RESOLUTION, space=small_space(), path=table_file)
    table = LatencyTable.read(table_file)
    samples = table.network_archs(small_space())
    # fitted on the multiply-adds the table's entries record (made up here, torch's count in real tables)
    macs = np.array([sum(table.entries[e.key]["macs"] for e in network_entries(a, RESOLUTION)) for a, _ in samples])
    measured = np.array([row["median_ms"] for _, row in samples])
    assert fitted.ms_per_mac == pytest.approx(macs @ measured / (macs @ macs))
    assert fitted.fingerprint()["kind"] == "flops"
    with pytest.raises(ConfigError, match="ms_per_mac=-1"):
        FlopsLatency(RESOLUTION, ms_per_mac=-1)


# --- report --------------------------------------------------------------------------------------------------


def test_score_metrics() -> None:
    measured = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.04, 2.3, 2.9, 4.0])
    metrics = score(predicted, measured)
    assert metrics["within_5pct"] == 0.75 and metrics["within_10pct"] == 0.75
    assert metrics["mape_pct"] == pytest.approx(100 * (0.04 + 0.15 + 1 / 30 + 0) / 4)
    assert metrics["rmse_ms"] == pytest.approx(np.sqrt((0.04**2 + 0.3**2 + 0.1**2) / 4))
    assert metrics["kendall_tau"] == 1.0
    rows = [{"measured_ms": m, "a_ms": p, "a_us": 3.0} for m, p in zip(measured, predicted)]
    table = markdown(summarise(["a"], rows))
    assert "| a | 4 | 75% | 75% |" in table and "| 1.000 |" in table


class ScriptedReference:
    """Test double of LiteRTLatency's convert/benchmark: each timing of a flatbuffer returns the next of its
    scripted medians, and every call is recorded."""

    def __init__(self, medians: dict[str, list[float]]) -> None:
        self.medians, self.converted, self.timed = medians, [], []

    def convert(self, arch: ArchSpec) -> bytes:
        self.converted.append(arch.to_string())
        return arch.to_string().encode()

    def benchmark(self, model_bytes: bytes) -> LatencyStats:
        arch = model_bytes.decode()
        self.timed.append(arch)
        return LatencyStats(self.medians[arch][self.timed.count(arch) - 1], 0.0, 0.1, 0.0, 0.0, 50)


def test_report_times_every_architecture_once_per_pass_and_keeps_the_lowest_median(table_file: Path) -> None:
    archs = small_space().sample_archs(7, 3)
    names = [a.to_string() for a in archs]
    reference = ScriptedReference({names[0]: [2.0, 1.0], names[1]: [3.0, 3.3], names[2]: [4.0, 4.0]})
    written = []
    rows = compare({"lut": lut(table_file)}, reference, archs, passes=2, progress=False, on_row=written.append)
    assert reference.converted == names and reference.timed == names + names  # pass 1 over all, then pass 2
    assert [(r["pass1_ms"], r["pass2_ms"], r["measured_ms"]) for r in rows] == [(2, 1, 1), (3, 3.3, 3), (4, 4, 4)]
    assert all(r["lut_ms"] > 0 for r in rows) and len(written) == 6
    assert [round(a["spread"], 3) for a in repeatability(rows)] == [1.0, 0.1, 0.0]
    # a killed report's rows: the passes it holds are reused, the missing ones measured (converting again)
    again = ScriptedReference({names[0]: [0.5], names[1]: [9.0, 9.0], names[2]: []})
    earlier = {names[0]: written[0], names[2]: rows[2]}  # arch 0 had only pass 1, arch 2 both
    rows = compare({}, again, archs, passes=2, progress=False, measured=earlier)
    assert again.converted == [names[1], names[0]] and again.timed == [names[1], names[0], names[1]]
    assert [r["measured_ms"] for r in rows] == [0.5, 9.0, 4.0]
    with pytest.raises(ConfigError, match="report.passes=0 is not accepted"):
        compare({}, again, archs, passes=0)


def test_held_out_architectures_avoid_the_tables_samples_and_seed(table_file: Path) -> None:
    model = lut(table_file)
    samples = {row["arch"] for row in model.table.network_samples()}
    archs = held_out_architectures(small_space(), 1000, 50, {"lut": model})
    assert len({a.to_string() for a in archs}) == 50 and not samples & {a.to_string() for a in archs}
    with pytest.raises(ConfigError, match="report.seed=0 is the seed"):
        held_out_architectures(small_space(), 0, 5, {"lut": model})


# --- config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["lut", "predictor", "flops"])
def test_latency_options_compose_and_build_from_the_search_config(
    table_file: Path, option: str, tiny_overrides: list[str]
) -> None:
    from hydra import compose, initialize_config_module

    from nas_rl.config import build

    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*tiny_overrides[:5], f"latency={option}", f"latency.path={table_file}"])
    model = build(cfg.latency, "latency")
    assert model.fingerprint()["kind"] == option
    assert model.latency_ms(small_space().sample_archs(4, 1)[0]) > 0
