"""Test doubles for the expensive roles (accuracy and latency) and for a cluster."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from nas_rl.accuracy.base import AccuracyEstimator
from nas_rl.arch import ArchSpec
from nas_rl.evaluation.executor import LocalExecutor
from nas_rl.evaluation.store import Evaluation
from nas_rl.latency.base import LatencyModel, LatencyStats


class HashAccuracyDouble(AccuracyEstimator):
    """Test double: a deterministic pseudo-accuracy from the block string, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def accuracy(self, arch: ArchSpec) -> float:
        self.calls += 1
        return 0.5 + (zlib.crc32(arch.to_string().encode()) % 1000) / 2000

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "hash_double"}


class ChannelLatencyDouble(LatencyModel):
    """Test double: latency grows with the channels and layers of the architecture."""

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return LatencyStats.predicted(sum(s.out_channels * s.repeats * s.expansion for s in arch.stages) / 100)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "channel_double"}


class SlowAccuracyDouble(HashAccuracyDouble):
    """Test double: the hash pseudo-accuracy after ``seconds`` of pretend training. With ``started``, each call
    first appends its process id to that file, so a test sees who evaluated and when one is mid-evaluation."""

    def __init__(self, seconds: float, started: str | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = started

    def accuracy(self, arch: ArchSpec) -> float:
        if self.started is not None:
            with open(self.started, "a") as handle:
                handle.write(f"{os.getpid()}\n")
        time.sleep(self.seconds)
        return super().accuracy(arch)


class TracedAccuracyDouble(HashAccuracyDouble):
    """Test double: the hash pseudo-accuracy after ``seconds`` of pretend training; each call first appends
    "<process id> <block string>" to the file ``trace`` (which process evaluated what, and when one is busy)."""

    def __init__(self, seconds: float, trace: str) -> None:
        super().__init__()
        self.seconds = seconds
        self.trace = trace

    def accuracy(self, arch: ArchSpec) -> float:
        with open(self.trace, "a") as handle:
            handle.write(f"{os.getpid()} {arch.to_string()}\n")
        time.sleep(self.seconds)
        return super().accuracy(arch)


class RaisingAccuracyDouble(AccuracyEstimator):
    """Test double: every evaluation raises the RuntimeError of a broken setup (a GPU gone). It takes and ignores
    any settings, so it can replace an accuracy section's ``_target_`` on the command line."""

    MESSAGE = "CUDA error: an illegal memory access was encountered (test double)"

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def accuracy(self, arch: ArchSpec) -> float:
        raise RuntimeError(self.MESSAGE)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "raising_double"}


class AdbDouble:
    """Test double of adbutils' ``AdbClient`` with one phone attached, for ``AdbPhone(client=AdbDouble())``.

    Only the transport is pretend: the phone keeps pushed files in memory, answers ``getprop``, ``test``,
    ``sha256sum``, ``rm`` and a thermal zone read, and its ``benchmark_model`` runs the pushed flatbuffer in the
    real LiteRT interpreter on this computer, honouring ``--num_threads``, ``--warmup_runs``, ``--warmup_min_secs``,
    ``--num_runs`` and ``--min_secs``, and prints what LiteRT's ``benchmark_model`` prints (``INFO:`` lines, the
    statistics in microseconds with percentiles). ``unplug()`` / ``plug()`` take the phone away and back;
    ``commands`` records every shell command it ran, and ``command_times`` when (``time.monotonic()``).

    :param binary: where its ``benchmark_model`` is; ``executable=False`` leaves it without the x bit.
    :param binary_output: what the binary prints instead of running the model (an unreadable output).
    :param unplug_after_runs: the phone is unplugged when the binary is started after this many runs (mid-search).
    """

    PROPERTIES = {"ro.product.model": "Pixel Double", "ro.soc.model": "Tensor Double",
                  "ro.board.platform": "double", "ro.build.version.release": "14"}  # fmt: skip
    THERMAL = "41500\n0\n38200\n"

    def __init__(self, serial: str = "double-1", binary: str = "/data/local/tmp/benchmark_model",
                 executable: bool = True, binary_output: str | None = None,
                 unplug_after_runs: int | None = None) -> None:  # fmt: skip
        self.serial = serial
        self.unplug_after_runs = unplug_after_runs
        self.runs = 0
        self.binary = binary
        self.executable = executable
        self.binary_output = binary_output
        self.attached = True
        self.files: dict[str, bytes] = {}
        self.commands: list[str] = []
        self.command_times: list[float] = []
        self.pushed: list[str] = []

    def unplug(self) -> None:
        self.attached = False

    def plug(self) -> None:
        self.attached = True

    def list(self) -> list[Any]:
        from adbutils import AdbDeviceInfo

        return [AdbDeviceInfo(serial=self.serial, state="device")] if self.attached else []

    def device(self, serial: str | None = None) -> _PhoneDouble:
        return _PhoneDouble(self, serial or self.serial)


