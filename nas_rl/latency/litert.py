"""Latency measured on this computer's CPU: Keras model -> TFLite flatbuffer -> LiteRT interpreter (XNNPACK).

The measurement follows TFLite's ``benchmark_model``: one random input, a warm-up (>= 1 run and >= 0.5 s),
then timed ``invoke()`` calls until both >= 50 runs and >= 1 s of timed runs hold. Only ``invoke()`` is
timed, so conversion, interpreter creation and Python bookkeeping never enter the numbers.

TensorFlow and Keras are imported inside the functions that need them: importing this module is cheap,
and a search whose latency comes from elsewhere never loads TensorFlow.
"""

from __future__ import annotations

import gc
import hashlib
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from nas_rl._util import clear_keras_session, first_line, is_int, silenced_output
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.latency.device import PRECISIONS, DeviceSpec, host_cpu

if TYPE_CHECKING:
    from nas_rl.data.datasets import SplitDataset

#: Calibration samples drawn when int8 conversion is asked for without representative data.
SYNTHETIC_CALIBRATION_SAMPLES = 8

#: How a Keras model reaches TFLite's converter. ``saved_model``: ``TFLiteConverter.from_keras_model`` (Keras
#: exports a SavedModel, the converter reads it back). ``frozen_graph``: trace the model once, fold its
#: variables into constants and convert that function; it skips the SavedModel export, which is most of the
#: time of converting a small model (about 2x faster for one layer), and gives the same ops and shapes.
CONVERSIONS = ("saved_model", "frozen_graph")

#: A timed run is "preempted" when its wall time exceeds the thread's CPU time by more than this many ns or
#: this fraction of the run: the OS ran something else meanwhile (on a shared machine, another process).
PREEMPTION_SLACK_NS = 10_000
PREEMPTION_SLACK_FRACTION = 0.02
#: ``drop_preempted`` stops dropping (and keeps every run) once the dropped runs took this many times
#: ``min_seconds``: on a machine that busy, a measurement must still end.
MAX_DROPPED_SECONDS_FACTOR = 2.0


def convert_to_tflite(
    keras_model: Any,
    precision: str = "fp32",
    representative_data: np.ndarray | None = None,
    conversion: str = "saved_model",
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with TensorFlow's TFLite converter.

    ``int8`` is post-training full-integer quantization: every op, the input and the output are int8, so
    the flatbuffer is what an integer-only deployment runs (no float quantize/dequantize at the ends).
    The converter calibrates activation ranges on ``representative_data``.

    :param keras_model: a ``keras.Model`` with a fixed NHWC input shape.
    :param precision: ``fp32`` or ``int8``.
    :param representative_data: NHWC float samples, one per row; required for ``int8``, ignored for ``fp32``.
    :param conversion: one of :data:`CONVERSIONS`.
    :return: the flatbuffer bytes.
    :raises ConfigError: on an unknown precision or conversion, or missing calibration data for ``int8``.
    """
    _check_precision(precision)
    _check_conversion(conversion)
    if precision == "int8" and (representative_data is None or len(representative_data) == 0):
        raise ConfigError(
            "representative_data=None is not accepted for precision='int8'; accepted: an NHWC float array "
            "of calibration samples"
        )
    _quiet_tensorflow_logs()
    import tensorflow as tf

    if conversion == "frozen_graph":
        converter = _frozen_graph_converter(keras_model)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if precision == "int8":
        samples = np.asarray(representative_data, dtype=np.float32)

        def representative_dataset() -> Iterator[list[np.ndarray]]:
            for sample in samples:
                yield [sample[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with silenced_output(), warnings.catch_warnings():
        # Legacy check that ignores the representative dataset: with int8 I/O it always fires.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


def _frozen_graph_converter(keras_model: Any) -> Any:
    """A converter of the inference function of ``keras_model`` with its variables folded into constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    specs = [tf.TensorSpec(tensor.shape, tensor.dtype) for tensor in keras_model.inputs]

    def inference(*inputs: Any) -> Any:
        return keras_model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    with silenced_output():
        concrete = tf.function(inference).get_concrete_function(*specs)
        return tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)])


