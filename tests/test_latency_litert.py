"""LiteRT latency on this CPU: real conversion and measurement of tiny networks at resolution 32."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.device import DeviceSpec, host_cpu
from nas_rl.latency.litert import LiteRTLatency, benchmark_tflite, convert_to_tflite

RESOLUTION = 32
SETTINGS = {"stem_channels": 16, "head_channels": 64, "num_classes": 10}
TINY = "ds_r1_k3_s1_c16:ir_r1_k3_s2_e3_c24"
# Short benchmarks where the property under test does not need the full >= 1 s of timed runs.
QUICK = {"warmup_min_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2}


def tiny_arch(text: str = TINY, **settings: int) -> ArchSpec:
    return ArchSpec.from_string(text, **{**SETTINGS, **settings})


@pytest.fixture(scope="module")
def default_measurement():
    """The tiny arch measured with default settings (a measurement costs ~3 s)."""
    return LiteRTLatency(resolution=RESOLUTION).measure(tiny_arch())


# --- device description ---------------------------------------------------------------------------------


def test_host_cpu_describes_runtime_converter_and_cpu() -> None:
    device = host_cpu(threads=2, precision="int8")
    fields = device.as_dict()
    assert fields["name"] == "host-cpu"
    assert fields["runtime"].startswith("litert ") and "unknown" not in fields["runtime"]
    assert fields["converter"].startswith("tensorflow ") and "unknown" not in fields["converter"]
    assert fields["threads"] == 2 and fields["precision"] == "int8"
    assert fields["cpu_model"].strip()


@pytest.mark.parametrize(("key", "kwargs"), [("threads", {"threads": 0}), ("precision", {"precision": "fp16"})])
def test_invalid_device_settings_raise_one_line_config_error(key: str, kwargs: dict) -> None:
    for make in (host_cpu, LiteRTLatency):
        with pytest.raises(ConfigError) as raised:
            make(**kwargs)
        message = str(raised.value)
        assert "\n" not in message and key in message and repr(kwargs[key]) in message and "accepted" in message


def test_device_is_the_single_source_of_threads_and_precision() -> None:
    device = host_cpu(threads=2, precision="int8")
    model = LiteRTLatency(device=device, resolution=RESOLUTION)
    assert model.fingerprint()["device"] == device.as_dict()
    with pytest.raises(ConfigError, match="threads"):
        LiteRTLatency(device=device, threads=1)
    with pytest.raises(ConfigError, match="precision"):
        DeviceSpec("d", "litert x", "tensorflow y", threads=1, precision="bf16", cpu_model="cpu")


def test_fingerprint_is_json_and_names_device_resolution_and_settings() -> None:
    fingerprint = LiteRTLatency(resolution=RESOLUTION, min_seconds=0.5).fingerprint()
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert fingerprint["kind"] == "litert"
    assert fingerprint["resolution"] == RESOLUTION and fingerprint["input_shape"] == [1, RESOLUTION, RESOLUTION, 3]
    assert fingerprint["min_seconds"] == 0.5 and fingerprint["min_runs"] == 50
    assert fingerprint["device"]["threads"] == 1 and fingerprint["device"]["precision"] == "fp32"
    # Hydra may pass 1 where the default is 1.0: the same settings must give the same cache key.
    same_settings = LiteRTLatency(resolution=RESOLUTION, min_seconds=1)
    assert same_settings.fingerprint() == LiteRTLatency(resolution=RESOLUTION).fingerprint()


def test_latency_model_pickles() -> None:
    data = np.zeros((2, RESOLUTION, RESOLUTION, 3), np.float32)
    model = LiteRTLatency(precision="int8", resolution=RESOLUTION, representative_data=data)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.fingerprint() == model.fingerprint()


def test_missing_resolution_is_a_config_error_at_measure_time() -> None:
    with pytest.raises(ConfigError, match="resolution=None"):
        LiteRTLatency().measure(tiny_arch())


def test_import_does_not_load_tensorflow() -> None:
    code = "import sys, nas_rl.latency.litert; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- real measurements -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_measurement_is_ordered_and_takes_at_least_one_second_of_runs(default_measurement) -> None:
    stats = default_measurement
    assert 0 < stats.min_ms <= stats.median_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms <= stats.max_ms and stats.std_ms <= stats.max_ms - stats.min_ms
    assert stats.runs >= 50
    assert stats.mean_ms * stats.runs >= 1000.0 * (1 - 1e-9)  # timed invoke() calls, not wall time


@pytest.mark.slow
def test_wider_network_is_slower() -> None:
    model = LiteRTLatency(resolution=RESOLUTION, **QUICK)
    small = model.latency_ms(tiny_arch("ds_r1_k3_s1_c8:ir_r1_k3_s2_e3_c16", stem_channels=8, head_channels=32))
    wide = model.latency_ms(tiny_arch("ds_r1_k3_s1_c64:ir_r2_k3_s2_e6_c96", stem_channels=64, head_channels=512))
    assert wide > 2 * small, (small, wide)


@pytest.mark.slow
def test_int8_converts_with_representative_data_and_measures_quietly(capfd: pytest.CaptureFixture) -> None:
    data = np.random.default_rng(0).standard_normal((4, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
    model = LiteRTLatency(precision="int8", resolution=RESOLUTION, representative_data=data, **QUICK)
    capfd.readouterr()
    stats = model.measure(tiny_arch())
    out, err = capfd.readouterr()
    assert stats.runs >= 20 and 0 < stats.min_ms <= stats.median_ms
    assert out == "" and err == ""  # the converter's and the runtime's log lines are silenced


@pytest.mark.slow
def test_int8_flatbuffer_is_integer_only_and_requires_calibration_data() -> None:
    from nas_rl.models.keras_builder import build_keras_model

    keras_model = build_keras_model(tiny_arch(), RESOLUTION)
    with pytest.raises(ConfigError, match="representative_data"):
        convert_to_tflite(keras_model, "int8")
    data = np.random.default_rng(0).standard_normal((2, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
    model_bytes = convert_to_tflite(keras_model, "int8", data)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert benchmark_tflite(model_bytes, min_runs=5, min_seconds=0.0, warmup_min_seconds=0.0).runs >= 5


@pytest.mark.slow
def test_measure_keras_times_a_single_layer_for_lookup_tables() -> None:
    import keras

    inputs = keras.Input((16, 16, 24), batch_size=1)
    layer_model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, padding="same")(inputs))
    deployment_data = np.zeros((2, RESOLUTION, RESOLUTION, 3), np.float32)  # not the layer's shape: synthetic
    model = LiteRTLatency(precision="int8", resolution=RESOLUTION, representative_data=deployment_data, **QUICK)
    stats = model.measure_keras(layer_model)
    assert stats.runs >= 20 and 0 < stats.min_ms <= stats.median_ms


class _RefusingConverterDouble:
    """Test double for ``tf.lite.TFLiteConverter``: conversion fails with a multi-line message."""

    @classmethod
    def from_keras_model(cls, keras_model: object) -> _RefusingConverterDouble:
        return cls()

    def convert(self) -> bytes:
        raise RuntimeError("test double: op not supported\n  at layer stages_1_0\n  (more converter noise)")


@pytest.mark.slow
def test_conversion_failure_is_an_evaluation_failure_with_a_one_line_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tensorflow as tf

    monkeypatch.setattr(tf.lite, "TFLiteConverter", _RefusingConverterDouble)
    with pytest.raises(EvaluationFailed) as raised:
        LiteRTLatency(resolution=RESOLUTION, conversion="saved_model", **QUICK).measure(tiny_arch())
    reason = str(raised.value)
    assert reason == "TFLite conversion failed: RuntimeError: test double: op not supported"


def test_direct_emission_failure_is_an_evaluation_failure_with_a_one_line_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default path (conversion=direct) fails the candidate the same way when the emitter cannot build it."""
    import nas_rl.models.tflite_builder as builder

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise ValueError("test double: block type not emitted\nsecond line")

    monkeypatch.setattr(builder, "tflite_from_arch", refuse)
    with pytest.raises(EvaluationFailed) as raised:
        LiteRTLatency(resolution=RESOLUTION, **QUICK).measure(tiny_arch())
    assert str(raised.value) == "TFLite emission failed: ValueError: test double: block type not emitted"