class _ShellResultDouble:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode, self.output = returncode, output


class _PhoneDouble:
    """The phone an :class:`AdbDouble` lists (adbutils' ``AdbDevice``: ``sync.push`` and ``shell2``)."""

    def __init__(self, client: AdbDouble, serial: str) -> None:
        self.client, self.serial = client, serial

    @property
    def sync(self) -> _PhoneDouble:
        return self

    def push(self, src: bytes, dst: str, mode: int = 0o755) -> int:
        self._check_attached()
        self.client.files[dst] = bytes(src)
        self.client.pushed.append(dst)
        return len(src)

    def shell2(self, command: str, timeout: float | None = None) -> _ShellResultDouble:
        import hashlib
        import shlex

        self._check_attached()
        client = self.client
        client.commands.append(command)
        client.command_times.append(time.monotonic())
        args = shlex.split(command)
        if "thermal_zone" in command:
            return _ShellResultDouble(0, AdbDouble.THERMAL)
        if args[0] == "getprop":
            return _ShellResultDouble(0, AdbDouble.PROPERTIES.get(args[1], "") + "\n")
        if args[0] == "test":
            exists = args[2] == client.binary or args[2] in client.files
            ok = exists and (args[1] == "-e" or args[2] != client.binary or client.executable)
            return _ShellResultDouble(0 if ok else 1, "")
        if args[0] == "sha256sum" and args[1] == client.binary:
            return _ShellResultDouble(0, hashlib.sha256(b"benchmark_model double").hexdigest() + f"  {args[1]}\n")
        if args[0] == "rm":
            client.files.pop(args[-1], None)
            return _ShellResultDouble(0, "")
        if args[0] == "taskset":
            args = args[2:]
        if args[0] == client.binary and client.executable:
            if "--help" in args:
                return _ShellResultDouble(1, "usage: benchmark_model\nFlags:\n\t--graph=\tstring\tgraph file name\n")
            if client.runs == client.unplug_after_runs:
                client.unplug()
                self._check_attached()
            client.runs += 1
            if client.binary_output is not None:
                return _ShellResultDouble(0, client.binary_output)
            return _benchmark_model_double(client, args[1:])
        return _ShellResultDouble(127, f"/system/bin/sh: {args[0]}: inaccessible or not found\n")

    def _check_attached(self) -> None:
        import adbutils

        if not self.client.attached:
            raise adbutils.AdbError(f"device '{self.serial}' not found")


