"""Where a latency is measured: a named device, described well enough to reproduce the number.

Every latency record and lookup table carries a :class:`DeviceSpec` (through the latency model's
fingerprint), so numbers taken with another runtime, thread count, precision or CPU are never mixed.
"""

from __future__ import annotations

import importlib.metadata
import numbers
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from nas_rl.errors import ConfigError

#: Numeric precisions a model is converted to before it is measured.
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class DeviceSpec:
    """One device a latency is measured on.

    :param name: short name used in records and file names, e.g. ``host-cpu``.
    :param runtime: interpreter and its version, e.g. ``litert 2.3.0`` (XNNPACK is LiteRT's default CPU delegate).
    :param converter: model converter and its version, e.g. ``tensorflow 2.21.0``.
    :param threads: interpreter threads (>= 1).
    :param precision: ``fp32`` or ``int8`` (full-integer post-training quantization).
    :param cpu_model: the CPU's model name, as the OS reports it.
    """

    name: str
    runtime: str
    converter: str
    threads: int
    precision: str
    cpu_model: str

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, numbers.Integral) or self.threads < 1:
            raise ConfigError(f"threads={self.threads!r} is not accepted: use an integer >= 1")
        object.__setattr__(self, "threads", int(self.threads))
        if self.precision not in PRECISIONS:
            accepted = ", ".join(repr(p) for p in PRECISIONS)
            raise ConfigError(f"precision={self.precision!r} is not accepted: use {accepted}")
        if not self.name:
            raise ConfigError("name='' is not accepted: use a non-empty device name")

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def describe(self) -> str:
        return describe(self.as_dict())


def describe(device: Mapping[str, Any]) -> str:
    """One line naming a device as a table header or a :class:`DeviceSpec` records it: name, CPU, runtime,
    converter, threads and precision (fields a header lacks read ``?``)."""
    field = {key: device.get(key, "?") for key in ("name", "cpu_model", "runtime", "converter", "threads", "precision")}
    return (
        f"{field['name']} ({field['cpu_model']}; {field['runtime']}; {field['converter']}; "
        f"{field['threads']} thread(s), {field['precision']})"
    )


def host_cpu(threads: int = 1, precision: str = "fp32", name: str = "host-cpu") -> DeviceSpec:
    """This computer's CPU through LiteRT, with models converted by TensorFlow's TFLite converter.

    Reads versions from package metadata, so it does not import TensorFlow.
    """
    return DeviceSpec(
        name=name,
        runtime=f"litert {_package_version('ai-edge-litert')}",
        converter=f"tensorflow {_package_version('tensorflow', 'tensorflow-cpu', 'tf-nightly', 'tf-nightly-cpu')}",
        threads=threads,
        precision=precision,
        cpu_model=cpu_model_name(),
    )


def cpu_model_name() -> str:
    """The CPU's "model name" from /proc/cpuinfo (Linux); else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _package_version(*distributions: str) -> str:
    """Version of the first installed distribution among ``distributions`` (TF ships under several names)."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"
