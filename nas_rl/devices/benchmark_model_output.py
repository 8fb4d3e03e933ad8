"""Reading what LiteRT's (TensorFlow Lite's) ``benchmark_model`` prints.

The binary runs a warm-up phase and then the timed runs; before each it prints a ``Running benchmark for at
least N iterations and at least S seconds`` line (``Running benchmark for N iterations`` in TensorFlow Lite 1.12),
after each one statistics line in microseconds, written by ``Stat::OutputToStream``
(``tensorflow/core/util/stats_calculator.h``, now ``xla/tsl/util/stats_calculator.h``)::

    count=50 first=390368 curr=390936 min=389982 max=417669 avg=394183 std=4373
    count=50 first=900416 curr=898333 min=898007 max=906121 avg=899641 std=1549 p5=898333 median=899281 p95=904305
    count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602
    count=20 curr=1500(all same) p5=1500 median=1500 p95=1500

Binaries up to 2.18 print the first form; 2.20 (``StatWithPercentiles``) adds ``p5``, ``median`` and ``p95``. When
all runs took the same time only ``count`` and ``curr`` are printed. The mean is printed with six significant
digits (``avg=1.24027e+06`` for long runs), the standard deviation (of the population) as an integer. Lines may
carry a log prefix (``INFO: ``, or logcat's ``I tflite  : ``) or be indented; the op profiler's ``Timings
(microseconds): count=...`` lines come after both phases and are not read. Real outputs of four versions, 1.12 to
2.20, are in ``tests/data/benchmark_model/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nas_rl.devices.base import LatencyStats
from nas_rl.errors import EvaluationFailed

#: The start of the line before each phase's statistics, as shown in messages.
PHASE_HEADER = "Running benchmark for"
#: That line: ``for at least N iterations ...``, or ``for N iterations`` from TensorFlow Lite 1.12.
_PHASE = re.compile(r"Running benchmark for (?:at least )?\d+ iterations")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FIELD = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)=({_NUMBER})")
_INIT = re.compile(rf"Initialized session in ({_NUMBER})\s*ms")
#: benchmark_model's clock: whole microseconds.
CLOCK_RESOLUTION_US = 1.0
#: Lines of the output shown when it cannot be read.
SHOWN_LINES = 4


class UnreadableOutput(EvaluationFailed):
    """``benchmark_model`` printed something that is not its statistics: the message names the binary and shows the
    first lines of what it printed."""


@dataclass(frozen=True)
class PhaseStats:
    """One phase's ``count=...`` line, in microseconds (fields a binary does not print are ``None``)."""

    count: int
    first_us: float
    curr_us: float
    min_us: float
    max_us: float
    avg_us: float
    std_us: float
    median_us: float | None = None
    p5_us: float | None = None
    p95_us: float | None = None


@dataclass(frozen=True)
class BenchmarkModelOutput:
    """What one ``benchmark_model`` run measured.

    :param warmup: the warm-up phase.
    :param timed: the timed runs.
    :param init_ms: the time to initialise the session, where printed.
    """

    warmup: PhaseStats
    timed: PhaseStats
    init_ms: float | None = None

    def latency_stats(self, temperature_c: float | None = None) -> LatencyStats:
        """The timed runs in milliseconds. Binaries that print no median give their mean in its place, and so does a
        median of 0 µs (runs shorter than the binary's 1 µs clock: the mean of the whole-µs readings still tells
        their length); runs that all read 0 µs are taken as half the clock's resolution."""
        timed = self.timed
        median = timed.avg_us if timed.median_us is None or timed.median_us <= 0 else timed.median_us
        median = median if median > 0 else CLOCK_RESOLUTION_US / 2
        return LatencyStats(median_ms=median / 1e3, mean_ms=timed.avg_us / 1e3, std_ms=timed.std_us / 1e3,
                            min_ms=timed.min_us / 1e3, max_ms=timed.max_us / 1e3, runs=timed.count,
                            temperature_c=temperature_c)  # fmt: skip


def parse(output: str, binary: str = "benchmark_model") -> BenchmarkModelOutput:
    """The warm-up and timed statistics in ``output``, the text ``binary`` printed.

    :raises UnreadableOutput: the output lacks a warm-up and a timed phase with their statistics; the one-line
        message names ``binary`` and shows the first lines of ``output``.
    """
    lines = output.splitlines()
    phases: list[PhaseStats] = []
    for index, line in enumerate(lines):
        if not _PHASE.search(line):
            continue
        stats_line = next((later for later in lines[index + 1 :] if "count=" in later or _PHASE.search(later)), "")
        if "count=" not in stats_line:
            raise unreadable(binary, output, f"no count=... line after {PHASE_HEADER!r} (phase {len(phases) + 1})")
        phases.append(_phase(stats_line, binary, output))
    if len(phases) < 2:
        found = f"{len(phases)} phase" + ("" if len(phases) == 1 else "s")
        raise unreadable(
            binary, output, f"expected a warm-up and a timed phase ({PHASE_HEADER!r} lines), found {found}"
        )
    if phases[-1].count < 1:
        raise unreadable(binary, output, "the timed phase has count=0 (no run was timed)")
    init = _INIT.search(output)
    return BenchmarkModelOutput(phases[-2], phases[-1], float(init.group(1)) if init else None)


def _phase(line: str, binary: str, output: str) -> PhaseStats:
    fields = {key: float(value) for key, value in _FIELD.findall(line)}
    if "count" not in fields or ("curr" not in fields and fields["count"] > 0):
        raise unreadable(binary, output, f"the statistics line {line.strip()!r} lacks count= or curr=")
    count = int(fields["count"])
    if count == 0:
        return PhaseStats(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    curr = fields["curr"]
    if "avg" not in fields:  # every run took the same time ("count=N curr=X(all same)")
        fields.update(min=curr, max=curr, avg=curr, std=0.0)
        fields.setdefault("median", curr)
    missing = [key for key in ("min", "max", "avg", "std") if key not in fields]
    if missing:
        raise unreadable(binary, output, f"the statistics line {line.strip()!r} lacks {', '.join(missing)}")
    return PhaseStats(count=count, first_us=fields.get("first", curr), curr_us=curr, min_us=fields["min"],
                      max_us=fields["max"], avg_us=fields["avg"], std_us=fields["std"], median_us=fields.get("median"),
                      p5_us=fields.get("p5"), p95_us=fields.get("p95"))  # fmt: skip


def unreadable(binary: str, output: str, why: str) -> UnreadableOutput:
    """The one-line refusal of ``binary``'s ``output``: why, and its first lines."""
    shown = [line.strip() for line in output.splitlines() if line.strip()][:SHOWN_LINES]
    first = " | ".join(shown) if shown else "(it printed nothing)"
    return UnreadableOutput(
        f"the output of {binary} could not be read: {why}; expected benchmark_model's output (a warm-up and a timed "
        f"'{PHASE_HEADER} ...' phase, each followed by 'count=... avg=... std=...'). Its first lines: {first}"
    )
