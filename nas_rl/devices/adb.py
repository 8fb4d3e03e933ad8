"""``device=adb``: an Android phone over adb, timing flatbuffers with LiteRT's ``benchmark_model`` binary.

Models are converted here (the same TFLite converter as ``device=host_cpu``), pushed to the phone and run by a
``benchmark_model`` the user put there (``adb push benchmark_model /data/local/tmp && adb shell chmod +x
/data/local/tmp/benchmark_model``), with the warm-up and timing settings of the latency model; its output is read
by :mod:`nas_rl.devices.benchmark_model_output`. The phone is described by its ``getprop`` properties (model,
system-on-chip, Android version) and the binary's digest, so a table measured with another phone or another
build of the binary is refused. adb itself is the maintained ``adbutils`` library (which brings its own ``adb``
server binary).

Nothing is contacted when the backend is built: the phone is reached on first use. Then, bad setups stop with
one line saying what is expected: no adb server, no phone at the serial, no (executable) binary at the path.
A phone that stops answering mid-search fails the candidate being measured (:class:`~nas_rl.devices.base.
DeviceLost`, recorded with its reason), and the next measurement reconnects.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from dataclasses import replace
from typing import Any

from nas_rl._util import first_line, is_int
from nas_rl.devices.base import Backend, DeviceLost, DeviceSpec, LatencyStats, Timing
from nas_rl.devices.benchmark_model_output import parse
from nas_rl.devices.host_cpu import package_version
from nas_rl.errors import ConfigError, EvaluationFailed, require

#: getprop keys of the phone's description; the system-on-chip is ``ro.soc.model`` (Android 12+) or else the board.
PROPERTIES = {"phone": "ro.product.model", "soc": "ro.soc.model", "board": "ro.board.platform",
              "android": "ro.build.version.release"}  # fmt: skip
#: Where the phone reports temperatures (millidegrees Celsius on most kernels, degrees on a few).
THERMAL_ZONES = "/sys/class/thermal/thermal_zone*/temp"
#: Seconds allowed for the quick shell commands (getprop, test, rm); a benchmark has ``timeout_s``.
QUICK_TIMEOUT_S = 60.0
_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")


class AdbPhone(Backend):
    """An Android phone over adb, running LiteRT's ``benchmark_model``.

    :param name: the device's short name in records and table file names.
    :param serial: the phone's adb serial (``adb devices`` lists it); ``None``: the only phone attached.
    :param host: the adb server's host.
    :param port: the adb server's port.
    :param benchmark_model: path of the ``benchmark_model`` binary on the phone (pushed there by the user).
    :param remote_dir: a folder on the phone where models are pushed (and removed after each run).
    :param threads: ``--num_threads``.
    :param precision: ``fp32`` or ``int8`` (the converter quantizes; the phone runs what it gets).
    :param use_xnnpack: ``--use_xnnpack`` (false: TFLite's built-in CPU kernels).
    :param use_gpu: ``--use_gpu=true``: the GPU delegate.
    :param taskset: a CPU mask in hex (e.g. ``f0`` for a phone's big cores): the binary runs under
        ``taskset <mask>``, which steadies the numbers on big.LITTLE phones; ``None``: any core.
    :param cooldown_s: seconds between the end of one measurement and the start of the next (a phone heats up
        and throttles under back-to-back runs); 0: none.
    :param timeout_s: seconds one ``benchmark_model`` run may take.
    :param benchmark_model_version: a label of the binary's version for the device description (e.g. ``2.16.1``);
        ``None``: its SHA-256 digest on the phone (so another build is another device).
    :param client: an adb client with adbutils' ``AdbClient`` interface; ``None``: ``adbutils.AdbClient(host, port)``,
        made on first use.
    """

    def __init__(
        self,
        name: str = "android",
        serial: str | None = None,
        host: str = "127.0.0.1",
        port: int = 5037,
        benchmark_model: str = "/data/local/tmp/benchmark_model",
        remote_dir: str = "/data/local/tmp",
        threads: int = 1,
        precision: str = "fp32",
        use_xnnpack: bool = True,
        use_gpu: bool = False,
        taskset: str | int | None = None,
        cooldown_s: float = 0.0,
        timeout_s: float = 600.0,
        benchmark_model_version: str | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(name, threads, precision)
        require(serial is None or (isinstance(serial, str) and serial != ""), "serial", serial,
                "the phone's adb serial (as `adb devices` lists it), or null for the only phone attached")  # fmt: skip
        require(is_int(port) and 0 < port < 65536, "port", port, "the adb server's port (an integer, 5037 by default)")
        for key, path in (("benchmark_model", benchmark_model), ("remote_dir", remote_dir)):
            require(isinstance(path, str) and path.startswith("/"), key, path, "an absolute path on the phone")
        mask = None if taskset is None else str(taskset)
        require(mask is None or re.fullmatch(r"(0x)?[0-9a-fA-F]+", mask) is not None, "taskset", taskset,
                "a CPU mask in hex (e.g. f0), or null")  # fmt: skip
        for key, seconds, lowest in (("cooldown_s", cooldown_s, 0.0), ("timeout_s", timeout_s, 1e-9)):
            ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= lowest
            require(ok, key, seconds, f"a number of seconds {'>= 0' if lowest == 0 else '> 0'}")
        self.serial = serial
        self.host = str(host)
        self.port = int(port)
        self.benchmark_model = benchmark_model
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.use_xnnpack = bool(use_xnnpack)
        self.use_gpu = bool(use_gpu)
        self.taskset = mask
        self.cooldown_s = float(cooldown_s)
        self.timeout_s = float(timeout_s)
        self.benchmark_model_version = benchmark_model_version
        self.client = client
        self._device: Any = None  # the connected phone (adbutils' AdbDevice), once reached
        self._reached: str | None = None  # the serial the phone was reached at (a later failure means it was lost)
        self._spec: DeviceSpec | None = None
        self._last_end: float | None = None

    # --- the three verbs ----------------------------------------------------------------------------------

    def describe(self) -> DeviceSpec:
        if self._spec is None:
            device = self._connected()
            props = {key: self._shell(device, ["getprop", prop], "reading its properties").strip()
                     for key, prop in PROPERTIES.items()}  # fmt: skip
            extra = [("phone", props["phone"] or "unknown"), ("android", props["android"] or "unknown"),
                     ("delegate", self.delegate)]  # fmt: skip
            if self.taskset:
                extra.append(("taskset", self.taskset))
            self._spec = DeviceSpec(
                name=self.name,
                runtime=f"benchmark_model {self.benchmark_model_version or self._binary_digest(device)}",
                converter=f"tensorflow {package_version('tensorflow', 'tensorflow-cpu', 'tf-nightly', 'tf-nightly-cpu')}",
                threads=self.threads,
                precision=self.precision,
                cpu_model=props["soc"] or props["board"] or "unknown",
                extra=tuple(extra),
            )
        return self._spec

    def benchmark(self, model: bytes, timing: Timing) -> LatencyStats:
        """Push ``model``, run ``benchmark_model`` on it (``timing.rounds`` times, keeping the run with the lowest
        median), remove it. ``timing.seed`` and ``timing.drop_preempted`` have no ``benchmark_model`` flag: the binary
        draws its own random input, and times every run.

        :raises EvaluationFailed: the binary failed on the model, or printed what is not its statistics.
        :raises DeviceLost: the phone stopped answering.
        """
        device = self._connected()
        self._cool_down()
        remote = f"{self.remote_dir}/nas-rl-{hashlib.sha256(model).hexdigest()[:16]}.tflite"
        try:
            self._push(device, model, remote)
            temperature = self.temperature_c(device)
            rounds = [self._run(device, remote, timing) for _ in range(timing.rounds)]
        finally:
            self._last_end = time.monotonic()
            if self._device is not None:
                try:
                    self._shell(self._device, ["rm", "-f", remote], "removing the model", check=False)
                except DeviceLost:
                    pass  # the measurement's own error says so
        return replace(min(rounds, key=lambda stats: stats.median_ms), temperature_c=temperature)

    # --- the phone ------------------------------------------------------------------------------------------

    @property
    def delegate(self) -> str:
        return "gpu" if self.use_gpu else "xnnpack" if self.use_xnnpack else "builtin"

    def command(self, remote: str, timing: Timing) -> list[str]:
        """The shell command of one ``benchmark_model`` run of the model at ``remote`` (one of ``timing.rounds``)."""
        runs, seconds = -(-timing.min_runs // timing.rounds), timing.min_seconds / timing.rounds
        args = [] if self.taskset is None else ["taskset", self.taskset]
        args += [self.benchmark_model, f"--graph={remote}", f"--num_threads={self.threads}",
                 f"--warmup_runs={timing.warmup_min_runs}", f"--warmup_min_secs={timing.warmup_min_seconds:g}",
                 f"--num_runs={runs}", f"--min_secs={seconds:g}", f"--use_xnnpack={str(self.use_xnnpack).lower()}"]  # fmt: skip
        return args + (["--use_gpu=true"] if self.use_gpu else [])

    def temperature_c(self, device: Any = None) -> float | None:
        """The hottest thermal zone's temperature in degrees Celsius; ``None`` where the phone reports none."""
        device = device or self._connected()
        text = self._shell(device, f"cat {THERMAL_ZONES} 2>/dev/null", "reading its temperature", check=False)
        readings = []
        for token in text.split():
            if re.fullmatch(r"-?\d+", token):
                value = int(token) / (1000 if abs(int(token)) >= 1000 else 1)
                if -40 <= value <= 150:  # a zone without a working sensor reads garbage
                    readings.append(value)
        return max(readings) if readings else None

    def _run(self, device: Any, remote: str, timing: Timing) -> LatencyStats:
        command = shlex.join(self.command(remote, timing))
        result = self._call(lambda: device.shell2(command, timeout=self.timeout_s), "running benchmark_model")
        output = str(result.output)
        if result.returncode != 0:
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            errors = [line for line in lines if "error" in line.lower()] or lines[-1:] or ["it printed nothing"]
            raise EvaluationFailed(
                f"{self.benchmark_model} exited with status {result.returncode} on adb device {self._reached}: "
                f"{errors[0]}"
            )
        return parse(output, self.benchmark_model).latency_stats()

    def _connected(self) -> Any:
        """The phone, reached (and its binary checked) on first use; reached again after it was lost."""
        if self._device is not None:
            return self._device
        import adbutils

        try:
            client = self.client or adbutils.AdbClient(host=self.host, port=self.port)
            attached = [info.serial for info in client.list() if info.state == "device"]
        except Exception as error:  # no server, and adbutils could not start one
            if self._reached is not None:
                raise self._lost(error, "reaching the adb server") from error
            raise ConfigError(
                f"device.host={self.host}:{self.port} is not accepted: no adb server answers there "
                f"({type(error).__name__}: {first_line(error)}); use the host and port of a running adb server "
                "(`adb start-server`)"
            ) from None
        serial = self._serial(attached)
        device = client.device(serial=serial)
        if self._reached is None:
            self._check_binary(device, serial)
        self._device, self._reached = device, serial
        return device

    def _serial(self, attached: list[str]) -> str:
        shown = ", ".join(attached) or "none"
        wanted = self.serial or self._reached  # once reached, the same phone (its description is the one recorded)
        if wanted is None:
            if len(attached) == 1:
                return attached[0]
            raise ConfigError(
                f"device.serial=None is not accepted: it needs exactly one phone attached to adb, and "
                f"{self.host}:{self.port} lists {len(attached)} ({shown}); use device.serial=<one of them>, or plug "
                "in one phone with USB debugging allowed"
            )
        if wanted not in attached:
            if self._reached is not None:
                raise DeviceLost(f"adb device {wanted} is no longer attached (attached: {shown}); reconnect it")
            raise ConfigError(
                f"device.serial={self.serial!r} is not accepted: no phone with that serial is attached to the adb "
                f"server at {self.host}:{self.port} (attached and authorised: {shown}); use one of them, or plug the "
                "phone in with USB debugging allowed"
            )
        return wanted

    def _check_binary(self, device: Any, serial: str) -> None:
        path = self.benchmark_model
        push = (f"push LiteRT's benchmark_model there (adb push benchmark_model {path} && adb shell chmod +x "
                f"{path}), or set device.benchmark_model to where it is")  # fmt: skip
        if self._shell(device, ["test", "-e", path], "checking benchmark_model", check=None) != "ok":
            raise ConfigError(f"device.benchmark_model={path!r} is not accepted: no such file on adb device {serial}; "
                              f"{push}")  # fmt: skip
        if self._shell(device, ["test", "-x", path], "checking benchmark_model", check=None) != "ok":
            raise ConfigError(f"device.benchmark_model={path!r} is not accepted: it is not executable on adb device "
                              f"{serial}; run adb shell chmod +x {path}, or {push}")  # fmt: skip
        usage = self._shell(device, [path, "--help"], "checking benchmark_model", check=False)
        if "--graph" not in usage:
            shown = " | ".join([line.strip() for line in usage.splitlines() if line.strip()][:3]) or "nothing"
            raise ConfigError(f"device.benchmark_model={path!r} is not accepted: it does not answer --help as LiteRT's "
                              f"benchmark_model does (no --graph flag) on adb device {serial}; it printed: {shown}. "
                              f"{push[0].upper()}{push[1:]}")  # fmt: skip

    def _binary_digest(self, device: Any) -> str:
        for tool, label in (("sha256sum", "sha256"), ("md5sum", "md5")):
            text = self._shell(device, [tool, self.benchmark_model], "reading the binary's digest", check=False)
            digest = text.split()[0] if text.split() else ""
            if _HEX.match(digest):
                return f"{label}:{digest[:16]}"
        return "unknown"

    def _push(self, device: Any, model: bytes, remote: str) -> None:
        self._call(lambda: device.sync.push(model, remote, mode=0o644), "pushing the model")

    def _shell(self, device: Any, command: list[str] | str, doing: str, check: bool | None = True) -> str:
        """The output of a quick shell command. ``check``: a non-zero status fails the measurement; ``False``: the
        output anyway; ``None``: ``"ok"`` on status 0, else ``""``."""
        text = command if isinstance(command, str) else shlex.join(command)
        result = self._call(lambda: device.shell2(text, timeout=QUICK_TIMEOUT_S), doing)
        if check is None:
            return "ok" if result.returncode == 0 else ""
        if check and result.returncode != 0:
            raise EvaluationFailed(f"`{text}` exited with status {result.returncode} on adb device {self._reached}: "
                                   f"{first_line(str(result.output), 'no output')}")  # fmt: skip
        return str(result.output)

    def _call(self, action: Any, doing: str) -> Any:
        """``action()``; adb or socket errors mean the phone is gone: forget it and raise :class:`DeviceLost`."""
        import adbutils

        try:
            return action()
        except (adbutils.AdbError, OSError, EOFError) as error:
            raise self._lost(error, doing) from error

    def _lost(self, error: BaseException, doing: str) -> DeviceLost:
        self._device = None
        serial = self._reached or self.serial or "(the only phone)"
        return DeviceLost(
            f"adb device {serial} stopped answering while {doing} ({type(error).__name__}: "
            f"{first_line(error, 'no message')}); reconnect it: the next measurement reconnects"
        )

    def _cool_down(self) -> None:
        if self.cooldown_s > 0 and self._last_end is not None:
            time.sleep(max(0.0, self.cooldown_s - (time.monotonic() - self._last_end)))

    def __getstate__(self) -> dict[str, Any]:
        # a connection does not travel (it is made again on first use), nor does this process's clock
        return {**self.__dict__, "_device": None, "_last_end": None}

    def __repr__(self) -> str:
        return (f"AdbPhone(name={self.name!r}, serial={self.serial!r}, threads={self.threads}, "
                f"precision={self.precision!r}, delegate={self.delegate!r})")  # fmt: skip
