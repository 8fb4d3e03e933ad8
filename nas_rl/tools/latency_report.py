"""``nas-rl-latency-report``: how well each latency model predicts measurements of held-out architectures.

Draws ``samples`` architectures from the search space with a seed no table sample was drawn with, measures
each whole on the configured device (the ``latency=litert`` measurement: through LiteRT here, or ``benchmark_model``
on a phone with ``device=adb``) in ``passes`` passes over the list and keeps the lowest median, asks every
configured latency model (reading the tables of the same device), and writes to the run folder:

``predictions.csv``  one row per architecture: measured statistics, each model's prediction and its cost in µs
``report.csv`` / ``report.md``  per model: share within ±5% and ±10%, MAPE, RMSE, Kendall tau, bias, µs/arch
``predicted_vs_measured.png``  one scatter per model against the y = x line and the ±10% band
``repeatability.csv``  every architecture's first and second pass medians: the measurement's spread
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nas_rl.devices.base import DeviceLost, describe
from nas_rl.errors import ConfigError
from nas_rl.latency.base import LatencyModel

METRIC_COLUMNS = ("model", "n", "within_5pct", "within_10pct", "mape_pct", "rmse_ms", "kendall_tau", "bias_pct",
                  "us_per_arch")  # fmt: skip


def score(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Accuracy of predictions against measurements (both in ms)."""
    from scipy.stats import kendalltau

    relative = predicted / measured - 1
    return {
        "n": int(len(measured)),
        "within_5pct": float(np.mean(np.abs(relative) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10)),
        "mape_pct": float(100 * np.mean(np.abs(relative))),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "kendall_tau": float(kendalltau(predicted, measured).statistic) if len(measured) > 1 else float("nan"),
        "bias_pct": float(100 * np.median(relative)),
    }


def held_out_architectures(space: Any, seed: int, count: int, models: dict[str, LatencyModel]) -> list[Any]:
    """``count`` architectures drawn with ``seed``, none of them a training sample of a model's table.

    :raises ConfigError: ``seed`` is the seed a table drew its whole-network samples with.
    """

    seen: set[str] = set()
    for name, model in models.items():
        for table in model.tables():
            if table.header.get("network_seed") == seed:
                raise ConfigError(
                    f"report.seed={seed} is the seed the whole-network samples of latency table {table.path} (used by "
                    f"model {name!r}) were drawn with; accepted: any other seed, so the architectures are held out"
                )
            seen.update(row["arch"] for row in table.network_samples())
    archs: list[Any] = []
    for arch in space.sample_archs(seed, 100 * count + len(seen)):  # a small space repeats itself
        if arch.to_string() not in seen:
            seen.add(arch.to_string())
            archs.append(arch)
            if len(archs) == count:
                return archs
    raise ConfigError(
        f"report.samples={count} is not accepted: the search space has only {len(archs)} architectures besides the "
        "tables' samples; accepted: a smaller number"
    )


