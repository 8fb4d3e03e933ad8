"""The device backend role: one device that runs networks, behind three verbs.

``convert`` turns an architecture (or a Keras model) into what the device runs (a TFLite flatbuffer: every
backend today shares TensorFlow's TFLite converter, :mod:`nas_rl.devices.converter`), ``benchmark`` times that
artifact there, ``describe`` says which device it is (a :class:`DeviceSpec`). Latency models
(:mod:`nas_rl.latency`) get a backend from the one ``device`` config group and never know which device it is;
a new device is one module here plus one YAML file in ``conf/device/``.

Every latency record and table carries the device's description, so numbers taken on another device, runtime,
thread count or precision are never mixed.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nas_rl._util import is_int
from nas_rl.arch import ArchSpec
from nas_rl.errors import ConfigError, EvaluationFailed

#: Numeric precisions a model is converted to before it is measured.
PRECISIONS = ("fp32", "int8")
#: The fields every device description has, in the order :func:`describe` names them.
SPEC_FIELDS = ("name", "runtime", "converter", "threads", "precision", "cpu_model")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated runs, in milliseconds; a predicted latency has runs == 0 and all fields equal.

    :param temperature_c: the device's temperature just before the timed runs, where the device reports one
        (a phone's thermal zones); ``None`` elsewhere, and then absent from :meth:`as_dict`.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    runs: int
    temperature_c: float | None = None

    @classmethod
    def predicted(cls, value_ms: float) -> LatencyStats:
        return cls(value_ms, value_ms, 0.0, value_ms, value_ms, 0)

    def as_dict(self) -> dict[str, float]:
        values = asdict(self)
        if values["temperature_c"] is None:
            del values["temperature_c"]
        return values


@dataclass(frozen=True)
class DeviceSpec:
    """One device a latency is measured on, described well enough to reproduce the number.

    :param name: short name used in records and file names, e.g. ``host-cpu``.
    :param runtime: interpreter and its version, e.g. ``litert 2.3.0`` or ``benchmark_model sha256:1a2b...``.
    :param converter: model converter and its version, e.g. ``tensorflow 2.21.0``.
    :param threads: interpreter threads (>= 1).
    :param precision: ``fp32`` or ``int8`` (full-integer post-training quantization).
    :param cpu_model: the CPU's (or the phone's system-on-chip's) model name, as the OS reports it.
    :param extra: further ``(key, value)`` pairs that tell devices apart (a phone's model and Android version,
        its delegate, its CPU mask); none for this computer's CPU, so its description is what it always was.
    """

    name: str
    runtime: str
    converter: str
    threads: int
    precision: str
    cpu_model: str
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        check_threads(self.threads)
        object.__setattr__(self, "threads", int(self.threads))
        check_precision(self.precision)
        if not self.name:
            raise ConfigError("name='' is not accepted: use a non-empty device name")
        clash = [key for key, _ in self.extra if key in SPEC_FIELDS or key == "extra"]
        if clash:
            raise ConfigError(f"extra={list(self.extra)!r} is not accepted: {clash[0]!r} is a field of its own")

    def as_dict(self) -> dict[str, str | int]:
        """The description as tables and records hold it: the fields, then the extra pairs as keys of their own."""
        values: dict[str, str | int] = {key: value for key, value in asdict(self).items() if key != "extra"}
        values.update(dict(self.extra))
        return values

    def describe(self) -> str:
        return describe(self.as_dict())


def describe(device: Mapping[str, Any]) -> str:
    """One line naming a device as a table header or a :class:`DeviceSpec` records it: name, CPU, runtime,
    converter, threads and precision (fields a header lacks read ``?``), then any further fields."""
    field_ = {key: device.get(key, "?") for key in SPEC_FIELDS}
    more = "".join(f"; {key} {value}" for key, value in device.items() if key not in SPEC_FIELDS)
    return (
        f"{field_['name']} ({field_['cpu_model']}; {field_['runtime']}; {field_['converter']}; "
        f"{field_['threads']} thread(s), {field_['precision']}{more})"
    )


def check_threads(threads: Any) -> None:
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ConfigError(f"threads={threads!r} is not accepted: use an integer >= 1")


def check_precision(precision: Any) -> None:
    if precision not in PRECISIONS:
        accepted = ", ".join(repr(p) for p in PRECISIONS)
        raise ConfigError(f"precision={precision!r} is not accepted: use {accepted}")


@dataclass(frozen=True)
class Timing:
    """How a flatbuffer is timed, as TFLite's ``benchmark_model`` does: warm up until both ``warmup_min_runs`` and
    ``warmup_min_seconds`` hold, then time runs until both ``min_runs`` and ``min_seconds`` hold.

    :param seed: seed of the random input (where the backend fills the input itself).
    :param drop_preempted: leave out runs during which the OS descheduled the timing thread (this computer only:
        ``benchmark_model`` on a phone has no such option, and ignores it).
    :param rounds: split the timed runs into this many rounds and keep the one with the lowest median.
    """

    warmup_min_runs: int = 1
    warmup_min_seconds: float = 0.5
    min_runs: int = 50
    min_seconds: float = 1.0
    seed: int = 0
    drop_preempted: bool = False
    rounds: int = 1

    def __post_init__(self) -> None:
        integers = (("warmup_min_runs", self.warmup_min_runs, 0), ("min_runs", self.min_runs, 1),
                    ("rounds", self.rounds, 1), ("seed", self.seed, 0))  # fmt: skip
        for key, value, lowest in integers:
            if not is_int(value) or value < lowest:
                raise ConfigError(f"{key}={value!r} is not accepted: use an integer >= {lowest}")
            object.__setattr__(self, key, int(value))
        for key, seconds in (("warmup_min_seconds", self.warmup_min_seconds), ("min_seconds", self.min_seconds)):
            if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not seconds >= 0:
                raise ConfigError(f"{key}={seconds!r} is not accepted: use a number of seconds >= 0")
            object.__setattr__(self, key, float(seconds))
        object.__setattr__(self, "drop_preempted", bool(self.drop_preempted))


class DeviceLost(EvaluationFailed):
    """The device stopped answering while measuring (a phone unplugged mid-search).

    A search records the candidate as failed with this reason and goes on (its failure limit stops it if the
    device stays away); a profiling run stops, keeping every row it wrote, and resumes when run again.
    """


class Backend(ABC):
    """One device: converts networks to what it runs, benchmarks them there, and describes itself.

    Constructing a backend contacts nothing (a phone is reached on first use), so a config that names a device
    builds anywhere. ``name``, ``threads`` and ``precision`` are the configured settings, known without the device;
    :meth:`describe` is the full description, read from the device.

    :param name: the device's short name in records and table file names.
    :param threads: interpreter threads (>= 1).
    :param precision: ``fp32`` or ``int8`` (full-integer post-training quantization, done by the converter).
    """

    def __init__(self, name: str, threads: int = 1, precision: str = "fp32") -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name={name!r} is not accepted: use a non-empty device name")
        check_threads(threads)
        check_precision(precision)
        self.name = name
        self.threads = int(threads)
        self.precision = precision

    @abstractmethod
    def describe(self) -> DeviceSpec:
        """This device's description (may contact the device the first time)."""

    @abstractmethod
    def benchmark(self, model: bytes, timing: Timing) -> LatencyStats:
        """Time the flatbuffer ``model`` on this device.

        :raises EvaluationFailed: the device could not load or run it (:class:`DeviceLost`: the device is gone);
            the message is one line.
        :raises ConfigError: the device is not set up as configured (no device at the serial, no benchmark binary).
        """

    def convert(
        self,
        arch: ArchSpec,
        resolution: int,
        conversion: str = "direct",
        representative_data: np.ndarray | None = None,
        seed: int = 0,
    ) -> bytes:
        """``arch``'s flatbuffer at batch 1 and ``resolution`` x ``resolution``, at this device's precision.

        :param conversion: emitted directly, or how the Keras model reaches TFLite's converter
            (:data:`~nas_rl.devices.converter.CONVERSIONS`).
        :param representative_data: int8 calibration samples at the deployment shape; ``None``: synthetic ones.
        :raises EvaluationFailed: the Keras build or the conversion failed; the message is one line.
        """
        from nas_rl.devices.converter import convert_arch

        return convert_arch(arch, resolution, self.precision, conversion, representative_data, seed)

    def convert_keras(
        self,
        keras_model: Any,
        representative_data: np.ndarray | None = None,
        conversion: str = "saved_model",
        seed: int = 0,
    ) -> bytes:
        """``keras_model``'s flatbuffer at this device's precision (int8: calibrated on ``representative_data``, or
        on seeded synthetic samples of the model's input shape).

        :raises EvaluationFailed: the conversion failed; the message is one line.
        """
        from nas_rl.devices.converter import convert_keras

        return convert_keras(keras_model, self.precision, conversion, representative_data, seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threads={self.threads}, precision={self.precision!r})"
