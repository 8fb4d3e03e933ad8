"""``device=host_cpu``: this computer's CPU, timing flatbuffers in-process with the LiteRT interpreter (XNNPACK).

The measurement follows TFLite's ``benchmark_model``: one random input, a warm-up (>= 1 run and >= 0.5 s),
then timed ``invoke()`` calls until both >= 50 runs and >= 1 s of timed runs hold. Only ``invoke()`` is
timed, so conversion, interpreter creation and Python bookkeeping never enter the numbers.
"""

from __future__ import annotations

import gc
import importlib.metadata
import platform
import time
from typing import Any

import numpy as np

from nas_rl._util import first_line, silenced_output
from nas_rl.devices.base import Backend, DeviceSpec, LatencyStats, Timing, check_threads
from nas_rl.errors import EvaluationFailed

#: A timed run is "preempted" when its wall time exceeds the thread's CPU time by more than this many ns or
#: this fraction of the run: the OS ran something else meanwhile (on a shared machine, another process).
PREEMPTION_SLACK_NS = 10_000
PREEMPTION_SLACK_FRACTION = 0.02
#: ``drop_preempted`` stops dropping (and keeps every run) once the dropped runs took this many times
#: ``min_seconds``: on a machine that busy, a measurement must still end.
MAX_DROPPED_SECONDS_FACTOR = 2.0


class HostCPU(Backend):
    """This computer's CPU through LiteRT (XNNPACK), with models converted by TensorFlow's TFLite converter.

    :param name: the device's short name in records and table file names.
    :param threads: interpreter threads (>= 1); XNNPACK uses them.
    :param precision: ``fp32``, or ``int8`` (post-training full-integer quantization).
    """

    def __init__(self, name: str = "host-cpu", threads: int = 1, precision: str = "fp32") -> None:
        super().__init__(name, threads, precision)

    def describe(self) -> DeviceSpec:
        return host_cpu(self.threads, self.precision, self.name)

    def benchmark(self, model: bytes, timing: Timing) -> LatencyStats:
        """Time ``model`` in the LiteRT interpreter here (see :func:`benchmark_tflite`).

        :raises EvaluationFailed: the interpreter could not load or run it; the message is one line.
        """
        try:
            return benchmark_tflite(
                model,
                threads=self.threads,
                warmup_min_runs=timing.warmup_min_runs,
                warmup_min_seconds=timing.warmup_min_seconds,
                min_runs=timing.min_runs,
                min_seconds=timing.min_seconds,
                seed=timing.seed,
                drop_preempted=timing.drop_preempted,
                rounds=timing.rounds,
            )
        except Exception as error:
            raise EvaluationFailed(f"LiteRT benchmark failed: {type(error).__name__}: {first_line(error)}") from error


def host_cpu(threads: int = 1, precision: str = "fp32", name: str = "host-cpu") -> DeviceSpec:
    """The description of this computer's CPU through LiteRT, with models converted by TensorFlow's TFLite converter.

    Reads versions from package metadata, so it does not import TensorFlow.
    """
    return DeviceSpec(
        name=name,
        runtime=f"litert {package_version('ai-edge-litert')}",
        converter=f"tensorflow {package_version('tensorflow', 'tensorflow-cpu', 'tf-nightly', 'tf-nightly-cpu')}",
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


def package_version(*distributions: str) -> str:
    """Version of the first installed distribution among ``distributions`` (TF ships under several names)."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


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
    check_threads(threads)
    Timing(warmup_min_runs, warmup_min_seconds, min_runs, min_seconds, seed, drop_preempted, rounds)  # validates
    from ai_edge_litert.interpreter import Interpreter

    with silenced_output():  # the runtime announces its XNNPACK delegate on stderr, when it applies it
        interpreter = Interpreter(model_content=model_bytes, num_threads=int(threads))
        interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], random_tensor(rng, detail["shape"], detail["dtype"]))

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


def random_tensor(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    """Seeded random values of ``dtype`` (integers over their whole range, floats in [-1, 1])."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 1, size=shape, endpoint=True).astype(np.bool_)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