def compare(
    models: dict[str, LatencyModel],
    reference: Any,
    archs: list[Any],
    passes: int = 1,
    progress: bool = True,
    on_row: Any = None,
    measured: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Measure every architecture ``passes`` times with ``reference`` and predict it with every model.

    Each pass goes over the whole list, so two measurements of one architecture lie minutes apart; every
    architecture is converted once and its flatbuffer timed in each pass. The measured latency is the lowest
    pass median, as the profiler keeps it for tables (a busy moment on a shared machine only slows a run), and
    ``pass<k>_ms`` columns keep each pass's median: their spread is the measurement's repeatability.

    :param reference: a :class:`~nas_rl.latency.litert.LiteRTLatency` (``convert`` and ``benchmark``) on the device.
    :param on_row: called with ``{"arch", "pass<k>_ms" ..., "measured_*"}`` after every measurement (a
        killed report keeps them).
    :param measured: block string -> an earlier report's row: the passes it holds are reused, the rest measured.
    :return: one row per architecture, in order.
    """
    if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
        raise ConfigError(f"report.passes={passes!r} is not accepted: use an integer >= 1")
    measured = measured or {}
    kept = [_reused_measurement(measured.get(arch.to_string()), passes) for arch in archs]
    flatbuffers: dict[int, bytes] = {}
    for number in range(1, passes + 1):
        todo = [index for index, row in enumerate(kept) if f"pass{number}_ms" not in row]
        label = "held-out architectures" + (f", pass {number}/{passes}" if passes > 1 else "")
        for index in tqdm(todo, desc=label, unit="arch", disable=not progress, dynamic_ncols=True):
            if index not in flatbuffers:
                flatbuffers[index] = reference.convert(archs[index])
            stats = reference.benchmark(flatbuffers[index])
            if number == passes:
                flatbuffers.pop(index)
            measured = kept[index]
            measured[f"pass{number}_ms"] = stats.median_ms
            if "measured_ms" not in measured or stats.median_ms < measured["measured_ms"]:
                measured.update(measured_ms=stats.median_ms, measured_std_ms=stats.std_ms, measured_runs=stats.runs)
            if on_row is not None:
                on_row({"arch": archs[index].to_string(), **measured})
    rows = []
    for index, arch in enumerate(archs):
        row: dict[str, Any] = {"index": index, "arch": arch.to_string(), **kept[index]}
        for name, model in models.items():
            start = time.perf_counter()
            row[f"{name}_ms"] = model.latency_ms(arch)
            row[f"{name}_us"] = 1e6 * (time.perf_counter() - start)
        rows.append(row)
    return rows


def _reused_measurement(earlier: dict[str, Any] | None, passes: int) -> dict[str, Any]:
    """The pass medians and kept statistics of an earlier report's row (a report from before passes: pass 1)."""
    if earlier is None:
        return {}
    kept: dict[str, Any] = {}
    for number in range(1, passes + 1):
        value = earlier.get(f"pass{number}_ms", earlier.get("measured_ms") if number == 1 else None)
        if value not in (None, ""):
            kept[f"pass{number}_ms"] = float(value)
    if kept:
        kept.update({k: float(earlier[k]) for k in ("measured_ms", "measured_std_ms", "measured_runs")})
    return kept


def repeatability(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per architecture, the spread of its first two pass medians: ``|second - first| / min(first, second)``."""
    again = []
    for row in rows:
        if "pass2_ms" in row:
            first, second = row["pass1_ms"], row["pass2_ms"]
            spread = abs(second - first) / min(first, second)
            again.append({"arch": row["arch"], "first_ms": first, "second_ms": second, "spread": spread})
    return again


def summarise(models: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    measured = np.array([row["measured_ms"] for row in rows])
    table = []
    for name in models:
        predicted = np.array([row[f"{name}_ms"] for row in rows])
        # the first call may build caches (e.g. a lazy fit): the median is the steady cost
        cost = float(np.median([row[f"{name}_us"] for row in rows]))
        table.append({"model": name, **score(predicted, measured), "us_per_arch": cost})
    return table


def markdown(scores: list[dict[str, Any]]) -> str:
    lines = [
        "| model | n | within ±5% | within ±10% | MAPE | RMSE (ms) | Kendall τ | median bias | µs / arch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s['model']} | {s['n']} | {s['within_5pct']:.0%} | {s['within_10pct']:.0%} | {s['mape_pct']:.1f}% | "
            f"{s['rmse_ms']:.4g} | {s['kendall_tau']:.3f} | {s['bias_pct']:+.1f}% | {s['us_per_arch']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(models: list[str], rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = np.array([row["measured_ms"] for row in rows])
    low, high = 0.9 * measured.min(), 1.1 * measured.max()
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    for axis, name in zip(axes[0], models):
        predicted = np.array([row[f"{name}_ms"] for row in rows])
        line = np.array([low, high])
        axis.fill_between(line, 0.9 * line, 1.1 * line, color="0.9", label="±10%")
        axis.plot(line, line, color="0.4", linewidth=1, label="y = x")
        axis.scatter(measured, predicted, s=12)
        axis.set(title=name, xlabel="measured (ms)", ylabel="predicted (ms)", xlim=(low, high), ylim=(low, high))
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _earlier_measurements(folder: Any, reference: LatencyModel) -> dict[str, dict[str, Any]]:
    """Rows of an earlier report's ``predictions.csv`` by block string, if it measured with the same reference."""
    if not folder:
        return {}
    folder = Path(str(folder))
    try:
        context = json.loads((folder / "context.json").read_text())
        partial = folder / "predictions.partial.jsonl"  # what a killed report had measured
        if partial.exists() and not (folder / "predictions.csv").exists():
            rows = [json.loads(line) for line in partial.read_text().splitlines() if line.endswith("}")]
        else:
            with open(folder / "predictions.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
    except (OSError, ValueError) as error:
        raise ConfigError(f"report.reuse={str(folder)!r} is not accepted ({error}); accepted: a folder written by "
                          "nas-rl-latency-report") from None  # fmt: skip
    if context.get("reference_fingerprint") != reference.fingerprint():
        raise ConfigError(
            f"report.reuse={str(folder)!r} was measured with another reference ({context.get('reference_fingerprint')}"
            f"), this report's is {reference.fingerprint()}; accepted: a report of the same device and settings"
        )
    return {row["arch"]: row for row in rows}


def run_report(cfg: Any, out_dir: Path) -> list[dict[str, Any]]:
    """Build the models and the reference from the composed config, compare, write the outputs, print the table."""
    from nas_rl.config import build

    settings = cfg.report
    samples, seed, passes = int(settings.samples), int(settings.seed), int(settings.passes)
    if samples < 2:
        raise ConfigError(f"report.samples={samples} is not accepted: use an integer >= 2")
    space = build(cfg.search_space, "search_space")
    models = {name: build(node, f"models.{name}") for name, node in cfg.models.items() if node is not None}
    if not models:
        raise ConfigError("models is empty; accepted: at least one latency model under models (lut, predictor, ...)")
    reference = build(cfg.reference, "reference")
    archs = held_out_architectures(space, seed, samples, models)
    measured = _earlier_measurements(settings.get("reuse"), reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "device": reference.fingerprint().get("device"),
        "resolution": int(cfg.resolution),
        "samples": samples,
        "seed": seed,
        "models": {name: repr(model) for name, model in models.items()},
        "reference": repr(reference),
        "reference_fingerprint": reference.fingerprint(),
    }
    (out_dir / "context.json").write_text(json.dumps(context, indent=2))
    for name, model in models.items():
        print(f"{name}: {model!r}")
    partial = out_dir / "predictions.partial.jsonl"
    with open(partial, "w") as handle:

        def keep(row: dict[str, Any]) -> None:  # a killed report still leaves what it measured
            handle.write(json.dumps(row) + "\n")
            handle.flush()

        start = time.perf_counter()
        try:
            rows = compare(models, reference, archs, passes, bool(settings.progress), keep, measured)
        except DeviceLost as lost:
            raise ConfigError(f"{lost}. What was measured is in {partial}: run again with report.reuse={out_dir} to "
                              "keep it") from None  # fmt: skip
    partial.unlink()
    again = repeatability(rows)
    scores = summarise(list(models), rows)
    write_csv(out_dir / "predictions.csv", rows)
    write_csv(out_dir / "report.csv", [{k: s[k] for k in METRIC_COLUMNS} for s in scores])
    write_csv(out_dir / "repeatability.csv", again)
    device = context["device"] or {}
    title = (f"{samples} held-out architectures, {cfg.resolution}x{cfg.resolution}, {device.get('name')} "
             f"({device.get('threads')} thread(s), {device.get('precision')})")  # fmt: skip
    text = (f"# Latency models vs measurements on {device.get('name')}\n\n{title}; seed {seed}.\n\n"
            f"Device: {describe(device)}.\n\n" + markdown(scores))  # fmt: skip
    if again:
        spreads = np.array([a["spread"] for a in again])
        text += (f"\nRepeatability: {len(again)} architectures measured twice in this process, minutes apart (passes "
                 f"1 and 2); median spread {np.median(spreads):.2%}, 90th percentile "
                 f"{np.percentile(spreads, 90):.2%}, max {spreads.max():.2%}. The measured latency is the lowest "
                 f"of {passes} pass medians.\n")  # fmt: skip
    text += f"\nMeasuring took {time.perf_counter() - start:.0f} s.\n"
    (out_dir / "report.md").write_text(text)
    plot(list(models), rows, out_dir / "predicted_vs_measured.png", title)
    print(text)
    print(f"written to {out_dir}")
    return scores