def test_benchmark_of_invalid_flatbuffer_raises() -> None:
    with pytest.raises(ValueError):
        benchmark_tflite(b"not a flatbuffer", min_seconds=0.0, warmup_min_seconds=0.0)


# --- conversion route and preempted runs (used by latency tables) --------------------------------------------


class _ClockDouble:
    """Test double for the ``time`` module the benchmark loop reads: wall-clock and thread CPU nanoseconds that
    advance only when the interpreter double runs, so these tests time nothing."""

    def __init__(self) -> None:
        self.wall_ns = self.cpu_ns = 0

    def perf_counter_ns(self) -> int:
        return self.wall_ns

    def thread_time_ns(self) -> int:
        return self.cpu_ns


class _PreemptedInterpreterDouble:
    """Test double for a LiteRT interpreter: every ``off_every``-th invoke spends ``off_ns`` off the CPU (the OS ran
    another process), the others ``run_ns`` on it."""

    def __init__(self, clock: _ClockDouble, off_every: int, run_ns: int = 200_000, off_ns: int = 2_000_000) -> None:
        self.clock, self.calls, self.off_every, self.run_ns, self.off_ns = clock, 0, off_every, run_ns, off_ns

    def invoke(self) -> None:
        self.calls += 1
        if self.calls % self.off_every == 0:
            self.clock.wall_ns += self.off_ns
            return
        self.clock.wall_ns += self.run_ns
        self.clock.cpu_ns += self.run_ns