def benchmark_tflite(
    model_bytes: bytes,
    threads: int = 1,
    warmup_min_runs: int = 1,
    warmup_min_seconds: float = 0.5,
    min_runs: int = 50,
    min_seconds: float = 1.0,
    seed: int = 0,
    drop_preempted: bool = False,
    rounds: int = 1,
) -> LatencyStats:
    """Time ``invoke()`` of a TFLite flatbuffer in the LiteRT interpreter, like TFLite's ``benchmark_model``.

    Inputs are filled once with seeded random values of each input tensor's dtype and shape. Warm-up runs
    until both ``warmup_min_runs`` and ``warmup_min_seconds`` hold; timed runs until both ``min_runs`` and
    ``min_seconds`` hold, where seconds count the time spent inside ``invoke()`` (so ``mean * runs`` is at
    least ``min_seconds``). Python's garbage collector is paused while timing.

    :param model_bytes: a TFLite flatbuffer.
    :param threads: interpreter threads; XNNPACK, the interpreter's default CPU delegate, uses them.
    :param drop_preempted: with 1 thread, leave out (and replace) timed runs during which the OS descheduled the
        thread (wall time above the thread's CPU time, see :data:`PREEMPTION_SLACK_NS`), so a busy machine
        inflates the statistics less; on a quiet machine nothing is dropped. Ignored with several threads,
        whose workers the calling thread's CPU time does not see.
    :param rounds: split the timed runs into this many consecutive rounds (each with ``min_runs / rounds``
        runs and ``min_seconds / rounds`` seconds, at least) and keep the round with the lowest median. On a
        machine shared with other work (caches, memory bandwidth) a round is slowed when a neighbour is busy, never
        sped up; on a quiet machine all rounds agree and this is the median of all runs.
    :return: statistics of the timed runs (of the kept round), in milliseconds.
    """
    _check_benchmark_settings(threads, warmup_min_runs, warmup_min_seconds, min_runs, min_seconds)
    if not is_int(rounds) or rounds < 1:
        raise ConfigError(f"rounds={rounds!r} is not accepted: use an integer >= 1")
    from ai_edge_litert.interpreter import Interpreter

    with silenced_output():  # the runtime announces its XNNPACK delegate on stderr, when it applies it
        interpreter = Interpreter(model_content=model_bytes, num_threads=int(threads))
        interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], _random_tensor(rng, detail["shape"], detail["dtype"]))

    _run_until(interpreter, warmup_min_runs, warmup_min_seconds)
    drop = drop_preempted and int(threads) == 1
    per_round = [
        np.asarray(_run_until(interpreter, -(-min_runs // rounds), min_seconds / rounds, drop), dtype=np.float64)
        for _ in range(rounds)
    ]
    times_ms = min(per_round, key=np.median) / 1e6
    return LatencyStats(
        median_ms=float(np.median(times_ms)),
        mean_ms=float(times_ms.mean()),
        std_ms=float(times_ms.std()),
        min_ms=float(times_ms.min()),
        max_ms=float(times_ms.max()),
        runs=len(times_ms),
    )


class LiteRTLatency(LatencyModel):
    """Latency measured through LiteRT on this computer's CPU, at the deployment input shape.

    ``measure(arch)`` builds the Keras model at ``resolution`` with batch 1, converts it with TensorFlow's
    TFLite converter (fp32, or int8 full-integer quantization) and benchmarks it; any failure in those steps
    raises :class:`EvaluationFailed` with a one-line reason. :meth:`measure_keras` is the same conversion and
    benchmark for any Keras model (e.g. single layers for lookup tables).

    :param device: the device description; ``None`` describes this CPU with ``threads`` and ``precision``.
    :param threads: interpreter threads; ``None`` takes the device's (1 without a device).
    :param precision: ``fp32`` or ``int8``; ``None`` takes the device's (``fp32`` without a device).
    :param resolution: deployment input height = width; must be set before :meth:`measure`.
    :param in_channels: deployment input channels; an architecture must have the same.
    :param warmup_min_runs: warm-up runs at least.
    :param warmup_min_seconds: warm-up seconds at least.
    :param min_runs: timed runs at least.
    :param min_seconds: timed seconds (inside ``invoke()``) at least.
    :param representative_data: NHWC float calibration samples for ``int8``; ``None``: ``calibration_samples``
        training images of ``calibration_dataset``, or without one ``SYNTHETIC_CALIBRATION_SAMPLES`` seeded
        normal samples of the model's input shape (latency depends on the quantized graph, not on the
        calibration values, so synthetic data is enough to measure it; an export wants real images).
    :param calibration_dataset: a loaded dataset, or a function that loads one (``nas_rl.config.deferred``),
        called only for ``int8``; its images are resized to ``resolution``.
    :param calibration_samples: how many of its training images calibrate the int8 conversion.
    :param seed: seed of the benchmark's random input and of synthetic calibration data.
    :param conversion: one of :data:`CONVERSIONS`; both give the same ops, so it is not part of the fingerprint.
    :param drop_preempted: leave out timed runs during which this thread was descheduled (see
        :func:`benchmark_tflite`); in the fingerprint only when set.
    :param rounds: keep the quietest of this many rounds of timed runs (see :func:`benchmark_tflite`); in the
        fingerprint only when not 1.
    """

    def __init__(
        self,
        device: DeviceSpec | None = None,
        threads: int | None = None,
        precision: str | None = None,
        resolution: int | None = None,
        in_channels: int = 3,
        warmup_min_runs: int = 1,
        warmup_min_seconds: float = 0.5,
        min_runs: int = 50,
        min_seconds: float = 1.0,
        representative_data: np.ndarray | None = None,
        seed: int = 0,
        conversion: str = "saved_model",
        drop_preempted: bool = False,
        rounds: int = 1,
        calibration_dataset: SplitDataset | Callable[[], SplitDataset | None] | None = None,
        calibration_samples: int = 64,
    ) -> None:
        self.device = _resolve_device(device, threads, precision)
        if not is_int(calibration_samples) or calibration_samples < 1:
            raise ConfigError(f"calibration_samples={calibration_samples!r} is not accepted: use an integer >= 1")
        if representative_data is None and self.device.precision == "int8" and calibration_dataset is not None:
            dataset = calibration_dataset() if callable(calibration_dataset) else calibration_dataset
            if dataset is not None:
                from nas_rl.data.datasets import calibration_images

                representative_data = calibration_images(dataset, resolution, int(calibration_samples), int(seed))
        if not is_int(rounds) or rounds < 1:
            raise ConfigError(f"rounds={rounds!r} is not accepted: use an integer >= 1")
        self.rounds = int(rounds)
        _check_conversion(conversion)
        self.conversion = conversion
        self.drop_preempted = bool(drop_preempted)
        if resolution is not None and (not is_int(resolution) or resolution < 1):
            raise ConfigError(f"resolution={resolution!r} is not accepted: use an integer >= 1 or None")
        if not is_int(in_channels) or in_channels < 1:
            raise ConfigError(f"in_channels={in_channels!r} is not accepted: use an integer >= 1")
        _check_benchmark_settings(self.device.threads, warmup_min_runs, warmup_min_seconds, min_runs, min_seconds)
        # Normalised types: 1 and 1.0 must give the same fingerprint (the store's cache key).
        self.resolution = None if resolution is None else int(resolution)
        self.in_channels = int(in_channels)
        self.warmup_min_runs = int(warmup_min_runs)
        self.warmup_min_seconds = float(warmup_min_seconds)
        self.min_runs = int(min_runs)
        self.min_seconds = float(min_seconds)
        self.seed = int(seed)
        self.representative_data = _check_representative_data(representative_data, self.resolution, in_channels)

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return self.benchmark(self.convert(arch))

    def convert(self, arch: ArchSpec) -> bytes:
        """``arch``'s TFLite flatbuffer at the deployment input shape and this object's precision.

        :raises EvaluationFailed: the Keras build or the conversion failed; the message is one line.
        """
        resolution = self._deployment_resolution(arch)
        _quiet_tensorflow_logs()
        from nas_rl.models.keras_builder import build_keras_model

        keras_model = None
        try:
            try:
                keras_model = build_keras_model(arch, resolution, batch_size=1)
            except ConfigError:
                raise
            except Exception as error:
                raise EvaluationFailed(f"Keras build failed: {type(error).__name__}: {first_line(error)}") from error
            return self.convert_keras(keras_model)
        finally:
            # Graphs and variables accumulate in Keras' global state; a long search must not grow.
            del keras_model
            clear_keras_session()

    def measure_keras(self, keras_model: Any, representative_data: np.ndarray | None = None) -> LatencyStats:
        """Convert ``keras_model`` at this object's precision and benchmark it with its settings.

        Does not clear the Keras session: the caller owns the model.

        :raises EvaluationFailed: conversion or benchmark failed; the message is one line.
        """
        return self.benchmark(self.convert_keras(keras_model, representative_data))

    def convert_keras(self, keras_model: Any, representative_data: np.ndarray | None = None) -> bytes:
        """``keras_model``'s TFLite flatbuffer at this object's precision.

        For ``int8`` the calibration data is ``representative_data``, else this object's when its samples have
        the model's input shape, else synthetic.

        :raises EvaluationFailed: the conversion failed; the message is one line.
        """
        data = None
        if self.device.precision == "int8":
            data = self._calibration_data(keras_model, representative_data)
        try:
            return convert_to_tflite(keras_model, self.device.precision, data, self.conversion)
        except ConfigError:
            raise
        except Exception as error:
            raise EvaluationFailed(f"TFLite conversion failed: {type(error).__name__}: {first_line(error)}") from error

    def benchmark(self, model_bytes: bytes) -> LatencyStats:
        """Time a flatbuffer (from :meth:`convert`) with this object's settings; a flatbuffer can be timed again
        later without converting it again.

        :raises EvaluationFailed: the interpreter could not load or run it; the message is one line.
        """
        try:
            return benchmark_tflite(
                model_bytes,
                threads=self.device.threads,
                warmup_min_runs=self.warmup_min_runs,
                warmup_min_seconds=self.warmup_min_seconds,
                min_runs=self.min_runs,
                min_seconds=self.min_seconds,
                seed=self.seed,
                drop_preempted=self.drop_preempted,
                rounds=self.rounds,
            )
        except Exception as error:
            raise EvaluationFailed(f"LiteRT benchmark failed: {type(error).__name__}: {first_line(error)}") from error

    def fingerprint(self) -> dict[str, Any]:
        calibration = None
        if self.device.precision == "int8":
            calibration = "synthetic" if self.representative_data is None else _digest(self.representative_data)
        # absent at their defaults, so the cache keys of measurements taken before they existed stay valid
        extra: dict[str, Any] = {"drop_preempted": True} if self.drop_preempted else {}
        extra.update({"rounds": self.rounds} if self.rounds != 1 else {})
        return {
            "kind": "litert",
            "device": self.device.as_dict(),
            "resolution": self.resolution,
            "input_shape": [1, self.resolution, self.resolution, self.in_channels],
            "calibration": calibration,
            "warmup_min_runs": self.warmup_min_runs,
            "warmup_min_seconds": self.warmup_min_seconds,
            "min_runs": self.min_runs,
            "min_seconds": self.min_seconds,
            "seed": self.seed,
            **extra,
        }

    def __repr__(self) -> str:
        return (
            f"LiteRTLatency(device={self.device.name!r}, threads={self.device.threads}, "
            f"precision={self.device.precision!r}, resolution={self.resolution})"
        )

    def _calibration_data(self, keras_model: Any, representative_data: np.ndarray | None) -> np.ndarray:
        if representative_data is not None:
            return np.asarray(representative_data, dtype=np.float32)
        input_shape = tuple(keras_model.inputs[0].shape)[1:]
        if self.representative_data is not None and self.representative_data.shape[1:] == input_shape:
            return self.representative_data
        if any(size is None for size in input_shape):
            raise ConfigError(
                f"input shape {input_shape} is not accepted for int8 without representative_data; accepted: a "
                "fixed shape"
            )
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((SYNTHETIC_CALIBRATION_SAMPLES, *input_shape)).astype(np.float32)

    def _deployment_resolution(self, arch: ArchSpec) -> int:
        if self.resolution is None:
            raise ConfigError(
                "resolution=None is not accepted when measuring; accepted: the deployment input size (an "
                "integer >= 1, e.g. the search space's resolution)"
            )
        if arch.in_channels != self.in_channels:
            raise ConfigError(
                f"in_channels={self.in_channels} does not match the architecture's in_channels="
                f"{arch.in_channels}; accepted: the same input channels for both"
            )
        return self.resolution


def _resolve_device(device: DeviceSpec | None, threads: int | None, precision: str | None) -> DeviceSpec:
    """One source of truth for threads and precision: the device, or the arguments when there is none."""
    if device is None:
        threads = 1 if threads is None else threads
        return host_cpu(threads=threads, precision="fp32" if precision is None else precision)
    pairs = (("threads", threads, device.threads), ("precision", precision, device.precision))
    for key, value, on_device in pairs:
        if value is not None and value != on_device:
            raise ConfigError(
                f"{key}={value!r} disagrees with device {device.name!r} ({key}={on_device!r}); accepted: "
                f"None or {on_device!r}"
            )
    return device


def _run_until(interpreter: Any, min_runs: int, min_seconds: float, drop_preempted: bool = False) -> list[int]:
    """Invoke until both limits hold; returns each (kept) invoke's duration in ns."""
    min_ns = min_seconds * 1e9
    times: list[int] = []
    total = dropped = dropped_ns = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while len(times) < min_runs or total < min_ns:
            cpu_start = time.thread_time_ns() if drop_preempted else 0
            start = time.perf_counter_ns()
            interpreter.invoke()
            elapsed = time.perf_counter_ns() - start
            if drop_preempted:
                waited = elapsed - (time.thread_time_ns() - cpu_start)
                if waited > max(PREEMPTION_SLACK_NS, PREEMPTION_SLACK_FRACTION * elapsed):
                    dropped += 1
                    dropped_ns += elapsed
                    # a machine this busy: keep what comes rather than time forever
                    drop_preempted = dropped_ns <= MAX_DROPPED_SECONDS_FACTOR * min_ns or dropped < min_runs
                    continue
            times.append(elapsed)
            total += elapsed
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def _random_tensor(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 1, size=shape, endpoint=True).astype(np.bool_)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def _check_representative_data(data: Any, resolution: int | None, in_channels: int) -> np.ndarray | None:
    if data is None:
        return None
    array = np.asarray(data, dtype=np.float32)
    expected = (resolution or "H", resolution or "W", in_channels)
    shape_ok = array.ndim == 4 and len(array) > 0 and array.shape[3] == in_channels
    if shape_ok and resolution is not None:
        shape_ok = array.shape[1:3] == (resolution, resolution)
    if not shape_ok:
        raise ConfigError(
            f"representative_data shape {array.shape} is not accepted: use (N>0, {expected[0]}, "
            f"{expected[1]}, {expected[2]}) NHWC float samples"
        )
    return array


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        accepted = ", ".join(repr(p) for p in PRECISIONS)
        raise ConfigError(f"precision={precision!r} is not accepted: use {accepted}")


def _check_conversion(conversion: str) -> None:
    if conversion not in CONVERSIONS:
        accepted = ", ".join(repr(c) for c in CONVERSIONS)
        raise ConfigError(f"conversion={conversion!r} is not accepted: use {accepted}")


def _check_benchmark_settings(
    threads: int, warmup_min_runs: int, warmup_min_seconds: float, min_runs: int, min_seconds: float
) -> None:
    integers = (("threads", threads, 1), ("warmup_min_runs", warmup_min_runs, 0), ("min_runs", min_runs, 1))
    for key, value, lowest in integers:
        if not is_int(value) or value < lowest:
            raise ConfigError(f"{key}={value!r} is not accepted: use an integer >= {lowest}")
    for key, seconds in (("warmup_min_seconds", warmup_min_seconds), ("min_seconds", min_seconds)):
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not seconds >= 0:
            raise ConfigError(f"{key}={value!r} is not accepted: use a number of seconds >= 0")


def _digest(array: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _quiet_tensorflow_logs() -> None:
    # Must be set before TensorFlow's C++ runtime loads; harmless afterwards.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


