"""Device backends: reading benchmark_model's output, the adb phone backend, and one device for every latency model.

The phone is ``AdbDouble`` (tests/helpers/doubles.py): only adb's transport is pretend; its ``benchmark_model`` runs
the pushed flatbuffer in the real LiteRT interpreter and prints benchmark_model's format, which the backend parses.
Real outputs of four versions of benchmark_model are in tests/data/benchmark_model/ (see its README). A real phone
is tested in tests/test_devices_phone.py when NAS_RL_ADB_SERIAL names one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from nas_rl.devices.adb import AdbPhone
from nas_rl.devices.base import DeviceLost, DeviceSpec, LatencyStats, Timing
from nas_rl.devices.benchmark_model_output import PhaseStats, UnreadableOutput, parse
from nas_rl.devices.host_cpu import HostCPU, host_cpu
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.litert import LiteRTLatency
from nas_rl.latency.lut import LookupTableLatency
from tests.helpers.doubles import AdbDouble, HashAccuracyDouble
from tests.helpers.luts import RESOLUTION, small_space, write_synthetic_table
from tests.helpers.tiny import tiny_space

SAMPLES = Path(__file__).parent / "data" / "benchmark_model"
LITERT_SAMPLE = (SAMPLES / "tflite-2.20-ti-am62x.txt").read_text()  # the newest real output: what the doubles print
BINARY = "/data/local/tmp/benchmark_model"
QUICK = {"warmup_min_runs": 1, "warmup_min_seconds": 0.0, "min_runs": 5, "min_seconds": 0.01}


def phone(double: AdbDouble | None = None, **settings) -> AdbPhone:
    return AdbPhone(client=double or AdbDouble(), **settings)


# --- benchmark_model's output --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "warmup", "timed", "init_ms"),
    [  # count, first, curr, min, max, avg, std, then median, p5, p95 where printed (all same: median=curr)
        ("tflite-1.12-ti-am57x.txt", PhaseStats(1, 146161, 146161, 146161, 146161, 146161, 0, 146161),
         PhaseStats(50, 137789, 137254, 137079, 143416, 137722, 896), 4.452),
        ("tflite-2019-11-zedboard.txt", PhaseStats(2, 393500, 396574, 393500, 396574, 395037, 1537),
         PhaseStats(50, 390368, 390936, 389982, 417669, 394183, 4373), 18.764),  # not the profiler's Timings line
        ("tflite-2.18-ti-am62x.txt", PhaseStats(1, 1041765, 1041765, 1041765, 1041765, 1041765, 0, 1041765),
         PhaseStats(50, 977738, 964908, 911877, 1112273, 971535, 39112), 6.418),
        ("tflite-2.20-ti-am62x.txt", PhaseStats(1, 1357602, 1357602, 1357602, 1357602, 1357602, 0, 1357602, 1357602,
                                                1357602),
         PhaseStats(50, 1249964, 1240143, 1238588, 1252566, 1.24027e6, 2565, 1239807, 1238753, 1247415), 5.579),
    ],
)  # fmt: skip
def test_real_outputs_of_four_versions_are_read_exactly(sample: str, warmup: PhaseStats, timed: PhaseStats,
                                                        init_ms: float) -> None:  # fmt: skip
    run = parse((SAMPLES / sample).read_text(), BINARY)
    assert (run.warmup, run.timed, run.init_ms) == (warmup, timed, init_ms)


@pytest.mark.parametrize("sample", sorted(path.name for path in SAMPLES.glob("tflite-*.txt")))
def test_what_is_read_agrees_with_the_binarys_own_closing_summary(sample: str) -> None:
    """Each output ends with its averages (``Warmup: ..., Init: ..., no stats: ...`` up to 2019, ``Init: ...,
    First inference: ..., Warmup (avg): ..., Inference (avg): ...`` since), six significant digits like ``avg=``."""
    output = (SAMPLES / sample).read_text()
    closing = output.split("timings in us:")[1]
    summary = dict(re.findall(r"(Warmup|Init|no stats|Inference)(?: \(avg\))?: ([-+.\de]+)", closing))
    run = parse(output, BINARY)
    assert run.init_ms == float(summary["Init"]) / 1e3
    assert run.warmup.avg_us == pytest.approx(float(summary["Warmup"]), rel=1e-5)
    assert run.timed.avg_us == float(summary.get("Inference", summary.get("no stats")))


def test_a_real_timed_phase_gives_the_latency_of_its_median_or_else_its_mean() -> None:
    with_median = parse(LITERT_SAMPLE).latency_stats()
    assert with_median == LatencyStats(median_ms=1239.807, mean_ms=1240.27, std_ms=2.565, min_ms=1238.588,
                                       max_ms=1252.566, runs=50)  # fmt: skip
    without = parse((SAMPLES / "tflite-2.18-ti-am62x.txt").read_text()).latency_stats()
    assert without.median_ms == without.mean_ms == 971.535 and (without.std_ms, without.runs) == (39.112, 50)


def test_scientific_means_identical_runs_and_logcat_prefixes_are_read() -> None:
    output = (
        "07-14 13:14:52.218 22838 22838 I tflite  : Running benchmark for at least 1 iterations and at least 0.5 "
        "seconds but terminate if exceeding 150 seconds.\n"
        "07-14 13:14:52.859 22838 22838 I tflite  : count=3 first=1200000 curr=1300000 min=1200000 max=1400000 "
        "avg=1.3e+06 std=81649\n"
        "07-14 13:14:52.859 22838 22838 I tflite  : Running benchmark for at least 2 iterations and at least 0 seconds"
        " but terminate if exceeding 150 seconds.\n"
        "07-14 13:14:56.520 22838 22838 I tflite  : count=2 curr=1290000(all same) p5=1290000 median=1290000 "
        "p95=1290000\n"
    )
    run = parse(output)
    assert run.warmup.avg_us == 1.3e6
    assert run.latency_stats() == LatencyStats(1290.0, 1290.0, 0.0, 1290.0, 1290.0, 2)


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("/system/bin/sh: /data/local/tmp/benchmark_model: can't execute: Exec format error\n", "found 0 phases"),
        ("\n".join(LITERT_SAMPLE.splitlines()[:12]) + "\n", "found 1 phase"),  # unplugged after the warm-up
        ("\n".join(LITERT_SAMPLE.splitlines()[:13]) + "\n", "no count=... line after 'Running benchmark for'"),
        ("", "found 0 phases"),
        (LITERT_SAMPLE.replace("count=50", "count=0"), "count=0"),
    ],
)
def test_output_that_cannot_be_read_names_the_binary_and_shows_its_first_lines(output: str, why: str) -> None:
    with pytest.raises(UnreadableOutput) as raised:
        parse(output, BINARY)
    message = str(raised.value)
    assert "\n" not in message and BINARY in message and why in message and "Its first lines: " in message
    assert isinstance(raised.value, EvaluationFailed)  # a search records the candidate failed, with this reason
    first = output.strip().splitlines()[0].strip() if output.strip() else "(it printed nothing)"
    assert first in message


# --- the adb backend -----------------------------------------------------------------------------------------


def test_building_the_adb_device_contacts_nothing() -> None:
    double = AdbDouble()
    model = LiteRTLatency(device=phone(double), resolution=16, in_channels=1)
    assert double.commands == [] and double.files == {} and model.backend.threads == 1
    AdbPhone(serial="not-attached-anywhere", port=1)  # no client: adbutils' is made on first use, not here
    assert "AdbPhone(name='android'" in repr(phone(double))


def test_the_phone_is_described_by_its_properties_and_the_binarys_digest() -> None:
    spec = phone(taskset="f0", use_gpu=True, threads=2).describe()
    assert (spec.name, spec.cpu_model, spec.threads, spec.precision) == ("android", "Tensor Double", 2, "fp32")
    assert spec.runtime.startswith("benchmark_model sha256:") and len(spec.runtime.split(":")[1]) == 16
    assert dict(spec.extra) == {"phone": "Pixel Double", "android": "14", "delegate": "gpu", "taskset": "f0"}
    assert spec.converter == host_cpu().converter  # converted here, by the same converter
    assert "Pixel Double" in spec.describe() and "Tensor Double" in spec.describe()
    labelled = phone(benchmark_model_version="2.16.1").describe()
    assert labelled.runtime == "benchmark_model 2.16.1" and dict(labelled.extra)["delegate"] == "xnnpack"


@pytest.mark.parametrize(
    ("settings", "double", "phrases"),
    [
        ({"serial": "R5CT0000"}, {}, ["device.serial='R5CT0000' is not accepted", "attached and authorised: double-1"]),
        ({"benchmark_model": "/data/local/tmp/bm"}, {}, ["device.benchmark_model='/data/local/tmp/bm'", "no such file",
                                                         "adb push benchmark_model"]),
        ({}, {"executable": False}, ["is not executable on adb device double-1", f"chmod +x {BINARY}"]),
    ],
)  # fmt: skip
def test_a_phone_not_set_up_as_configured_is_one_line_saying_what_is_expected(settings, double, phrases) -> None:
    with pytest.raises(ConfigError) as raised:
        phone(AdbDouble(**double), **settings).describe()
    message = str(raised.value)
    assert "\n" not in message and all(phrase in message for phrase in phrases), message


def test_no_phone_attached_and_no_serial_is_one_line() -> None:
    double = AdbDouble()
    double.unplug()
    with pytest.raises(ConfigError, match=r"device.serial=None is not accepted: .* lists 0 \(none\)"):
        phone(double).describe()


@pytest.mark.parametrize(("setting", "value"), [("port", 0), ("benchmark_model", "benchmark_model"),
                                                 ("taskset", "big"), ("cooldown_s", -1), ("serial", "")])  # fmt: skip
def test_bad_adb_settings_are_refused_when_built(setting: str, value) -> None:
    with pytest.raises(ConfigError, match=f"^{setting}={value!r} is not accepted: use "):
        AdbPhone(**{setting: value})


def test_benchmark_runs_the_binary_with_the_timing_flags_reads_its_output_and_cools_down() -> None:
    """The binary's output here is the real TensorFlow Lite 2.20 sample (no model runs): the parse path, fast."""
    double = AdbDouble(binary_output=LITERT_SAMPLE)
    device = phone(double, taskset="f0", cooldown_s=0.3, threads=2)
    timing = Timing(warmup_min_runs=1, warmup_min_seconds=0.05, min_runs=20, min_seconds=0.2, rounds=2)
    first = device.benchmark(b"flatbuffer", timing)
    second = device.benchmark(b"flatbuffer", timing)
    assert first == second == LatencyStats(1239.807, 1240.27, 2.565, 1238.588, 1252.566, 50, temperature_c=41.5)
    runs = [c for c in double.commands if "--graph=" in c]
    assert len(runs) == 4  # two rounds per measurement
    started = [t for c, t in zip(double.commands, double.command_times) if "--graph=" in c]
    # cooldown_s between the end of one measurement (after its last run started) and the start of the next
    assert started[2] - started[1] >= 0.3
    remote = double.pushed[0]
    assert runs[0] == (f"taskset f0 {BINARY} --graph={remote} --num_threads=2 --warmup_runs=1 --warmup_min_secs=0.05 "
                       "--num_runs=10 --min_secs=0.1 --use_xnnpack=true")  # fmt: skip
    assert remote.startswith("/data/local/tmp/nas-rl-") and double.files == {}  # removed after each run
    assert first.as_dict()["temperature_c"] == 41.5 and "temperature_c" not in LatencyStats.predicted(1).as_dict()