def _benchmark_model_double(client: AdbDouble, flags: list[str]) -> _ShellResultDouble:
    """Run the pushed model as ``benchmark_model`` does, in LiteRT here, and print its output format."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    settings = dict(flag.lstrip("-").split("=", 1) for flag in flags)
    graph = settings["graph"]
    lines = ["STARTING!", "Log parameter values verbosely: [0]", f"Min num runs: [{settings['num_runs']}]",
             f"Min runs duration (seconds): [{settings['min_secs']}]", f"Num threads: [{settings['num_threads']}]",
             f"Min warmup runs: [{settings['warmup_runs']}]",
             f"Min warmup runs duration (seconds): [{settings['warmup_min_secs']}]", f"Graph: [{graph}]",
             f"Use xnnpack: [{int(settings.get('use_xnnpack') == 'true')}]"]  # fmt: skip
    if graph not in client.files:
        lines.append(f"ERROR: Could not open '{graph}'.")
        return _ShellResultDouble(1, "".join(f"INFO: {line}\n" for line in lines))
    start = time.perf_counter_ns()
    try:
        interpreter = Interpreter(model_content=client.files[graph], num_threads=int(settings["num_threads"]))
        interpreter.allocate_tensors()
    except Exception as error:  # what benchmark_model says of a file that is not a model it can run
        lines.append(f"ERROR: Failed to load model {graph}: {str(error).strip().splitlines()[0]}")
        return _ShellResultDouble(1, "".join(f"INFO: {line}\n" for line in lines))
    lines.append(f"Loaded model {graph}")
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], rng.uniform(-1, 1, detail["shape"]).astype(detail["dtype"]))
    lines.append(f"Initialized session in {(time.perf_counter_ns() - start) / 1e6:g}ms.")
    for runs, seconds in ((settings["warmup_runs"], settings["warmup_min_secs"]),
                          (settings["num_runs"], settings["min_secs"])):  # fmt: skip
        lines.append(f"Running benchmark for at least {runs} iterations and at least {float(seconds):g} seconds but "
                     "terminate if exceeding 150 seconds.")  # fmt: skip
        times_us, end = [], time.perf_counter() + float(seconds)
        while len(times_us) < int(runs) or time.perf_counter() < end:
            begin = time.perf_counter_ns()
            interpreter.invoke()
            times_us.append((time.perf_counter_ns() - begin) // 1000)
        lines.extend([_stat_line(times_us), ""])
    return _ShellResultDouble(0, "".join(f"INFO: {line}\n" if line else "\n" for line in lines))


def _stat_line(values: list[int]) -> str:
    """``StatWithPercentiles::OutputToStream``: int64 microseconds, the mean with 6 significant digits, the
    population standard deviation truncated to an integer."""
    ordered = sorted(values)
    percentiles = " ".join(f"{name}={ordered[len(values) * p // 100]}" for name, p in (("p5", 5), ("median", 50),
                                                                                       ("p95", 95)))  # fmt: skip
    if min(values) == max(values):
        return f"count={len(values)} curr={values[-1]}" + ("(all same)" if len(values) > 1 else "") + f" {percentiles}"
    mean = sum(values) / len(values)
    std = int((sum(v * v for v in values) / len(values) - mean * mean) ** 0.5)
    return (f"count={len(values)} first={values[0]} curr={values[-1]} min={ordered[0]} max={ordered[-1]} "
            f"avg={mean:g} std={std} {percentiles}")  # fmt: skip


class PidLatencyDouble(ChannelLatencyDouble):
    """Test double: the channel latency, after appending its process id to the file ``measured`` (which worker
    measured)."""

    def __init__(self, measured: str) -> None:
        self.measured = measured

    def measure(self, arch: ArchSpec) -> LatencyStats:
        with open(self.measured, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return super().measure(arch)


class ConcurrentExecutorDouble(LocalExecutor):
    """Test double for a cluster: an executor that says it is concurrent, records what was submitted and how many
    evaluations were in flight at most, and hands them back in the reverse of their submission order (the order
    they finish in on a cluster is not the order they were submitted in)."""

    concurrent = True

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def submit(self, arch: ArchSpec, fingerprint: str, accuracy: Any, latency: Any) -> Any:
        self.submitted.append(arch.to_string())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return super().submit(arch, fingerprint, accuracy, latency)

    def as_completed(self, handles: Mapping[Any, Any]) -> Iterator[tuple[Any, Evaluation]]:
        for key, evaluation in super().as_completed(dict(reversed(list(handles.items())))):
            self.in_flight -= 1
            yield key, evaluation
