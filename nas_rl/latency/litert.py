"""``latency=litert``: latency measured on the configured device, the way TFLite's ``benchmark_model`` measures it.

The device is a backend (:mod:`nas_rl.devices`, the ``device`` config group): this computer's CPU through the
LiteRT interpreter (XNNPACK), or a phone over adb running ``benchmark_model`` itself. Either way the network is
built in Keras at the deployment input shape, converted by TensorFlow's TFLite converter, and timed there: a
warm-up (>= 1 run and >= 0.5 s), then timed runs until both >= 50 runs and >= 1 s hold.

TensorFlow and Keras are imported inside the functions that need them: importing this module is cheap,
and a search whose latency comes from elsewhere never loads TensorFlow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from nas_rl._util import is_int
from nas_rl.arch import ArchSpec
from nas_rl.devices.base import Backend, DeviceSpec, Timing
from nas_rl.devices.converter import CONVERSIONS as CONVERSIONS
from nas_rl.devices.converter import SYNTHETIC_CALIBRATION_SAMPLES as SYNTHETIC_CALIBRATION_SAMPLES
from nas_rl.devices.converter import check_conversion
from nas_rl.devices.converter import convert_to_tflite as convert_to_tflite
from nas_rl.devices.host_cpu import benchmark_tflite as benchmark_tflite
from nas_rl.errors import ConfigError
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.latency.device import resolve_backend

if TYPE_CHECKING:
    from nas_rl.data.datasets import SplitDataset


class LiteRTLatency(LatencyModel):
    """Latency measured on the configured device, at the deployment input shape.

    ``measure(arch)`` has the device's backend convert the architecture (Keras model at ``resolution`` with batch 1,
    TensorFlow's TFLite converter, fp32 or int8 full-integer quantization) and benchmark the flatbuffer; any failure
    in those steps raises :class:`EvaluationFailed` with a one-line reason. :meth:`measure_keras` is the same
    conversion and benchmark for any Keras model (e.g. single layers for lookup tables).

    :param device: the device: a backend (the ``device`` config group, e.g. ``${device}``), or a description of this
        computer's CPU; ``None``: this computer's CPU with ``threads`` and ``precision``.
    :param threads: interpreter threads; ``None`` takes the device's (1 without a device).
    :param precision: ``fp32`` or ``int8``; ``None`` takes the device's (``fp32`` without a device).
    :param resolution: deployment input height = width; must be set before :meth:`measure`.
    :param in_channels: deployment input channels; an architecture must have the same.
    :param warmup_min_runs: warm-up runs at least.
    :param warmup_min_seconds: warm-up seconds at least.
    :param min_runs: timed runs at least.
    :param min_seconds: timed seconds at least.
    :param representative_data: NHWC float calibration samples for ``int8``; ``None``: ``calibration_samples``
        training images of ``calibration_dataset``, or without one ``SYNTHETIC_CALIBRATION_SAMPLES`` seeded
        normal samples of the model's input shape (latency depends on the quantized graph, not on the
        calibration values, so synthetic data is enough to measure it; an export wants real images).
    :param calibration_dataset: a loaded dataset, or a function that loads one (``nas_rl.config.deferred``),
        called only for ``int8``; its images are resized to ``resolution``.
    :param calibration_samples: how many of its training images calibrate the int8 conversion.
    :param seed: seed of the benchmark's random input and of synthetic calibration data.
    :param conversion: one of :data:`CONVERSIONS` (``direct``: emitted without TensorFlow for fp32); all give the
        same ops, so it is not part of the fingerprint.
    :param drop_preempted: leave out timed runs during which the timing thread was descheduled (this computer's
        CPU, see :func:`~nas_rl.devices.host_cpu.benchmark_tflite`); in the fingerprint only when set.
    :param rounds: keep the quietest of this many rounds of timed runs; in the fingerprint only when not 1.
    """

    def __init__(
        self,
        device: Backend | DeviceSpec | None = None,
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
        conversion: str = "direct",
        drop_preempted: bool = False,
        rounds: int = 1,
        calibration_dataset: SplitDataset | Callable[[], SplitDataset | None] | None = None,
        calibration_samples: int = 64,
    ) -> None:
        self.backend = resolve_backend(device, threads, precision)
        if not is_int(calibration_samples) or calibration_samples < 1:
            raise ConfigError(f"calibration_samples={calibration_samples!r} is not accepted: use an integer >= 1")
        if resolution is not None and (not is_int(resolution) or resolution < 1):
            raise ConfigError(f"resolution={resolution!r} is not accepted: use an integer >= 1 or None")
        if not is_int(in_channels) or in_channels < 1:
            raise ConfigError(f"in_channels={in_channels!r} is not accepted: use an integer >= 1")
        self.timing = Timing(warmup_min_runs, warmup_min_seconds, min_runs, min_seconds, seed, drop_preempted, rounds)
        if representative_data is None and self.backend.precision == "int8" and calibration_dataset is not None:
            dataset = calibration_dataset() if callable(calibration_dataset) else calibration_dataset
            if dataset is not None:
                from nas_rl.data.datasets import calibration_images

                representative_data = calibration_images(dataset, resolution, int(calibration_samples), int(seed))
        check_conversion(conversion)
        self.conversion = conversion
        # Normalised types: 1 and 1.0 must give the same fingerprint (the store's cache key).
        self.resolution = None if resolution is None else int(resolution)
        self.in_channels = int(in_channels)
        self.representative_data = _check_representative_data(representative_data, self.resolution, in_channels)

    @property
    def device(self) -> DeviceSpec:
        """The device's description (a phone is contacted the first time)."""
        return self.backend.describe()

    # The timing settings, as they were attributes before the Timing object held them.
    warmup_min_runs = property(lambda self: self.timing.warmup_min_runs)
    warmup_min_seconds = property(lambda self: self.timing.warmup_min_seconds)
    min_runs = property(lambda self: self.timing.min_runs)
    min_seconds = property(lambda self: self.timing.min_seconds)
    seed = property(lambda self: self.timing.seed)
    drop_preempted = property(lambda self: self.timing.drop_preempted)
    rounds = property(lambda self: self.timing.rounds)

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return self.benchmark(self.convert(arch))

    def convert(self, arch: ArchSpec) -> bytes:
        """``arch``'s TFLite flatbuffer at the deployment input shape and the device's precision.

        :raises EvaluationFailed: the Keras build or the conversion failed; the message is one line.
        """
        resolution = self._deployment_resolution(arch)
        return self.backend.convert(arch, resolution, self.conversion, self.representative_data, self.timing.seed)

    def measure_keras(self, keras_model: Any, representative_data: np.ndarray | None = None) -> LatencyStats:
        """Convert ``keras_model`` at the device's precision and benchmark it with this object's settings.

        Does not clear the Keras session: the caller owns the model.

        :raises EvaluationFailed: conversion or benchmark failed; the message is one line.
        """
        return self.benchmark(self.convert_keras(keras_model, representative_data))

    def convert_keras(self, keras_model: Any, representative_data: np.ndarray | None = None) -> bytes:
        """``keras_model``'s TFLite flatbuffer at the device's precision.

        For ``int8`` the calibration data is ``representative_data``, else this object's when its samples have
        the model's input shape, else synthetic.

        :raises EvaluationFailed: the conversion failed; the message is one line.
        """
        data = self.representative_data if representative_data is None else representative_data
        return self.backend.convert_keras(keras_model, data, self.conversion, self.timing.seed)

    def benchmark(self, model_bytes: bytes) -> LatencyStats:
        """Time a flatbuffer (from :meth:`convert`) on the device with this object's settings; a flatbuffer can be
        timed again later without converting it again.

        :raises EvaluationFailed: the device could not load or run it; the message is one line.
        """
        return self.backend.benchmark(model_bytes, self.timing)

    def fingerprint(self) -> dict[str, Any]:
        calibration = None
        if self.backend.precision == "int8":
            calibration = "synthetic" if self.representative_data is None else _digest(self.representative_data)
        timing = self.timing
        # absent at their defaults, so the cache keys of measurements taken before they existed stay valid
        extra: dict[str, Any] = {"drop_preempted": True} if timing.drop_preempted else {}
        extra.update({"rounds": timing.rounds} if timing.rounds != 1 else {})
        return {
            "kind": "litert",
            "device": self.device.as_dict(),
            "resolution": self.resolution,
            "input_shape": [1, self.resolution, self.resolution, self.in_channels],
            "calibration": calibration,
            "warmup_min_runs": timing.warmup_min_runs,
            "warmup_min_seconds": timing.warmup_min_seconds,
            "min_runs": timing.min_runs,
            "min_seconds": timing.min_seconds,
            "seed": timing.seed,
            **extra,
        }

    def __repr__(self) -> str:
        backend = self.backend
        return (
            f"LiteRTLatency(device={backend.name!r}, threads={backend.threads}, "
            f"precision={backend.precision!r}, resolution={self.resolution})"
        )

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


def _digest(array: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