def test_the_binary_failing_on_a_model_fails_that_measurement_in_one_line() -> None:
    double = AdbDouble()
    with pytest.raises(EvaluationFailed) as raised:
        phone(double).benchmark(b"not a flatbuffer", Timing())
    message = str(raised.value)
    assert "\n" not in message and not isinstance(raised.value, DeviceLost)
    assert f"{BINARY} exited with status 1 on adb device double-1: INFO: ERROR: Failed to load model" in message
    assert double.files == {}  # removed all the same


def test_a_phone_unplugged_mid_measurement_is_device_lost_and_is_reached_again_when_back() -> None:
    double = AdbDouble(binary_output=LITERT_SAMPLE, unplug_after_runs=1)
    device = phone(double)
    assert device.benchmark(b"one", Timing()).runs == 50
    with pytest.raises(DeviceLost) as raised:
        device.benchmark(b"two", Timing())
    assert "adb device double-1 stopped answering while running benchmark_model" in str(raised.value)
    with pytest.raises(DeviceLost, match="adb device double-1 is no longer attached"):
        device.benchmark(b"three", Timing())
    double.plug()
    double.unplug_after_runs = None
    assert device.benchmark(b"four", Timing()).runs == 50


def test_the_adb_device_pickles_without_its_connection() -> None:
    import pickle

    device = phone(AdbDouble(binary_output=LITERT_SAMPLE))
    device.describe()
    copy = pickle.loads(pickle.dumps(device))
    assert copy._device is None and copy.describe() == device.describe()
    assert copy.benchmark(b"model", Timing()).runs == 50