def test_drop_preempted_leaves_out_runs_spent_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from nas_rl.devices import host_cpu as litert  # where LiteRT runs are timed

    clock = _ClockDouble()
    monkeypatch.setattr(litert, "time", clock)
    kept = litert._run_until(_PreemptedInterpreterDouble(clock, off_every=3), 30, min_seconds=0.0, drop_preempted=True)
    assert kept == [200_000] * 30
    everything = litert._run_until(_PreemptedInterpreterDouble(clock, off_every=3), 30, min_seconds=0.0)
    assert sorted(everything) == [200_000] * 20 + [2_000_000] * 10  # off by default: latency=litert measures as before


def test_drop_preempted_gives_up_on_a_machine_that_never_lets_the_thread_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from nas_rl.devices import host_cpu as litert  # where LiteRT runs are timed

    clock = _ClockDouble()
    monkeypatch.setattr(litert, "time", clock)
    always = _PreemptedInterpreterDouble(clock, off_every=1, off_ns=200_000)
    kept = litert._run_until(always, min_runs=5, min_seconds=0.0, drop_preempted=True)
    assert kept == [200_000] * 5 and always.calls < 100


def test_drop_preempted_is_in_the_fingerprint_only_when_set() -> None:
    assert "drop_preempted" not in LiteRTLatency(resolution=RESOLUTION).fingerprint()
    assert LiteRTLatency(resolution=RESOLUTION, drop_preempted=True).fingerprint()["drop_preempted"] is True
    with pytest.raises(ConfigError, match="conversion='tflite'.*'saved_model', 'frozen_graph'"):
        LiteRTLatency(conversion="tflite")


@pytest.mark.slow
def test_frozen_graph_conversion_gives_the_same_ops_as_the_saved_model_route() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from nas_rl.models.keras_builder import build_keras_model

    def ops(model_bytes: bytes) -> list:
        interpreter = Interpreter(model_content=model_bytes)
        tensors = interpreter.get_tensor_details()
        return [
            (op["op_name"], [tuple(tensors[i]["shape"]) for i in op["inputs"] if i >= 0])
            for op in interpreter._get_ops_details()
        ]

    keras_model = build_keras_model(tiny_arch("cn_r1_k3_s2_c16_se0.25:ir_r2_k5_s2_e6_c24:ds_r1_k3_s1_c24"), RESOLUTION)
    frozen = convert_to_tflite(keras_model, conversion="frozen_graph")
    assert ops(convert_to_tflite(keras_model)) == ops(frozen)
    quietest = benchmark_tflite(frozen, min_runs=9, min_seconds=0.03, warmup_min_seconds=0.0, rounds=3)
    assert quietest.runs >= 3 and 0 < quietest.min_ms <= quietest.median_ms
    with pytest.raises(ConfigError, match="rounds=0"):
        benchmark_tflite(frozen, rounds=0)


@pytest.mark.slow
def test_int8_from_the_config_calibrates_on_the_runs_dataset(tiny_overrides: list[str]) -> None:
    """device.precision=int8 converts with the run's training images, resized to the deployment resolution."""
    from hydra import compose, initialize_config_module

    from nas_rl.config import build
    from nas_rl.data.datasets import calibration_images, load_digits

    overrides = [*tiny_overrides, "device.precision=int8", "latency.resolution=24", "latency.calibration_samples=8"]
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    latency = build(cfg.latency, "latency")
    expected = calibration_images(load_digits(resolution=16), 24, 8, 0)
    assert latency.representative_data.shape == (8, 24, 24, 1)
    np.testing.assert_allclose(latency.representative_data, expected)
    no_data = LiteRTLatency(precision="int8", resolution=24, calibration_dataset=lambda: None)
    assert no_data.representative_data is None and no_data.fingerprint()["calibration"] == "synthetic"
    space = build(cfg.search_space, "search_space")
    assert latency.measure(space.sample_arch(np.random.default_rng(0))).runs >= 10
