"""Where a latency is measured: a named device, described well enough to reproduce the number.

The device is a backend of :mod:`nas_rl.devices` (the ``device`` config group); its description
(:class:`DeviceSpec`) and this computer's (:func:`host_cpu`) live there and are named here too, where latency code
has always found them. :func:`resolve_backend` turns what a latency model is given into the one backend it uses.
"""

from __future__ import annotations

from nas_rl.devices.base import PRECISIONS as PRECISIONS
from nas_rl.devices.base import Backend
from nas_rl.devices.base import DeviceSpec as DeviceSpec
from nas_rl.devices.base import describe as describe
from nas_rl.devices.host_cpu import HostCPU
from nas_rl.devices.host_cpu import cpu_model_name as cpu_model_name
from nas_rl.devices.host_cpu import host_cpu as host_cpu
from nas_rl.errors import ConfigError


def resolve_backend(
    device: Backend | DeviceSpec | str | None, threads: int | None = None, precision: str | None = None
) -> Backend:
    """One source of truth for the device, its threads and its precision.

    A backend (the ``device`` config group, ``${device}`` in a latency config) is used as it is: ``threads`` and
    ``precision`` may only repeat its own. A name (a string), a :class:`DeviceSpec` (what ``conf/device/host_cpu.yaml``
    built before backends existed) or ``None`` stand for this computer's CPU under that name (``host-cpu``), with
    ``threads`` (1) and ``precision`` (``fp32``): released env specs and saved configs say it so.

    :raises ConfigError: ``threads`` or ``precision`` disagree with the backend's, or ``device`` is none of these.
    """
    if device is None or isinstance(device, str):
        return HostCPU(device or "host-cpu", 1 if threads is None else threads, "fp32" if precision is None else precision)
    if isinstance(device, DeviceSpec):
        device = HostCPU(device.name, device.threads, device.precision)
    if not isinstance(device, Backend):
        raise ConfigError(
            f"device={device!r} is not accepted: use a device (the device config group: device: ${{device}}), "
            "a device name, or null for this computer's CPU"
        )
    pairs = (("threads", threads, device.threads), ("precision", precision, device.precision))
    for key, value, on_device in pairs:
        if value is not None and value != on_device:
            raise ConfigError(
                f"{key}={value!r} disagrees with device {device.name!r} ({key}={on_device!r}); accepted: None or "
                f"{on_device!r} (the device sets it: device.{key}=...)"
            )
    return device