@pytest.mark.slow  # real TFLite conversion and LiteRT runs (through the double)
def test_latency_on_the_adb_device_end_to_end_converts_pushes_runs_and_parses() -> None:
    double = AdbDouble()
    model = LiteRTLatency(device=phone(double, taskset="3"), resolution=16, in_channels=1, conversion="frozen_graph",
                          **QUICK)  # fmt: skip
    arch = tiny_space().sample_arch(np.random.default_rng(0))
    stats = model.measure(arch)
    assert stats.runs >= 5 and 0 < stats.min_ms <= stats.median_ms <= stats.max_ms and stats.temperature_c == 41.5
    run = next(c for c in double.commands if "--graph=" in c)
    assert run.startswith(f"taskset 3 {BINARY} --graph=/data/local/tmp/nas-rl-") and "--num_runs=5" in run
    assert double.files == {}
    fingerprint = model.fingerprint()
    assert fingerprint["device"] == model.backend.describe().as_dict() and fingerprint["device"]["taskset"] == "3"
    assert fingerprint["device"] != LiteRTLatency(resolution=16, in_channels=1, **QUICK).fingerprint()["device"]


@pytest.mark.slow  # real TFLite conversion and LiteRT runs (through the double)
def test_a_phone_unplugged_mid_search_fails_the_candidate_with_the_reason_and_the_search_goes_on() -> None:
    from nas_rl.evaluation.evaluator import Evaluator
    from nas_rl.evaluation.reward import MnasReward
    from nas_rl.evaluation.store import EvaluationStore

    double = AdbDouble(unplug_after_runs=1)
    latency = LiteRTLatency(device=phone(double), resolution=16, in_channels=1, conversion="frozen_graph", **QUICK)
    evaluator = Evaluator(HashAccuracyDouble(), latency, MnasReward(1.0), EvaluationStore(":memory:"))
    first, second, third = tiny_space().sample_archs(3, 3)
    assert evaluator.evaluate(first).evaluation.status == "ok"
    lost = evaluator.evaluate(second).evaluation
    assert lost.status == "failed" and "adb device double-1 stopped answering" in lost.error
    double.plug()
    double.unplug_after_runs = None
    assert evaluator.evaluate(third).evaluation.status == "ok"


# --- one device for every latency model and tool -------------------------------------------------------------


def adb_table(path: Path, name: str = "android") -> Path:
    """A synthetic table of the small space whose header says it was measured on the double's phone."""
    write_synthetic_table(path, small_space())
    lines = path.read_text().splitlines(True)
    header = json.loads(lines[0])
    header["device"] = phone(name=name).describe().as_dict()
    path.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    return path


def test_a_host_cpu_table_is_refused_by_device_adb_naming_both(tmp_path: Path) -> None:
    host_table = write_synthetic_table(tmp_path / "host.jsonl", small_space()).path
    with pytest.raises(ConfigError) as raised:  # another name: the table is another device's
        LookupTableLatency(small_space(), RESOLUTION, host_table, device=phone())
    message = str(raised.value)
    assert "\n" not in message and "device: table has 'host-cpu', this run asks for 'android'" in message
    assert host_cpu().cpu_model in message
    with pytest.raises(ConfigError) as raised:  # the same name, another description: both named
        LookupTableLatency(small_space(), RESOLUTION, host_table, device=phone(name="host-cpu"))
    message = str(raised.value)
    assert "measured on another device than this one" in message and "\n" not in message
    assert f"the table's is host-cpu ({host_cpu().cpu_model};" in message
    assert "this one is host-cpu (Tensor Double; benchmark_model sha256:" in message and "phone Pixel Double" in message


def test_an_adb_table_is_refused_by_device_host_cpu_naming_both(tmp_path: Path) -> None:
    table = adb_table(tmp_path / "phone.jsonl")
    with pytest.raises(ConfigError, match="device: table has 'android', this run asks for 'host-cpu'.*Tensor Double"):
        LookupTableLatency(small_space(), RESOLUTION, table)
    with pytest.raises(ConfigError) as raised:
        LookupTableLatency(small_space(), RESOLUTION, table, device=HostCPU(name="android"))
    message = str(raised.value)
    assert "the table's is android (Tensor Double;" in message and f"this one is android ({host_cpu().cpu_model};" in message
    arch = small_space().sample_archs(1, 1)[0]
    assert LookupTableLatency(small_space(), RESOLUTION, table, device=phone()).latency_ms(arch) > 0  # its own phone


def test_on_miss_measure_goes_to_the_configured_device(tmp_path: Path) -> None:
    table = adb_table(tmp_path / "phone.jsonl")
    model = LookupTableLatency(small_space(), RESOLUTION, table, device=phone(), on_miss="measure")
    assert model.backend.name == "android"
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="on_miss='measure' is not accepted .* the "
                                                                     "configured device is not the table's .*gpu"):
        LookupTableLatency(small_space(), RESOLUTION, table, device=phone(use_gpu=True), on_miss="measure",
                           allow_other_device=True)  # fmt: skip


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        return hydra_compose(name, overrides=overrides)


DOUBLE_CLIENT = "+device.client={_target_: tests.helpers.doubles.AdbDouble}"
SMALL_SPACE = ["search_space.resolution=16", "search_space.in_channels=1", "search_space.num_classes=10",
               "search_space.stem_channels=8", "search_space.head_channels=32",
               "search_space.base_widths=[8,8,8,16,16,24,32]", "search_space.base_repeats=[1,1,1,1,1,1,1]"]  # fmt: skip


@pytest.mark.parametrize("latency", ["litert", "lut", "predictor", "flops"])
def test_every_latency_config_reads_the_one_device_group(latency: str) -> None:
    cfg = compose("config", [f"latency={latency}", "device=adb", "device.threads=4", "device.serial=R5CT0000"])
    device = OmegaConf.to_container(cfg.latency.device, resolve=True)
    assert device == OmegaConf.to_container(cfg.device, resolve=True) and device["threads"] == 4
    assert "threads" not in cfg.latency and "precision" not in cfg.latency


@pytest.mark.parametrize("tool", ["profile", "latency_report"])
def test_the_tools_read_the_same_device_group(tool: str) -> None:
    cfg = compose(tool, ["device=adb", "device.precision=int8"])
    nodes = [cfg.reference, *cfg.models.values()] if tool == "latency_report" else []
    for node in nodes:
        assert OmegaConf.to_container(node.device, resolve=True)["precision"] == "int8"
    assert cfg.device._target_ == "nas_rl.devices.adb.AdbPhone"


def test_device_adb_in_the_search_config_refuses_a_host_cpu_table_and_builds_nothing_else(tmp_path: Path) -> None:
    from nas_rl.config import build

    host_table = write_synthetic_table(tmp_path / "host.jsonl", small_space()).path
    cfg = compose("config", [*SMALL_SPACE, "device=adb", DOUBLE_CLIENT, "device.name=host-cpu", "latency=lut",
                             f"latency.path={host_table}"])  # fmt: skip
    with pytest.raises(ConfigError, match="measured on another device .*this one is host-cpu \\(Tensor Double"):
        build(cfg.latency, "latency")
    litert = build(compose("config", [*SMALL_SPACE, "device=adb"]).latency, "latency")
    assert isinstance(litert.backend, AdbPhone) and litert.backend.serial is None  # built, no phone contacted


def test_a_device_spec_still_stands_for_this_computer() -> None:
    """Saved configs built the device as a DeviceSpec (conf/device/host_cpu.yaml before backends)."""
    model = LiteRTLatency(device=host_cpu(threads=2), resolution=16)
    assert isinstance(model.backend, HostCPU) and model.fingerprint()["device"] == host_cpu(threads=2).as_dict()
    assert isinstance(model.device, DeviceSpec)


def test_runs_shorter_than_the_binarys_microsecond_clock_still_have_a_positive_latency() -> None:
    header = "Running benchmark for at least 1 iterations and at least 0 seconds\n"
    quick = parse(f"{header}count=1 curr=3\n{header}count=9 first=1 curr=0 min=0 max=2 avg=0.666667 std=0 p5=0 "
                  "median=0 p95=2\n")  # fmt: skip
    assert quick.latency_stats().median_ms == pytest.approx(0.666667e-3)  # the mean of the whole-µs readings
    zero = parse(f"{header}count=1 curr=0\n{header}count=4 curr=0(all same) p5=0 median=0 p95=0\n")
    assert zero.latency_stats().median_ms == 0.5e-3


def test_another_phone_plugged_in_after_one_is_lost_is_not_measured_in_its_place() -> None:
    double = AdbDouble(binary_output=LITERT_SAMPLE)
    device = phone(double)  # serial=None: the only phone attached, at first use
    assert device.benchmark(b"model", Timing()).runs == 50
    double.unplug()
    with pytest.raises(DeviceLost, match="double-1 stopped answering while pushing the model"):
        device.benchmark(b"model", Timing())
    double.serial = "another-phone"
    double.plug()
    with pytest.raises(DeviceLost, match=r"adb device double-1 is no longer attached \(attached: another-phone\)"):
        device.benchmark(b"model", Timing())
